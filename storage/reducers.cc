#include "storage/reducers.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "storage/failure_catalog.h"
#include "storage/proto_time.h"

namespace authtrail::storage {
namespace {

using authtrail::v1::Answer;
using authtrail::v1::Connection;
using authtrail::v1::EventRef;
using authtrail::v1::Failure;
using authtrail::v1::Finding;
using authtrail::v1::RecordedEvent;
using authtrail::v1::SessionDiagnosis;
using authtrail::v1::Step;
using google::protobuf::Timestamp;

constexpr int kAttemptSteps = 5;

// Keeps the earlier of `*slot` and `candidate` (by time order).
void KeepEarliest(const RecordedEvent& event, const OrderKey& key,
                  EventRef* slot, OrderKey* slot_key) {
  if (slot->position() != 0 && !Before(key, *slot_key)) return;
  *slot = RefOf(event);
  *slot_key = key;
}

void WidenSeen(const OrderKey& key, Connection* view) {
  if (!view->has_first_seen_at() ||
      TimeBefore(key.time(), view->first_seen_at())) {
    *view->mutable_first_seen_at() = key.time();
  }
  if (!view->has_last_seen_at() ||
      TimeBefore(view->last_seen_at(), key.time())) {
    *view->mutable_last_seen_at() = key.time();
  }
}

void FillIdentity(const authtrail::v1::AuthEvent& event, Connection* view) {
  if (view->connection_id().empty()) {
    view->set_connection_id(event.connection_id());
  }
  if (view->patient_id().empty()) view->set_patient_id(event.patient_id());
  if (!view->has_source() && event.has_source()) {
    *view->mutable_source() = event.source();
  }
}

void MarkActive(Connection* view) {
  view->set_state(authtrail::v1::CONNECTION_STATE_ACTIVE);
  view->set_degraded(false);
  view->set_consecutive_refresh_failures(0);
  view->set_reconnect_reason(authtrail::v1::RECONNECT_REASON_UNSPECIFIED);
}

// A terminal refresh event closes the open refresh it answers: the one with
// the same request id, or any earlier one when ids are missing.
void CloseOpenRefresh(const RecordedEvent& event, const OrderKey& key,
                      ConnectionRecord* record) {
  if (!record->has_open_refresh()) return;
  const std::string& open_id = record->open_refresh().request_id();
  const std::string& id = event.event().request_id();
  bool same_request = !open_id.empty() && open_id == id;
  bool later = !TimeBefore(key.time(), record->open_refresh_at());
  if (same_request || ((open_id.empty() || id.empty()) && later)) {
    record->clear_open_refresh();
    record->clear_open_refresh_at();
  }
}

// Applies a refresh event that is the connection's newest. A disconnected
// connection stays disconnected: only a new attempt brings it back.
void ApplyRefresh(const RecordedEvent& event, const OrderKey& key,
                  ConnectionRecord* record) {
  const auto& e = event.event();
  Connection* view = record->mutable_view();
  bool disconnected =
      view->state() == authtrail::v1::CONNECTION_STATE_DISCONNECTED;
  switch (e.outcome()) {
    case authtrail::v1::OUTCOME_STARTED:
      *record->mutable_open_refresh() = RefOf(event);
      *record->mutable_open_refresh_at() = key.time();
      return;
    case authtrail::v1::OUTCOME_SUCCEEDED:
      if (!disconnected) MarkActive(view);
      return;
    case authtrail::v1::OUTCOME_FAILED:
    case authtrail::v1::OUTCOME_DENIED: {
      view->set_consecutive_refresh_failures(
          view->consecutive_refresh_failures() + 1);
      if (disconnected) return;
      switch (FailureOf(event, false).category()) {
        case authtrail::v1::FAILURE_CATEGORY_REAUTH_REQUIRED:
          view->set_state(authtrail::v1::CONNECTION_STATE_NEEDS_RECONNECT);
          view->set_reconnect_reason(ReconnectReasonFor(e.error_code()));
          view->set_degraded(false);
          return;
        case authtrail::v1::FAILURE_CATEGORY_PATIENT_DECLINED:
          view->set_state(authtrail::v1::CONNECTION_STATE_NEEDS_RECONNECT);
          view->set_reconnect_reason(authtrail::v1::RECONNECT_REASON_REVOKED);
          view->set_degraded(false);
          return;
        default:
          // Transient, configuration or unknown: the grant may still be
          // good, so an ACTIVE connection stays ACTIVE, marked degraded.
          view->set_degraded(view->state() ==
                             authtrail::v1::CONNECTION_STATE_ACTIVE);
          return;
      }
    }
    default:
      return;  // An outcome this version does not know changes nothing.
  }
}

// Applies an attempt-step event that is the connection's newest.
void ApplyAttemptStep(const RecordedEvent& event, const OrderKey& key,
                      ConnectionRecord* record) {
  const auto& e = event.event();
  Connection* view = record->mutable_view();
  bool same_session = e.session_id() == view->current_session_id() &&
                      (!e.session_id().empty() || !record->attempt_ended());
  if (!same_session) {
    // A newer attempt supersedes the current one, which stays in history.
    view->set_current_session_id(e.session_id());
    record->set_attempt_furthest_step(e.step());
    record->set_attempt_ended(false);
    record->set_attempt_issued_tokens(false);
    record->clear_attempt_first_failure();
  } else if (record->attempt_issued_tokens() ||
             (record->attempt_ended() &&
              e.step() < record->attempt_furthest_step())) {
    // Nothing regresses an attempt that issued tokens, nor an earlier step
    // a finished one: such events only take their place in the history.
    return;
  }
  if (e.step() > record->attempt_furthest_step()) {
    record->set_attempt_furthest_step(e.step());
  }
  *record->mutable_attempt_last_at() = key.time();

  switch (e.outcome()) {
    case authtrail::v1::OUTCOME_STARTED:
    case authtrail::v1::OUTCOME_SUCCEEDED:
      if (e.step() == authtrail::v1::STEP_TOKEN_EXCHANGE &&
          e.outcome() == authtrail::v1::OUTCOME_SUCCEEDED) {
        MarkActive(view);
        record->set_attempt_ended(true);
        record->set_attempt_issued_tokens(true);
      } else {
        view->set_state(authtrail::v1::CONNECTION_STATE_AUTHORIZING);
        record->set_attempt_ended(false);
      }
      return;
    case authtrail::v1::OUTCOME_FAILED:
    case authtrail::v1::OUTCOME_DENIED: {
      bool declined = FailureOf(event, false).category() ==
                      authtrail::v1::FAILURE_CATEGORY_PATIENT_DECLINED;
      view->set_state(declined ? authtrail::v1::CONNECTION_STATE_DENIED
                               : authtrail::v1::CONNECTION_STATE_FAILED);
      record->set_attempt_ended(true);
      return;
    }
    default:
      return;
  }
}

std::string StateSummary(const Connection& view) {
  using authtrail::v1::ConnectionState;
  switch (view.state()) {
    case authtrail::v1::CONNECTION_STATE_AUTHORIZING:
      return "An authorization attempt is in progress.";
    case authtrail::v1::CONNECTION_STATE_ACTIVE:
      if (view.degraded()) {
        bool transient = view.last_failure().category() ==
                         authtrail::v1::FAILURE_CATEGORY_TRANSIENT;
        return absl::StrCat(
            "Authorization works, but the last ",
            view.consecutive_refresh_failures(), " refresh(es) failed (",
            view.last_failure().error_code(), ")",
            transient ? "; the source may be down."
                      : "; check the client's configuration at the source.");
      }
      return "Authorization works; if records are missing, look at record "
             "retrieval.";
    case authtrail::v1::CONNECTION_STATE_DENIED:
      return "The patient declined access in the last attempt.";
    case authtrail::v1::CONNECTION_STATE_FAILED:
      return absl::StrCat("The last attempt failed with ",
                          view.last_failure().error_code(), ".");
    case authtrail::v1::CONNECTION_STATE_ABANDONED:
      return "The last attempt went silent; the patient did not finish.";
    case authtrail::v1::CONNECTION_STATE_NEEDS_RECONNECT:
      switch (view.reconnect_reason()) {
        case authtrail::v1::RECONNECT_REASON_EXPIRED:
          return "The grant expired; the patient must connect again.";
        case authtrail::v1::RECONNECT_REASON_REVOKED:
          return "Access was revoked; the patient must connect again.";
        default:
          return "The grant expired or was revoked (the source does not say "
                 "which); the patient must connect again.";
      }
    case authtrail::v1::CONNECTION_STATE_DISCONNECTED:
      return "The connection was removed.";
    default:
      return "No state yet.";
  }
}

}  // namespace

bool IsFutureDated(const Timestamp& occurred_at, const Timestamp& recorded_at) {
  return FromProtoTime(occurred_at) >
         FromProtoTime(recorded_at) + kFutureTolerance;
}

OrderKey OrderKeyOf(const RecordedEvent& event) {
  OrderKey key;
  *key.mutable_time() =
      event.future_dated() ? event.recorded_at() : event.event().occurred_at();
  key.set_position(event.position());
  return key;
}

bool Before(const OrderKey& a, const OrderKey& b) {
  if (a.time().seconds() != b.time().seconds()) {
    return a.time().seconds() < b.time().seconds();
  }
  if (a.time().nanos() != b.time().nanos()) {
    return a.time().nanos() < b.time().nanos();
  }
  return a.position() < b.position();
}

bool IsFailure(const authtrail::v1::AuthEvent& event) {
  return event.outcome() == authtrail::v1::OUTCOME_FAILED ||
         event.outcome() == authtrail::v1::OUTCOME_DENIED;
}

bool IsAttemptStep(Step step) {
  return step >= authtrail::v1::STEP_PORTAL_REDIRECT &&
         step <= authtrail::v1::STEP_TOKEN_EXCHANGE;
}

EventRef RefOf(const RecordedEvent& event) {
  const auto& e = event.event();
  EventRef ref;
  ref.set_position(event.position());
  ref.set_step(e.step());
  ref.set_outcome(e.outcome());
  *ref.mutable_occurred_at() = e.occurred_at();
  ref.set_session_id(e.session_id());
  ref.set_request_id(e.request_id());
  ref.set_event_id(e.event_id());
  return ref;
}

Failure FailureOf(const RecordedEvent& event, bool follows_earlier_failure) {
  const auto& e = event.event();
  FailureContext context;
  context.step = e.step();
  context.outcome = e.outcome();
  context.http_status = e.http_status();
  context.attributed = !e.patient_id().empty() && !e.connection_id().empty();

  Failure failure;
  *failure.mutable_event() = RefOf(event);
  failure.set_error_code(e.error_code());
  failure.set_error_description(e.error_description());
  failure.set_http_status(e.http_status());
  failure.set_category(Classify(e.error_code(), context));
  failure.set_follows_earlier_failure(follows_earlier_failure);
  return failure;
}

void ReduceConnection(const RecordedEvent& event, ConnectionRecord* record) {
  const auto& e = event.event();
  Connection* view = record->mutable_view();
  OrderKey key = OrderKeyOf(event);
  FillIdentity(e, view);
  view->set_event_count(view->event_count() + 1);
  WidenSeen(key, view);
  if (IsFailure(e) && (!record->has_last_failure_key() ||
                       Before(record->last_failure_key(), key))) {
    bool follows = IsAttemptStep(e.step()) &&
                   e.session_id() == view->current_session_id() &&
                   record->has_attempt_first_failure() &&
                   Before(record->attempt_first_failure(), key);
    *view->mutable_last_failure() = FailureOf(event, follows);
    *record->mutable_last_failure_key() = key;
  }
  if (e.step() == authtrail::v1::STEP_TOKEN_REFRESH &&
      (e.outcome() == authtrail::v1::OUTCOME_SUCCEEDED || IsFailure(e))) {
    CloseOpenRefresh(event, key, record);
  }

  if (record->has_latest() && Before(key, record->latest())) {
    // Late: it takes its place in the timeline, never moves the state.
    view->set_late_event_count(view->late_event_count() + 1);
    return;
  }
  *record->mutable_latest() = key;
  *view->mutable_last_event() = RefOf(event);

  if (IsAttemptStep(e.step())) {
    ApplyAttemptStep(event, key, record);
    if (IsFailure(e) && e.session_id() == view->current_session_id() &&
        (!record->has_attempt_first_failure() ||
         Before(key, record->attempt_first_failure()))) {
      *record->mutable_attempt_first_failure() = key;
    }
  } else if (e.step() == authtrail::v1::STEP_TOKEN_REFRESH) {
    ApplyRefresh(event, key, record);
  } else if (e.step() == authtrail::v1::STEP_DISCONNECT &&
             e.outcome() == authtrail::v1::OUTCOME_SUCCEEDED) {
    view->set_state(authtrail::v1::CONNECTION_STATE_DISCONNECTED);
    view->set_degraded(false);
    record->set_attempt_ended(true);
  }
  // Unknown steps are kept in the log and counted, but change nothing.
}

void ReduceSession(const RecordedEvent& event, SessionRecord* record) {
  const auto& e = event.event();
  OrderKey key = OrderKeyOf(event);
  if (record->session_id().empty()) record->set_session_id(e.session_id());
  if (record->patient_id().empty()) record->set_patient_id(e.patient_id());
  if (record->connection_id().empty()) {
    record->set_connection_id(e.connection_id());
  }
  if (!record->has_source() && e.has_source()) {
    *record->mutable_source() = e.source();
  }
  while (record->steps_size() <= kAttemptSteps) record->add_steps();
  record->set_event_count(record->event_count() + 1);
  if (!record->has_first() || Before(key, record->first())) {
    *record->mutable_first() = key;
  }
  if (!record->has_last() || Before(record->last(), key)) {
    *record->mutable_last() = key;
  }

  if (IsAttemptStep(e.step())) {
    auto* step = record->mutable_steps(e.step());
    switch (e.outcome()) {
      case authtrail::v1::OUTCOME_STARTED:
        KeepEarliest(event, key, step->mutable_started(),
                     step->mutable_started_key());
        break;
      case authtrail::v1::OUTCOME_SUCCEEDED:
        KeepEarliest(event, key, step->mutable_succeeded(),
                     step->mutable_succeeded_key());
        break;
      case authtrail::v1::OUTCOME_FAILED:
        KeepEarliest(event, key, step->mutable_failed(),
                     step->mutable_failed_key());
        break;
      case authtrail::v1::OUTCOME_DENIED:
        KeepEarliest(event, key, step->mutable_denied(),
                     step->mutable_denied_key());
        break;
      default:
        break;
    }
  }
  if (!IsFailure(e)) return;
  record->set_failure_count(record->failure_count() + 1);
  if (!record->has_root_cause() || Before(key, record->root_cause_key())) {
    // The first failure in time order is the root cause, even when it
    // arrives after a later one.
    *record->mutable_root_cause() = FailureOf(event, false);
    *record->mutable_root_cause_key() = key;
  }
}

namespace {

// Applies what only the time of reading decides.
Connection AtReadTime(const ConnectionRecord& record, const ReadPolicy& policy,
                      Connection view) {
  if (view.state() == authtrail::v1::CONNECTION_STATE_AUTHORIZING &&
      policy.now - FromProtoTime(record.attempt_last_at()) >
          policy.stall_window) {
    view.set_state(authtrail::v1::CONNECTION_STATE_ABANDONED);
  }
  if (record.has_open_refresh()) {
    bool within = policy.now - FromProtoTime(record.open_refresh_at()) <=
                  policy.stall_window;
    view.set_refresh_pending(within);
    view.set_refresh_outcome_unknown(!within);
  }
  view.set_summary(StateSummary(view));
  return view;
}

}  // namespace

Connection ViewConnection(const ConnectionRecord& record,
                          const ReadPolicy& policy) {
  return AtReadTime(record, policy, record.view());
}

Connection ViewConnection(ConnectionRecord&& record, const ReadPolicy& policy) {
  Connection view = std::move(*record.mutable_view());
  return AtReadTime(record, policy, std::move(view));
}

namespace {

// Builds the findings of one session at read time.
class SessionReader {
 public:
  SessionReader(const SessionRecord& record, const ReadPolicy& policy)
      : record_(record), policy_(policy) {
    silent_ =
        record.has_last() &&
        policy.now - FromProtoTime(record.last().time()) > policy.stall_window;
  }

  bool Silent() const { return silent_; }

  const records::v1::StepRecord& StepAt(Step step) const {
    return record_.steps(step);
  }

  // The earliest event of any kind at `from` or a later attempt step,
  // counting only the outcomes in `mask` (bit per Outcome value).
  const EventRef* EarliestFrom(Step from, unsigned mask) const {
    const EventRef* best = nullptr;
    const OrderKey* best_key = nullptr;
    for (int s = from; s <= kAttemptSteps; ++s) {
      const auto& step = record_.steps(s);
      Consider(step.started(), step.started_key(),
               mask & Bit(authtrail::v1::OUTCOME_STARTED), &best, &best_key);
      Consider(step.succeeded(), step.succeeded_key(),
               mask & Bit(authtrail::v1::OUTCOME_SUCCEEDED), &best, &best_key);
      Consider(step.failed(), step.failed_key(),
               mask & Bit(authtrail::v1::OUTCOME_FAILED), &best, &best_key);
      Consider(step.denied(), step.denied_key(),
               mask & Bit(authtrail::v1::OUTCOME_DENIED), &best, &best_key);
    }
    return best;
  }

  static unsigned Bit(authtrail::v1::Outcome outcome) { return 1u << outcome; }

  Finding Yes(const EventRef& evidence, std::string note) const {
    return Make(authtrail::v1::ANSWER_YES, &evidence, std::move(note));
  }
  Finding No(const EventRef* evidence, std::string note) const {
    return Make(authtrail::v1::ANSWER_NO, evidence, std::move(note));
  }
  Finding Unknown(const EventRef* evidence, std::string note) const {
    return Make(authtrail::v1::ANSWER_UNKNOWN, evidence, std::move(note));
  }

  // A STARTED step with no end: pending within the bound, then unknown
  // (or, when the whole attempt went silent, NO).
  Finding Unfinished(const EventRef& started, std::string what) const {
    if (!silent_) {
      return Unknown(&started, absl::StrCat(what, " started; pending"));
    }
    return No(&started,
              absl::StrCat(what, " started; nothing followed within ",
                           absl::FormatDuration(policy_.stall_window)));
  }

 private:
  static void Consider(const EventRef& ref, const OrderKey& key, bool wanted,
                       const EventRef** best, const OrderKey** best_key) {
    if (!wanted || ref.position() == 0) return;
    if (*best == nullptr || Before(key, **best_key)) {
      *best = &ref;
      *best_key = &key;
    }
  }

  static Finding Make(Answer answer, const EventRef* evidence,
                      std::string note) {
    Finding finding;
    finding.set_answer(answer);
    if (evidence != nullptr) *finding.mutable_evidence() = *evidence;
    finding.set_note(std::move(note));
    return finding;
  }

  const SessionRecord& record_;
  const ReadPolicy& policy_;
  bool silent_ = false;
};

constexpr unsigned kAnyOutcome = ~0u;

Finding ReachedPortal(const SessionReader& r) {
  const auto& redirect = r.StepAt(authtrail::v1::STEP_PORTAL_REDIRECT);
  if (redirect.has_succeeded()) {
    return r.Yes(redirect.succeeded(), "the portal was reached");
  }
  if (const EventRef* later =
          r.EarliestFrom(authtrail::v1::STEP_SIGN_IN, kAnyOutcome)) {
    return r.Yes(*later, "inferred from a later step");
  }
  if (redirect.has_failed()) {
    return r.No(&redirect.failed(), "the redirect failed");
  }
  if (redirect.has_denied()) {
    return r.No(&redirect.denied(), "the redirect was refused");
  }
  if (redirect.has_started()) {
    return r.Unfinished(redirect.started(), "the redirect");
  }
  return r.Unknown(nullptr, "no redirect event in this session");
}

Finding SignedIn(const SessionReader& r, const Finding& portal) {
  const auto& sign_in = r.StepAt(authtrail::v1::STEP_SIGN_IN);
  if (sign_in.has_succeeded()) {
    return r.Yes(sign_in.succeeded(), "the patient signed in");
  }
  unsigned after_sign_in =
      SessionReader::Bit(authtrail::v1::OUTCOME_SUCCEEDED) |
      SessionReader::Bit(authtrail::v1::OUTCOME_DENIED);
  const EventRef* consent =
      r.EarliestFrom(authtrail::v1::STEP_CONSENT, after_sign_in);
  if (consent != nullptr) return r.Yes(*consent, "inferred from a later step");
  // Any token exchange means a code was issued, so the patient signed in
  // (an earlier failed sign-in was retried), as question three infers too.
  if (const EventRef* ex =
          r.EarliestFrom(authtrail::v1::STEP_TOKEN_EXCHANGE, kAnyOutcome)) {
    return r.Yes(*ex, "inferred from the token exchange");
  }
  if (sign_in.has_failed()) return r.No(&sign_in.failed(), "sign-in failed");
  if (sign_in.has_denied()) return r.No(&sign_in.denied(), "sign-in refused");
  if (sign_in.has_started()) return r.Unfinished(sign_in.started(), "sign-in");
  if (portal.answer() == authtrail::v1::ANSWER_NO) {
    return r.No(nullptr, "the portal was never reached");
  }
  if (portal.answer() == authtrail::v1::ANSWER_YES && r.Silent()) {
    return r.No(nullptr, "no sign-in after reaching the portal");
  }
  return r.Unknown(nullptr, "no sign-in event yet");
}

Finding ApprovedAccess(const SessionReader& r, const Finding& signed_in) {
  const auto& consent = r.StepAt(authtrail::v1::STEP_CONSENT);
  const auto& callback = r.StepAt(authtrail::v1::STEP_OAUTH_CALLBACK);
  if (consent.has_succeeded()) {
    return r.Yes(consent.succeeded(), "the patient approved access");
  }
  if (callback.has_succeeded()) {
    return r.Yes(callback.succeeded(), "the callback carried a code");
  }
  if (const EventRef* ex =
          r.EarliestFrom(authtrail::v1::STEP_TOKEN_EXCHANGE, kAnyOutcome)) {
    return r.Yes(*ex, "inferred from the token exchange");
  }
  if (consent.has_denied()) {
    return r.No(&consent.denied(), "the patient declined");
  }
  if (callback.has_denied()) {
    return r.No(&callback.denied(), "the callback reported a decline");
  }
  if (consent.has_failed()) {
    return r.No(&consent.failed(), "the consent step failed");
  }
  if (callback.has_failed()) {
    return r.No(&callback.failed(),
                "the source returned an error instead of a code");
  }
  if (consent.has_started()) return r.Unfinished(consent.started(), "consent");
  if (signed_in.answer() == authtrail::v1::ANSWER_NO) {
    return r.No(nullptr, "the patient never signed in");
  }
  if (r.Silent()) return r.No(nullptr, "no consent event followed");
  return r.Unknown(nullptr, "no consent event yet");
}

Finding TokenExchanged(const SessionReader& r, const Finding& approved) {
  const auto& exchange = r.StepAt(authtrail::v1::STEP_TOKEN_EXCHANGE);
  if (exchange.has_succeeded()) {
    return r.Yes(exchange.succeeded(), "tokens were issued");
  }
  if (exchange.has_failed()) {
    return r.No(&exchange.failed(), "the token exchange failed");
  }
  if (exchange.has_denied()) {
    return r.No(&exchange.denied(), "the token exchange was refused");
  }
  if (exchange.has_started()) {
    if (!r.Silent()) {
      return r.Unknown(&exchange.started(), "the exchange is pending");
    }
    return r.Unknown(&exchange.started(),
                     "the exchange started; its outcome is unknown");
  }
  if (approved.answer() == authtrail::v1::ANSWER_NO) {
    return r.No(nullptr, "there was no code to exchange");
  }
  if (r.Silent()) return r.No(nullptr, "no exchange followed");
  return r.Unknown(nullptr, "no exchange event yet");
}

Step FurthestStep(const SessionRecord& record) {
  for (int s = kAttemptSteps; s >= 1; --s) {
    const auto& step = record.steps(s);
    if (step.has_started() || step.has_succeeded() || step.has_failed() ||
        step.has_denied()) {
      return static_cast<Step>(s);
    }
  }
  return authtrail::v1::STEP_UNSPECIFIED;
}

// "TOKEN_EXCHANGE" for STEP_TOKEN_EXCHANGE; the number for unknown steps.
std::string StepLabel(Step step) {
  const std::string& name = authtrail::v1::Step_Name(step);
  if (name.empty()) return absl::StrCat("step ", static_cast<int>(step));
  return name.substr(std::string_view("STEP_").size());
}

std::string SessionSummary(const SessionDiagnosis& d) {
  if (d.token_exchanged().answer() == authtrail::v1::ANSWER_YES) {
    if (d.refresh_failed_later().answer() == authtrail::v1::ANSWER_YES) {
      return "Authorization worked; a later refresh failed.";
    }
    return "Authorization worked; if records are missing, look at record "
           "retrieval.";
  }
  if (d.has_root_cause()) {
    return absl::StrCat("The attempt failed: ", d.root_cause().error_code(),
                        " at ", StepLabel(d.root_cause().event().step()), ".");
  }
  if (d.abandoned()) {
    return absl::StrCat("The patient stopped after ",
                        StepLabel(d.furthest_step()), ".");
  }
  return "The attempt is in progress.";
}

}  // namespace

SessionDiagnosis Diagnose(const SessionRecord& record,
                          const Finding& refresh_failed_later,
                          const ReadPolicy& policy) {
  SessionRecord full = record;
  while (full.steps_size() <= kAttemptSteps) full.add_steps();
  SessionReader reader(full, policy);

  SessionDiagnosis d;
  d.set_session_id(full.session_id());
  d.set_patient_id(full.patient_id());
  d.set_connection_id(full.connection_id());
  if (full.has_source()) *d.mutable_source() = full.source();
  *d.mutable_reached_portal() = ReachedPortal(reader);
  *d.mutable_signed_in() = SignedIn(reader, d.reached_portal());
  *d.mutable_approved_access() = ApprovedAccess(reader, d.signed_in());
  *d.mutable_token_exchanged() = TokenExchanged(reader, d.approved_access());
  *d.mutable_refresh_failed_later() = refresh_failed_later;
  d.set_furthest_step(FurthestStep(full));
  if (full.has_root_cause()) {
    *d.mutable_root_cause() = full.root_cause();
  }
  d.set_event_count(full.event_count());
  *d.mutable_first_event_at() = full.first().time();
  *d.mutable_last_event_at() = full.last().time();
  d.set_abandoned(reader.Silent() && full.failure_count() == 0 &&
                  d.token_exchanged().answer() != authtrail::v1::ANSWER_YES);
  d.set_summary(SessionSummary(d));
  return d;
}

bool RefreshFinding::Add(const RecordedEvent& event) {
  const auto& e = event.event();
  if (e.step() != authtrail::v1::STEP_TOKEN_REFRESH) return true;
  if (IsFailure(e)) {
    finding_.set_answer(authtrail::v1::ANSWER_YES);
    *finding_.mutable_evidence() = RefOf(event);
    finding_.set_note(absl::StrCat("a refresh failed with ", e.error_code()));
    return false;
  }
  if (e.outcome() == authtrail::v1::OUTCOME_SUCCEEDED && !saw_success_) {
    saw_success_ = true;
    *finding_.mutable_evidence() = RefOf(event);
  }
  return true;
}

Finding RefreshFinding::Result(bool tokens_issued) const {
  Finding out = finding_;
  if (out.answer() == authtrail::v1::ANSWER_YES) return out;
  if (!tokens_issued) {
    out.Clear();
    out.set_answer(authtrail::v1::ANSWER_UNKNOWN);
    out.set_note("no tokens were issued in this attempt");
    return out;
  }
  if (saw_success_) {
    out.set_answer(authtrail::v1::ANSWER_NO);
    out.set_note("refreshes succeeded and none failed");
    return out;
  }
  out.set_answer(authtrail::v1::ANSWER_UNKNOWN);
  out.set_note("no refresh yet");
  return out;
}

}  // namespace authtrail::storage
