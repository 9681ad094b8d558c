// Conversions between google.protobuf.Timestamp and absl::Time, and the
// order of timestamps. The one place every layer takes them from.
#ifndef AUTHTRAIL_STORAGE_PROTO_TIME_H_
#define AUTHTRAIL_STORAGE_PROTO_TIME_H_

#include <cstdint>
#include <utility>

#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace authtrail::storage {

inline absl::Time FromProtoTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// Full nanosecond precision; nanos is always in [0, 1e9).
inline google::protobuf::Timestamp ToProtoTime(absl::Time time) {
  int64_t nanos = absl::ToUnixNanos(time);
  int64_t seconds = nanos / 1'000'000'000;
  int64_t rest = nanos % 1'000'000'000;
  if (rest < 0) {
    rest += 1'000'000'000;
    --seconds;
  }
  google::protobuf::Timestamp ts;
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>(rest));
  return ts;
}

// Strictly earlier.
inline bool TimeBefore(const google::protobuf::Timestamp& a,
                       const google::protobuf::Timestamp& b) {
  return std::pair(a.seconds(), a.nanos()) < std::pair(b.seconds(), b.nanos());
}

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_PROTO_TIME_H_
