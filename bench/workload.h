// The benchmark workload: realistic authorization events, shared by the
// in-process benchmarks, the raw RocksDB baselines and the load generator.
//
// A pre-filled population is a range of patient numbers [0, P). The ids of
// its patients and connections are a function of the patient number alone,
// so that a load generator started later can name connections that exist
// without talking to the one that filled them:
//   patient p      "pat-" p (8 digits)
//   connection k   "con-" p (8 digits) "-" k, for k < ConnectionsOf(p)
// Patients below `heavy_patients` have a long-lived connection 0 with a
// hundred refresh events more, so that a page of 100 events of one
// connection exists. Event, session and request ids are random per run.
#ifndef AUTHTRAIL_BENCH_WORKLOAD_H_
#define AUTHTRAIL_BENCH_WORKLOAD_H_

#include <cstdint>
#include <deque>
#include <random>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "authtrail/v1/event.pb.h"

namespace authtrail::bench {

std::string PatientId(uint64_t patient);
std::string ConnectionId(uint64_t patient, int connection);
// 1 or 2, fixed per patient.
int ConnectionsOf(uint64_t patient);

// A 64-bit mix of a key and a counter (SplitMix64's finaliser).
uint64_t Mix(uint64_t key, uint64_t value);

// Refresh events added to connection 0 of a heavy patient.
inline constexpr int kHeavyRefreshEvents = 120;

struct WorkloadOptions {
  // Seeds the random ids; give every run its own.
  uint64_t seed = 1;
  // Patients generated, in order, from here.
  uint64_t first_patient = 0;
  // Patients below this number are heavy (see above).
  uint64_t heavy_patients = 0;
  // Patient `first_patient + i` starts at start + i * step_per_patient;
  // its events follow a few seconds to hours apart.
  absl::Time start = absl::Now() - absl::Hours(240);
  absl::Duration step_per_patient = absl::Seconds(8);
  // Share of events that are refreshes of connection 0 of a random patient
  // in [0, existing_patients), dated now: what a live system adds to
  // connections it already knows. 0 for a fill.
  double refresh_share = 0;
  uint64_t existing_patients = 0;
};

// An endless stream of events, patient after patient: one or two
// connections each, a failed attempt before the successful one for about a
// third of them (declines, OAuth errors, failed exchanges, abandonment), then
// a few token refreshes, some failing transiently. About 20 events and
// 330-400 bytes per serialized RecordedEvent on average.
// Not thread-safe.
class Workload {
 public:
  explicit Workload(WorkloadOptions options);

  authtrail::v1::AuthEvent Next();
  // Whole patients generated so far (the one in progress not counted).
  uint64_t patients_done() const { return patients_done_; }
  // True when the last Next() returned the last event of a patient.
  bool at_patient_boundary() const { return pending_.empty(); }

 private:
  void GeneratePatient(uint64_t patient);
  void GenerateConnection(uint64_t patient, int connection, absl::Time* at);
  authtrail::v1::AuthEvent RefreshOfExisting();
  std::string RandomId(const char* prefix, int hex_digits);
  std::string Uuid();

  WorkloadOptions options_;
  std::mt19937_64 rng_;
  uint64_t next_patient_;
  uint64_t patients_done_ = 0;
  uint64_t counter_ = 0;
  std::deque<authtrail::v1::AuthEvent> pending_;
};

// A typical event, for the size of raw baselines.
authtrail::v1::AuthEvent TypicalEvent(uint64_t seed);

}  // namespace authtrail::bench

#endif  // AUTHTRAIL_BENCH_WORKLOAD_H_
