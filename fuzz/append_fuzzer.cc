// libFuzzer target over append validation and the reducers.
//
// Each input becomes one or more append requests (fuzz/recipe.h explains
// the two input modes). A small model of the store takes them the way
// EventStore does: ValidateAppend with the batch's clock, all-or-nothing
// batches, idempotency by event_id (same bytes: duplicate, nothing
// written; other bytes: the batch is refused), gap-free positions, one
// recorded_at per batch, the future-dated flag, and per batch one fold of
// the new events into connection and session records that are kept as
// stable bytes between batches (as ProjectionWriter does with RocksDB).
//
// Then it checks what the projections promise (docs/DESIGN rules) and
// aborts with a message on the first violation:
//  - validation: deterministic, its violations well formed, and it never
//    lets through an event that breaks a rule checked here independently;
//  - every event as the log keeps it (stable bytes, parsed back) folds
//    into the same records, byte for byte, as the live fold: once with a
//    serialize/parse round trip after every event, once all in memory
//    (what rebuild and verify rely on);
//  - a late event never moves a connection's state; folding only the
//    events that were not late gives the same state as folding all;
//  - counters, first/last times, latest key and last failure key match a
//    plain recount of the connection's events;
//  - a session record does not depend on arrival order: folding its
//    events in reverse, or in time order, gives the same steps, root
//    cause, first/last and counts (root cause is the first failure in time
//    order, whenever it arrived);
//  - no event is ordered ahead of the server's clock plus the future
//    tolerance;
//  - the read-time views (ViewConnection, Diagnose with the refresh
//    finding found the way EventStore::DiagnoseSession finds it) at
//    several read times: well-formed answers, evidence that is a real
//    event of the session, root cause and furthest step that match a
//    recount, abandonment only of an attempt in progress, a refresh
//    failure only after tokens were issued, and no answer contradicting
//    another (a later step's YES with an earlier step's NO);
//  - an attempt that issued tokens is not moved by its own later events.
// ASan and UBSan catch memory errors and undefined behaviour on the way.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "authtrail/records/v1/records.pb.h"
#include "authtrail/v1/history.pb.h"
#include "authtrail/v1/ingest.pb.h"
#include "fuzz/recipe.h"
#include "google/protobuf/stubs/logging.h"
#include "services/validation.h"
#include "storage/proto_time.h"
#include "storage/reducers.h"
#include "storage/serialize.h"

namespace authtrail::fuzz {
namespace {

using authtrail::v1::AppendEventsRequest;
using authtrail::v1::AuthEvent;
using authtrail::v1::Connection;
using authtrail::v1::EventRef;
using authtrail::v1::Finding;
using authtrail::v1::RecordedEvent;
using authtrail::v1::SessionDiagnosis;
using storage::Before;
using storage::ConnectionRecord;
using storage::OrderKey;
using storage::SessionRecord;

constexpr absl::Duration kStall = absl::Minutes(30);

// The store's own stable serialization, so that the two cannot drift.
std::string Stable(const google::protobuf::MessageLite& message) {
  return authtrail::storage::SerializeStable(message);
}

[[noreturn]] void Fail(const std::string& what, const std::string& detail) {
  std::fprintf(stderr, "\n*** authtrail fuzz invariant violated: %s\n%s\n",
               what.c_str(), detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Known open findings (fuzz/crashes/KNOWN) that AUTHTRAIL_FUZZ_TOLERATE
// names, comma-separated: the fuzzer reports the first hit of each and
// goes on, so that one open bug does not stop the search for others.
// scripts/fuzz and the CTest run pass the names in fuzz/crashes/KNOWN;
// `scripts/fuzz --strict` passes none.
bool Tolerated(const std::string& name) {
  static const std::string* const kList = [] {
    const char* env = std::getenv("AUTHTRAIL_FUZZ_TOLERATE");
    return new std::string(absl::StrCat(",", env ? env : "", ","));
  }();
  if (kList->find(absl::StrCat(",", name, ",")) == std::string::npos) {
    return false;
  }
  static auto* const reported = new std::set<std::string>();
  if (reported->insert(name).second) {
    std::fprintf(stderr,
                 "authtrail fuzz: known finding '%s' hit and tolerated "
                 "(fuzz/crashes/KNOWN)\n",
                 name.c_str());
  }
  return true;
}

// A violation of a known open finding: fatal unless tolerated.
void Known(const std::string& name, const std::string& what,
           const std::string& detail) {
  if (!Tolerated(name)) Fail("[" + name + "] " + what, detail);
}

void ExpectSame(const std::string& what, const google::protobuf::Message& a,
                const google::protobuf::Message& b) {
  if (Stable(a) != Stable(b)) {
    Fail(what,
         "--- first:\n" + a.DebugString() + "--- second:\n" + b.DebugString());
  }
}

// ---------------------------------------------------------------------
// Validation.

bool IsFailureOutcome(int outcome) {
  return outcome == authtrail::v1::OUTCOME_FAILED ||
         outcome == authtrail::v1::OUTCOME_DENIED;
}

// Rules of docs/API.md restated independently of services/validation.cc:
// the first one `e` breaks, or empty. Only rules simple enough to restate
// without copying the code; the point is that validation never accepts
// what these refuse.
std::string BrokenRule(const AuthEvent& e, absl::Time now) {
  using L = services::Limits;
  if (e.event_id().empty()) return "empty event_id";
  for (const std::string* id :
       {&e.event_id(), &e.patient_id(), &e.connection_id(), &e.session_id(),
        &e.request_id(), &e.source().id()}) {
    if (id->size() > L::kMaxIdBytes) return "id over the limit";
    for (char c : *id) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return "control character in an id";
      }
    }
  }
  if (e.error_code().size() > L::kMaxErrorCodeBytes) return "long error_code";
  if (e.source().name().size() > L::kMaxSourceNameBytes) return "long name";
  if (e.error_description().size() > L::kMaxErrorDescriptionBytes) {
    return "long error_description";
  }
  if (absl::AsciiStrToLower(e.error_description()) == "null") return "null";
  if (e.step() == 0) return "step unspecified";
  if (e.outcome() == 0) return "outcome unspecified";
  if (IsFailureOutcome(e.outcome()) && e.error_code().empty()) {
    return "failure without error_code";
  }
  if (e.http_status() != 0 &&
      (e.http_status() < 100 || e.http_status() > 599)) {
    return "http_status out of range";
  }
  if (!e.has_occurred_at()) return "no occurred_at";
  const auto& ts = e.occurred_at();
  if (ts.nanos() < 0 || ts.nanos() >= 1'000'000'000) return "bad nanos";
  if (ts.seconds() < L::kEarliestUnixSeconds) return "before 2000";
  if (storage::FromProtoTime(ts) > now + L::kMaxAhead) return "too far ahead";
  if (e.attributes().size() > L::kMaxAttributes) return "too many attributes";
  size_t bytes = 0;
  for (const auto& [k, v] : e.attributes()) {
    if (k.empty()) return "empty attribute key";
    if (k.size() > L::kMaxAttributeKeyBytes) return "long attribute key";
    if (v.size() > L::kMaxAttributeValueBytes) return "long attribute value";
    bytes += k.size() + v.size();
  }
  if (bytes > L::kMaxAttributesBytes) return "attributes over the limit";
  return "";
}

// Validates like the ingest service and checks the answer. True when the
// batch is valid.
bool Validate(const AppendEventsRequest& request, absl::Time now) {
  std::vector<services::Violation> found =
      services::ValidateAppend(request, now);
  std::vector<services::Violation> again =
      services::ValidateAppend(request, now);
  if (found.size() != again.size()) {
    Fail("ValidateAppend is not deterministic", request.DebugString());
  }
  if (found.size() > 20) {
    Fail("ValidateAppend returned more than 20 violations", "");
  }
  for (size_t i = 0; i < found.size(); ++i) {
    const auto& v = found[i];
    if (v.field != again[i].field || v.description != again[i].description) {
      Fail("ValidateAppend is not deterministic", v.field);
    }
    if (v.field.rfind("events", 0) != 0 || v.description.empty()) {
      Fail("malformed violation", v.field + ": " + v.description);
    }
  }
  if (!found.empty()) return false;
  if (request.events_size() == 0 || static_cast<size_t>(request.events_size()) >
                                        services::Limits::kMaxEventsPerBatch) {
    Fail("ValidateAppend accepted a batch with a bad event count", "");
  }
  for (const AuthEvent& e : request.events()) {
    std::string broken = BrokenRule(e, now);
    if (!broken.empty()) {
      Fail("ValidateAppend accepted an event that breaks a rule: " + broken,
           e.DebugString());
    }
  }
  return true;
}

// ---------------------------------------------------------------------
// The store model.

// The part of a connection record that only events which are the
// connection's newest may change: the state machine.
ConnectionRecord StateOf(const ConnectionRecord& r) {
  ConnectionRecord s;
  const Connection& v = r.view();
  Connection* sv = s.mutable_view();
  sv->set_state(v.state());
  sv->set_degraded(v.degraded());
  sv->set_consecutive_refresh_failures(v.consecutive_refresh_failures());
  sv->set_reconnect_reason(v.reconnect_reason());
  sv->set_current_session_id(v.current_session_id());
  if (v.has_last_event()) *sv->mutable_last_event() = v.last_event();
  if (r.has_latest()) *s.mutable_latest() = r.latest();
  if (r.has_attempt_last_at()) {
    *s.mutable_attempt_last_at() = r.attempt_last_at();
  }
  s.set_attempt_furthest_step(r.attempt_furthest_step());
  s.set_attempt_ended(r.attempt_ended());
  s.set_attempt_issued_tokens(r.attempt_issued_tokens());
  if (r.has_attempt_first_failure()) {
    *s.mutable_attempt_first_failure() = r.attempt_first_failure();
  }
  return s;
}

template <typename Record>
Record Load(const std::map<std::string, std::string>& stored,
            const std::string& key) {
  Record record;
  auto it = stored.find(key);
  if (it != stored.end() && !record.ParseFromString(it->second)) {
    Fail("a stored record does not parse", key);
  }
  return record;
}

class Trail {
 public:
  // Takes one request as EventStore::Append would.
  void Append(const AppendEventsRequest& request, absl::Time now) {
    if (!Validate(request, now)) return;
    // Idempotency, as GroupCommit::Resolve decides it.
    std::vector<int> fresh;
    std::map<std::string, std::string> in_request;
    for (int i = 0; i < request.events_size(); ++i) {
      const AuthEvent& e = request.events(i);
      std::string bytes = Stable(e);
      auto [it, first] = in_request.emplace(e.event_id(), bytes);
      if (!first) {
        if (it->second != bytes) return;  // ALREADY_EXISTS, nothing written
        continue;
      }
      auto stored = ids_.find(e.event_id());
      if (stored != ids_.end()) {
        if (stored->second != bytes) return;  // ALREADY_EXISTS
        continue;
      }
      fresh.push_back(i);
    }

    google::protobuf::Timestamp recorded_at = storage::ToProtoTime(now);
    std::map<std::string, ConnectionRecord> connections;
    std::map<std::string, SessionRecord> sessions;
    for (int i : fresh) {
      const AuthEvent& e = request.events(i);
      ids_[e.event_id()] = Stable(e);
      RecordedEvent recorded;
      recorded.set_position(log_.size() + 1);
      *recorded.mutable_recorded_at() = recorded_at;
      *recorded.mutable_event() = e;
      recorded.set_future_dated(
          storage::IsFutureDated(e.occurred_at(), recorded_at));
      // What the log keeps and a replay reads back.
      RecordedEvent logged;
      if (!logged.ParseFromString(Stable(recorded))) {
        Fail("a log record does not parse back", recorded.DebugString());
      }
      log_.push_back(logged);

      OrderKey key = storage::OrderKeyOf(recorded);
      if (storage::FromProtoTime(key.time()) >
          now + storage::kFutureTolerance) {
        Fail("an event is ordered ahead of the server clock",
             recorded.DebugString());
      }
      bool late = false;
      if (!e.connection_id().empty()) {
        auto [it, created] = connections.try_emplace(e.connection_id());
        if (created) {
          it->second = Load<ConnectionRecord>(connections_, e.connection_id());
        }
        ConnectionRecord before = it->second;
        storage::ReduceConnection(recorded, &it->second);
        late = CheckConnectionStep(recorded, key, before, it->second);
      }
      late_.push_back(late);
      if (!e.session_id().empty()) {
        auto [it, created] = sessions.try_emplace(e.session_id());
        if (created)
          it->second = Load<SessionRecord>(sessions_, e.session_id());
        storage::ReduceSession(recorded, &it->second);
      }
    }
    for (const auto& [id, record] : connections)
      connections_[id] = Stable(record);
    for (const auto& [id, record] : sessions) sessions_[id] = Stable(record);
    if (now > last_now_) last_now_ = now;
  }

  // Checks everything that needs the whole history.
  void Check() const {
    CheckReplay();
    for (const auto& [id, bytes] : connections_) CheckConnection(id);
    for (const auto& [id, bytes] : sessions_) CheckSession(id);
  }

 private:
  // One event applied to its connection; returns whether it was late.
  static bool CheckConnectionStep(const RecordedEvent& recorded,
                                  const OrderKey& key,
                                  const ConnectionRecord& before,
                                  const ConnectionRecord& after) {
    bool late = before.has_latest() && Before(key, before.latest());
    if (after.view().event_count() != before.view().event_count() + 1) {
      Fail("event_count did not grow by one", recorded.DebugString());
    }
    if (late) {
      ExpectSame("a late event moved the connection's state", StateOf(before),
                 StateOf(after));
      if (after.view().late_event_count() !=
          before.view().late_event_count() + 1) {
        Fail("a late event was not counted as late", recorded.DebugString());
      }
    } else {
      // "Nothing regresses an attempt that issued tokens": its own later
      // attempt-step events only take their place in the history.
      const AuthEvent& e = recorded.event();
      if (before.attempt_issued_tokens() && !e.session_id().empty() &&
          e.session_id() == before.view().current_session_id() &&
          storage::IsAttemptStep(e.step()) &&
          (after.view().state() != before.view().state() ||
           !after.attempt_issued_tokens())) {
        Fail("an event of an attempt that issued tokens changed the state",
             "--- before:\n" + before.DebugString() + "--- after:\n" +
                 after.DebugString() + "--- event:\n" + recorded.DebugString());
      }
      ExpectSame("the newest event is not the connection's latest", key,
                 after.latest());
      if (after.view().last_event().position() != recorded.position()) {
        Fail("the newest event is not last_event", recorded.DebugString());
      }
    }
    return late;
  }

  // Rebuild: the log replayed into fresh records must equal the live ones.
  void CheckReplay() const {
    std::map<std::string, std::string> conn_rt, sess_rt;
    std::map<std::string, ConnectionRecord> conn_mem;
    std::map<std::string, SessionRecord> sess_mem;
    for (const RecordedEvent& r : log_) {
      const AuthEvent& e = r.event();
      if (!e.connection_id().empty()) {
        auto c = Load<ConnectionRecord>(conn_rt, e.connection_id());
        storage::ReduceConnection(r, &c);
        conn_rt[e.connection_id()] = Stable(c);
        storage::ReduceConnection(r, &conn_mem[e.connection_id()]);
      }
      if (!e.session_id().empty()) {
        auto s = Load<SessionRecord>(sess_rt, e.session_id());
        storage::ReduceSession(r, &s);
        sess_rt[e.session_id()] = Stable(s);
        storage::ReduceSession(r, &sess_mem[e.session_id()]);
      }
    }
    CompareStores("connections", connections_, conn_rt, conn_mem);
    CompareStores("sessions", sessions_, sess_rt, sess_mem);
  }

  template <typename Record>
  static void CompareStores(const std::string& what,
                            const std::map<std::string, std::string>& live,
                            const std::map<std::string, std::string>& rt,
                            const std::map<std::string, Record>& mem) {
    if (live.size() != rt.size() || live.size() != mem.size()) {
      Fail("a replay produced another set of " + what, "");
    }
    for (const auto& [id, bytes] : live) {
      auto it = rt.find(id);
      auto jt = mem.find(id);
      if (it == rt.end() || jt == mem.end()) {
        Fail("a replay lost one of the " + what, id);
      }
      Record live_record = Load<Record>(live, id);
      if (it->second != bytes) {
        ExpectSame("a replay (round trip per event) differs from the live " +
                       what + " record " + id,
                   live_record, Load<Record>(rt, id));
        Fail("a replay differs in bytes only: " + what, id);
      }
      if (Stable(jt->second) != bytes) {
        ExpectSame("a replay (in memory) differs from the live " + what +
                       " record " + id,
                   live_record, jt->second);
        Fail("a replay differs in bytes only: " + what, id);
      }
    }
  }

  std::vector<size_t> EventsOf(bool (*match)(const AuthEvent&,
                                             const std::string&),
                               const std::string& id) const {
    std::vector<size_t> out;
    for (size_t i = 0; i < log_.size(); ++i) {
      if (match(log_[i].event(), id)) out.push_back(i);
    }
    return out;
  }
  static bool OfConnection(const AuthEvent& e, const std::string& id) {
    return e.connection_id() == id;
  }
  static bool OfSession(const AuthEvent& e, const std::string& id) {
    return e.session_id() == id;
  }

  std::vector<absl::Time> ReadTimes() const {
    return {last_now_ - absl::Hours(2),
            last_now_,
            last_now_ + kStall - absl::Seconds(1),
            last_now_ + kStall,
            last_now_ + kStall + absl::Seconds(1),
            last_now_ + absl::Hours(30)};
  }

  void CheckConnection(const std::string& id) const {
    ConnectionRecord live = Load<ConnectionRecord>(connections_, id);
    std::vector<size_t> mine = EventsOf(&Trail::OfConnection, id);

    // Late events are history only: without them, the same state.
    ConnectionRecord in_order;
    uint64_t late = 0;
    OrderKey max_key, max_failure;
    bool any_failure = false;
    OrderKey first_time;
    for (size_t i : mine) {
      OrderKey key = storage::OrderKeyOf(log_[i]);
      if (i == mine.front() || Before(key, first_time)) first_time = key;
      if (i == mine.front() || Before(max_key, key)) max_key = key;
      if (storage::IsFailure(log_[i].event()) &&
          (!any_failure || Before(max_failure, key))) {
        max_failure = key;
        any_failure = true;
      }
      if (late_[i]) {
        ++late;
      } else {
        storage::ReduceConnection(log_[i], &in_order);
      }
    }
    ExpectSame("late events changed connection " + id + "'s state",
               StateOf(live), StateOf(in_order));

    const Connection& v = live.view();
    if (v.event_count() != mine.size() || v.late_event_count() != late) {
      Fail("connection counters differ from a recount", live.DebugString());
    }
    ExpectSame("latest is not the newest event of " + id, max_key,
               live.latest());
    if (any_failure) {
      ExpectSame("last_failure_key is not the newest failure of " + id,
                 max_failure, live.last_failure_key());
      if (v.last_failure().event().position() != max_failure.position()) {
        Fail("last_failure is not the newest failure", live.DebugString());
      }
    } else if (live.has_last_failure_key() || v.has_last_failure()) {
      Fail("a connection without failures has a last failure",
           live.DebugString());
    }
    if (Stable(v.first_seen_at()) != Stable(first_time.time()) ||
        Stable(v.last_seen_at()) != Stable(max_key.time())) {
      Fail("first/last seen differ from a recount", live.DebugString());
    }

    storage::ReadPolicy policy;
    policy.stall_window = kStall;
    for (absl::Time now : ReadTimes()) {
      policy.now = now;
      Connection view = storage::ViewConnection(live, policy);
      if (now == last_now_) {
        ExpectSame("ViewConnection is not deterministic", view,
                   storage::ViewConnection(live, policy));
      }
      bool abandoned =
          view.state() == authtrail::v1::CONNECTION_STATE_ABANDONED;
      if (abandoned ? v.state() != authtrail::v1::CONNECTION_STATE_AUTHORIZING
                    : view.state() != v.state()) {
        Fail("ViewConnection changed the state other than to abandon",
             view.DebugString());
      }
      if (view.refresh_pending() && view.refresh_outcome_unknown()) {
        Fail("a refresh both pending and of unknown outcome",
             view.DebugString());
      }
      if ((view.refresh_pending() || view.refresh_outcome_unknown()) !=
          live.has_open_refresh()) {
        Fail("refresh flags disagree with the open refresh",
             live.DebugString());
      }
      if (view.summary().empty()) Fail("empty summary", view.DebugString());
    }
  }

  // The answer to question five as EventStore::DiagnoseSession finds it:
  // the connection's events from the exchange's occurred_at on, in index
  // order (occurred_at, position), until another session's attempt step.
  Finding RefreshAnswer(const SessionRecord& record) const {
    storage::RefreshFinding refresh;
    bool issued =
        record.steps_size() > authtrail::v1::STEP_TOKEN_EXCHANGE &&
        record.steps(authtrail::v1::STEP_TOKEN_EXCHANGE).has_succeeded();
    if (issued && !record.connection_id().empty()) {
      const auto& from = record.steps(authtrail::v1::STEP_TOKEN_EXCHANGE)
                             .succeeded()
                             .occurred_at();
      std::vector<size_t> mine =
          EventsOf(&Trail::OfConnection, record.connection_id());
      auto index_order = [this](size_t a, size_t b) {
        const auto& ta = log_[a].event().occurred_at();
        const auto& tb = log_[b].event().occurred_at();
        if (storage::TimeBefore(ta, tb)) return true;
        if (storage::TimeBefore(tb, ta)) return false;
        return a < b;
      };
      std::sort(mine.begin(), mine.end(), index_order);
      for (size_t i : mine) {
        const AuthEvent& e = log_[i].event();
        if (storage::TimeBefore(e.occurred_at(), from)) continue;
        if (storage::IsAttemptStep(e.step()) &&
            e.session_id() != record.session_id()) {
          break;
        }
        if (!refresh.Add(log_[i])) break;
      }
    }
    return refresh.Result(issued);
  }

  // Evidence must be the reference of a real event that matches `match`.
  void CheckEvidence(const std::string& what, const EventRef& ref,
                     const std::string& session_id, bool same_session) const {
    if (ref.position() == 0 || ref.position() > log_.size()) {
      Fail(what + ": evidence names no event", ref.DebugString());
    }
    const RecordedEvent& r = log_[ref.position() - 1];
    ExpectSame(what + ": evidence differs from the event it names",
               storage::RefOf(r), ref);
    if (same_session && r.event().session_id() != session_id) {
      Fail(what + ": evidence from another session", r.DebugString());
    }
  }

  void CheckSession(const std::string& id) const {
    SessionRecord live = Load<SessionRecord>(sessions_, id);
    std::vector<size_t> mine = EventsOf(&Trail::OfSession, id);

    // Arrival order does not matter, only time order.
    auto fold = [this](const std::vector<size_t>& order) {
      SessionRecord r;
      for (size_t i : order) storage::ReduceSession(log_[i], &r);
      return r;
    };
    auto same_identity = [&live](SessionRecord r) {
      r.set_session_id(live.session_id());
      r.set_patient_id(live.patient_id());
      r.set_connection_id(live.connection_id());
      if (live.has_source()) {
        *r.mutable_source() = live.source();
      } else {
        r.clear_source();
      }
      return r;
    };
    std::vector<size_t> reversed(mine.rbegin(), mine.rend());
    ExpectSame("session " + id + " depends on arrival order (reversed)", live,
               same_identity(fold(reversed)));
    std::vector<size_t> by_time = mine;
    std::sort(by_time.begin(), by_time.end(), [this](size_t a, size_t b) {
      return Before(storage::OrderKeyOf(log_[a]), storage::OrderKeyOf(log_[b]));
    });
    ExpectSame("session " + id + " depends on arrival order (time order)", live,
               same_identity(fold(by_time)));

    // A recount: counts, the root cause, the furthest step.
    uint32_t failures = 0;
    const RecordedEvent* root = nullptr;
    int furthest = 0;
    for (size_t i : by_time) {
      const AuthEvent& e = log_[i].event();
      if (storage::IsFailure(e)) {
        ++failures;
        if (root == nullptr) root = &log_[i];
      }
      if (storage::IsAttemptStep(e.step()) && e.outcome() >= 1 &&
          e.outcome() <= 4) {
        furthest = std::max<int>(furthest, e.step());
      }
    }
    if (live.event_count() != mine.size() || live.failure_count() != failures) {
      Fail("session counters differ from a recount", live.DebugString());
    }

    Finding refresh = RefreshAnswer(live);
    storage::ReadPolicy policy;
    policy.stall_window = kStall;
    for (absl::Time now : ReadTimes()) {
      policy.now = now;
      SessionDiagnosis d = storage::Diagnose(live, refresh, policy);
      if (now == last_now_) {
        ExpectSame("Diagnose is not deterministic", d,
                   storage::Diagnose(live, refresh, policy));
      }
      const Finding* answers[] = {&d.reached_portal(), &d.signed_in(),
                                  &d.approved_access(), &d.token_exchanged()};
      for (const Finding* f : answers) {
        if (f->answer() < authtrail::v1::ANSWER_YES ||
            f->answer() > authtrail::v1::ANSWER_UNKNOWN) {
          Fail("an answer is not YES, NO or UNKNOWN", d.DebugString());
        }
        if (f->answer() == authtrail::v1::ANSWER_YES && !f->has_evidence()) {
          Fail("a YES without evidence", d.DebugString());
        }
        if (f->has_evidence()) {
          CheckEvidence("session " + id, f->evidence(), id, true);
        }
      }
      // The questions follow the flow: a YES to a later one (portal, sign
      // in, consent, exchange) is evidence for the earlier ones, so an
      // earlier NO contradicts it. Diagnose infers earlier answers from
      // later steps for exactly this reason.
      for (int later = 1; later < 4; ++later) {
        if (answers[later]->answer() != authtrail::v1::ANSWER_YES) continue;
        for (int earlier = 0; earlier < later; ++earlier) {
          if (answers[earlier]->answer() == authtrail::v1::ANSWER_NO) {
            Known("diagnosis-funnel",
                  "the diagnosis contradicts itself: question " +
                      std::to_string(later + 1) + " YES but question " +
                      std::to_string(earlier + 1) + " NO",
                  d.DebugString());
          }
        }
      }
      if (d.refresh_failed_later().answer() == authtrail::v1::ANSWER_YES &&
          d.token_exchanged().answer() != authtrail::v1::ANSWER_YES) {
        Fail("a refresh failed later, yet no tokens were issued",
             d.DebugString());
      }
      if (refresh.has_evidence()) {
        CheckEvidence("refresh finding", refresh.evidence(), id, false);
      }
      if (d.furthest_step() != furthest) {
        Fail("furthest_step differs from a recount", d.DebugString());
      }
      if (d.event_count() != mine.size()) {
        Fail("diagnosis event_count differs", d.DebugString());
      }
      if ((root != nullptr) != d.has_root_cause()) {
        Fail("root cause present without a failure, or missing",
             d.DebugString());
      }
      if (root != nullptr) {
        ExpectSame("the root cause is not the first failure in time order",
                   storage::RefOf(*root), d.root_cause().event());
      }
      if (d.abandoned() && (failures > 0 || d.token_exchanged().answer() ==
                                                authtrail::v1::ANSWER_YES)) {
        Fail("abandoned yet failed or finished", d.DebugString());
      }
      if (d.summary().empty()) Fail("empty diagnosis summary", d.DebugString());
    }
  }

  std::map<std::string, std::string> ids_;  // event_id -> stable bytes
  std::vector<RecordedEvent> log_;          // as a replay reads it
  std::vector<bool> late_;  // per log entry: behind its connection's latest
  std::map<std::string, std::string> connections_;  // live, stable bytes
  std::map<std::string, std::string> sessions_;
  absl::Time last_now_ = absl::FromUnixSeconds(kNowUnixSeconds);
};

}  // namespace
}  // namespace authtrail::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Parse errors (e.g. invalid UTF-8 in a string field) are expected
  // here; protobuf's log lines about them would bury the fuzzer's output.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using authtrail::fuzz::Trail;
  std::vector<authtrail::fuzz::Batch> batches =
      authtrail::fuzz::Decode(data, size);
  Trail trail;
  for (const auto& batch : batches) trail.Append(batch.request, batch.now);
  trail.Check();
  return 0;
}
