// Reducers: pure functions from (projection record, event) to the next
// record. They do no I/O and read no clock, so the same code produces the
// live projections and a rebuild, byte for byte. The read-time views at the
// bottom apply what depends on "now" (abandonment, pending bounds) without
// writing anything.
#ifndef AUTHTRAIL_STORAGE_REDUCERS_H_
#define AUTHTRAIL_STORAGE_REDUCERS_H_

#include "absl/time/time.h"
#include "authtrail/records/v1/records.pb.h"
#include "authtrail/v1/event.pb.h"
#include "authtrail/v1/history.pb.h"

namespace authtrail::storage {

using records::v1::ConnectionRecord;
using records::v1::OrderKey;
using records::v1::SessionRecord;

// The version of the projections: what the reducers produce and how the
// indexes are laid out. A release that changes either raises it; a store
// whose projections were built by an older version rebuilds them from the
// log. 2: connection index entries carry the event's record.
inline constexpr uint32_t kProjectionVersion = 2;

// An event whose occurred_at is ahead of the server's clock by more than
// this is future-dated: kept as sent, but ordered by its recorded_at.
inline constexpr absl::Duration kFutureTolerance = absl::Minutes(5);

// Whether `occurred_at` is future-dated against `recorded_at`.
bool IsFutureDated(const google::protobuf::Timestamp& occurred_at,
                   const google::protobuf::Timestamp& recorded_at);

// The time-order key of a stored event: its effective time (occurred_at,
// or recorded_at when future-dated), then its position.
OrderKey OrderKeyOf(const authtrail::v1::RecordedEvent& event);
// Strict (time, position) order.
bool Before(const OrderKey& a, const OrderKey& b);

// True for FAILED and DENIED.
bool IsFailure(const authtrail::v1::AuthEvent& event);
// The five steps of an attempt, in flow order; false for refresh,
// disconnect and unknown steps.
bool IsAttemptStep(authtrail::v1::Step step);

// A short reference to `event`.
authtrail::v1::EventRef RefOf(const authtrail::v1::RecordedEvent& event);
// The failure that `event` reports, classified by the catalog.
// REQUIRES: IsFailure(event.event()).
authtrail::v1::Failure FailureOf(const authtrail::v1::RecordedEvent& event,
                                 bool follows_earlier_failure);

// Applies one event to its connection's record. `record` is empty for the
// connection's first event. REQUIRES: event has a connection_id.
void ReduceConnection(const authtrail::v1::RecordedEvent& event,
                      ConnectionRecord* record);

// Applies one event to its session's record. `record` is empty for the
// session's first event. REQUIRES: event has a session_id.
void ReduceSession(const authtrail::v1::RecordedEvent& event,
                   SessionRecord* record);

// What depends on the reader's clock.
struct ReadPolicy {
  // An attempt silent for longer than this is abandoned; a STARTED step or
  // refresh with no end within it has an unknown outcome.
  absl::Duration stall_window = absl::Minutes(30);
  absl::Time now;
};

// The API view of a connection at `policy.now`. The second form moves the
// stored view out of a record read only to be answered.
authtrail::v1::Connection ViewConnection(const ConnectionRecord& record,
                                         const ReadPolicy& policy);
authtrail::v1::Connection ViewConnection(ConnectionRecord&& record,
                                         const ReadPolicy& policy);

// The diagnosis of a session at `policy.now`. `refresh_failed_later` is
// the answer to question five, which needs the connection's later events
// and so is found by the caller (see RefreshFinding).
authtrail::v1::SessionDiagnosis Diagnose(
    const SessionRecord& record,
    const authtrail::v1::Finding& refresh_failed_later,
    const ReadPolicy& policy);

// Question five from the refresh events of the session's connection that
// follow the session's token exchange, oldest first. Stops at the first
// failure.
class RefreshFinding {
 public:
  // Feeds one later event of the connection, in time order. Returns false
  // when nothing further can change the answer.
  bool Add(const authtrail::v1::RecordedEvent& event);
  authtrail::v1::Finding Result(bool tokens_issued) const;

 private:
  authtrail::v1::Finding finding_;
  bool saw_success_ = false;
};

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_REDUCERS_H_
