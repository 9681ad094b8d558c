// Service metrics in the Prometheus text format: counters, histograms and
// gauges read when scraped. Recording is lock-free (atomics); Render takes
// a lock only to walk the label sets. Thread-safe.
#ifndef AUTHTRAIL_SERVICES_METRICS_H_
#define AUTHTRAIL_SERVICES_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"

struct mg_context;  // civetweb's server

namespace authtrail::services {

// A histogram with fixed upper bounds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends the `_bucket`, `_sum` and `_count` lines of `name` with
  // `labels` (already formatted, e.g. `rpc="GetConnection"`, or empty).
  void Render(const std::string& name, const std::string& labels,
              std::string* out) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // one per bound, +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

class Metrics {
 public:
  Metrics();

  // Appends: events by result ("accepted", "duplicate", "refused") and,
  // for refusals, the reason (a gRPC status code name).
  void CountAppended(const std::string& result, const std::string& reason,
                     uint64_t events);
  void ObserveAppendLatency(absl::Duration latency);
  void ObserveGroupCommit(size_t events, absl::Duration write_time);
  // Latency of one AuthHistory or AuthTrailAdmin call, and its status.
  void ObserveQuery(const std::string& rpc, const std::string& code,
                    absl::Duration latency);
  // One call refused before its work began: UNAUTHENTICATED,
  // PERMISSION_DENIED or RESOURCE_EXHAUSTED (rate limit). Both labels are
  // server-chosen names, never caller text.
  void CountRefusal(const std::string& rpc, const std::string& code);
  // A gauge computed when scraped.
  void AddGauge(std::string name, std::string help,
                std::function<double()> value);

  // The whole exposition, in the Prometheus text format 0.0.4.
  std::string Render() const;

 private:
  struct Labeled {
    std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>> counters;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  std::atomic<uint64_t>* Counter(Labeled& family, const std::string& labels);
  Histogram* HistogramFor(Labeled& family, const std::string& labels,
                          const std::vector<double>& bounds);

  mutable std::mutex mu_;
  Labeled appended_;       // guarded by mu_ (the map; values are atomic)
  Labeled query_calls_;    // guarded by mu_
  Labeled query_latency_;  // guarded by mu_
  Labeled refused_;        // guarded by mu_
  Histogram append_latency_;
  Histogram group_events_;
  Histogram group_write_seconds_;
  struct Gauge {
    std::string name;
    std::string help;
    std::function<double()> value;
  };
  std::vector<Gauge> gauges_;  // guarded by mu_
};

// Serves `metrics` at GET /metrics on `listen` (HOST:PORT) with civetweb.
class MetricsServer {
 public:
  // Returns nullptr (and logs why) when the port cannot be opened.
  static std::unique_ptr<MetricsServer> Start(const std::string& listen,
                                              const Metrics* metrics);
  ~MetricsServer();

 private:
  MetricsServer() = default;
  ::mg_context* context_ = nullptr;
  const Metrics* metrics_ = nullptr;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_METRICS_H_
