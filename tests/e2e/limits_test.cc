// End-to-end tests of the limits: every one is INVALID_ARGUMENT naming the
// field (with the event's index) and the limit, nothing of the batch is
// written, and the value at the limit itself is accepted. Also the
// required arguments and NOT_FOUND answers of the read calls.
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/history_fixture.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::AuthEvent;

class LimitsTest : public HistoryFixture {
 protected:
  AuthEvent Valid(const std::string& id) {
    return Event(id)
        .Patient("p-1")
        .Connection("c-1")
        .Session("s-1")
        .Request("q-1")
        .At(absl::Now() - absl::Minutes(1))
        .Step(v1::STEP_SIGN_IN)
        .Succeeded();
  }

  // Appends `events`, expects INVALID_ARGUMENT naming `field` with every
  // one of `words` in the message, and that nothing was written.
  void ExpectRefused(const std::vector<AuthEvent>& events,
                     const std::string& field,
                     const std::vector<std::string>& words) {
    uint64_t head = Head();
    grpc::Status status = Append(events);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << status.error_message();
    EXPECT_EQ(ViolatedField(status), field) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), field))
        << status.error_message();
    for (const std::string& word : words) {
      EXPECT_TRUE(absl::StrContains(status.error_message(), word))
          << "no \"" << word << "\" in: " << status.error_message();
    }
    EXPECT_EQ(Head(), head) << "something was written";
  }

  int next_id_ = 0;
};

struct Case {
  const char* name;
  const char* field;  // after "events[1]."
  std::vector<std::string> words;
  std::function<void(AuthEvent&)> over;  // breaks the limit
  std::function<void(AuthEvent&)> at;    // exactly at it (null: none)
};

std::string Bytes(size_t n) { return std::string(n, 'x'); }

std::vector<Case> EventCases() {
  using E = AuthEvent;
  return {
      {"missing event_id",
       "event_id",
       {"required"},
       [](E& e) { e.clear_event_id(); },
       nullptr},
      {"long event_id",
       "event_id",
       {"129", "128"},
       [](E& e) { e.set_event_id(Bytes(129)); },
       [](E& e) { e.set_event_id(Bytes(128)); }},
      {"long patient_id",
       "patient_id",
       {"128"},
       [](E& e) { e.set_patient_id(Bytes(129)); },
       [](E& e) { e.set_patient_id(Bytes(128)); }},
      {"long connection_id",
       "connection_id",
       {"128"},
       [](E& e) { e.set_connection_id(Bytes(129)); },
       [](E& e) { e.set_connection_id(Bytes(128)); }},
      {"long session_id",
       "session_id",
       {"128"},
       [](E& e) { e.set_session_id(Bytes(129)); },
       [](E& e) { e.set_session_id(Bytes(128)); }},
      {"long request_id",
       "request_id",
       {"128"},
       [](E& e) { e.set_request_id(Bytes(129)); },
       [](E& e) { e.set_request_id(Bytes(128)); }},
      {"long source.id",
       "source.id",
       {"128"},
       [](E& e) { e.mutable_source()->set_id(Bytes(129)); },
       [](E& e) { e.mutable_source()->set_id(Bytes(128)); }},
      {"long source.name",
       "source.name",
       {"257", "256"},
       [](E& e) { e.mutable_source()->set_name(Bytes(257)); },
       [](E& e) { e.mutable_source()->set_name(Bytes(256)); }},
      {"long error_code",
       "error_code",
       {"65", "64"},
       [](E& e) {
         e.set_outcome(v1::OUTCOME_FAILED);
         e.set_error_code(Bytes(65));
       },
       [](E& e) {
         e.set_outcome(v1::OUTCOME_FAILED);
         e.set_error_code(Bytes(64));
       }},
      {"long error_description",
       "error_description",
       {"2049", "2048"},
       [](E& e) { e.set_error_description(Bytes(2049)); },
       [](E& e) { e.set_error_description(Bytes(2048)); }},
      {"null error_description",
       "error_description",
       {"\"null\""},
       [](E& e) { e.set_error_description("null"); },
       nullptr},
      {"FAILED without error_code",
       "error_code",
       {"required", "FAILED"},
       [](E& e) { e.set_outcome(v1::OUTCOME_FAILED); },
       nullptr},
      {"DENIED without error_code",
       "error_code",
       {"required", "DENIED"},
       [](E& e) { e.set_outcome(v1::OUTCOME_DENIED); },
       nullptr},
      {"unspecified step",
       "step",
       {"STEP_UNSPECIFIED"},
       [](E& e) { e.set_step(v1::STEP_UNSPECIFIED); },
       nullptr},
      {"unspecified outcome",
       "outcome",
       {"OUTCOME_UNSPECIFIED"},
       [](E& e) { e.set_outcome(v1::OUTCOME_UNSPECIFIED); },
       nullptr},
      {"http_status 42",
       "http_status",
       {"42", "100..599"},
       [](E& e) { e.set_http_status(42); },
       [](E& e) { e.set_http_status(599); }},
      {"33 attributes",
       "attributes",
       {"33", "32"},
       [](E& e) {
         for (int i = 0; i < 33; ++i) {
           (*e.mutable_attributes())[absl::StrCat("a", i)] = "v";
         }
       },
       [](E& e) {
         for (int i = 0; i < 32; ++i) {
           (*e.mutable_attributes())[absl::StrCat("a", i)] = "v";
         }
       }},
      {"long attribute value",
       "attributes[\"scope\"]",
       {"513", "512"},
       [](E& e) { (*e.mutable_attributes())["scope"] = Bytes(513); },
       [](E& e) { (*e.mutable_attributes())["scope"] = Bytes(512); }},
      {"missing occurred_at",
       "occurred_at",
       {"required"},
       [](E& e) { e.clear_occurred_at(); },
       nullptr},
      {"occurred_at 48h ahead",
       "occurred_at",
       {"ahead", "24h"},
       [](E& e) {
         *e.mutable_occurred_at() = Ts(absl::Now() + absl::Hours(48));
       },
       [](E& e) {
         *e.mutable_occurred_at() = Ts(absl::Now() + absl::Hours(23));
       }},
      {"occurred_at before 2000",
       "occurred_at",
       {"2000-01-01"},
       [](E& e) {
         *e.mutable_occurred_at() =
             Ts(absl::FromUnixSeconds(946684800) - absl::Nanoseconds(1));
       },
       [](E& e) {
         *e.mutable_occurred_at() = Ts(absl::FromUnixSeconds(946684800));
       }},
  };
}

TEST_F(LimitsTest, EveryEventLimitIsRefusedByNameAndTheLimitItselfAccepted) {
  for (const Case& c : EventCases()) {
    SCOPED_TRACE(c.name);
    AuthEvent good = Valid(absl::StrCat("good-", next_id_++));
    AuthEvent bad = Valid(absl::StrCat("bad-", next_id_++));
    c.over(bad);
    ExpectRefused({good, bad}, absl::StrCat("events[1].", c.field), c.words);
    if (c.at != nullptr) {
      AuthEvent edge = Valid(absl::StrCat("edge-", next_id_++));
      c.at(edge);
      grpc::Status status = Append({edge});
      EXPECT_TRUE(status.ok()) << "at the limit: " << status.error_message();
    }
  }
}

TEST_F(LimitsTest, BatchLimits) {
  ExpectRefused({}, "events", {"empty", "1000"});

  std::vector<AuthEvent> many;
  for (int i = 0; i < 1001; ++i) many.push_back(Valid(absl::StrCat("m", i)));
  ExpectRefused(many, "events", {"1001", "1000"});
  many.pop_back();
  EXPECT_TRUE(Append(many).ok());  // 1000 is fine
  uint64_t head = Head();
  EXPECT_EQ(head, 1000u);

  // Each event is within its own limits; together they pass 4 MiB.
  std::vector<AuthEvent> heavy;
  for (int i = 0; i < 800; ++i) {
    AuthEvent e = Valid(absl::StrCat("h", i));
    e.set_error_description(Bytes(2048));
    for (int k = 0; k < 7; ++k) {
      (*e.mutable_attributes())[absl::StrCat("k", k)] = Bytes(512);
    }
    heavy.push_back(e);
  }
  ASSERT_GT(Batch(heavy).ByteSizeLong(), size_t{4} << 20);
  ExpectRefused(heavy, "events", {"4194304"});
  EXPECT_EQ(Head(), head);
}

TEST_F(LimitsTest, ReadCallsNeedTheirIdAndSayNotFound) {
  AppendOk({Valid("e1")});

  v1::ListConnectionsRequest list;
  v1::ListConnectionsResponse list_response;
  grpc::Status status =
      server_.history().ListConnections(Context().get(), list, &list_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "patient_id");
  list.set_patient_id(Bytes(129));
  status =
      server_.history().ListConnections(Context().get(), list, &list_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "128"));

  v1::GetConnectionRequest get;
  v1::Connection connection;
  status = server_.history().GetConnection(Context().get(), get, &connection);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "connection_id");
  get.set_connection_id("c-unknown");
  status = server_.history().GetConnection(Context().get(), get, &connection);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  get.set_connection_id("c-");  // a prefix of a known id is not that id
  status = server_.history().GetConnection(Context().get(), get, &connection);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::DiagnoseSessionRequest diagnose;
  v1::SessionDiagnosis diagnosis;
  status =
      server_.history().DiagnoseSession(Context().get(), diagnose, &diagnosis);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "session_id");
  diagnose.set_session_id("s-unknown");
  status =
      server_.history().DiagnoseSession(Context().get(), diagnose, &diagnosis);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  diagnose.set_session_id("s-");
  status =
      server_.history().DiagnoseSession(Context().get(), diagnose, &diagnosis);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::ListEventsRequest events;
  events.mutable_filter()->set_session_id(Bytes(129));
  v1::ListEventsResponse events_response;
  status = ListEventsStatus(events, &events_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "filter.session_id");
}

}  // namespace
}  // namespace authtrail::testing
