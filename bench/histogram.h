// A latency histogram with logarithmic buckets (the HdrHistogram idea):
// exact below 128 ns, then 64 linear sub-buckets per power of two, so any
// recorded value is reported within 1/64 (1.6%) of what it was. Recording
// is lock-free and may happen from any thread; min, max, count and sum are
// exact.
#ifndef AUTHTRAIL_BENCH_HISTOGRAM_H_
#define AUTHTRAIL_BENCH_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <limits>

namespace authtrail::bench {

class Histogram {
 public:
  // Values up to 2^44 ns (about 4.9 hours); larger ones go to the last
  // bucket (and still count in max).
  static constexpr int kSubBits = 6;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kMaxShift = 44 - kSubBits;
  static constexpr int kBuckets = 2 * kSub + kMaxShift * kSub;

  Histogram() { Reset(); }

  void Reset() {
    for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
    count_.store(0);
    sum_.store(0);
    min_.store(std::numeric_limits<uint64_t>::max());
    max_.store(0);
  }

  void Record(uint64_t value_ns) {
    buckets_[BucketOf(value_ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value_ns, std::memory_order_relaxed);
    uint64_t seen = min_.load(std::memory_order_relaxed);
    while (value_ns < seen && !min_.compare_exchange_weak(seen, value_ns)) {
    }
    seen = max_.load(std::memory_order_relaxed);
    while (value_ns > seen && !max_.compare_exchange_weak(seen, value_ns)) {
    }
  }

  uint64_t count() const { return count_.load(); }
  uint64_t max() const { return count() == 0 ? 0 : max_.load(); }
  uint64_t min() const { return count() == 0 ? 0 : min_.load(); }
  double mean() const {
    return count() == 0 ? 0 : static_cast<double>(sum_.load()) / count();
  }

  // The value at quantile q in [0, 1]: the representative value (middle)
  // of the bucket holding the ceil(q * count)-th smallest value, clamped to
  // [min, max]. 0 when empty.
  uint64_t Quantile(double q) const {
    uint64_t n = count();
    if (n == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(n));
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen >= rank) {
        uint64_t v = MiddleOf(i);
        if (v < min()) v = min();
        if (v > max()) v = max();
        return v;
      }
    }
    return max();
  }

  static int BucketOf(uint64_t v) {
    if (v < 2 * kSub) return static_cast<int>(v);
    int shift = std::bit_width(v) - 1 - kSubBits;  // >= 1
    if (shift > kMaxShift) return kBuckets - 1;
    return 2 * kSub + (shift - 1) * kSub +
           static_cast<int>((v >> shift) - kSub);
  }
  static uint64_t LowOf(int bucket) {
    if (bucket < 2 * kSub) return static_cast<uint64_t>(bucket);
    int shift = (bucket - 2 * kSub) / kSub + 1;
    uint64_t sub = static_cast<uint64_t>((bucket - 2 * kSub) % kSub + kSub);
    return sub << shift;
  }
  static uint64_t MiddleOf(int bucket) {
    if (bucket < 2 * kSub) return static_cast<uint64_t>(bucket);
    int shift = (bucket - 2 * kSub) / kSub + 1;
    return LowOf(bucket) + (uint64_t{1} << shift) / 2;
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_;
  std::atomic<uint64_t> count_;
  std::atomic<uint64_t> sum_;
  std::atomic<uint64_t> min_;
  std::atomic<uint64_t> max_;
};

}  // namespace authtrail::bench

#endif  // AUTHTRAIL_BENCH_HISTOGRAM_H_
