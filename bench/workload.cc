#include "bench/workload.h"

#include <algorithm>
#include <cstdio>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace authtrail::bench {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::Outcome;
using authtrail::v1::Step;

struct SourceInfo {
  const char* id;
  const char* name;
  authtrail::v1::SourceKind kind;
};

constexpr SourceInfo kSources[] = {
    {"src-epic-northwind", "Epic MyChart – Northwind Health",
     authtrail::v1::SOURCE_KIND_EHR},
    {"src-mychart-providence", "MyChart · Providence St. Joseph",
     authtrail::v1::SOURCE_KIND_EHR},
    {"src-cerner-mercy", "Oracle Health (Cerner) – Mercy",
     authtrail::v1::SOURCE_KIND_EHR},
    {"src-athena-portal", "athenahealth Patient Portal",
     authtrail::v1::SOURCE_KIND_EHR},
    {"src-kaiser", "Kaiser Permanente", authtrail::v1::SOURCE_KIND_EHR},
    {"src-meditech-valley", "MEDITECH Expanse · Valley Regional",
     authtrail::v1::SOURCE_KIND_EHR},
    {"src-cms-bluebutton", "CMS Blue Button 2.0",
     authtrail::v1::SOURCE_KIND_PAYER},
    {"src-aetna", "Aetna", authtrail::v1::SOURCE_KIND_PAYER},
    {"src-uhc", "UnitedHealthcare", authtrail::v1::SOURCE_KIND_PAYER},
    {"src-anthem", "Anthem Blue Cross & Blue Shield",
     authtrail::v1::SOURCE_KIND_PAYER},
    {"src-quest", "Quest Diagnostics", authtrail::v1::SOURCE_KIND_OTHER},
};

constexpr char kScopes[] =
    "launch/patient openid fhirUser offline_access patient/*.read";

const char* EmitterOf(Step step) {
  switch (step) {
    case authtrail::v1::STEP_PORTAL_REDIRECT:
      return "portal-redirector";
    case authtrail::v1::STEP_TOKEN_EXCHANGE:
      return "token-service";
    case authtrail::v1::STEP_TOKEN_REFRESH:
      return "refresh-scheduler";
    default:
      return "oauth-callback-handler";
  }
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp ts;
  int64_t nanos = absl::ToUnixNanos(time);
  ts.set_seconds(nanos / 1'000'000'000);
  ts.set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  return ts;
}

const SourceInfo& SourceOf(uint64_t patient, int connection) {
  return kSources[Mix(patient * 4 + connection, 7) % std::size(kSources)];
}

// What goes wrong in a failed attempt.
struct FailureKind {
  Step step;
  Outcome outcome;
  const char* code;
  const char* description;
  int http_status;
  int weight;
};

constexpr FailureKind kFailures[] = {
    {authtrail::v1::STEP_CONSENT, authtrail::v1::OUTCOME_DENIED,
     "access_denied", "The patient declined to share records", 0, 35},
    {authtrail::v1::STEP_OAUTH_CALLBACK, authtrail::v1::OUTCOME_FAILED,
     "state_expired", "Callback state is older than the session window", 0, 25},
    {authtrail::v1::STEP_TOKEN_EXCHANGE, authtrail::v1::OUTCOME_FAILED,
     "invalid_grant", "Authorization code expired or already used", 400, 25},
    // Abandoned after the portal: no failure event at all.
    {authtrail::v1::STEP_SIGN_IN, authtrail::v1::OUTCOME_UNSPECIFIED, "", "", 0,
     15},
};

}  // namespace

uint64_t Mix(uint64_t key, uint64_t value) {
  uint64_t z = key + 0x9e3779b97f4a7c15ULL * (value + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string PatientId(uint64_t patient) {
  return absl::StrFormat("pat-%08d", patient);
}

std::string ConnectionId(uint64_t patient, int connection) {
  return absl::StrFormat("con-%08d-%d", patient, connection);
}

int ConnectionsOf(uint64_t patient) {
  return 1 + static_cast<int>(Mix(patient, 3) & 1);
}

Workload::Workload(WorkloadOptions options)
    : options_(options),
      rng_(Mix(options.seed, 11)),
      next_patient_(options.first_patient) {}

std::string Workload::RandomId(const char* prefix, int hex_digits) {
  std::string out = prefix;
  while (hex_digits > 0) {
    int n = std::min(hex_digits, 16);
    absl::StrAppend(&out, absl::StrFormat("%0*x", n, rng_() >> (64 - 4 * n)));
    hex_digits -= n;
  }
  return out;
}

std::string Workload::Uuid() {
  // Version 4 layout, from two draws mixed with the run seed and a counter
  // so that runs with different seeds never collide.
  uint64_t hi = Mix(options_.seed, rng_() ^ counter_);
  uint64_t lo = Mix(options_.seed + 1, counter_++);
  return absl::StrFormat(
      "%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0xfff,
      0x8000 | ((lo >> 48) & 0x3fff), lo & 0xffffffffffffULL);
}

AuthEvent Workload::Next() {
  if (options_.refresh_share > 0 && options_.existing_patients > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) <
          options_.refresh_share) {
    return RefreshOfExisting();
  }
  if (pending_.empty()) {
    GeneratePatient(next_patient_++);
    ++patients_done_;
  }
  AuthEvent event = std::move(pending_.front());
  pending_.pop_front();
  return event;
}

AuthEvent Workload::RefreshOfExisting() {
  uint64_t patient = std::uniform_int_distribution<uint64_t>(
      0, options_.existing_patients - 1)(rng_);
  const SourceInfo& source = SourceOf(patient, 0);
  AuthEvent e;
  e.set_event_id(Uuid());
  e.set_patient_id(PatientId(patient));
  e.set_connection_id(ConnectionId(patient, 0));
  e.mutable_source()->set_id(source.id);
  e.mutable_source()->set_name(source.name);
  e.mutable_source()->set_kind(source.kind);
  e.set_step(authtrail::v1::STEP_TOKEN_REFRESH);
  e.set_outcome(rng_() % 2 ? authtrail::v1::OUTCOME_STARTED
                           : authtrail::v1::OUTCOME_SUCCEEDED);
  *e.mutable_occurred_at() = ToTimestamp(absl::Now());
  e.set_request_id(RandomId("req-", 24));
  e.set_emitter(EmitterOf(e.step()));
  (*e.mutable_attributes())["client_id"] = "healthlink-connect-prod";
  (*e.mutable_attributes())["trace_id"] = RandomId("", 32);
  return e;
}

void Workload::GeneratePatient(uint64_t patient) {
  absl::Time at = options_.start +
                  options_.step_per_patient *
                      static_cast<double>(patient - options_.first_patient);
  for (int k = 0; k < ConnectionsOf(patient); ++k) {
    GenerateConnection(patient, k, &at);
  }
}

void Workload::GenerateConnection(uint64_t patient, int connection,
                                  absl::Time* at) {
  const SourceInfo& source = SourceOf(patient, connection);
  std::string patient_id = PatientId(patient);
  std::string connection_id = ConnectionId(patient, connection);
  absl::Time now = absl::Now();
  auto seconds = [this](int low, int high) {
    return absl::Seconds(std::uniform_int_distribution<int>(low, high)(rng_));
  };
  auto emit = [&](const std::string& session, Step step, Outcome outcome) {
    AuthEvent e;
    e.set_event_id(Uuid());
    e.set_patient_id(patient_id);
    e.set_connection_id(connection_id);
    e.set_session_id(session);
    e.mutable_source()->set_id(source.id);
    e.mutable_source()->set_name(source.name);
    e.mutable_source()->set_kind(source.kind);
    e.set_step(step);
    e.set_outcome(outcome);
    *e.mutable_occurred_at() = ToTimestamp(std::min(*at, now));
    e.set_request_id(RandomId("req-", 24));
    e.set_emitter(EmitterOf(step));
    (*e.mutable_attributes())["client_id"] = "healthlink-connect-prod";
    (*e.mutable_attributes())["trace_id"] = RandomId("", 32);
    if (outcome == authtrail::v1::OUTCOME_SUCCEEDED &&
        (step == authtrail::v1::STEP_CONSENT ||
         step == authtrail::v1::STEP_TOKEN_EXCHANGE)) {
      (*e.mutable_attributes())["granted_scopes"] = kScopes;
    }
    pending_.push_back(std::move(e));
    return &pending_.back();
  };
  // The attempt up to (and without) `last`, all steps succeeding.
  auto attempt_until = [&](const std::string& session, Step last) {
    emit(session, authtrail::v1::STEP_PORTAL_REDIRECT,
         authtrail::v1::OUTCOME_STARTED);
    *at += seconds(1, 3);
    emit(session, authtrail::v1::STEP_PORTAL_REDIRECT,
         authtrail::v1::OUTCOME_SUCCEEDED);
    for (Step step : {authtrail::v1::STEP_SIGN_IN, authtrail::v1::STEP_CONSENT,
                      authtrail::v1::STEP_OAUTH_CALLBACK}) {
      if (step == last) return;
      *at += seconds(5, 60);
      emit(session, step, authtrail::v1::OUTCOME_SUCCEEDED);
    }
    *at += seconds(1, 2);
    emit(session, authtrail::v1::STEP_TOKEN_EXCHANGE,
         authtrail::v1::OUTCOME_STARTED);
  };

  if (std::uniform_int_distribution<int>(0, 2)(rng_) == 0) {
    int total = 0;
    for (const FailureKind& f : kFailures) total += f.weight;
    int pick = std::uniform_int_distribution<int>(0, total - 1)(rng_);
    const FailureKind* kind = &kFailures[0];
    for (const FailureKind& f : kFailures) {
      if (pick < f.weight) {
        kind = &f;
        break;
      }
      pick -= f.weight;
    }
    std::string session = RandomId("ses-", 16);
    attempt_until(session, kind->step);
    if (kind->outcome != authtrail::v1::OUTCOME_UNSPECIFIED) {
      *at += seconds(1, 30);
      AuthEvent* e = emit(session, kind->step, kind->outcome);
      e->set_error_code(kind->code);
      e->set_error_description(kind->description);
      e->set_http_status(kind->http_status);
    }
    *at += seconds(600, 3600);
  }

  std::string session = RandomId("ses-", 16);
  attempt_until(session, authtrail::v1::STEP_UNSPECIFIED);
  *at += seconds(1, 2);
  emit(session, authtrail::v1::STEP_TOKEN_EXCHANGE,
       authtrail::v1::OUTCOME_SUCCEEDED);

  int refreshes = std::uniform_int_distribution<int>(0, 5)(rng_);
  bool heavy = connection == 0 && patient < options_.heavy_patients;
  if (heavy) refreshes += kHeavyRefreshEvents / 2;
  for (int i = 0; i < refreshes; ++i) {
    *at += heavy ? seconds(3600, 7200) : seconds(6 * 3600, 24 * 3600);
    emit("", authtrail::v1::STEP_TOKEN_REFRESH, authtrail::v1::OUTCOME_STARTED);
    *at += seconds(1, 2);
    if (std::uniform_int_distribution<int>(0, 9)(rng_) == 0) {
      AuthEvent* e = emit("", authtrail::v1::STEP_TOKEN_REFRESH,
                          authtrail::v1::OUTCOME_FAILED);
      e->set_error_code("temporarily_unavailable");
      e->set_error_description("Upstream token endpoint timed out");
      e->set_http_status(503);
    } else {
      emit("", authtrail::v1::STEP_TOKEN_REFRESH,
           authtrail::v1::OUTCOME_SUCCEEDED);
    }
  }
}

AuthEvent TypicalEvent(uint64_t seed) {
  WorkloadOptions options;
  options.seed = seed;
  options.start = absl::Now() - absl::Hours(1);
  Workload workload(options);
  // The consent step of a successful attempt: mid-sized among events.
  for (int i = 0; i < 100; ++i) {
    AuthEvent e = workload.Next();
    if (e.step() == authtrail::v1::STEP_CONSENT &&
        e.outcome() == authtrail::v1::OUTCOME_SUCCEEDED) {
      return e;
    }
  }
  return workload.Next();
}

}  // namespace authtrail::bench
