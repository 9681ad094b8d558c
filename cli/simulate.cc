// The traffic model of `authtrail simulate`.
//
// Generation and sending are separate phases. Generation runs on one thread
// and walks the patients in order; each patient draws from its own
// std::mt19937_64, seeded from the run key and the patient number, and the
// uniform and weighted draws are computed here by hand (the standard
// distributions differ between standard libraries). The run key mixes the
// seed with the start instant, the number of days and of patients, so that
// runs with other options never reuse an event id for other content. Ids
// come from counters (event, session, request) hashed with the key, so the
// same options give the same events.
//
// Sending sorts the events by the instant the emitter sends them (late and
// repeated deliveries included) and hands consecutive batches to a pool of
// threads, so the server sees them roughly in time order.

#include "cli/simulate.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/format.h"
#include "nlohmann/json.hpp"

namespace authtrail::cli {
namespace {

using Json = nlohmann::ordered_json;

// Simulated time is kept in Unix milliseconds.
constexpr int64_t kSecond = 1000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

// ---- Randomness and ids ---------------------------------------------------

// A 64-bit finaliser (the SplitMix64 one): derives well spread seeds and ids
// from a key and a counter.
uint64_t Mix(uint64_t key, uint64_t value) {
  uint64_t z = key + 0x9e3779b97f4a7c15ULL * (value + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Draws on top of std::mt19937_64, whose sequence the standard fixes.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // Uniform in [0, 1), from the top 53 bits of one draw.
  double Uniform() {
    return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0);
  }

  // Uniform integer in [low, high].
  int64_t Between(int64_t low, int64_t high) {
    const auto span = static_cast<double>(high - low + 1);
    return std::min(high, low + static_cast<int64_t>(Uniform() * span));
  }

  bool Chance(double probability) { return Uniform() < probability; }

  // An index drawn with probability proportional to its weight.
  template <typename Container, typename WeightOf>
  size_t Weighted(const Container& items, WeightOf weight_of) {
    double total = 0;
    for (const auto& item : items) total += weight_of(item);
    double pick = Uniform() * total;
    for (size_t i = 0; i < std::size(items); ++i) {
      pick -= weight_of(items[i]);
      if (pick < 0) return i;
    }
    return std::size(items) - 1;
  }

 private:
  std::mt19937_64 engine_;
};

// ---- Catalogue ------------------------------------------------------------

struct SourceInfo {
  const char* id;
  const char* name;
  v1::SourceKind kind;
  int weight;  // how many patients link it, relatively
};

// Real-world-like sources. Names are display text and keep their
// punctuation; two sources share a name on purpose (names are not keys).
constexpr SourceInfo kSources[] = {
    {"src-epic-northwind", "Epic MyChart – Northwind Health",
     v1::SOURCE_KIND_EHR, 12},
    {"src-mychart-providence", "MyChart · Providence St. Joseph",
     v1::SOURCE_KIND_EHR, 10},
    {"src-cerner-mercy", "Oracle Health (Cerner) – Mercy", v1::SOURCE_KIND_EHR,
     8},
    {"src-athena-portal", "athenahealth Patient Portal", v1::SOURCE_KIND_EHR,
     7},
    {"src-nextgen-family", "NextGen Healthcare — Family Clinic",
     v1::SOURCE_KIND_EHR, 5},
    {"src-kaiser", "Kaiser Permanente", v1::SOURCE_KIND_EHR, 9},
    {"src-epic-stlukes", "Epic MyChart – St. Luke’s Health System",
     v1::SOURCE_KIND_EHR, 6},
    {"src-meditech-valley", "MEDITECH Expanse · Valley Regional",
     v1::SOURCE_KIND_EHR, 4},
    {"src-fmh-harbor", "FollowMyHealth — Harbor Medical Group",
     v1::SOURCE_KIND_EHR, 3},
    {"src-healow-sunrise", "healow – Sunrise Pediatrics", v1::SOURCE_KIND_EHR,
     3},
    {"src-epic-northwind-kids", "Epic MyChart – Northwind Health",
     v1::SOURCE_KIND_EHR, 2},
    {"src-cms-bluebutton", "CMS Blue Button 2.0", v1::SOURCE_KIND_PAYER, 10},
    {"src-aetna", "Aetna", v1::SOURCE_KIND_PAYER, 6},
    {"src-uhc", "UnitedHealthcare", v1::SOURCE_KIND_PAYER, 8},
    {"src-bcbs-tx", "Blue Cross Blue Shield of Texas", v1::SOURCE_KIND_PAYER,
     5},
    {"src-humana", "Humana", v1::SOURCE_KIND_PAYER, 4},
    {"src-cigna", "Cigna Healthcare", v1::SOURCE_KIND_PAYER, 5},
    {"src-anthem", "Anthem Blue Cross & Blue Shield", v1::SOURCE_KIND_PAYER, 5},
    {"src-quest", "Quest Diagnostics", v1::SOURCE_KIND_OTHER, 3},
    {"src-labcorp", "Labcorp Patient", v1::SOURCE_KIND_OTHER, 3},
    {"src-cvs", "CVS Pharmacy & MinuteClinic", v1::SOURCE_KIND_OTHER, 2},
};
constexpr uint8_t kSourceCount = std::size(kSources);
// The portal that breaks for one hour on day 3.
constexpr uint8_t kBrokenSource = 0;

constexpr const char* kEmitters[] = {"portal-redirector", "oauth-callback",
                                     "token-service", "refresh-scheduler"};

// Which service reports a step.
uint8_t EmitterOf(v1::Step step) {
  switch (step) {
    case v1::STEP_PORTAL_REDIRECT:
    case v1::STEP_SIGN_IN:
      return 0;
    case v1::STEP_CONSENT:
    case v1::STEP_OAUTH_CALLBACK:
      return 1;
    case v1::STEP_TOKEN_REFRESH:
      return 3;
    default:
      return 2;
  }
}

struct Fault {
  const char* code;
  const char* description;
  int http_status;
};

constexpr Fault kLoginFailed = {
    "login_failed", "The portal did not accept the username or password", 0};
constexpr Fault kConsentDenied = {
    "access_denied", "The patient declined the requested access", 0};
constexpr Fault kCallbackDenied = {"access_denied",
                                   "The resource owner denied the request", 0};
constexpr Fault kOutage = {
    "server_error",
    "The authorization server encountered an unexpected condition", 0};
constexpr Fault kCodeUsed = {"invalid_grant", "authorization code already used",
                             400};
// OAuth errors in the callback, in three groups: configuration problems
// (answered before any sign-in), source trouble, and state problems (the
// callback comes back too late or to the wrong session).
constexpr Fault kCallbackFaults[] = {
    {"invalid_scope", "The requested scope is invalid, unknown, or malformed",
     0},
    {"invalid_request", "Missing required parameter: code_challenge", 0},
    {"unauthorized_client",
     "The client is not allowed to request an authorization code", 0},
    kOutage,
    {"temporarily_unavailable",
     "The authorization server is temporarily overloaded or under maintenance",
     0},
    {"state_expired", "The state parameter belongs to an expired session", 0},
    {"state_mismatch", "The state parameter matches no pending session", 0},
};
// Weights of kCallbackFaults, in the same order.
constexpr int kCallbackFaultWeights[] = {10, 10, 5, 20, 15, 25, 15};
// Where source trouble and state problems start in kCallbackFaults.
constexpr size_t kFirstSourceFault = 3;
constexpr size_t kFirstStateFault = 5;

constexpr Fault kExchangeFaults[] = {
    {"invalid_grant", "The authorization code is invalid or has expired", 400},
    {"invalid_client", "Client authentication failed", 401},
    {"timeout", "upstream_timeout: no answer from the token endpoint in 30s",
     504},
    {"upstream_timeout", "No answer from the token endpoint in 30s", 504},
    {"server_error", "The token endpoint answered 503 Service Unavailable",
     503},
};
constexpr Fault kRefreshTransientFaults[] = {
    {"temporarily_unavailable", "The token endpoint is temporarily unavailable",
     503},
    {"server_error", "The token endpoint answered 502 Bad Gateway", 502},
    {"timeout", "No answer from the token endpoint in 30s", 504},
};
constexpr Fault kRefreshFinalFaults[] = {
    {"invalid_grant", "refresh token expired or revoked", 400},
    {"token_revoked", "The patient revoked this application's access", 401},
};
constexpr Fault kRedirectFault = {
    "smart_configuration_unavailable",
    "GET /.well-known/smart-configuration answered 404", 404};
constexpr Fault kConsentFault = {
    "consent_screen_error", "The portal's consent page failed to load", 500};
constexpr Fault kTokenResponseFault = {
    "invalid_token_response",
    "The token response carried no patient in its launch context", 200};

constexpr char kScope[] = "launch/patient patient/*.read offline_access";
constexpr char kClientId[] = "authtrail-sim";

// Relative number of attempts started in each hour of the day (UTC): most
// patients are in the Americas and connect in their daytime.
constexpr int kHourWeights[24] = {8, 7, 5, 3,  2,  1,  1,  1,  1,  1, 2, 3,
                                  5, 7, 9, 10, 10, 10, 10, 10, 10, 9, 9, 9};

// ---- Rates of the model -----------------------------------------------------

// How an attempt is meant to go before the broken portal has its say.
enum class Plan {
  kSuccess,
  kAbandonAtPortal,
  kAbandonAtSignIn,
  kDecline,
  kCallbackError,
  kExchangeError,
  kOther,
};

struct PlanWeight {
  Plan plan;
  double first;  // in a connection's first attempt
  double retry;  // in a later attempt
};

constexpr PlanWeight kPlans[] = {
    {Plan::kSuccess, 0.70, 0.85},         {Plan::kAbandonAtPortal, 0.07, 0.04},
    {Plan::kAbandonAtSignIn, 0.05, 0.03}, {Plan::kDecline, 0.05, 0.02},
    {Plan::kCallbackError, 0.05, 0.02},   {Plan::kExchangeError, 0.06, 0.03},
    {Plan::kOther, 0.02, 0.01},
};

constexpr double kDuplicateRate = 0.03;
constexpr double kLateRate = 0.05;
constexpr double kSkewRate = 0.01;
constexpr double kFutureRate = 0.0002;
constexpr double kRefreshTransientRate = 0.08;
constexpr double kRefreshFinalRate = 0.035;
constexpr double kRefreshSilentRate = 0.005;
constexpr double kDisconnectRate = 0.04;
constexpr double kReconnectRate = 0.25;
constexpr double kOutageFailRate = 0.85;
constexpr int64_t kOutageLength = kHour;

// ---- Generated events ---------------------------------------------------

// The simulated period and what is derived from the options.
struct World {
  uint64_t key = 0;        // mixes seed and start; the root of every id
  int64_t start_ms = 0;    // simulated day 0
  int64_t horizon_ms = 0;  // end of the simulated period
  int64_t outage_ms = 0;   // start of the broken portal's bad hour
  int64_t now_ms = 0;      // real clock at the start of the run
  double cohort_rate = 0;  // patients caught by the outage
};

// One event in compact form; turned into an AuthEvent when sent.
struct SimEvent {
  int64_t real_ms = 0;     // when it happened
  int64_t clock_ms = 0;    // occurred_at, as the emitter's clock had it
  int64_t deliver_ms = 0;  // when the emitter sends it
  uint64_t serial = 0;     // event id counter
  uint64_t session = 0;    // 0: none
  uint64_t request = 0;
  uint32_t patient = 0;
  uint16_t connection = 0;
  uint8_t source = 0;
  v1::Step step = v1::STEP_UNSPECIFIED;
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  const Fault* fault = nullptr;
  bool unattributed = false;  // patient and connection unknown
  bool exchange_attributes = false;
  bool future = false;  // dated ahead of the real clock
  bool repeat = false;  // the second delivery of an event
};

std::string PatientId(uint32_t patient) {
  return absl::StrFormat("pat-%06d", patient);
}

std::string ConnectionId(uint32_t patient, uint16_t connection) {
  return absl::StrFormat("conn-%06d-%d", patient, connection);
}

std::string SessionId(uint64_t key, uint64_t session) {
  return absl::StrFormat("sess-%016x", Mix(key ^ 0x5e55, session));
}

std::string RequestId(uint64_t key, uint64_t request) {
  return absl::StrFormat("req-%012x", Mix(key ^ 0x4e0, request) >> 16);
}

// A version-4-shaped UUID from the key and the event counter. An event dated
// from the real clock also mixes in that date: its content differs from run
// to run, so it must not reuse an id.
std::string EventId(uint64_t key, const SimEvent& e) {
  uint64_t high = Mix(key, 2 * e.serial);
  const uint64_t low = Mix(key, 2 * e.serial + 1);
  if (e.future) high ^= Mix(key, static_cast<uint64_t>(e.clock_ms));
  return absl::StrFormat(
      "%08x-%04x-4%03x-%04x-%012x", high >> 32, (high >> 16) & 0xffff,
      high & 0xfff, 0x8000 | ((low >> 48) & 0x3fff), low & 0xffffffffffffULL);
}

google::protobuf::Timestamp MillisToTimestamp(int64_t ms) {
  return ToTimestamp(absl::FromUnixMillis(ms));
}

void FillEvent(const World& world, const SimEvent& e, v1::AuthEvent& event) {
  const SourceInfo& source = kSources[e.source];
  event.set_event_id(EventId(world.key, e));
  if (!e.unattributed) {
    event.set_patient_id(PatientId(e.patient));
    event.set_connection_id(ConnectionId(e.patient, e.connection));
  }
  if (e.session != 0) event.set_session_id(SessionId(world.key, e.session));
  event.mutable_source()->set_id(source.id);
  event.mutable_source()->set_name(source.name);
  event.mutable_source()->set_kind(source.kind);
  event.set_step(e.step);
  event.set_outcome(e.outcome);
  if (e.fault != nullptr) {
    event.set_error_code(e.fault->code);
    event.set_error_description(e.fault->description);
    event.set_http_status(e.fault->http_status);
  }
  *event.mutable_occurred_at() = MillisToTimestamp(e.clock_ms);
  if (e.request != 0) event.set_request_id(RequestId(world.key, e.request));
  event.set_emitter(kEmitters[EmitterOf(e.step)]);
  if (e.exchange_attributes) {
    (*event.mutable_attributes())["scope"] = kScope;
    (*event.mutable_attributes())["client_id"] = kClientId;
  }
}

// ---- The generator --------------------------------------------------------

// Where a connection ended up, as the generator meant it.
enum class Ending {
  kActive,
  kAbandoned,
  kDeclined,
  kFailed,
  kNeedsReconnect,
  kDisconnected,
};

// Ids worth looking at after the run.
struct Samples {
  std::string failed_patient;
  std::string declined_session;
  std::string exchange_session;  // a failed exchange, retried if possible
  bool exchange_retried = false;
  std::string reconnect_connection;
  std::string outage_session;
};

struct Totals {
  uint64_t patients = 0;
  uint64_t connections = 0;
  uint64_t sessions = 0;
  uint64_t events = 0;   // distinct events
  uint64_t repeats = 0;  // second deliveries
};

struct Connection {
  uint32_t patient = 0;
  uint16_t index = 0;
  uint8_t source = 0;
  Ending ending = Ending::kAbandoned;
  // Whether one of its events was dated by a wrong clock or delivered
  // late: the server then reads its story differently from how it went,
  // so it is no sample to suggest.
  bool bent = false;
};

// One authorization attempt while it is generated.
struct Attempt {
  Connection* connection = nullptr;
  uint64_t session = 0;
  int64_t t = 0;  // the time of its latest event
  bool unattributed = false;
  bool drop_session = false;
  bool bent = false;  // as Connection::bent, for this attempt's events
};

class Generator {
 public:
  Generator(const World& world, std::vector<SimEvent>& out)
      : world_(world), out_(out), rng_(0) {}

  void AddPatient(uint32_t patient);

  const Totals& totals() const { return totals_; }
  const Samples& samples() const { return samples_; }

 private:
  // Connections and their attempts.
  void RunConnection(Connection& c, int64_t t, bool cohort);
  Ending RunAttempt(Attempt& a, Plan plan);
  Plan PickPlan(bool retry);
  int64_t PickAttemptStart();
  int64_t RetryDelay();
  bool InOutage(int64_t t, uint8_t source) const;
  void NoteEnding(const Connection& c);

  // The steps of the authorization-code flow.
  void Redirect(Attempt& a);
  void SignIn(Attempt& a);
  void Consent(Attempt& a);
  bool Callback(Attempt& a);
  void Exchange(Attempt& a, const Fault* fault);
  Ending AbandonAtSignIn(Attempt& a);
  Ending Decline(Attempt& a);
  Ending CallbackError(Attempt& a);
  Ending ExchangeError(Attempt& a);
  Ending OtherFailure(Attempt& a);

  // Life after tokens were obtained. Returns when the patient connects
  // again, or -1.
  int64_t ActiveLife(Connection& c, int64_t t);
  bool Refresh(Connection& c, int64_t& t, bool final_failure);

  // Event output.
  void Wait(Attempt& a, int64_t low, int64_t high);
  void Add(Attempt& a, v1::Step step, v1::Outcome outcome, uint64_t request,
           const Fault* fault = nullptr, bool exchange_attributes = false);
  bool Emit(SimEvent e);
  uint64_t NewRequest() { return ++requests_; }

  const World& world_;
  std::vector<SimEvent>& out_;
  Rng rng_;
  uint64_t serials_ = 0;
  uint64_t requests_ = 0;
  Totals totals_;
  Samples samples_;
};

void Generator::AddPatient(uint32_t patient) {
  rng_ = Rng(Mix(world_.key, patient));
  ++totals_.patients;
  const bool cohort = rng_.Chance(world_.cohort_rate);
  const int64_t roll = rng_.Between(1, 100);
  const int count = roll <= 55 ? 1 : roll <= 85 ? 2 : 3;

  std::vector<uint8_t> sources;
  if (cohort) sources.push_back(kBrokenSource);
  while (static_cast<int>(sources.size()) < count) {
    const auto source =
        static_cast<uint8_t>(rng_.Weighted(kSources, [](const SourceInfo& s) {
          return static_cast<double>(s.weight);
        }));
    if (std::find(sources.begin(), sources.end(), source) == sources.end()) {
      sources.push_back(source);
    }
  }
  for (size_t i = 0; i < sources.size(); ++i) {
    Connection c{patient, static_cast<uint16_t>(i + 1), sources[i]};
    ++totals_.connections;
    const bool caught = cohort && i == 0;
    const int64_t start = caught
                              ? world_.outage_ms + rng_.Between(0, 50 * kMinute)
                              : PickAttemptStart();
    RunConnection(c, start, caught);
    NoteEnding(c);
  }
}

int64_t Generator::PickAttemptStart() {
  const int64_t latest =
      std::max(world_.start_ms + kMinute, world_.horizon_ms - 2 * kHour);
  // Rejection sampling against the hour-of-day weights.
  while (true) {
    const int64_t t = rng_.Between(world_.start_ms, latest);
    const int64_t hour = ((t / kHour) % 24 + 24) % 24;
    if (rng_.Between(1, 10) <= kHourWeights[hour]) return t;
  }
}

Plan Generator::PickPlan(bool retry) {
  return kPlans[rng_.Weighted(kPlans,
                              [retry](const PlanWeight& w) {
                                return retry ? w.retry : w.first;
                              })]
      .plan;
}

int64_t Generator::RetryDelay() {
  const int64_t roll = rng_.Between(1, 10);
  if (roll <= 4) return rng_.Between(1 * kMinute, 20 * kMinute);
  if (roll <= 8) return rng_.Between(1 * kHour, 24 * kHour);
  return rng_.Between(1 * kDay, 3 * kDay);
}

bool Generator::InOutage(int64_t t, uint8_t source) const {
  return source == kBrokenSource && t >= world_.outage_ms &&
         t < world_.outage_ms + kOutageLength;
}

void Generator::RunConnection(Connection& c, int64_t t, bool cohort) {
  int attempts = 0;
  int max_attempts = cohort ? 5 : 2;
  while (t < world_.horizon_ms && attempts < max_attempts) {
    const bool in_outage = InOutage(t, c.source);
    Attempt a{&c, ++totals_.sessions, t};
    c.ending = RunAttempt(
        a, in_outage ? Plan::kSuccess : PickPlan(/*retry=*/attempts > 0));
    ++attempts;
    if (c.ending == Ending::kActive) {
      t = ActiveLife(c, a.t);
      if (t < 0) return;
      max_attempts = attempts + 1;
      continue;
    }
    const bool outage_retry = cohort && InOutage(a.t, c.source);
    const double retry_rate = outage_retry                    ? 0.9
                              : c.ending == Ending::kFailed   ? 0.65
                              : c.ending == Ending::kDeclined ? 0.35
                                                              : 0.45;
    if (!rng_.Chance(retry_rate)) return;
    t = a.t +
        (outage_retry ? rng_.Between(2 * kMinute, 8 * kMinute) : RetryDelay());
  }
}

Ending Generator::RunAttempt(Attempt& a, Plan plan) {
  switch (plan) {
    case Plan::kAbandonAtPortal:
      Redirect(a);
      return Ending::kAbandoned;
    case Plan::kAbandonAtSignIn:
      return AbandonAtSignIn(a);
    case Plan::kDecline:
      return Decline(a);
    case Plan::kCallbackError:
      return CallbackError(a);
    case Plan::kExchangeError:
      return ExchangeError(a);
    case Plan::kOther:
      return OtherFailure(a);
    case Plan::kSuccess:
      break;
  }
  Redirect(a);
  SignIn(a);
  Consent(a);
  if (!Callback(a)) return Ending::kFailed;
  Exchange(a, nullptr);
  return Ending::kActive;
}

void Generator::NoteEnding(const Connection& c) {
  if (c.bent) return;
  if (c.ending == Ending::kFailed && samples_.failed_patient.empty()) {
    samples_.failed_patient = PatientId(c.patient);
  }
  if (c.ending == Ending::kNeedsReconnect &&
      samples_.reconnect_connection.empty()) {
    samples_.reconnect_connection = ConnectionId(c.patient, c.index);
  }
}

// ---- Steps ----------------------------------------------------------------

void Generator::Redirect(Attempt& a) {
  const uint64_t request = NewRequest();
  Add(a, v1::STEP_PORTAL_REDIRECT, v1::OUTCOME_STARTED, request);
  Wait(a, 150, 1500);
  Add(a, v1::STEP_PORTAL_REDIRECT, v1::OUTCOME_SUCCEEDED, request);
}

void Generator::SignIn(Attempt& a) {
  Wait(a, 3 * kSecond, 45 * kSecond);
  const uint64_t request = NewRequest();
  Add(a, v1::STEP_SIGN_IN, v1::OUTCOME_STARTED, request);
  Wait(a, 20 * kSecond, 4 * kMinute);
  Add(a, v1::STEP_SIGN_IN, v1::OUTCOME_SUCCEEDED, request);
}

void Generator::Consent(Attempt& a) {
  Wait(a, 5 * kSecond, 2 * kMinute);
  Add(a, v1::STEP_CONSENT, v1::OUTCOME_SUCCEEDED, NewRequest());
}

// Returns false when the broken portal answered with an error.
bool Generator::Callback(Attempt& a) {
  Wait(a, 300, 4 * kSecond);
  const uint64_t request = NewRequest();
  if (InOutage(a.t, a.connection->source) && rng_.Chance(kOutageFailRate)) {
    Add(a, v1::STEP_OAUTH_CALLBACK, v1::OUTCOME_FAILED, request, &kOutage);
    if (samples_.outage_session.empty() && !a.bent) {
      samples_.outage_session = SessionId(world_.key, a.session);
    }
    return false;
  }
  Add(a, v1::STEP_OAUTH_CALLBACK, v1::OUTCOME_SUCCEEDED, request);
  return true;
}

void Generator::Exchange(Attempt& a, const Fault* fault) {
  Wait(a, 50, 500);
  const uint64_t request = NewRequest();
  Add(a, v1::STEP_TOKEN_EXCHANGE, v1::OUTCOME_STARTED, request,
      /*fault=*/nullptr, /*exchange_attributes=*/true);
  if (fault != nullptr && fault->http_status == 504) {
    Wait(a, 30 * kSecond, 31 * kSecond);
  } else {
    Wait(a, 200, 3 * kSecond);
  }
  Add(a, v1::STEP_TOKEN_EXCHANGE,
      fault == nullptr ? v1::OUTCOME_SUCCEEDED : v1::OUTCOME_FAILED, request,
      fault, /*exchange_attributes=*/true);
}

Ending Generator::AbandonAtSignIn(Attempt& a) {
  Redirect(a);
  Wait(a, 3 * kSecond, 45 * kSecond);
  const uint64_t request = NewRequest();
  Add(a, v1::STEP_SIGN_IN, v1::OUTCOME_STARTED, request);
  if (!rng_.Chance(0.5)) return Ending::kAbandoned;
  Wait(a, 30 * kSecond, 3 * kMinute);
  Add(a, v1::STEP_SIGN_IN, v1::OUTCOME_FAILED, request, &kLoginFailed);
  return Ending::kFailed;
}

Ending Generator::Decline(Attempt& a) {
  Redirect(a);
  SignIn(a);
  Wait(a, 5 * kSecond, 2 * kMinute);
  Add(a, v1::STEP_CONSENT, v1::OUTCOME_DENIED, NewRequest(), &kConsentDenied);
  Wait(a, 300, 4 * kSecond);
  Add(a, v1::STEP_OAUTH_CALLBACK, v1::OUTCOME_DENIED, NewRequest(),
      &kCallbackDenied);
  if (samples_.declined_session.empty() && !a.bent) {
    samples_.declined_session = SessionId(world_.key, a.session);
  }
  return Ending::kDeclined;
}

// The source redirects back with an OAuth error. Configuration errors are
// answered at once; state problems come after a long pause, and a third of
// them cannot be tied to the patient any more.
Ending Generator::CallbackError(Attempt& a) {
  const size_t index = rng_.Weighted(
      kCallbackFaultWeights, [](int w) { return static_cast<double>(w); });
  const bool state_problem = index >= kFirstStateFault;
  Redirect(a);
  if (index >= kFirstSourceFault) SignIn(a);
  if (state_problem) {
    Consent(a);
    Wait(a, 10 * kMinute, 40 * kMinute);
    a.unattributed = rng_.Chance(1.0 / 3);
    a.drop_session = a.unattributed && rng_.Chance(0.5);
  } else {
    Wait(a, 300, 3 * kSecond);
  }
  Add(a, v1::STEP_OAUTH_CALLBACK, v1::OUTCOME_FAILED, NewRequest(),
      &kCallbackFaults[index]);
  // Unattributed, the failure leaves the patient's attempt silent.
  return a.unattributed ? Ending::kAbandoned : Ending::kFailed;
}

// The code exchange fails; a transient failure is often retried with the
// same code, which the source then refuses as already used.
Ending Generator::ExchangeError(Attempt& a) {
  Redirect(a);
  SignIn(a);
  Consent(a);
  if (!Callback(a)) return Ending::kFailed;
  const Fault& fault = kExchangeFaults[rng_.Between(
      0, static_cast<int64_t>(std::size(kExchangeFaults)) - 1)];
  Exchange(a, &fault);
  const bool transient = fault.http_status >= 500;
  const bool retried = rng_.Chance(transient ? 0.5 : 0.15);
  if (retried) {
    Wait(a, 1 * kSecond, 5 * kSecond);
    Exchange(a, &kCodeUsed);
  }
  if (!a.bent && (samples_.exchange_session.empty() ||
                  (retried && !samples_.exchange_retried))) {
    samples_.exchange_session = SessionId(world_.key, a.session);
    samples_.exchange_retried = retried;
  }
  return Ending::kFailed;
}

// Rarer failures: a source whose configuration cannot be fetched, a consent
// page that breaks, a token response without patient context.
Ending Generator::OtherFailure(Attempt& a) {
  const int64_t kind = rng_.Between(0, 2);
  if (kind == 0) {
    const uint64_t request = NewRequest();
    Add(a, v1::STEP_PORTAL_REDIRECT, v1::OUTCOME_STARTED, request);
    Wait(a, 500, 5 * kSecond);
    Add(a, v1::STEP_PORTAL_REDIRECT, v1::OUTCOME_FAILED, request,
        &kRedirectFault);
    return Ending::kFailed;
  }
  Redirect(a);
  SignIn(a);
  if (kind == 1) {
    Wait(a, 5 * kSecond, 1 * kMinute);
    Add(a, v1::STEP_CONSENT, v1::OUTCOME_FAILED, NewRequest(), &kConsentFault);
    return Ending::kFailed;
  }
  Consent(a);
  if (!Callback(a)) return Ending::kFailed;
  Exchange(a, &kTokenResponseFault);
  return Ending::kFailed;
}

// ---- After the exchange ---------------------------------------------------

int64_t Generator::ActiveLife(Connection& c, int64_t t) {
  const int64_t refreshes = rng_.Between(0, 6);
  const int64_t final_at =
      rng_.Chance(kRefreshFinalRate) ? rng_.Between(0, 5) : -1;
  const bool disconnect = rng_.Chance(kDisconnectRate);
  t += rng_.Between(12 * kHour, 36 * kHour);
  for (int64_t i = 0; i < refreshes && t < world_.horizon_ms; ++i) {
    if (!Refresh(c, t, i == final_at)) {
      c.ending = Ending::kNeedsReconnect;
      if (!rng_.Chance(kReconnectRate)) return -1;
      return t + rng_.Between(1 * kHour, 2 * kDay);
    }
    t += rng_.Between(20 * kHour, 40 * kHour);
  }
  if (disconnect && t < world_.horizon_ms) {
    Attempt a{&c, 0, t};
    Add(a, v1::STEP_DISCONNECT, v1::OUTCOME_SUCCEEDED, NewRequest());
    c.ending = Ending::kDisconnected;
  }
  return -1;
}

// One scheduled refresh at `t`, retried once after a transient failure.
// Returns false when the grant is gone for good.
bool Generator::Refresh(Connection& c, int64_t& t, bool final_failure) {
  Attempt a{&c, 0, t};
  for (int tries = 0; tries < 2; ++tries) {
    const uint64_t request = NewRequest();
    Add(a, v1::STEP_TOKEN_REFRESH, v1::OUTCOME_STARTED, request);
    if (rng_.Chance(kRefreshSilentRate)) break;
    Wait(a, 200, 2 * kSecond);
    if (final_failure) {
      const size_t index = rng_.Between(0, 1);
      Add(a, v1::STEP_TOKEN_REFRESH, v1::OUTCOME_FAILED, request,
          &kRefreshFinalFaults[index]);
      t = a.t;
      return false;
    }
    if (!rng_.Chance(kRefreshTransientRate)) {
      Add(a, v1::STEP_TOKEN_REFRESH, v1::OUTCOME_SUCCEEDED, request);
      break;
    }
    const size_t index = rng_.Between(0, 2);
    Add(a, v1::STEP_TOKEN_REFRESH, v1::OUTCOME_FAILED, request,
        &kRefreshTransientFaults[index]);
    Wait(a, 10 * kMinute, 30 * kMinute);
  }
  t = a.t;
  return true;
}

// ---- Event output ---------------------------------------------------------

void Generator::Wait(Attempt& a, int64_t low, int64_t high) {
  a.t += rng_.Between(low, high);
}

void Generator::Add(Attempt& a, v1::Step step, v1::Outcome outcome,
                    uint64_t request, const Fault* fault,
                    bool exchange_attributes) {
  SimEvent e;
  e.real_ms = a.t;
  e.session = a.drop_session ? 0 : a.session;
  e.request = request;
  e.patient = a.connection->patient;
  e.connection = a.connection->index;
  e.source = a.connection->source;
  e.step = step;
  e.outcome = outcome;
  e.fault = fault;
  e.unattributed = a.unattributed;
  e.exchange_attributes = exchange_attributes;
  if (Emit(e)) {
    a.bent = true;
    a.connection->bent = true;
  }
}

// Applies what emitters do to an event on its way: clocks that run ahead,
// late deliveries and retried deliveries. True when the event's date or
// delivery is not when it happened.
bool Generator::Emit(SimEvent e) {
  e.serial = ++serials_;
  e.clock_ms = e.real_ms;
  e.deliver_ms = e.real_ms;
  if (rng_.Chance(kSkewRate)) {
    e.clock_ms += rng_.Between(2 * kMinute, 10 * kMinute);
  } else if (rng_.Chance(kFutureRate)) {
    e.future = true;
    e.clock_ms = world_.now_ms + 30 * kMinute + rng_.Between(0, 2 * kMinute);
  }
  if (rng_.Chance(kLateRate)) {
    e.deliver_ms += rng_.Between(1 * kMinute, 30 * kMinute);
  }
  ++totals_.events;
  out_.push_back(e);
  const bool bent = e.clock_ms != e.real_ms || e.deliver_ms != e.real_ms;
  // A second delivery of the same event changes nothing on the server.
  if (rng_.Chance(kDuplicateRate)) {
    e.repeat = true;
    e.deliver_ms += rng_.Between(200, 20 * kSecond);
    ++totals_.repeats;
    out_.push_back(e);
  }
  return bent;
}

// ---- Setting up -----------------------------------------------------------

absl::StatusOr<World> MakeWorld(const SimulateOptions& options) {
  const absl::Time now = absl::Now();
  absl::Time start;
  if (options.start.empty()) {
    // Midnight UTC: runs on the same day with the same seed repeat exactly.
    start = absl::FromUnixSeconds(absl::ToUnixSeconds(now) / 86400 * 86400) -
            absl::Hours(24) * options.days;
  } else {
    absl::StatusOr<absl::Time> parsed = ParseTimeArg(options.start, now);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    start = *parsed;
  }
  World world;
  world.start_ms = absl::ToUnixMillis(start);
  world.horizon_ms = world.start_ms + options.days * kDay;
  // Every option that changes the content of events goes into the key, so
  // that two runs never send one event id with different content.
  world.key = Mix(Mix(Mix(options.seed, static_cast<uint64_t>(world.start_ms)),
                      static_cast<uint64_t>(options.days)),
                  static_cast<uint64_t>(options.patients));
  world.now_ms = absl::ToUnixMillis(now);
  // The broken hour: 15:00 UTC on day 3, or mid-period when that is too
  // late; on an hour boundary so that one timeline bucket holds it.
  world.outage_ms = (world.start_ms + 3 * kDay) / kDay * kDay + 15 * kHour;
  if (world.outage_ms + kOutageLength > world.horizon_ms) {
    world.outage_ms =
        (world.start_ms + options.days * kDay / 2) / kHour * kHour;
  }
  world.cohort_rate = std::min(1.0, std::max(0.02, 25.0 / options.patients));
  return world;
}

std::vector<SimEvent> Generate(const World& world,
                               const SimulateOptions& options, Totals& totals,
                               Samples& samples) {
  std::vector<SimEvent> events;
  Generator generator(world, events);
  for (int p = 1; p <= options.patients; ++p) generator.AddPatient(p);
  totals = generator.totals();
  samples = generator.samples();
  std::sort(events.begin(), events.end(),
            [](const SimEvent& a, const SimEvent& b) {
              return std::tie(a.deliver_ms, a.serial, a.repeat) <
                     std::tie(b.deliver_ms, b.serial, b.repeat);
            });
  return events;
}

// ---- Sending --------------------------------------------------------------

// Sends the events in consecutive batches from a pool of threads. Failed
// calls that are safe to repeat (the server unavailable) are retried.
class Sender {
 public:
  Sender(const GlobalOptions& global, const World& world,
         const std::vector<SimEvent>& events, int batch)
      : client_(global), world_(world), events_(events), batch_(batch) {}

  // Sends everything and returns the first error.
  absl::Status Run(int concurrency);

  uint64_t sent() const { return sent_.load(); }
  uint64_t duplicates() const { return duplicates_.load(); }

 private:
  void Work();
  absl::Status SendBatch(size_t begin, size_t end);
  void Fail(absl::Status status);
  void ShowProgress();

  Client client_;
  const World& world_;
  const std::vector<SimEvent>& events_;
  const size_t batch_;
  std::atomic<size_t> next_{0};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> duplicates_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;         // guarded by mu_
  absl::Status first_error_;  // guarded by mu_
};

absl::Status Sender::Run(int concurrency) {
  std::thread progress;
  if (isatty(STDERR_FILENO)) progress = std::thread([this] { ShowProgress(); });
  std::vector<std::thread> workers;
  workers.reserve(concurrency);
  for (int i = 0; i < concurrency; ++i) {
    workers.emplace_back([this] { Work(); });
  }
  for (std::thread& worker : workers) worker.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  done_cv_.notify_all();
  if (progress.joinable()) progress.join();
  std::lock_guard<std::mutex> lock(mu_);
  return first_error_;
}

void Sender::Work() {
  while (!failed_.load()) {
    const size_t begin = next_.fetch_add(batch_);
    if (begin >= events_.size()) return;
    const size_t end = std::min(events_.size(), begin + batch_);
    absl::Status status = SendBatch(begin, end);
    if (!status.ok()) Fail(std::move(status));
  }
}

absl::Status Sender::SendBatch(size_t begin, size_t end) {
  v1::AppendEventsRequest request;
  for (size_t i = begin; i < end; ++i) {
    FillEvent(world_, events_[i], *request.add_events());
  }
  constexpr int kTries = 4;
  absl::StatusOr<AppendCounts> counts;
  for (int attempt = 0; attempt < kTries; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250 << attempt));
    }
    counts = Append(client_, request);
    if (counts.ok() || !absl::IsUnavailable(counts.status())) break;
  }
  if (!counts.ok()) return counts.status();
  sent_ += end - begin;
  duplicates_ += counts->duplicates;
  return absl::OkStatus();
}

void Sender::Fail(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (first_error_.ok()) first_error_ = std::move(status);
  failed_ = true;
}

// Rewrites one status line on the terminal until the workers are done.
void Sender::ShowProgress() {
  const absl::Time started = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!done_cv_.wait_for(lock, std::chrono::milliseconds(250),
                            [this] { return done_; })) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - started);
    std::fprintf(stderr, "\rsimulate: %llu/%zu events sent, %.0f/s ",
                 static_cast<unsigned long long>(sent()), events_.size(),
                 seconds > 0 ? static_cast<double>(sent()) / seconds : 0.0);
  }
  std::fprintf(stderr, "\r\x1b[K");
}

// ---- Report ---------------------------------------------------------------

struct Report {
  Totals totals;
  Samples samples;
  uint64_t sent = 0;
  uint64_t duplicates = 0;  // as the server reported them
  double seconds = 0;
  bool dry_run = false;
};

std::string OutageEnd(const World& world) {
  return FormatRfc3339(absl::FromUnixMillis(world.outage_ms + kOutageLength));
}

Json ReportJson(const World& world, const Report& r) {
  const SourceInfo& broken = kSources[kBrokenSource];
  Json json = {
      {"patients", r.totals.patients},
      {"connections", r.totals.connections},
      {"sessions", r.totals.sessions},
      {"events", r.totals.events},
      {"events_sent", r.sent},
      {"repeated_deliveries", r.totals.repeats},
      {"start", FormatRfc3339(absl::FromUnixMillis(world.start_ms))},
      {"end", FormatRfc3339(absl::FromUnixMillis(world.horizon_ms))},
      {"broken_source",
       {{"id", broken.id},
        {"name", broken.name},
        {"outage_start", FormatRfc3339(absl::FromUnixMillis(world.outage_ms))},
        {"outage_end", OutageEnd(world)}}},
      {"samples",
       {{"patient_with_failed_connection", r.samples.failed_patient},
        {"declined_session", r.samples.declined_session},
        {"exchange_failure_session", r.samples.exchange_session},
        {"outage_session", r.samples.outage_session},
        {"needs_reconnect_connection", r.samples.reconnect_connection}}},
      {"dry_run", r.dry_run},
  };
  if (!r.dry_run) {
    json["duplicates_reported"] = r.duplicates;
    json["elapsed_seconds"] = r.seconds;
    json["events_per_second"] =
        r.seconds > 0 ? static_cast<double>(r.sent) / r.seconds : 0.0;
  }
  return json;
}

// Suggested next commands, one per sample that exists.
// `cli` starts each: the command with the options needed to reach the
// same server.
std::vector<std::string> TryLines(const World& world, const Samples& s,
                                  const std::string& cli) {
  std::vector<std::string> lines;
  // The comments line up past the longest command (a session id).
  const int width = static_cast<int>(cli.size()) + 38;
  const auto add = [&](const std::string& id, const char* command,
                       const char* why) {
    if (id.empty()) return;
    lines.push_back(absl::StrFormat("  %-*s # %s", width,
                                    absl::StrCat(cli, command, id), why));
  };
  add(s.failed_patient, "connections ", "has a FAILED connection");
  add(s.declined_session, "diagnose ", "the patient declined");
  add(s.exchange_session, "diagnose ",
      s.exchange_retried ? "code exchange failed, retry refused"
                         : "code exchange failed");
  add(s.outage_session, "diagnose ", "hit the broken portal");
  add(s.reconnect_connection, "connection ", "needs reconnect");
  lines.push_back(absl::StrFormat(
      "  %stimeline --source %s --since %s --until %s", cli,
      kSources[kBrokenSource].id,
      FormatRfc3339(absl::FromUnixMillis(world.outage_ms - 6 * kHour)),
      FormatRfc3339(absl::FromUnixMillis(world.outage_ms + 6 * kHour))));
  return lines;
}

void PrintReport(std::ostream& out, const World& world, const Report& r,
                 const std::string& cli) {
  const SourceInfo& broken = kSources[kBrokenSource];
  KeyValues lines = {
      {"patients", absl::StrCat(r.totals.patients)},
      {"connections", absl::StrCat(r.totals.connections)},
      {"sessions", absl::StrCat(r.totals.sessions)},
      {"events", absl::StrCat(r.totals.events, " (", r.totals.repeats,
                              " delivered twice)")},
      {"period",
       absl::StrCat(FormatRfc3339(absl::FromUnixMillis(world.start_ms)), " .. ",
                    FormatRfc3339(absl::FromUnixMillis(world.horizon_ms)))},
      {"broken portal",
       absl::StrCat(broken.name, " (", broken.id, "): server_error from ",
                    FormatRfc3339(absl::FromUnixMillis(world.outage_ms)),
                    " to ", OutageEnd(world))},
  };
  if (r.dry_run) {
    lines.emplace_back("printed", absl::StrCat(r.sent, " JSON lines"));
  } else {
    lines.emplace_back("events sent", absl::StrCat(r.sent));
    lines.emplace_back("duplicates",
                       absl::StrCat(r.duplicates, " (reported by the server)"));
    lines.emplace_back("elapsed", absl::StrFormat("%.2f s", r.seconds));
    lines.emplace_back(
        "append rate",
        absl::StrFormat(
            "%.0f events/s",
            r.seconds > 0 ? static_cast<double>(r.sent) / r.seconds : 0.0));
  }
  PrintKeyValues(out, lines);
  out << "\ntry:\n";
  for (const std::string& line : TryLines(world, r.samples, cli)) {
    out << line << '\n';
  }
}

// The event as one JSON line. Protobuf prints map entries in no fixed
// order; the attributes are printed sorted so that a dry run is identical
// from run to run.
absl::StatusOr<std::string> EventJson(v1::AuthEvent& event) {
  const std::map<std::string, std::string> attributes(
      event.attributes().begin(), event.attributes().end());
  event.clear_attributes();
  absl::StatusOr<std::string> json = ToJson(event);
  if (!json.ok() || attributes.empty()) return json;
  json->pop_back();  // the closing brace
  absl::StrAppend(&*json, ",\"attributes\":", Json(attributes).dump(), "}");
  return json;
}

absl::Status PrintEvents(const World& world,
                         const std::vector<SimEvent>& events) {
  std::string buffer;
  for (const SimEvent& e : events) {
    v1::AuthEvent event;
    FillEvent(world, e, event);
    absl::StatusOr<std::string> json = EventJson(event);
    if (!json.ok()) return json.status();
    buffer.append(*json).push_back('\n');
    if (buffer.size() > (1 << 20)) {
      std::cout << buffer;
      buffer.clear();
    }
  }
  std::cout << buffer << std::flush;
  return absl::OkStatus();
}

}  // namespace

absl::Status RunSimulate(const GlobalOptions& global,
                         const SimulateOptions& options) {
  absl::StatusOr<World> world = MakeWorld(options);
  if (!world.ok()) return world.status();
  Report report;
  report.dry_run = options.dry_run;
  const std::vector<SimEvent> events =
      Generate(*world, options, report.totals, report.samples);

  if (options.dry_run) {
    absl::Status printed = PrintEvents(*world, events);
    if (!printed.ok()) return printed;
    report.sent = events.size();
  } else {
    Sender sender(global, *world, events, options.batch);
    const absl::Time started = absl::Now();
    absl::Status status = sender.Run(options.concurrency);
    report.seconds = absl::ToDoubleSeconds(absl::Now() - started);
    report.sent = sender.sent();
    report.duplicates = sender.duplicates();
    if (!status.ok()) {
      return absl::Status(
          status.code(),
          absl::StrCat(status.message(), " (after ", report.sent, " of ",
                       events.size(), " events were sent)"));
    }
  }
  std::ostream& out = options.dry_run ? std::cerr : std::cout;
  if (global.json) {
    out << ReportJson(*world, report).dump() << '\n';
  } else {
    // The suggestions name the server unless it is the default one or
    // comes from the environment, as a pasted command would then reach
    // another.
    const char* from_env = std::getenv("AUTHTRAIL_SERVER");
    const bool implied = global.server == GlobalOptions().server ||
                         (from_env != nullptr && global.server == from_env);
    PrintReport(out, *world, report,
                implied
                    ? "authtrail "
                    : absl::StrCat("authtrail --server ", global.server, " "));
  }
  return absl::OkStatus();
}

}  // namespace authtrail::cli
