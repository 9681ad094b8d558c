#include "tests/testing/events.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "storage/proto_time.h"

namespace authtrail::testing {

using authtrail::v1::AuthEvent;

google::protobuf::Timestamp Ts(absl::Time time) {
  return storage::ToProtoTime(time);
}

Event::Event(std::string event_id) {
  event_.set_event_id(std::move(event_id));
  event_.set_emitter("test");
  *event_.mutable_occurred_at() = Ts(absl::Now() - absl::Minutes(5));
  event_.mutable_source()->set_id("src-epic");
  event_.mutable_source()->set_name("Epic MyChart – Northwind Health");
  event_.mutable_source()->set_kind(authtrail::v1::SOURCE_KIND_EHR);
}

Event& Event::Patient(std::string id) {
  event_.set_patient_id(std::move(id));
  return *this;
}
Event& Event::Connection(std::string id) {
  event_.set_connection_id(std::move(id));
  return *this;
}
Event& Event::Session(std::string id) {
  event_.set_session_id(std::move(id));
  return *this;
}
Event& Event::Request(std::string id) {
  event_.set_request_id(std::move(id));
  return *this;
}
Event& Event::Source(std::string id, std::string name,
                     authtrail::v1::SourceKind kind) {
  event_.mutable_source()->set_id(std::move(id));
  event_.mutable_source()->set_name(std::move(name));
  event_.mutable_source()->set_kind(kind);
  return *this;
}
Event& Event::At(absl::Time time) {
  *event_.mutable_occurred_at() = Ts(time);
  return *this;
}
Event& Event::Step(authtrail::v1::Step step) {
  event_.set_step(step);
  return *this;
}
Event& Event::Started() {
  event_.set_outcome(authtrail::v1::OUTCOME_STARTED);
  return *this;
}
Event& Event::Succeeded() {
  event_.set_outcome(authtrail::v1::OUTCOME_SUCCEEDED);
  return *this;
}
Event& Event::Failed(std::string code, int http_status,
                     std::string description) {
  event_.set_outcome(authtrail::v1::OUTCOME_FAILED);
  event_.set_error_code(std::move(code));
  event_.set_http_status(http_status);
  event_.set_error_description(std::move(description));
  return *this;
}
Event& Event::Denied(std::string code) {
  event_.set_outcome(authtrail::v1::OUTCOME_DENIED);
  event_.set_error_code(std::move(code));
  return *this;
}
Event& Event::Attribute(std::string key, std::string value) {
  (*event_.mutable_attributes())[std::move(key)] = std::move(value);
  return *this;
}

std::vector<AuthEvent> SuccessfulAttempt(const std::string& prefix,
                                         const std::string& patient,
                                         const std::string& connection,
                                         const std::string& session,
                                         absl::Time start) {
  struct StepOutcome {
    authtrail::v1::Step step;
    bool started;
  };
  const StepOutcome flow[] = {
      {authtrail::v1::STEP_PORTAL_REDIRECT, true},
      {authtrail::v1::STEP_PORTAL_REDIRECT, false},
      {authtrail::v1::STEP_SIGN_IN, false},
      {authtrail::v1::STEP_CONSENT, false},
      {authtrail::v1::STEP_OAUTH_CALLBACK, false},
      {authtrail::v1::STEP_TOKEN_EXCHANGE, true},
      {authtrail::v1::STEP_TOKEN_EXCHANGE, false},
  };
  std::vector<AuthEvent> out;
  int i = 0;
  for (const StepOutcome& s : flow) {
    Event e(absl::StrCat(prefix, "-", i + 1));
    e.Patient(patient)
        .Connection(connection)
        .Session(session)
        .Request(absl::StrCat("req-", prefix, "-", i + 1))
        .At(start + absl::Minutes(i))
        .Step(s.step);
    if (s.started) {
      e.Started();
    } else {
      e.Succeeded();
    }
    out.push_back(e);
    ++i;
  }
  return out;
}

authtrail::v1::AppendEventsRequest Batch(const std::vector<AuthEvent>& events) {
  authtrail::v1::AppendEventsRequest request;
  for (const AuthEvent& e : events) *request.add_events() = e;
  return request;
}

}  // namespace authtrail::testing
