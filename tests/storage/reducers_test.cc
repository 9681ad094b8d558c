// Tests of the reducers against the rules of the projections
// (docs/FAILURES.md): connection states, time order, late and
// future-dated events, open refreshes, read-time views, session diagnosis
// and determinism.
#include "storage/reducers.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "storage/failure_catalog.h"
#include "storage/store_internal.h"
#include "tests/testing/events.h"

namespace authtrail::storage {
namespace {

using authtrail::testing::Event;
using authtrail::testing::SuccessfulAttempt;
using authtrail::testing::Ts;
using v1::AuthEvent;
using v1::Connection;
using v1::RecordedEvent;
using v1::SessionDiagnosis;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);
constexpr absl::Duration kStall = absl::Minutes(30);

constexpr auto kUnknownStep = static_cast<v1::Step>(42);
constexpr auto kUnknownOutcome = static_cast<v1::Outcome>(9);

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// An event as the store records it: `recorded_at` by the server's clock,
// flagged future-dated the way the store flags it.
RecordedEvent Recorded(uint64_t position, const AuthEvent& event,
                       absl::Time recorded_at) {
  RecordedEvent recorded;
  recorded.set_position(position);
  *recorded.mutable_recorded_at() = Ts(recorded_at);
  *recorded.mutable_event() = event;
  recorded.set_future_dated(
      IsFutureDated(event.occurred_at(), recorded.recorded_at()));
  return recorded;
}

// Recorded one second after it occurred.
RecordedEvent Recorded(uint64_t position, const AuthEvent& event) {
  return Recorded(position, event,
                  TimeOf(event.occurred_at()) + absl::Seconds(1));
}

// An event of patient p-1's connection c-1.
Event Ev(std::string id, absl::Time at) {
  Event e(std::move(id));
  e.Patient("p-1").Connection("c-1").At(at);
  return e;
}

Event Attempt(std::string id, std::string session, v1::Step step,
              absl::Time at) {
  Event e = Ev(std::move(id), at);
  e.Session(std::move(session)).Step(step);
  return e;
}

Event Refresh(std::string id, absl::Time at, std::string request = "") {
  Event e = Ev(std::move(id), at);
  e.Step(v1::STEP_TOKEN_REFRESH).Request(std::move(request));
  return e;
}

ReadPolicy At(absl::Time now, absl::Duration stall = kStall) {
  ReadPolicy policy;
  policy.stall_window = stall;
  policy.now = now;
  return policy;
}

bool Contains(const std::string& text, const std::string& part) {
  return absl::StrContains(text, part);
}

// ---------------------------------------------------------------------
// Ordering primitives.

OrderKey Key(int64_t seconds, int32_t nanos, uint64_t position) {
  OrderKey key;
  key.mutable_time()->set_seconds(seconds);
  key.mutable_time()->set_nanos(nanos);
  key.set_position(position);
  return key;
}

TEST(OrderTest, TimeThenPosition) {
  EXPECT_TRUE(Before(Key(1, 0, 9), Key(2, 0, 1)));
  EXPECT_TRUE(Before(Key(1, 1, 9), Key(1, 2, 1)));
  EXPECT_TRUE(Before(Key(1, 1, 1), Key(1, 1, 2)));
  EXPECT_FALSE(Before(Key(1, 1, 2), Key(1, 1, 2)));
  EXPECT_FALSE(Before(Key(1, 1, 2), Key(1, 1, 1)));
  EXPECT_TRUE(Before(Key(-1, 999999999, 5), Key(0, 0, 1)));
}

TEST(OrderTest, IsFutureDatedToleranceEdges) {
  google::protobuf::Timestamp recorded = Ts(kT0);
  EXPECT_FALSE(IsFutureDated(Ts(kT0), recorded));
  EXPECT_FALSE(IsFutureDated(Ts(kT0 - absl::Hours(48)), recorded));
  EXPECT_FALSE(IsFutureDated(Ts(kT0 + absl::Minutes(5)), recorded));
  EXPECT_TRUE(IsFutureDated(Ts(kT0 + absl::Minutes(5) + absl::Nanoseconds(1)),
                            recorded));
  EXPECT_TRUE(IsFutureDated(Ts(kT0 + absl::Hours(3)), recorded));
}

TEST(OrderTest, IsFutureDatedCountsNanosAcrossSeconds) {
  absl::Time recorded = kT0 + absl::Nanoseconds(999999999);
  EXPECT_FALSE(IsFutureDated(Ts(recorded + absl::Minutes(5)), Ts(recorded)));
  EXPECT_TRUE(IsFutureDated(
      Ts(recorded + absl::Minutes(5) + absl::Nanoseconds(1)), Ts(recorded)));
}

TEST(OrderTest, OrderKeyOfFutureDatedEventUsesRecordedAt) {
  AuthEvent e = Refresh("r", kT0 + absl::Hours(3)).Succeeded();
  RecordedEvent future = Recorded(5, e, kT0);
  ASSERT_TRUE(future.future_dated());
  OrderKey key = OrderKeyOf(future);
  EXPECT_EQ(TimeOf(key.time()), kT0);
  EXPECT_EQ(key.position(), 5u);

  RecordedEvent normal = Recorded(6, Refresh("r2", kT0).Succeeded());
  ASSERT_FALSE(normal.future_dated());
  EXPECT_EQ(TimeOf(OrderKeyOf(normal).time()), kT0);
}

// ---------------------------------------------------------------------
// The connection projection.

class ConnectionReducerTest : public ::testing::Test {
 protected:
  // Appends `event` as the log's next event.
  RecordedEvent Apply(const AuthEvent& event) {
    return ApplyRecorded(Recorded(++position_, event));
  }

  RecordedEvent ApplyRecordedAt(const AuthEvent& event,
                                absl::Time recorded_at) {
    return ApplyRecorded(Recorded(++position_, event, recorded_at));
  }

  RecordedEvent ApplyRecorded(const RecordedEvent& recorded) {
    ReduceConnection(recorded, &record_);
    return recorded;
  }

  void ApplyAll(const std::vector<AuthEvent>& events) {
    for (const AuthEvent& e : events) Apply(e);
  }

  // Session s-1 goes from redirect to tokens, T0 to T0+6m; positions 1-7.
  void Connect() {
    ApplyAll(SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0));
    ASSERT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  }

  Connection View(absl::Time now, absl::Duration stall = kStall) const {
    return ViewConnection(record_, At(now, stall));
  }

  const Connection& view() const { return record_.view(); }

  ConnectionRecord record_;
  uint64_t position_ = 0;
};

// Rule 1.
TEST_F(ConnectionReducerTest, SuccessfulAttemptMakesConnectionActive) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  Apply(events[0]);
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    Apply(events[i]);
    EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING) << i;
  }
  Apply(events.back());

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().connection_id(), "c-1");
  EXPECT_EQ(view().patient_id(), "p-1");
  EXPECT_EQ(view().source().id(), "src-epic");
  EXPECT_EQ(view().current_session_id(), "s-1");
  EXPECT_EQ(view().event_count(), 7u);
  EXPECT_EQ(view().late_event_count(), 0u);
  EXPECT_EQ(view().last_event().position(), 7u);
  EXPECT_EQ(view().last_event().step(), v1::STEP_TOKEN_EXCHANGE);
  EXPECT_FALSE(view().has_last_failure());
  EXPECT_FALSE(view().degraded());
  EXPECT_EQ(TimeOf(view().first_seen_at()), kT0);
  EXPECT_EQ(TimeOf(view().last_seen_at()), kT0 + absl::Minutes(6));
}

// Rule 2.
TEST_F(ConnectionReducerTest, DeclineAtConsentMakesConnectionDenied) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Succeeded());
  Apply(Attempt("e2", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(1))
            .Succeeded());
  Apply(Attempt("e3", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(2))
            .Denied("access_denied"));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_DENIED);
  ASSERT_TRUE(view().has_last_failure());
  EXPECT_EQ(view().last_failure().error_code(), "access_denied");
  EXPECT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_PATIENT_DECLINED);
  EXPECT_EQ(view().last_failure().event().position(), 3u);
  EXPECT_EQ(View(kT0 + absl::Hours(5)).state(), v1::CONNECTION_STATE_DENIED);
}

// Rule 3.
TEST_F(ConnectionReducerTest, CallbackErrorFailsWithItsCategory) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Succeeded());
  Apply(Attempt("e2", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(1))
            .Failed("invalid_scope", 400, "scope patient/*.write refused"));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_FAILED);
  ASSERT_TRUE(view().has_last_failure());
  EXPECT_EQ(view().last_failure().error_code(), "invalid_scope");
  EXPECT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_CONFIGURATION);
  EXPECT_EQ(view().last_failure().http_status(), 400);
  EXPECT_EQ(view().last_failure().error_description(),
            "scope patient/*.write refused");
  Connection later = View(kT0 + absl::Hours(5));
  EXPECT_EQ(later.state(), v1::CONNECTION_STATE_FAILED);
  EXPECT_TRUE(Contains(later.summary(), "invalid_scope")) << later.summary();
}

// Rule 4.
TEST_F(ConnectionReducerTest, FailedWithAccessDeniedCodeIsDenied) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Succeeded());
  Apply(Attempt("e2", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(1))
            .Failed("access_denied"));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_DENIED);
  EXPECT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_PATIENT_DECLINED);
}

TEST_F(ConnectionReducerTest, ExchangeFailureMakesConnectionFailed) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.pop_back();
  ApplyAll(events);
  Apply(Attempt("x", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(6))
            .Failed("invalid_grant", 400));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_FAILED);
  EXPECT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
}

// Rule 5.
TEST_F(ConnectionReducerTest, TransientRefreshFailureKeepsActiveDegraded) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("server_error", 500));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_TRUE(view().degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(), 1u);
  EXPECT_EQ(view().last_failure().category(), v1::FAILURE_CATEGORY_TRANSIENT);

  // invalid_grant, but answered with 503: the source was down.
  Apply(Refresh("r2", kT0 + absl::Hours(2)).Failed("invalid_grant", 503));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_TRUE(view().degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(), 2u);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_UNSPECIFIED);

  Connection shown = View(kT0 + absl::Hours(3));
  EXPECT_EQ(shown.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_TRUE(Contains(shown.summary(), "2 refresh")) << shown.summary();
  EXPECT_FALSE(Contains(shown.summary(), "record retrieval"));
}

TEST_F(ConnectionReducerTest, RefreshSuccessResetsDegradedAndCount) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("timeout"));
  Apply(Refresh("r2", kT0 + absl::Hours(2)).Failed("temporarily_unavailable"));
  ASSERT_EQ(view().consecutive_refresh_failures(), 2u);
  Apply(Refresh("r3", kT0 + absl::Hours(3)).Succeeded());

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_FALSE(view().degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(), 0u);
  // The last failure is history, still shown.
  EXPECT_EQ(view().last_failure().error_code(), "temporarily_unavailable");

  Apply(Refresh("r4", kT0 + absl::Hours(4)).Failed("timeout"));
  EXPECT_EQ(view().consecutive_refresh_failures(), 1u);
}

// Rule 6.
TEST_F(ConnectionReducerTest, InvalidGrantOnRefreshNeedsReconnect) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("invalid_grant", 400));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_EXPIRED_OR_REVOKED);
  EXPECT_FALSE(view().degraded());
  EXPECT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
  Connection shown = View(kT0 + absl::Hours(2));
  EXPECT_TRUE(Contains(shown.summary(), "expired or was revoked"))
      << shown.summary();
}

TEST_F(ConnectionReducerTest, TokenRevokedOnRefreshNeedsReconnectRevoked) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("token_revoked", 400));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_REVOKED);
}

TEST_F(ConnectionReducerTest, ExpiredRefreshTokenNeedsReconnectExpired) {
  Connect();
  Apply(
      Refresh("r1", kT0 + absl::Hours(1)).Failed("refresh_token_expired", 400));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_EXPIRED);
}

TEST_F(ConnectionReducerTest, DefinitiveRefreshFailureClearsDegraded) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("server_error", 502));
  ASSERT_TRUE(view().degraded());
  Apply(Refresh("r2", kT0 + absl::Hours(2)).Failed("invalid_grant", 400));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_FALSE(view().degraded());
}

TEST_F(ConnectionReducerTest, NewAttemptAfterNeedsReconnectIsActive) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("invalid_grant", 400));
  ApplyAll(SuccessfulAttempt("b", "p-1", "c-1", "s-2", kT0 + absl::Hours(2)));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().current_session_id(), "s-2");
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_UNSPECIFIED);
}

// `degraded` means "ACTIVE but the last refreshes failed transiently"; a
// connection that needs a reconnect is not degraded, it is broken.
TEST_F(ConnectionReducerTest,
       TransientRefreshFailureAfterReconnectNeededIsNotDegraded) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("invalid_grant", 400));
  Apply(Refresh("r2", kT0 + absl::Hours(2)).Failed("server_error", 503));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_FALSE(view().degraded());
}

TEST_F(ConnectionReducerTest, DeniedRefreshNeedsReconnectAndIsNotDegraded) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("server_error", 503));
  ASSERT_TRUE(view().degraded());
  Apply(Refresh("r2", kT0 + absl::Hours(2)).Denied("access_denied"));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_REVOKED);
  EXPECT_FALSE(view().degraded());
}

// `degraded` and its summary say "failed transiently; the source may be
// down". A configuration error on refresh is not transient and retrying
// will not fix it: the summary must not send support to the source.
TEST_F(ConnectionReducerTest, ConfigurationRefreshFailureIsNotTransient) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("invalid_client", 401));
  ASSERT_EQ(view().last_failure().category(),
            v1::FAILURE_CATEGORY_CONFIGURATION);
  Connection shown = View(kT0 + absl::Hours(2));
  EXPECT_FALSE(Contains(shown.summary(), "transiently")) << shown.summary();
}

// A refresh refused with access_denied is the patient or source revoking
// access, as a DENIED refresh is; not a transient hiccup.
TEST_F(ConnectionReducerTest, RefreshFailedWithAccessDeniedNeedsReconnect) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("access_denied", 403));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().reconnect_reason(), v1::RECONNECT_REASON_REVOKED);
  EXPECT_FALSE(view().degraded());
}

// Rule 7.
TEST_F(ConnectionReducerTest, LateEventDoesNotMoveStateAndIsCounted) {
  Connect();
  // Older than everything seen: a redirect of a new attempt that would
  // supersede s-1 had it been the newest.
  Apply(Attempt("late", "s-2", v1::STEP_PORTAL_REDIRECT, kT0 - absl::Minutes(1))
            .Started());

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().current_session_id(), "s-1");
  EXPECT_EQ(view().late_event_count(), 1u);
  EXPECT_EQ(view().event_count(), 8u);
  EXPECT_EQ(view().last_event().position(), 7u);
  // It takes its place in the timeline.
  EXPECT_EQ(TimeOf(view().first_seen_at()), kT0 - absl::Minutes(1));
  EXPECT_EQ(TimeOf(view().last_seen_at()), kT0 + absl::Minutes(6));
}

TEST_F(ConnectionReducerTest, LateFailureDoesNotMoveStateButIsLastFailure) {
  Connect();
  Apply(Attempt("late", "s-1", v1::STEP_CONSENT, kT0 + absl::Seconds(150))
            .Denied("access_denied"));

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().late_event_count(), 1u);
  ASSERT_TRUE(view().has_last_failure());
  EXPECT_EQ(view().last_failure().event().position(), 8u);
}

TEST_F(ConnectionReducerTest, LateFailureIsLastFailureOnlyIfNewestByTime) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Minutes(60)).Failed("server_error", 500));
  Apply(Refresh("r2", kT0 + absl::Minutes(120)).Succeeded());
  ASSERT_EQ(view().last_failure().event().position(), 8u);

  // Late and older than the last failure: history only.
  Apply(Refresh("r0", kT0 + absl::Minutes(30)).Failed("timeout"));
  EXPECT_EQ(view().last_failure().event().position(), 8u);
  EXPECT_EQ(view().last_failure().error_code(), "server_error");

  // Late, but newer than the last failure: the most recent failure.
  Apply(Refresh("r1b", kT0 + absl::Minutes(90)).Failed("connection_error"));
  EXPECT_EQ(view().last_failure().event().position(), 11u);
  EXPECT_EQ(view().last_failure().error_code(), "connection_error");

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_FALSE(view().degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(), 0u);
  EXPECT_EQ(view().late_event_count(), 2u);
  EXPECT_EQ(view().last_event().position(), 9u);
}

// Rule 8.
TEST_F(ConnectionReducerTest, TieOnOccurredAtIsBrokenByPosition) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  AuthEvent ok = Refresh("ok", t).Succeeded();
  AuthEvent bad = Refresh("bad", t).Failed("invalid_grant", 400);

  ConnectionRecord in_order = record_;
  ReduceConnection(Recorded(8, ok), &in_order);
  ReduceConnection(Recorded(9, bad), &in_order);
  EXPECT_EQ(in_order.view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(in_order.view().late_event_count(), 0u);
  EXPECT_EQ(in_order.view().last_event().position(), 9u);

  // Seen the other way round, position still decides.
  ConnectionRecord reversed = record_;
  ReduceConnection(Recorded(9, bad), &reversed);
  ReduceConnection(Recorded(8, ok), &reversed);
  EXPECT_EQ(reversed.view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(reversed.view().late_event_count(), 1u);
  EXPECT_EQ(reversed.view().last_event().position(), 9u);
}

TEST_F(ConnectionReducerTest, TieOnOccurredAtLaterPositionWins) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("bad", t).Failed("invalid_grant", 400));
  Apply(Refresh("ok", t).Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().late_event_count(), 0u);
}

// Rule 9.
TEST_F(ConnectionReducerTest, FutureDatedEventCannotPinTheLatestState) {
  Connect();
  // The emitter's clock is 3 hours ahead; the server recorded it at +10m.
  RecordedEvent future = ApplyRecordedAt(
      Refresh("future", kT0 + absl::Hours(3)).Failed("invalid_grant", 400),
      kT0 + absl::Minutes(10));
  ASSERT_TRUE(future.future_dated());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);

  // Later by the server's clock, earlier by occurred_at: it wins.
  Apply(Refresh("ok", kT0 + absl::Minutes(20)).Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().late_event_count(), 0u);
  EXPECT_EQ(view().last_event().position(), 9u);
  EXPECT_EQ(TimeOf(view().last_seen_at()), kT0 + absl::Minutes(20));
}

TEST_F(ConnectionReducerTest, EventWithinSkewToleranceKeepsItsOwnTime) {
  Connect();
  // 4 minutes ahead: not future-dated, ordered by occurred_at.
  RecordedEvent skewed = ApplyRecordedAt(
      Refresh("skewed", kT0 + absl::Minutes(14)).Failed("invalid_grant", 400),
      kT0 + absl::Minutes(10));
  ASSERT_FALSE(skewed.future_dated());
  Apply(Refresh("older", kT0 + absl::Minutes(12)).Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_NEEDS_RECONNECT);
  EXPECT_EQ(view().late_event_count(), 1u);
}

// Rule 10.
TEST_F(ConnectionReducerTest, NewSessionSupersedesAnOlderAttempt) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Succeeded());
  Apply(Attempt("e2", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(1))
            .Failed("invalid_scope"));
  ASSERT_EQ(view().state(), v1::CONNECTION_STATE_FAILED);

  Apply(Attempt("e3", "s-2", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(10))
            .Started());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_EQ(view().current_session_id(), "s-2");
  // The older attempt stays in the history.
  EXPECT_EQ(view().last_failure().error_code(), "invalid_scope");

  ApplyAll(
      SuccessfulAttempt("b", "p-1", "c-1", "s-2", kT0 + absl::Minutes(11)));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().current_session_id(), "s-2");
}

TEST_F(ConnectionReducerTest, NewSessionSupersedesAnAbandonedAttempt) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  ASSERT_EQ(View(kT0 + absl::Minutes(31)).state(),
            v1::CONNECTION_STATE_ABANDONED);

  Apply(Attempt("e2", "s-2", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Hours(1))
            .Started());
  Connection shown = View(kT0 + absl::Hours(1) + absl::Minutes(1));
  EXPECT_EQ(shown.state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_EQ(shown.current_session_id(), "s-2");
}

TEST_F(ConnectionReducerTest, EarlierStepOfFinishedAttemptDoesNotRegress) {
  Connect();
  Apply(Attempt("x1", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(10))
            .Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  Apply(Attempt("x2", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(11))
            .Started());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  Apply(Attempt("x3", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(12))
            .Failed("server_error"));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);

  EXPECT_EQ(view().late_event_count(), 0u);
  EXPECT_EQ(view().current_session_id(), "s-1");
  EXPECT_EQ(View(kT0 + absl::Hours(2)).state(), v1::CONNECTION_STATE_ACTIVE);
}

TEST_F(ConnectionReducerTest, EarlierStepOfFailedAttemptDoesNotRegress) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Succeeded());
  Apply(Attempt("e2", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(2))
            .Failed("invalid_scope"));
  Apply(Attempt("e3", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(3))
            .Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_FAILED);
  EXPECT_EQ(View(kT0 + absl::Hours(2)).state(), v1::CONNECTION_STATE_FAILED);
}

// A second STARTED of the exchange of a finished attempt (an emitter retry,
// a reloaded callback page) must not take an ACTIVE connection back to
// AUTHORIZING, and from there to ABANDONED.
TEST_F(ConnectionReducerTest,
       RepeatedExchangeStartOfFinishedAttemptDoesNotRegressActive) {
  Connect();
  Apply(
      Attempt("again", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(10))
          .Started());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(View(kT0 + absl::Hours(2)).state(), v1::CONNECTION_STATE_ACTIVE);
}

// Tokens were issued; a retried exchange of the same, now used, code is
// refused with invalid_grant. The connection still works.
TEST_F(ConnectionReducerTest,
       RetriedExchangeRefusedAfterSuccessDoesNotRegressActive) {
  Connect();
  Apply(
      Attempt("again", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(10))
          .Failed("invalid_grant", 400, "code already used"));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_EQ(view().last_failure().error_code(), "invalid_grant");
}

// The counterpart of the two tests above: a retry of the same step that
// succeeds after a failure in the same session does move the state.
TEST_F(ConnectionReducerTest, RetriedExchangeSucceedingAfterFailureIsActive) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.pop_back();
  ApplyAll(events);
  Apply(Attempt("x1", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(6))
            .Failed("temporarily_unavailable", 503));
  ASSERT_EQ(view().state(), v1::CONNECTION_STATE_FAILED);
  Apply(Attempt("x2", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(7))
            .Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
}

// Failure.follows_earlier_failure: "True when an earlier failure in the
// same attempt explains this one (e.g. a retried code exchange refused
// because the code was used)".
TEST_F(ConnectionReducerTest, FailureAfterAnEarlierOneInTheAttemptIsMarked) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.pop_back();
  ApplyAll(events);
  Apply(Attempt("x1", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(6))
            .Failed("temporarily_unavailable", 503));
  EXPECT_FALSE(view().last_failure().follows_earlier_failure());
  Apply(Attempt("x2", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(7))
            .Failed("invalid_grant", 400, "code already used"));

  EXPECT_EQ(view().last_failure().error_code(), "invalid_grant");
  EXPECT_TRUE(view().last_failure().follows_earlier_failure());
}

// Rule 11.
TEST_F(ConnectionReducerTest, DisconnectSucceededMakesDisconnected) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("server_error", 503));
  ASSERT_TRUE(view().degraded());

  Apply(Ev("d1", kT0 + absl::Hours(2)).Step(v1::STEP_DISCONNECT).Started());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  Apply(Ev("d2", kT0 + absl::Hours(2) + absl::Seconds(1))
            .Step(v1::STEP_DISCONNECT)
            .Failed("server_error"));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  Apply(Ev("d3", kT0 + absl::Hours(3)).Step(v1::STEP_DISCONNECT).Succeeded());

  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_DISCONNECTED);
  EXPECT_FALSE(view().degraded());
  Connection shown = View(kT0 + absl::Hours(5));
  EXPECT_EQ(shown.state(), v1::CONNECTION_STATE_DISCONNECTED);
  EXPECT_TRUE(Contains(shown.summary(), "removed")) << shown.summary();
}

TEST_F(ConnectionReducerTest, NewAttemptAfterDisconnectReconnects) {
  Connect();
  Apply(Ev("d1", kT0 + absl::Hours(1)).Step(v1::STEP_DISCONNECT).Succeeded());
  Apply(Attempt("n1", "s-2", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Hours(2))
            .Started());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
  ApplyAll(SuccessfulAttempt("b", "p-1", "c-1", "s-2",
                             kT0 + absl::Hours(2) + absl::Minutes(1)));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
}

// After the patient removed the link, the source revokes the grant and the
// scheduler's next refresh fails: the link is still removed, not "connect
// again".
TEST_F(ConnectionReducerTest, RefreshFailureAfterDisconnectKeepsDisconnected) {
  Connect();
  Apply(Ev("d1", kT0 + absl::Hours(1)).Step(v1::STEP_DISCONNECT).Succeeded());
  Apply(Refresh("r1", kT0 + absl::Hours(2)).Failed("invalid_grant", 400));
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_DISCONNECTED);
}

TEST_F(ConnectionReducerTest, RefreshSuccessAfterDisconnectKeepsDisconnected) {
  Connect();
  Apply(Ev("d1", kT0 + absl::Hours(1)).Step(v1::STEP_DISCONNECT).Succeeded());
  Apply(Refresh("r1", kT0 + absl::Hours(2)).Succeeded());
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_DISCONNECTED);
}

// Rule 12.
TEST_F(ConnectionReducerTest, UnknownStepChangesNothingButTheCount) {
  Connect();
  Apply(Refresh("r1", kT0 + absl::Hours(1)).Failed("server_error", 503));
  Connection before = view();

  Apply(Ev("u1", kT0 + absl::Hours(2)).Step(kUnknownStep).Succeeded());
  Apply(Ev("u2", kT0 + absl::Hours(3)).Step(kUnknownStep).Started());

  EXPECT_EQ(view().event_count(), before.event_count() + 2);
  EXPECT_EQ(view().state(), before.state());
  EXPECT_EQ(view().current_session_id(), before.current_session_id());
  EXPECT_EQ(view().degraded(), before.degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(),
            before.consecutive_refresh_failures());
  EXPECT_EQ(view().reconnect_reason(), before.reconnect_reason());
  EXPECT_EQ(view().last_failure().event().position(),
            before.last_failure().event().position());
  EXPECT_EQ(view().late_event_count(), before.late_event_count());
  EXPECT_EQ(View(kT0 + absl::Hours(4)).state(), v1::CONNECTION_STATE_ACTIVE);
}

TEST_F(ConnectionReducerTest, UnknownOutcomeChangesNothingButTheCount) {
  Connect();
  Connection before = view();

  AuthEvent exchange =
      Attempt("u2", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(11));
  exchange.set_outcome(kUnknownOutcome);
  Apply(exchange);
  AuthEvent refresh = Refresh("u3", kT0 + absl::Minutes(12));
  refresh.set_outcome(kUnknownOutcome);
  Apply(refresh);

  EXPECT_EQ(view().event_count(), before.event_count() + 2);
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_FALSE(view().has_last_failure());
  EXPECT_FALSE(view().degraded());
  EXPECT_EQ(view().consecutive_refresh_failures(), 0u);
  EXPECT_EQ(View(kT0 + absl::Hours(4)).state(), v1::CONNECTION_STATE_ACTIVE);
}

TEST_F(ConnectionReducerTest, UnknownOutcomeIsNeitherFailureNorSuccess) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  AuthEvent callback =
      Attempt("e2", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(1));
  callback.set_outcome(kUnknownOutcome);
  callback.set_error_code("access_denied");
  Apply(callback);
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_FALSE(view().has_last_failure());

  AuthEvent exchange =
      Attempt("e3", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(2));
  exchange.set_outcome(kUnknownOutcome);
  Apply(exchange);
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
}

// An outcome this version does not know may not be terminal: it must not
// end an open refresh as if it were.
TEST_F(ConnectionReducerTest, UnknownOutcomeDoesNotCloseAnOpenRefresh) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t, "req-r1").Started());
  AuthEvent unknown = Refresh("r2", t + absl::Seconds(1), "req-r1");
  unknown.set_outcome(kUnknownOutcome);
  Apply(unknown);

  EXPECT_TRUE(View(t + absl::Minutes(5)).refresh_pending());
  EXPECT_TRUE(View(t + absl::Hours(1)).refresh_outcome_unknown());
}

// Rule 13.
TEST_F(ConnectionReducerTest, OpenRefreshIsPendingThenOutcomeUnknown) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t, "req-r1").Started());

  Connection soon = View(t + absl::Minutes(1));
  EXPECT_TRUE(soon.refresh_pending());
  EXPECT_FALSE(soon.refresh_outcome_unknown());
  EXPECT_EQ(soon.state(), v1::CONNECTION_STATE_ACTIVE);

  Connection at_bound = View(t + kStall);
  EXPECT_TRUE(at_bound.refresh_pending());
  EXPECT_FALSE(at_bound.refresh_outcome_unknown());

  Connection after = View(t + kStall + absl::Nanoseconds(1));
  EXPECT_FALSE(after.refresh_pending());
  EXPECT_TRUE(after.refresh_outcome_unknown());
  EXPECT_EQ(after.state(), v1::CONNECTION_STATE_ACTIVE);

  // The bound follows the configured window.
  Connection short_window = View(t + absl::Minutes(6), absl::Minutes(5));
  EXPECT_TRUE(short_window.refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, TerminalRefreshClosesTheOpenRefresh) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t, "req-r1").Started());
  Apply(Refresh("r2", t + absl::Seconds(2), "req-r1").Succeeded());
  Connection shown = View(t + absl::Hours(1));
  EXPECT_FALSE(shown.refresh_pending());
  EXPECT_FALSE(shown.refresh_outcome_unknown());

  Apply(Refresh("r3", t + absl::Hours(2), "req-r3").Started());
  Apply(Refresh("r4", t + absl::Hours(2) + absl::Seconds(2), "req-r3")
            .Failed("server_error", 503));
  shown = View(t + absl::Hours(4));
  EXPECT_FALSE(shown.refresh_pending());
  EXPECT_FALSE(shown.refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, LateTerminalRefreshStillClosesTheOpenRefresh) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t, "req-r1").Started());
  // A newer event, then the refresh's end, which is now late.
  Apply(Attempt("n1", "s-2", v1::STEP_PORTAL_REDIRECT, t + absl::Minutes(5))
            .Started());
  Apply(Refresh("r2", t + absl::Minutes(1), "req-r1").Succeeded());
  ASSERT_EQ(view().late_event_count(), 1u);

  Connection shown = View(t + absl::Hours(2));
  EXPECT_FALSE(shown.refresh_pending());
  EXPECT_FALSE(shown.refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, TerminalRefreshWithoutRequestIdsClosesIt) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t).Started());
  Apply(Refresh("r2", t + absl::Seconds(3)).Failed("timeout"));
  EXPECT_FALSE(View(t + absl::Hours(2)).refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, OlderTerminalRefreshWithoutIdsLeavesItOpen) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t).Started());
  // The end of an earlier refresh, arriving late: not this one's end.
  Apply(Refresh("r0", t - absl::Seconds(10)).Succeeded());
  EXPECT_TRUE(View(t + absl::Minutes(1)).refresh_pending());
  EXPECT_TRUE(View(t + absl::Hours(2)).refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, TerminalRefreshOfAnotherRequestLeavesItOpen) {
  Connect();
  absl::Time t = kT0 + absl::Hours(1);
  Apply(Refresh("r1", t, "req-r1").Started());
  Apply(Refresh("r2", t + absl::Seconds(3), "req-other").Succeeded());
  EXPECT_TRUE(View(t + absl::Minutes(1)).refresh_pending());
  EXPECT_TRUE(View(t + absl::Hours(2)).refresh_outcome_unknown());
}

// Rule 14.
TEST_F(ConnectionReducerTest, AuthorizingPastTheStallWindowIsAbandoned) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("e2", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(2))
            .Succeeded());
  absl::Time last = kT0 + absl::Minutes(2);

  EXPECT_EQ(View(last + kStall).state(), v1::CONNECTION_STATE_AUTHORIZING);
  Connection shown = View(last + kStall + absl::Nanoseconds(1));
  EXPECT_EQ(shown.state(), v1::CONNECTION_STATE_ABANDONED);
  EXPECT_TRUE(Contains(shown.summary(), "silent")) << shown.summary();
  // Reading writes nothing.
  EXPECT_EQ(view().state(), v1::CONNECTION_STATE_AUTHORIZING);
  EXPECT_TRUE(view().summary().empty());
}

TEST_F(ConnectionReducerTest, StallWindowIsConfigurable) {
  Apply(Attempt("e1", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  EXPECT_EQ(View(kT0 + absl::Minutes(6), absl::Minutes(5)).state(),
            v1::CONNECTION_STATE_ABANDONED);
  EXPECT_EQ(View(kT0 + absl::Minutes(6)).state(),
            v1::CONNECTION_STATE_AUTHORIZING);
}

TEST_F(ConnectionReducerTest, ActiveSummaryPointsAtRecordRetrieval) {
  Connect();
  Connection shown = View(kT0 + absl::Hours(24 * 10));
  EXPECT_EQ(shown.state(), v1::CONNECTION_STATE_ACTIVE);
  EXPECT_FALSE(shown.degraded());
  EXPECT_TRUE(Contains(shown.summary(), "record retrieval")) << shown.summary();
  EXPECT_FALSE(shown.refresh_pending());
  EXPECT_FALSE(shown.refresh_outcome_unknown());
}

TEST_F(ConnectionReducerTest, EndedStatesAreNeverAbandoned) {
  Apply(Attempt("e1", "s-1", v1::STEP_CONSENT, kT0).Denied());
  EXPECT_EQ(View(kT0 + absl::Hours(24)).state(), v1::CONNECTION_STATE_DENIED);
}

// ---------------------------------------------------------------------
// The session projection (rule 15).

class SessionReducerTest : public ::testing::Test {
 protected:
  RecordedEvent Apply(const AuthEvent& event) {
    RecordedEvent recorded = Recorded(++position_, event);
    ReduceSession(recorded, &record_);
    return recorded;
  }

  void ApplyAll(const std::vector<AuthEvent>& events) {
    for (const AuthEvent& e : events) Apply(e);
  }

  const records::v1::StepRecord& StepAt(v1::Step step) const {
    return record_.steps(step);
  }

  SessionDiagnosis Diagnosis(
      absl::Time now, const v1::Finding& refresh = RefreshFinding().Result(
                          /*tokens_issued=*/false)) const {
    return Diagnose(record_, refresh, At(now));
  }

  SessionRecord record_;
  uint64_t position_ = 0;
};

TEST_F(SessionReducerTest, RootCauseIsTheFirstFailureInTimeOrder) {
  // The retried exchange's refusal arrives before the real failure.
  Apply(Attempt("x2", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(5))
            .Failed("invalid_grant", 400, "code already used"));
  Apply(Attempt("x1", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(4))
            .Failed("temporarily_unavailable", 503));

  ASSERT_TRUE(record_.has_root_cause());
  EXPECT_EQ(record_.root_cause().error_code(), "temporarily_unavailable");
  EXPECT_EQ(record_.root_cause().event().position(), 2u);
  EXPECT_EQ(record_.root_cause().category(), v1::FAILURE_CATEGORY_TRANSIENT);
  EXPECT_EQ(record_.failure_count(), 2u);

  // A later failure arriving later does not replace it.
  Apply(Attempt("x3", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(6))
            .Failed("invalid_grant", 400));
  EXPECT_EQ(record_.root_cause().event().position(), 2u);
  EXPECT_EQ(record_.failure_count(), 3u);
}

TEST_F(SessionReducerTest, StepsKeepTheFirstOfEachOutcomeInTimeOrder) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("c", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(2))
            .Succeeded());
  Apply(Attempt("d", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(3))
            .Succeeded());
  Apply(Attempt("e", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(4))
            .Failed("login_failed"));
  Apply(Attempt("f", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(5))
            .Failed("login_failed"));
  Apply(Attempt("g", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(7)).Denied());
  Apply(Attempt("h", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(6)).Denied());
  // A tie on time: the lower position is first.
  Apply(Attempt("i", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(8))
            .Started());
  Apply(Attempt("j", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(8))
            .Started());

  EXPECT_EQ(StepAt(v1::STEP_PORTAL_REDIRECT).started().position(), 2u);
  EXPECT_EQ(StepAt(v1::STEP_PORTAL_REDIRECT).succeeded().position(), 3u);
  EXPECT_EQ(StepAt(v1::STEP_SIGN_IN).failed().position(), 5u);
  EXPECT_EQ(StepAt(v1::STEP_CONSENT).denied().position(), 8u);
  EXPECT_EQ(StepAt(v1::STEP_OAUTH_CALLBACK).started().position(), 9u);
  EXPECT_FALSE(StepAt(v1::STEP_TOKEN_EXCHANGE).has_started());
  EXPECT_EQ(StepAt(v1::STEP_PORTAL_REDIRECT).started().event_id(), "b");
  EXPECT_EQ(TimeOf(StepAt(v1::STEP_PORTAL_REDIRECT).started_key().time()), kT0);
}

TEST_F(SessionReducerTest, KeepsIdentityCountAndTimeBounds) {
  Apply(Attempt("a", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(3))
            .Succeeded());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("c", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(5))
            .Succeeded());

  EXPECT_EQ(record_.session_id(), "s-1");
  EXPECT_EQ(record_.patient_id(), "p-1");
  EXPECT_EQ(record_.connection_id(), "c-1");
  EXPECT_EQ(record_.source().id(), "src-epic");
  EXPECT_EQ(record_.event_count(), 3u);
  EXPECT_EQ(TimeOf(record_.first().time()), kT0);
  EXPECT_EQ(record_.first().position(), 2u);
  EXPECT_EQ(TimeOf(record_.last().time()), kT0 + absl::Minutes(5));
  EXPECT_EQ(record_.failure_count(), 0u);
  EXPECT_FALSE(record_.has_root_cause());
}

TEST_F(SessionReducerTest, UnknownStepAndOutcomeAreOnlyCounted) {
  Apply(Attempt("a", "s-1", kUnknownStep, kT0).Succeeded());
  AuthEvent unknown = Attempt("b", "s-1", v1::STEP_CONSENT, kT0);
  unknown.set_outcome(kUnknownOutcome);
  Apply(unknown);

  EXPECT_EQ(record_.event_count(), 2u);
  EXPECT_EQ(record_.failure_count(), 0u);
  EXPECT_FALSE(record_.has_root_cause());
  for (const auto& step : record_.steps()) {
    EXPECT_FALSE(step.has_started() || step.has_succeeded() ||
                 step.has_failed() || step.has_denied());
  }
}

// ---------------------------------------------------------------------
// Diagnosis (rule 16).

using DiagnoseTest = SessionReducerTest;

void ExpectAnswer(const v1::Finding& finding, v1::Answer answer,
                  uint64_t evidence_position) {
  EXPECT_EQ(finding.answer(), answer) << finding.ShortDebugString();
  EXPECT_EQ(finding.evidence().position(), evidence_position)
      << finding.ShortDebugString();
}

TEST_F(DiagnoseTest, SuccessfulAttemptAnswersYesToTheFirstFour) {
  ApplyAll(SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  EXPECT_EQ(d.session_id(), "s-1");
  EXPECT_EQ(d.connection_id(), "c-1");
  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 3);
  ExpectAnswer(d.approved_access(), v1::ANSWER_YES, 4);
  ExpectAnswer(d.token_exchanged(), v1::ANSWER_YES, 7);
  EXPECT_EQ(d.furthest_step(), v1::STEP_TOKEN_EXCHANGE);
  EXPECT_FALSE(d.has_root_cause());
  EXPECT_FALSE(d.abandoned());
  EXPECT_EQ(d.event_count(), 7u);
  EXPECT_EQ(TimeOf(d.first_event_at()), kT0);
  EXPECT_EQ(TimeOf(d.last_event_at()), kT0 + absl::Minutes(6));
  EXPECT_TRUE(Contains(d.summary(), "record retrieval")) << d.summary();
}

TEST_F(DiagnoseTest, DeclineAtConsent) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Succeeded());
  Apply(Attempt("c", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(2))
            .Succeeded());
  Apply(Attempt("d", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(3))
            .Denied("access_denied"));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 3);
  ExpectAnswer(d.approved_access(), v1::ANSWER_NO, 4);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_NO);
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "access_denied");
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_PATIENT_DECLINED);
  EXPECT_FALSE(d.abandoned());
  EXPECT_EQ(d.furthest_step(), v1::STEP_CONSENT);
}

TEST_F(DiagnoseTest, ErrorAtCallback) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Succeeded());
  Apply(Attempt("c", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(2))
            .Succeeded());
  Apply(Attempt("d", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(3))
            .Request("req-cb")
            .Failed("invalid_scope", 400));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 3);
  ExpectAnswer(d.approved_access(), v1::ANSWER_NO, 4);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_NO);
  ASSERT_TRUE(d.has_root_cause());
  EXPECT_EQ(d.root_cause().error_code(), "invalid_scope");
  EXPECT_EQ(d.root_cause().event().request_id(), "req-cb");
  EXPECT_EQ(TimeOf(d.root_cause().event().occurred_at()),
            kT0 + absl::Minutes(3));
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_CONFIGURATION);
  EXPECT_FALSE(d.abandoned());
  EXPECT_EQ(d.furthest_step(), v1::STEP_OAUTH_CALLBACK);
  EXPECT_TRUE(Contains(d.summary(), "invalid_scope")) << d.summary();
}

TEST_F(DiagnoseTest, ExchangeFailure) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.pop_back();
  ApplyAll(events);
  Apply(Attempt("x", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(6))
            .Failed("invalid_grant", 400));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  EXPECT_EQ(d.reached_portal().answer(), v1::ANSWER_YES);
  EXPECT_EQ(d.signed_in().answer(), v1::ANSWER_YES);
  EXPECT_EQ(d.approved_access().answer(), v1::ANSWER_YES);
  ExpectAnswer(d.token_exchanged(), v1::ANSWER_NO, 7);
  EXPECT_EQ(d.root_cause().error_code(), "invalid_grant");
  EXPECT_EQ(d.root_cause().category(), v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
  EXPECT_FALSE(d.abandoned());
  EXPECT_EQ(d.furthest_step(), v1::STEP_TOKEN_EXCHANGE);
}

TEST_F(DiagnoseTest, AbandonedAtThePortal) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  SessionDiagnosis d = Diagnosis(kT0 + kStall + absl::Seconds(1));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_NO, 1);
  EXPECT_EQ(d.signed_in().answer(), v1::ANSWER_NO);
  EXPECT_EQ(d.approved_access().answer(), v1::ANSWER_NO);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_NO);
  EXPECT_TRUE(d.abandoned());
  EXPECT_FALSE(d.has_root_cause());
  EXPECT_EQ(d.furthest_step(), v1::STEP_PORTAL_REDIRECT);
  EXPECT_TRUE(Contains(d.summary(), "after PORTAL_REDIRECT")) << d.summary();
}

TEST_F(DiagnoseTest, AbandonedAtSignIn) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Succeeded());
  Apply(
      Attempt("c", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(2)).Started());
  SessionDiagnosis d = Diagnosis(kT0 + absl::Minutes(40));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.signed_in(), v1::ANSWER_NO, 3);
  EXPECT_EQ(d.approved_access().answer(), v1::ANSWER_NO);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_NO);
  EXPECT_TRUE(d.abandoned());
  EXPECT_EQ(d.furthest_step(), v1::STEP_SIGN_IN);
}

TEST_F(DiagnoseTest, AbandonedAfterReachingThePortal) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Succeeded());
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(1));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  EXPECT_EQ(d.signed_in().answer(), v1::ANSWER_NO);
  EXPECT_TRUE(d.abandoned());
}

TEST_F(DiagnoseTest, RecentRedirectIsPendingNotAbandoned) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  for (absl::Duration age : {absl::Minutes(1), kStall}) {
    SessionDiagnosis d = Diagnosis(kT0 + age);
    ExpectAnswer(d.reached_portal(), v1::ANSWER_UNKNOWN, 1);
    EXPECT_EQ(d.signed_in().answer(), v1::ANSWER_UNKNOWN);
    EXPECT_EQ(d.approved_access().answer(), v1::ANSWER_UNKNOWN);
    EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_UNKNOWN);
    EXPECT_FALSE(d.abandoned()) << absl::FormatDuration(age);
    EXPECT_TRUE(Contains(d.summary(), "in progress")) << d.summary();
  }
}

TEST_F(DiagnoseTest, RecentlyReachedPortalIsSignInUnknown) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_PORTAL_REDIRECT, kT0 + absl::Minutes(1))
            .Succeeded());
  SessionDiagnosis d = Diagnosis(kT0 + absl::Minutes(5));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  EXPECT_EQ(d.signed_in().answer(), v1::ANSWER_UNKNOWN);
  EXPECT_EQ(d.approved_access().answer(), v1::ANSWER_UNKNOWN);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_UNKNOWN);
  EXPECT_FALSE(d.abandoned());
}

TEST_F(DiagnoseTest, LaterStepsAreEvidenceForEarlierOnes) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  Apply(Attempt("b", "s-1", v1::STEP_OAUTH_CALLBACK, kT0 + absl::Minutes(3))
            .Succeeded());
  SessionDiagnosis d = Diagnosis(kT0 + absl::Minutes(4));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.approved_access(), v1::ANSWER_YES, 2);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_UNKNOWN);
  EXPECT_EQ(d.furthest_step(), v1::STEP_OAUTH_CALLBACK);
}

// The funnel never answers a later question YES and an earlier one NO:
// any token exchange means a code was issued, so the patient signed in.
TEST_F(DiagnoseTest, ASilentExchangeAloneStillMeansSignedIn) {
  Apply(Attempt("a", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0).Started());
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  ExpectAnswer(d.reached_portal(), v1::ANSWER_YES, 1);
  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 1);
  ExpectAnswer(d.approved_access(), v1::ANSWER_YES, 1);
  EXPECT_EQ(d.token_exchanged().answer(), v1::ANSWER_UNKNOWN);
}

TEST_F(DiagnoseTest, AFailedSignInFollowedByAnExchangeWasRetried) {
  Apply(Attempt("a", "s-1", v1::STEP_SIGN_IN, kT0).Failed("server_error", 500));
  Apply(Attempt("b", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(4))
            .Failed("invalid_grant", 400));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(24));

  ExpectAnswer(d.signed_in(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.approved_access(), v1::ANSWER_YES, 2);
  ExpectAnswer(d.token_exchanged(), v1::ANSWER_NO, 2);
  // The first failure stays the root cause.
  EXPECT_EQ(d.root_cause().error_code(), "server_error");
}

TEST_F(DiagnoseTest, FurthestStepIsTheHighestStepWithAnEvent) {
  Apply(Attempt("a", "s-1", v1::STEP_PORTAL_REDIRECT, kT0).Started());
  EXPECT_EQ(Diagnosis(kT0).furthest_step(), v1::STEP_PORTAL_REDIRECT);
  Apply(
      Attempt("b", "s-1", v1::STEP_CONSENT, kT0 + absl::Minutes(2)).Started());
  EXPECT_EQ(Diagnosis(kT0).furthest_step(), v1::STEP_CONSENT);
  // A late event of an earlier step does not lower it.
  Apply(Attempt("c", "s-1", v1::STEP_SIGN_IN, kT0 + absl::Minutes(1))
            .Succeeded());
  EXPECT_EQ(Diagnosis(kT0).furthest_step(), v1::STEP_CONSENT);
}

TEST_F(DiagnoseTest, RootCauseIsTheFirstFailureEvenWhenItArrivesLast) {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.pop_back();
  ApplyAll(events);
  Apply(Attempt("x2", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(8))
            .Failed("invalid_grant", 400, "code already used"));
  Apply(Attempt("x1", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Minutes(7))
            .Failed("temporarily_unavailable", 503));
  SessionDiagnosis d = Diagnosis(kT0 + absl::Hours(1));

  EXPECT_EQ(d.root_cause().error_code(), "temporarily_unavailable");
  EXPECT_EQ(d.root_cause().event().position(), 8u);
  EXPECT_TRUE(Contains(d.summary(), "temporarily_unavailable")) << d.summary();
}

TEST_F(DiagnoseTest, RefreshAnswerIsPassedThrough) {
  ApplyAll(SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0));
  RefreshFinding refresh;
  refresh.Add(Recorded(
      8, Refresh("r", kT0 + absl::Hours(1)).Failed("invalid_grant", 400)));
  SessionDiagnosis d =
      Diagnosis(kT0 + absl::Hours(2), refresh.Result(/*tokens_issued=*/true));

  ExpectAnswer(d.refresh_failed_later(), v1::ANSWER_YES, 8);
  EXPECT_TRUE(Contains(d.summary(), "refresh failed")) << d.summary();
}

// ---------------------------------------------------------------------
// Question five.

TEST(RefreshFindingTest, FailureAnswersYesWithEvidence) {
  RefreshFinding finding;
  EXPECT_TRUE(finding.Add(
      Recorded(10, Refresh("ok", kT0 + absl::Hours(1)).Succeeded())));
  EXPECT_FALSE(finding.Add(Recorded(
      11, Refresh("bad", kT0 + absl::Hours(2)).Failed("invalid_grant", 400))));
  v1::Finding result = finding.Result(/*tokens_issued=*/true);
  EXPECT_EQ(result.answer(), v1::ANSWER_YES);
  EXPECT_EQ(result.evidence().position(), 11u);
  EXPECT_EQ(result.evidence().event_id(), "bad");
  EXPECT_TRUE(Contains(result.note(), "invalid_grant")) << result.note();
}

TEST(RefreshFindingTest, DeniedRefreshAnswersYes) {
  RefreshFinding finding;
  EXPECT_FALSE(
      finding.Add(Recorded(10, Refresh("bad", kT0 + absl::Hours(1)).Denied())));
  EXPECT_EQ(finding.Result(true).answer(), v1::ANSWER_YES);
}

TEST(RefreshFindingTest, OnlySuccessesAnswerNo) {
  RefreshFinding finding;
  EXPECT_TRUE(finding.Add(
      Recorded(10, Refresh("ok1", kT0 + absl::Hours(1)).Succeeded())));
  EXPECT_TRUE(finding.Add(
      Recorded(11, Refresh("ok2", kT0 + absl::Hours(2)).Succeeded())));
  v1::Finding result = finding.Result(/*tokens_issued=*/true);
  EXPECT_EQ(result.answer(), v1::ANSWER_NO);
  EXPECT_EQ(result.evidence().position(), 10u);
}

TEST(RefreshFindingTest, NothingAnswersUnknown) {
  RefreshFinding finding;
  EXPECT_EQ(finding.Result(/*tokens_issued=*/true).answer(),
            v1::ANSWER_UNKNOWN);
  EXPECT_TRUE(
      finding.Add(Recorded(10, Refresh("s", kT0 + absl::Hours(1)).Started())));
  EXPECT_EQ(finding.Result(/*tokens_issued=*/true).answer(),
            v1::ANSWER_UNKNOWN);
}

TEST(RefreshFindingTest, OtherStepsAreIgnored) {
  RefreshFinding finding;
  EXPECT_TRUE(
      finding.Add(Recorded(10, Attempt("x", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0)
                                   .Failed("invalid_grant"))));
  EXPECT_TRUE(finding.Add(Recorded(
      11, Ev("d", kT0).Step(v1::STEP_DISCONNECT).Failed("server_error"))));
  EXPECT_EQ(finding.Result(/*tokens_issued=*/true).answer(),
            v1::ANSWER_UNKNOWN);
}

TEST(RefreshFindingTest, TokensNotIssuedAnswersUnknown) {
  EXPECT_EQ(RefreshFinding().Result(/*tokens_issued=*/false).answer(),
            v1::ANSWER_UNKNOWN);
  RefreshFinding finding;
  finding.Add(Recorded(10, Refresh("ok", kT0 + absl::Hours(1)).Succeeded()));
  v1::Finding result = finding.Result(/*tokens_issued=*/false);
  EXPECT_EQ(result.answer(), v1::ANSWER_UNKNOWN);
  EXPECT_FALSE(result.has_evidence());
}

// ---------------------------------------------------------------------
// Determinism (rule 17).

std::vector<RecordedEvent> MixedHistory() {
  std::vector<AuthEvent> events =
      SuccessfulAttempt("a", "p-1", "c-1", "s-1", kT0);
  events.push_back(Refresh("r1", kT0 + absl::Hours(1), "q1").Started());
  events.push_back(
      Refresh("r2", kT0 + absl::Hours(1), "q1").Failed("server_error", 503));
  events.push_back(Attempt("late", "s-1", v1::STEP_CONSENT, kT0)
                       .Attribute("scope", "patient/*.read")
                       .Attribute("client", "app")
                       .Denied());
  events.push_back(Ev("u", kT0 + absl::Hours(2)).Step(kUnknownStep).Started());
  events.push_back(
      Refresh("r3", kT0 + absl::Hours(3), "q3").Failed("invalid_grant", 400));
  std::vector<RecordedEvent> out;
  for (size_t i = 0; i < events.size(); ++i) {
    out.push_back(Recorded(i + 1, events[i]));
  }
  // One future-dated event, recorded after everything else.
  out.push_back(Recorded(
      out.size() + 1,
      Attempt("f", "s-1", v1::STEP_TOKEN_EXCHANGE, kT0 + absl::Hours(30))
          .Succeeded(),
      kT0 + absl::Hours(4)));
  return out;
}

TEST(DeterminismTest, SameEventsGiveByteIdenticalRecords) {
  std::vector<RecordedEvent> history = MixedHistory();
  ASSERT_TRUE(history.back().future_dated());

  ConnectionRecord connection_a;
  ConnectionRecord connection_b;
  SessionRecord session_a;
  SessionRecord session_b;
  for (const RecordedEvent& e : history) {
    ReduceConnection(e, &connection_a);
    if (!e.event().session_id().empty()) ReduceSession(e, &session_a);
  }
  for (const RecordedEvent& e : history) {
    ReduceConnection(e, &connection_b);
    if (!e.event().session_id().empty()) ReduceSession(e, &session_b);
  }

  std::string bytes_a = SerializeStable(connection_a);
  EXPECT_FALSE(bytes_a.empty());
  EXPECT_EQ(bytes_a, SerializeStable(connection_b));
  EXPECT_EQ(SerializeStable(session_a), SerializeStable(session_b));
  EXPECT_FALSE(SerializeStable(session_a).empty());
  EXPECT_EQ(connection_a.view().event_count(), history.size());
}

TEST(DeterminismTest, ReplayOfParsedRecordsContinuesIdentically) {
  // A record stored, read back and reduced further equals one kept in
  // memory: nothing lives outside the serialized record.
  std::vector<RecordedEvent> history = MixedHistory();
  ConnectionRecord in_memory;
  ConnectionRecord via_storage;
  for (const RecordedEvent& e : history) {
    ReduceConnection(e, &in_memory);
    ConnectionRecord next;
    ASSERT_TRUE(next.ParseFromString(SerializeStable(via_storage)));
    ReduceConnection(e, &next);
    via_storage = next;
  }
  EXPECT_EQ(SerializeStable(in_memory), SerializeStable(via_storage));
}

}  // namespace
}  // namespace authtrail::storage
