// Builders of realistic events for tests.
#ifndef AUTHTRAIL_TESTS_TESTING_EVENTS_H_
#define AUTHTRAIL_TESTS_TESTING_EVENTS_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "authtrail/v1/event.pb.h"
#include "authtrail/v1/history.pb.h"
#include "authtrail/v1/ingest.pb.h"

namespace authtrail::testing {

google::protobuf::Timestamp Ts(absl::Time time);

// Chainable event builder:
//   Event("e1").Patient("p-1").Connection("c-1").Session("s-1")
//       .At(t).Step(v1::STEP_CONSENT).Denied("access_denied")
class Event {
 public:
  explicit Event(std::string event_id);

  Event& Patient(std::string id);
  Event& Connection(std::string id);
  Event& Session(std::string id);
  Event& Request(std::string id);
  Event& Source(
      std::string id, std::string name,
      authtrail::v1::SourceKind kind = authtrail::v1::SOURCE_KIND_EHR);
  Event& At(absl::Time time);
  Event& Step(authtrail::v1::Step step);
  Event& Started();
  Event& Succeeded();
  Event& Failed(std::string code, int http_status = 0,
                std::string description = "");
  Event& Denied(std::string code = "access_denied");
  Event& Attribute(std::string key, std::string value);

  operator authtrail::v1::AuthEvent() const { return event_; }
  const authtrail::v1::AuthEvent& proto() const { return event_; }
  authtrail::v1::AuthEvent& mutable_proto() { return event_; }

 private:
  authtrail::v1::AuthEvent event_;
};

// The events of one attempt that goes all the way to tokens: redirect,
// sign-in, consent, callback, exchange, one minute apart from `start`. Ids
// are `prefix`-1 ... `prefix`-7.
std::vector<authtrail::v1::AuthEvent> SuccessfulAttempt(
    const std::string& prefix, const std::string& patient,
    const std::string& connection, const std::string& session,
    absl::Time start);

authtrail::v1::AppendEventsRequest Batch(
    const std::vector<authtrail::v1::AuthEvent>& events);

}  // namespace authtrail::testing

#endif  // AUTHTRAIL_TESTS_TESTING_EVENTS_H_
