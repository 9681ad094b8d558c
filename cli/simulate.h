// `authtrail simulate`: a traffic generator that plays the platform's
// emitters (portal redirector, OAuth callback handler, token service,
// refresh scheduler) for a population of patients and sends what they would
// have sent, or prints it as JSON lines that `authtrail emit` accepts.
//
// The traffic is a pure function of --seed, --start, --days and --patients
// (not of --concurrency or --batch), except for the rare events whose clock
// runs ahead of the real one: they are dated from the moment of the run and
// get ids of their own. A second run with the same options therefore sends
// the same events again, and the server reports them as duplicates.

#ifndef AUTHTRAIL_CLI_SIMULATE_H_
#define AUTHTRAIL_CLI_SIMULATE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "cli/commands.h"

namespace authtrail::cli {

struct SimulateOptions {
  int patients = 1000;
  uint64_t seed = 1;
  // Client threads sending batches.
  int concurrency = 8;
  // Events per AppendEvents call.
  int batch = 50;
  // RFC 3339 instant of simulated day 0; empty: midnight UTC `days` ago,
  // so that the simulated days end at the start of today.
  std::string start;
  // Length of the simulated period.
  int days = 10;
  // Print the events as JSON lines instead of sending them.
  bool dry_run = false;
};

absl::Status RunSimulate(const GlobalOptions& global,
                         const SimulateOptions& options);

}  // namespace authtrail::cli

#endif  // AUTHTRAIL_CLI_SIMULATE_H_
