// Validation of requests before anything is written. Every string, map and
// batch has a limit; a violation names the field path (with the event's
// index) and the limit.
#ifndef AUTHTRAIL_SERVICES_VALIDATION_H_
#define AUTHTRAIL_SERVICES_VALIDATION_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "authtrail/v1/history.pb.h"
#include "authtrail/v1/ingest.pb.h"

namespace authtrail::services {

// The limits, in bytes unless said otherwise. Documented in docs/API.md.
struct Limits {
  static constexpr size_t kMaxEventsPerBatch = 1000;
  static constexpr size_t kMaxBatchBytes = size_t{4} << 20;
  static constexpr size_t kMaxIdBytes = 128;
  static constexpr size_t kMaxSourceNameBytes = 256;
  static constexpr size_t kMaxErrorCodeBytes = 64;
  static constexpr size_t kMaxErrorDescriptionBytes = 2048;
  static constexpr size_t kMaxEmitterBytes = 64;
  static constexpr size_t kMaxAttributes = 32;
  static constexpr size_t kMaxAttributeKeyBytes = 64;
  static constexpr size_t kMaxAttributeValueBytes = 512;
  static constexpr size_t kMaxAttributesBytes = 4096;
  // occurred_at must fall in [kEarliest, now + kMaxAhead].
  static constexpr int64_t kEarliestUnixSeconds = 946684800;  // 2000-01-01
  static constexpr absl::Duration kMaxAhead = absl::Hours(24);
  static constexpr size_t kMaxPageSize = 1000;
  static constexpr size_t kDefaultPageSize = 100;
  static constexpr size_t kMaxResponseBytes = size_t{4} << 20;
  static constexpr size_t kMaxConnectionsPerPatient = 1000;
  static constexpr size_t kMaxTimelineBuckets = 10000;
  static constexpr absl::Duration kMaxTimelineSpan = absl::Hours(24 * 400);
  static constexpr absl::Duration kMaxBucket = absl::Hours(24 * 31);
  static constexpr size_t kMaxTimelineEvents = 1000;
  static constexpr size_t kDefaultTimelineEvents = 100;
  static constexpr size_t kMaxPageTokenBytes = 256;
};

// One broken rule: the field path and why.
struct Violation {
  std::string field;
  std::string description;
};

// Checks a whole append batch against every rule and limit. Returns the
// violations found (at most a few dozen), empty when the batch is valid.
std::vector<Violation> ValidateAppend(
    const authtrail::v1::AppendEventsRequest& request, absl::Time now);

// Checks an id argument of a read call: required, within the id limit.
std::vector<Violation> ValidateId(const std::string& field,
                                  const std::string& value, bool required);

// Checks the filter and time range of ListEvents.
std::vector<Violation> ValidateListEvents(
    const authtrail::v1::ListEventsRequest& request);

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_VALIDATION_H_
