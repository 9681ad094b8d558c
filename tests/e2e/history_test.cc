// End-to-end tests of connection states and session diagnoses: the four
// outcomes of an attempt, refreshes, root causes, late, same-time,
// future-dated and unknown events, abandonment and unattributed callbacks.
// A real server over RocksDB, called through the generated stubs.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "tests/e2e/history_fixture.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::Answer;
using authtrail::v1::AuthEvent;
using authtrail::v1::Connection;
using authtrail::v1::SessionDiagnosis;

constexpr Answer kYes = authtrail::v1::ANSWER_YES;
constexpr Answer kNo = authtrail::v1::ANSWER_NO;
constexpr Answer kUnknown = authtrail::v1::ANSWER_UNKNOWN;

class HistoryTest : public HistoryFixture {
 protected:
  using HistoryFixture::HistoryFixture;

  // An event of patient p-1 on connection `c` in session `s` (none when
  // empty), with request id "req-<id>".
  static Event Ev(const std::string& id, const std::string& c,
                  const std::string& s, absl::Time t, v1::Step step) {
    Event e(id);
    e.Patient("p-1")
        .Connection(c)
        .Session(s)
        .Request("req-" + id)
        .At(t)
        .Step(step);
    return e;
  }

  // Events of a successful attempt of p-1 on `c` in `s`, from t0_.
  std::vector<AuthEvent> Success(const std::string& prefix,
                                 const std::string& c, const std::string& s) {
    return SuccessfulAttempt(prefix, "p-1", c, s, t0_);
  }

  static void ExpectAnswers(const SessionDiagnosis& d, Answer portal,
                            Answer signed_in, Answer approved, Answer exchanged,
                            Answer refresh_failed) {
    EXPECT_EQ(d.reached_portal().answer(), portal) << d.reached_portal().note();
    EXPECT_EQ(d.signed_in().answer(), signed_in) << d.signed_in().note();
    EXPECT_EQ(d.approved_access().answer(), approved)
        << d.approved_access().note();
    EXPECT_EQ(d.token_exchanged().answer(), exchanged)
        << d.token_exchanged().note();
    EXPECT_EQ(d.refresh_failed_later().answer(), refresh_failed)
        << d.refresh_failed_later().note();
  }

  // The one connection p-1 has in ListConnections with this id.
  Connection Listed(const std::string& connection_id) {
    for (const Connection& c : ListConnections("p-1")) {
      if (c.connection_id() == connection_id) return c;
    }
    ADD_FAILURE() << connection_id << " is not listed for p-1";
    return {};
  }

  absl::Time t0_ = absl::Now() - absl::Hours(3);
};

// --- 1a. Success -----------------------------------------------------------

TEST_F(HistoryTest, SuccessIsActiveAndAnswersFourYesesAndNoRefreshYet) {
  AppendOk(Success("a", "c-1", "s-1"));

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(c.patient_id(), "p-1");
  EXPECT_EQ(c.current_session_id(), "s-1");
  EXPECT_EQ(c.source().name(), "Epic MyChart – Northwind Health");
  EXPECT_FALSE(c.degraded());
  EXPECT_FALSE(c.has_last_failure());
  EXPECT_EQ(c.event_count(), 7u);
  EXPECT_EQ(c.late_event_count(), 0u);
  EXPECT_EQ(c.last_event().event_id(), "a-7");
  EXPECT_TRUE(absl::StrContains(c.summary(), "retrieval")) << c.summary();
  EXPECT_EQ(Listed("c-1").state(), v1::CONNECTION_STATE_ACTIVE);

  SessionDiagnosis d = Diagnose("s-1");
  ExpectAnswers(d, kYes, kYes, kYes, kYes, kUnknown);
  EXPECT_EQ(d.refresh_failed_later().note(), "no refresh yet");
  EXPECT_EQ(d.reached_portal().evidence().event_id(), "a-2");
  EXPECT_EQ(d.signed_in().evidence().event_id(), "a-3");
  EXPECT_EQ(d.approved_access().evidence().event_id(), "a-4");
  EXPECT_EQ(d.token_exchanged().evidence().event_id(), "a-7");
  EXPECT_EQ(d.token_exchanged().evidence().position(), 7u);
  EXPECT_EQ(d.furthest_step(), v1::STEP_TOKEN_EXCHANGE);
  EXPECT_FALSE(d.has_root_cause());
  EXPECT_FALSE(d.abandoned());
  EXPECT_EQ(d.event_count(), 7u);
  EXPECT_EQ(d.connection_id(), "c-1");

  uint64_t refresh = AppendOne(
      Ev("r1", "c-1", "", t0_ + absl::Minutes(30), v1::STEP_TOKEN_REFRESH)
          .Succeeded());
  d = Diagnose("s-1");
  ExpectAnswers(d, kYes, kYes, kYes, kYes, kNo);
  EXPECT_EQ(d.refresh_failed_later().evidence().position(), refresh);
  EXPECT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_ACTIVE);
}

// --- 1b. Patient declined ---------------------------------------------------

TEST_F(HistoryTest, DeclinedConsentIsDeniedWithPatientDeclinedRootCause) {
  AppendOk({
      Ev("d1", "c-1", "s-1", t0_, v1::STEP_PORTAL_REDIRECT).Started(),
      Ev("d2", "c-1", "s-1", t0_ + absl::Seconds(2), v1::STEP_PORTAL_REDIRECT)
          .Succeeded(),
      Ev("d3", "c-1", "s-1", t0_ + absl::Seconds(40), v1::STEP_SIGN_IN)
          .Succeeded(),
      Ev("d4", "c-1", "s-1", t0_ + absl::Seconds(70), v1::STEP_CONSENT)
          .Denied("access_denied"),
      Ev("d5", "c-1", "s-1", t0_ + absl::Seconds(71), v1::STEP_OAUTH_CALLBACK)
          .Denied("access_denied"),
  });

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_DENIED);
  EXPECT_EQ(c.last_failure().error_code(), "access_denied");
  EXPECT_EQ(c.last_failure().category(), v1::FAILURE_CATEGORY_PATIENT_DECLINED);
  EXPECT_EQ(c.last_failure().event().event_id(), "d5");
  EXPECT_EQ(Listed("c-1").state(), v1::CONNECTION_STATE_DENIED);

  SessionDiagnosis d = Diagnose("s-1");
  ExpectAnswers(d, kYes, kYes, kNo, kNo, kUnknown);
  EXPECT_EQ(d.approved_access().evidence().event_id(), "d4");
  EXPECT_EQ(d.furthest_step(), v1::STEP_OAUTH_CALLBACK);
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "access_denied");
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_PATIENT_DECLINED);
  EXPECT_EQ(d.root_cause().event().event_id(), "d4");
  EXPECT_EQ(d.root_cause().event().step(), v1::STEP_CONSENT);
  EXPECT_EQ(d.root_cause().event().request_id(), "req-d4");
  EXPECT_EQ(TimeOf(d.root_cause().event().occurred_at()),
            t0_ + absl::Seconds(70));
  EXPECT_FALSE(d.abandoned());
}

TEST_F(HistoryTest, DeclineAloneStillInfersPortalAndSignIn) {
  AppendOk(
      {Ev("d1", "c-2", "s-2", t0_, v1::STEP_CONSENT).Denied("access_denied")});
  EXPECT_EQ(GetConnection("c-2").state(), v1::CONNECTION_STATE_DENIED);
  SessionDiagnosis d = Diagnose("s-2");
  ExpectAnswers(d, kYes, kYes, kNo, kNo, kUnknown);
  EXPECT_EQ(d.reached_portal().evidence().event_id(), "d1");
  EXPECT_EQ(d.furthest_step(), v1::STEP_CONSENT);
}

// --- 1c. OAuth error at the callback ----------------------------------------

TEST_F(HistoryTest, OAuthErrorAtCallbackIsFailedConfiguration) {
  AppendOk({
      Ev("f1", "c-1", "s-1", t0_, v1::STEP_PORTAL_REDIRECT).Started(),
      Ev("f2", "c-1", "s-1", t0_ + absl::Seconds(1), v1::STEP_PORTAL_REDIRECT)
          .Succeeded(),
      Ev("f3", "c-1", "s-1", t0_ + absl::Seconds(30), v1::STEP_SIGN_IN)
          .Succeeded(),
      Ev("f4", "c-1", "s-1", t0_ + absl::Seconds(50), v1::STEP_OAUTH_CALLBACK)
          .Failed("invalid_scope", 0, "scope patient/*.write is not allowed"),
  });

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_FAILED);
  EXPECT_EQ(c.last_failure().category(), v1::FAILURE_CATEGORY_CONFIGURATION);
  EXPECT_TRUE(absl::StrContains(c.summary(), "invalid_scope")) << c.summary();
  EXPECT_EQ(Listed("c-1").state(), v1::CONNECTION_STATE_FAILED);

  SessionDiagnosis d = Diagnose("s-1");
  ExpectAnswers(d, kYes, kYes, kNo, kNo, kUnknown);
  EXPECT_EQ(d.approved_access().evidence().event_id(), "f4");
  EXPECT_EQ(d.furthest_step(), v1::STEP_OAUTH_CALLBACK);
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "invalid_scope");
  EXPECT_EQ(d.root_cause().error_description(),
            "scope patient/*.write is not allowed");
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_CONFIGURATION);
}

// --- 1d. Refresh failures ---------------------------------------------------

TEST_F(HistoryTest, DefinitiveRefreshFailureNeedsReconnect) {
  AppendOk(Success("a", "c-1", "s-1"));
  AppendOne(Ev("r1", "c-1", "", t0_ + absl::Minutes(30), v1::STEP_TOKEN_REFRESH)
                .Succeeded());
  uint64_t failed = AppendOne(
      Ev("r2", "c-1", "", t0_ + absl::Minutes(90), v1::STEP_TOKEN_REFRESH)
          .Failed("invalid_grant", 400, "refresh token is invalid"));

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(c.reconnect_reason(), v1::RECONNECT_REASON_EXPIRED_OR_REVOKED);
  EXPECT_FALSE(c.degraded());
  EXPECT_EQ(c.last_failure().error_code(), "invalid_grant");
  EXPECT_EQ(c.last_failure().category(), v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
  EXPECT_EQ(Listed("c-1").state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);

  SessionDiagnosis d = Diagnose("s-1");
  ExpectAnswers(d, kYes, kYes, kYes, kYes, kYes);
  EXPECT_EQ(d.refresh_failed_later().evidence().position(), failed);
  EXPECT_EQ(d.refresh_failed_later().evidence().event_id(), "r2");
  EXPECT_EQ(d.refresh_failed_later().evidence().outcome(), v1::OUTCOME_FAILED);
  EXPECT_FALSE(d.has_root_cause());  // the attempt itself did not fail
}

TEST_F(HistoryTest, TransientRefreshFailuresKeepActiveDegradedUntilSuccess) {
  AppendOk(Success("a", "c-1", "s-1"));
  uint64_t first = AppendOne(
      Ev("r1", "c-1", "", t0_ + absl::Minutes(20), v1::STEP_TOKEN_REFRESH)
          .Failed("server_error", 503));
  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_TRUE(c.degraded());
  EXPECT_EQ(c.consecutive_refresh_failures(), 1u);
  EXPECT_EQ(c.last_failure().category(), v1::FAILURE_CATEGORY_TRANSIENT);

  // A transient code without an HTTP status counts the same way.
  AppendOne(Ev("r2", "c-1", "", t0_ + absl::Minutes(25), v1::STEP_TOKEN_REFRESH)
                .Failed("temporarily_unavailable"));
  c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_TRUE(c.degraded());
  EXPECT_EQ(c.consecutive_refresh_failures(), 2u);
  EXPECT_TRUE(absl::StrContains(c.summary(), "2 refresh")) << c.summary();
  EXPECT_TRUE(Listed("c-1").degraded());

  AppendOne(Ev("r3", "c-1", "", t0_ + absl::Minutes(30), v1::STEP_TOKEN_REFRESH)
                .Succeeded());
  c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_FALSE(c.degraded());
  EXPECT_EQ(c.consecutive_refresh_failures(), 0u);

  SessionDiagnosis d = Diagnose("s-1");
  EXPECT_EQ(d.refresh_failed_later().answer(), kYes);
  EXPECT_EQ(d.refresh_failed_later().evidence().position(), first);
}

// --- 2. Root cause ----------------------------------------------------------

TEST_F(HistoryTest, RootCauseIsTheFirstFailureEvenWhenAppendedLast) {
  auto attempt = Success("a", "c-1", "s-1");
  attempt.resize(5);  // up to the callback with a code
  AppendOk(attempt);
  absl::Time exchange = t0_ + absl::Minutes(5);
  AuthEvent timeout = Ev("x1", "c-1", "s-1", exchange, v1::STEP_TOKEN_EXCHANGE)
                          .Failed("timeout", 504, "token endpoint timed out");
  AuthEvent used = Ev("x2", "c-1", "s-1", exchange + absl::Seconds(3),
                      v1::STEP_TOKEN_EXCHANGE)
                       .Failed("invalid_grant", 400, "code already used");
  AppendOk({used});
  uint64_t timeout_position = AppendOne(timeout);

  SessionDiagnosis d = Diagnose("s-1");
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "timeout");
  EXPECT_EQ(d.root_cause().http_status(), 504);
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_TRANSIENT);
  EXPECT_EQ(d.root_cause().event().position(), timeout_position);
  EXPECT_EQ(d.root_cause().event().request_id(), "req-x1");
  EXPECT_EQ(TimeOf(d.root_cause().event().occurred_at()), exchange);
  ExpectAnswers(d, kYes, kYes, kYes, kNo, kUnknown);
  EXPECT_EQ(d.token_exchanged().evidence().event_id(), "x1");

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_FAILED);
  EXPECT_EQ(c.late_event_count(), 1u);
  EXPECT_EQ(c.last_failure().error_code(), "invalid_grant");  // the newest

  // The same failures in their natural order give the same root cause.
  attempt = Success("b", "c-2", "s-2");
  attempt.resize(5);
  AppendOk(attempt);
  AuthEvent t2 = timeout, u2 = used;
  t2.set_event_id("y1");
  t2.set_connection_id("c-2");
  t2.set_session_id("s-2");
  u2.set_event_id("y2");
  u2.set_connection_id("c-2");
  u2.set_session_id("s-2");
  AppendOk({t2, u2});
  EXPECT_EQ(Diagnose("s-2").root_cause().error_code(), "timeout");
  EXPECT_EQ(GetConnection("c-2").late_event_count(), 0u);
}

// --- 3. Late and same-time events -------------------------------------------

TEST_F(HistoryTest, LateEventForEarlierStepNeverMovesStateBack) {
  auto attempt = Success("a", "c-1", "s-1");
  AuthEvent sign_in = attempt[2];
  attempt.erase(attempt.begin() + 2);
  AppendOk(attempt);
  ASSERT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_ACTIVE);

  uint64_t late = AppendOne(sign_in);
  AppendOne(Ev("late-redirect", "c-1", "s-1", t0_ - absl::Seconds(5),
               v1::STEP_PORTAL_REDIRECT)
                .Started());
  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(c.late_event_count(), 2u);
  EXPECT_EQ(c.event_count(), 8u);
  EXPECT_EQ(c.last_event().event_id(), "a-7");
  EXPECT_EQ(TimeOf(c.first_seen_at()), t0_ - absl::Seconds(5));

  // The late events take their place in the timeline.
  v1::ListEventsRequest request;
  request.mutable_filter()->set_connection_id("c-1");
  request.set_oldest_first(true);
  std::vector<std::string> want = {"late-redirect", "a-1", "a-2", "a-3",
                                   "a-4",           "a-5", "a-6", "a-7"};
  EXPECT_EQ(Ids(ListAll(request)), want);
  request.set_oldest_first(false);
  std::reverse(want.begin(), want.end());
  EXPECT_EQ(Ids(ListAll(request)), want);
  EXPECT_EQ(Diagnose("s-1").signed_in().evidence().position(), late);
}

TEST_F(HistoryTest, LateRefreshFailureDoesNotUndoALaterSuccess) {
  AppendOk(Success("a", "c-1", "s-1"));
  AppendOne(
      Ev("r-ok", "c-1", "", t0_ + absl::Minutes(60), v1::STEP_TOKEN_REFRESH)
          .Succeeded());
  AppendOne(
      Ev("r-late", "c-1", "", t0_ + absl::Minutes(50), v1::STEP_TOKEN_REFRESH)
          .Failed("invalid_grant", 400));
  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(c.late_event_count(), 1u);
  EXPECT_EQ(c.last_event().event_id(), "r-ok");
  EXPECT_EQ(c.last_failure().event().event_id(), "r-late");
}

TEST_F(HistoryTest, SameTimestampIsOrderedByPosition) {
  AppendOk(Success("a", "c-1", "s-1"));
  AppendOk(Success("b", "c-2", "s-2"));
  absl::Time same = t0_ + absl::Minutes(40) + absl::Nanoseconds(123456789);

  // c-1: failure first, then success, in two appends.
  AppendOne(Ev("c1-fail", "c-1", "", same, v1::STEP_TOKEN_REFRESH)
                .Failed("invalid_grant", 400));
  AppendOne(Ev("c1-ok", "c-1", "", same, v1::STEP_TOKEN_REFRESH).Succeeded());
  // c-2: success first, then failure, in one batch.
  AppendOk({Ev("c2-ok", "c-2", "", same, v1::STEP_TOKEN_REFRESH).Succeeded(),
            Ev("c2-fail", "c-2", "", same, v1::STEP_TOKEN_REFRESH)
                .Failed("invalid_grant", 400)});

  Connection c1 = GetConnection("c-1");
  EXPECT_EQ(c1.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(c1.last_event().event_id(), "c1-ok");
  EXPECT_EQ(c1.late_event_count(), 0u);
  Connection c2 = GetConnection("c-2");
  EXPECT_EQ(c2.state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(c2.last_event().event_id(), "c2-fail");
  EXPECT_EQ(c2.late_event_count(), 0u);

  v1::ListEventsRequest request;
  request.mutable_filter()->set_connection_id("c-1");
  request.set_page_size(2);
  EXPECT_EQ(Ids(ListEvents(request)),
            (std::vector<std::string>{"c1-ok", "c1-fail"}));
}

// --- 4. Abandonment
// -----------------------------------------------------------

TEST_F(HistoryTest, SilentAttemptIsAbandonedAndANewerAttemptSupersedesIt) {
  AppendOne(Ev("old-1", "c-1", "s-old", absl::Now() - absl::Hours(2),
               v1::STEP_PORTAL_REDIRECT)
                .Started());
  uint64_t head = Head();

  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ABANDONED);
  EXPECT_EQ(Listed("c-1").state(), v1::CONNECTION_STATE_ABANDONED);
  SessionDiagnosis old = Diagnose("s-old");
  EXPECT_TRUE(old.abandoned());
  ExpectAnswers(old, kNo, kNo, kNo, kNo, kUnknown);
  EXPECT_EQ(old.reached_portal().evidence().event_id(), "old-1");
  EXPECT_EQ(old.furthest_step(), v1::STEP_PORTAL_REDIRECT);
  EXPECT_FALSE(old.has_root_cause());
  EXPECT_EQ(Head(), head);  // derived when read: nothing was written

  absl::Time start = absl::Now() - absl::Minutes(2);
  AppendOne(
      Ev("new-1", "c-1", "s-new", start, v1::STEP_PORTAL_REDIRECT).Started());
  c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_EQ(c.current_session_id(), "s-new");
  SessionDiagnosis fresh = Diagnose("s-new");
  EXPECT_FALSE(fresh.abandoned());
  EXPECT_EQ(fresh.reached_portal().answer(), kUnknown);

  auto rest = SuccessfulAttempt("n", "p-1", "c-1", "s-new", start);
  rest.erase(rest.begin());    // the redirect STARTED is already there
  for (AuthEvent& e : rest) {  // one second apart, all in the past
    absl::Time t = start + absl::Seconds(std::stoi(e.event_id().substr(2)));
    *e.mutable_occurred_at() = Ts(t);
  }
  AppendOk(rest);
  EXPECT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(ListConnections("p-1").size(), 1u);

  // The old attempt stays in the history, diagnosed as before.
  SessionDiagnosis again = Diagnose("s-old");
  EXPECT_TRUE(again.abandoned());
  ExpectAnswers(again, kNo, kNo, kNo, kNo, kUnknown);
  v1::ListEventsRequest request;
  request.mutable_filter()->set_session_id("s-old");
  EXPECT_EQ(Ids(ListAll(request)), std::vector<std::string>{"old-1"});
}

class ShortStallTest : public HistoryTest {
 protected:
  ShortStallTest() : HistoryTest(absl::Seconds(1)) {}
};

TEST_F(ShortStallTest, AbandonmentFollowsTheStallWindowWithoutWrites) {
  AppendOne(
      Ev("s1", "c-1", "s-1", absl::Now(), v1::STEP_PORTAL_REDIRECT).Started());
  EXPECT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_FALSE(Diagnose("s-1").abandoned());
  uint64_t head = Head();

  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  EXPECT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_ABANDONED);
  SessionDiagnosis d = Diagnose("s-1");
  EXPECT_TRUE(d.abandoned());
  EXPECT_EQ(d.reached_portal().answer(), kNo);
  EXPECT_EQ(Head(), head);
}

// --- 5. Future-dated events
// ---------------------------------------------------

TEST_F(HistoryTest, FutureDatedEventIsKeptButCannotPinTheState) {
  AppendOk(Success("a", "c-1", "s-1"));
  absl::Time ahead = absl::Now() + absl::Hours(2) + absl::Nanoseconds(7);
  uint64_t future =
      AppendOne(Ev("future", "c-1", "", ahead, v1::STEP_TOKEN_REFRESH)
                    .Failed("invalid_grant", 400));
  ASSERT_NE(future, 0u);

  v1::ListEventsRequest request;
  request.mutable_filter()->set_connection_id("c-1");
  auto events = ListAll(request);
  ASSERT_EQ(events.size(), 8u);
  for (const auto& e : events) {
    EXPECT_EQ(e.future_dated(), e.event().event_id() == "future")
        << e.event().event_id();
  }
  EXPECT_EQ(events.front().event().event_id(), "future");
  EXPECT_EQ(TimeOf(events.front().event().occurred_at()), ahead);
  EXPECT_EQ(GetConnection("c-1").state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);

  // A newer event, earlier than `future` by the emitters' clocks, decides.
  AppendOne(
      Ev("now", "c-1", "", absl::Now(), v1::STEP_TOKEN_REFRESH).Succeeded());
  Connection c = GetConnection("c-1");
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(c.last_event().event_id(), "now");
  EXPECT_EQ(c.late_event_count(), 0u);
}

// --- 10. Unknown enum numbers and fields
// ----------------------------------------

// Deterministic bytes of `e`, unknown fields included.
std::string Bytes(const AuthEvent& e) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    e.SerializeToCodedStream(&coded);
  }
  return out;
}

TEST_F(HistoryTest, UnknownStepsOutcomesAndFieldsAreKeptAndChangeNothing) {
  AppendOk(Success("a", "c-1", "s-1"));
  AuthEvent step42 =
      Ev("u1", "c-1", "s-1", t0_ + absl::Minutes(30), v1::STEP_TOKEN_REFRESH)
          .Succeeded();
  step42.set_step(static_cast<v1::Step>(42));
  step42.set_outcome(static_cast<v1::Outcome>(9));
  step42.GetReflection()->MutableUnknownFields(&step42)->AddVarint(900, 7);
  step42.GetReflection()->MutableUnknownFields(&step42)->AddLengthDelimited(
      901, "from v2");
  AuthEvent outcome9 =
      Ev("u2", "c-1", "s-1", t0_ + absl::Minutes(31), v1::STEP_CONSENT)
          .Succeeded();
  outcome9.set_outcome(static_cast<v1::Outcome>(9));
  AuthEvent refresh9 =
      Ev("u3", "c-1", "", t0_ + absl::Minutes(32), v1::STEP_TOKEN_REFRESH)
          .Succeeded();
  refresh9.set_outcome(static_cast<v1::Outcome>(9));
  auto appended = AppendOk({step42, outcome9, refresh9});
  ASSERT_EQ(appended.results_size(), 3);

  const uint64_t position = appended.results(0).position();

  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round == 0 ? "before restart" : "after restart");
    v1::ListEventsRequest request;
    request.mutable_filter()->set_connection_id("c-1");
    std::vector<v1::RecordedEvent> events = ListAll(request);
    ASSERT_EQ(events.size(), 10u);
    const AuthEvent* got[3] = {nullptr, nullptr, nullptr};
    for (const auto& e : events) {
      if (e.event().event_id() == "u1") got[0] = &e.event();
      if (e.event().event_id() == "u2") got[1] = &e.event();
      if (e.event().event_id() == "u3") got[2] = &e.event();
    }
    ASSERT_TRUE(got[0] && got[1] && got[2]);
    EXPECT_EQ(static_cast<int>(got[0]->step()), 42);
    EXPECT_EQ(static_cast<int>(got[0]->outcome()), 9);
    const auto& unknown = got[0]->GetReflection()->GetUnknownFields(*got[0]);
    ASSERT_EQ(unknown.field_count(), 2);
    EXPECT_EQ(unknown.field(0).number(), 900);
    EXPECT_EQ(unknown.field(0).varint(), 7u);
    EXPECT_EQ(unknown.field(1).number(), 901);
    EXPECT_EQ(unknown.field(1).length_delimited(), "from v2");
    EXPECT_EQ(Bytes(*got[0]), Bytes(step42));
    EXPECT_EQ(Bytes(*got[1]), Bytes(outcome9));
    EXPECT_EQ(Bytes(*got[2]), Bytes(refresh9));

    Connection c = GetConnection("c-1");
    EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
    EXPECT_FALSE(c.degraded());
    EXPECT_FALSE(c.has_last_failure());
    EXPECT_EQ(c.current_session_id(), "s-1");
    EXPECT_EQ(c.event_count(), 10u);
    EXPECT_EQ(static_cast<int>(c.last_event().outcome()), 9);

    // A refresh with an unknown outcome is not a success either.
    SessionDiagnosis d = Diagnose("s-1");
    ExpectAnswers(d, kYes, kYes, kYes, kYes, kUnknown);
    EXPECT_EQ(d.furthest_step(), v1::STEP_TOKEN_EXCHANGE);
    EXPECT_FALSE(d.has_root_cause());
    EXPECT_EQ(d.event_count(), 9u);

    // A retry, unknown parts included, is a harmless duplicate.
    auto retry = AppendOk({step42});
    ASSERT_EQ(retry.results_size(), 1);
    EXPECT_TRUE(retry.results(0).duplicate());
    EXPECT_EQ(retry.results(0).position(), position);

    if (round == 0) server_.Restart();
  }
}

// --- 12. Unattributed callbacks ----------------------------------------------

TEST_F(HistoryTest, UnattributedCallbackIsKeptFindableAndCategorized) {
  AuthEvent orphan =
      Event("o1")
          .Session("s-orphan")
          .Request("req-orphan")
          .At(t0_)
          .Step(v1::STEP_OAUTH_CALLBACK)
          .Failed("state_mismatch", 0, "state matches no session");
  AuthEvent no_session = Event("o2")
                             .Request("req-orphan-2")
                             .At(t0_ + absl::Seconds(1))
                             .Step(v1::STEP_OAUTH_CALLBACK)
                             .Failed("state_mismatch");
  uint64_t position = AppendOk({orphan, no_session}).results(0).position();
  ASSERT_EQ(position, 1u);

  v1::ListEventsRequest request;
  request.mutable_filter()->set_session_id("s-orphan");
  EXPECT_EQ(Ids(ListAll(request)), std::vector<std::string>{"o1"});
  request.mutable_filter()->Clear();
  request.mutable_filter()->set_request_id("req-orphan");
  EXPECT_EQ(Ids(ListAll(request)), std::vector<std::string>{"o1"});
  request.mutable_filter()->set_request_id("req-orphan-2");
  EXPECT_EQ(Ids(ListAll(request)), std::vector<std::string>{"o2"});

  SessionDiagnosis d = Diagnose("s-orphan");
  EXPECT_TRUE(d.patient_id().empty());
  EXPECT_TRUE(d.connection_id().empty());
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "state_mismatch");
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_UNATTRIBUTED);
  EXPECT_EQ(d.root_cause().event().position(), position);
  EXPECT_EQ(d.approved_access().answer(), kNo);
  EXPECT_EQ(d.token_exchanged().answer(), kNo);
}

}  // namespace
}  // namespace authtrail::testing
