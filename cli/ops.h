// The `authtrail` commands for operators: rebuild, verify, backup, export
// and import. Long operations run on the server; these commands start them
// and follow their progress (a progress line on a terminal, with rate and
// ETA), then print the result.
#ifndef AUTHTRAIL_CLI_OPS_H_
#define AUTHTRAIL_CLI_OPS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "cli/commands.h"

namespace authtrail::cli {

struct VerifyCommandOptions {
  // "POSITION:HASH" as shown by `authtrail stats`; empty: no anchor.
  std::string anchor;
  bool log_only = false;
};

struct ExportOptions {
  std::string file;  // "" or "-": standard output
  uint64_t from = 1;
  uint64_t to = 0;      // 0: the head at the start
  bool append = false;  // add to FILE instead of replacing it
};

struct ImportOptions {
  std::string file;  // "" or "-": standard input
  int batch = 500;
};

absl::Status RunRebuild(const GlobalOptions& global);
// Fails with an error (exit 1) when verify finds a problem.
absl::Status RunVerify(const GlobalOptions& global,
                       const VerifyCommandOptions& options);
absl::Status RunSetLogLevel(const GlobalOptions& global,
                            const std::string& level);
absl::Status RunBackup(const GlobalOptions& global, const std::string& dir);

// Writes events as JSON lines, one RecordedEvent per line plus
// `event_bytes`: the event's exact bytes (base64), so that fields this
// version does not know survive an export and import. Resumable: start
// again with --from at the last position written plus one.
absl::Status RunExport(const GlobalOptions& global,
                       const ExportOptions& options);
// Appends the events of an export (or plain AuthEvent lines). Idempotent
// through event ids: importing the same file twice changes nothing.
absl::Status RunImport(const GlobalOptions& global,
                       const ImportOptions& options);

}  // namespace authtrail::cli

#endif  // AUTHTRAIL_CLI_OPS_H_
