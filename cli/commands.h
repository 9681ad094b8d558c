// The commands of the `authtrail` CLI that call the server: emit, the
// AuthHistory queries and stats. Each Run* function prints its result to
// standard output and returns the error, if any, for main to report.
//
// Output: tables and key/value blocks by default. With --json, a command
// that returns one thing (connection, diagnose, timeline, stats, emit's
// counts) prints one JSON object; a command that lists (connections, events)
// prints one JSON object per line (JSON Lines). Protobuf messages are printed
// in the protobuf JSON mapping with proto field names.

#ifndef AUTHTRAIL_CLI_COMMANDS_H_
#define AUTHTRAIL_CLI_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "authtrail/v1/admin.grpc.pb.h"
#include "authtrail/v1/history.grpc.pb.h"
#include "authtrail/v1/ingest.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace authtrail::cli {

// Process exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;  // an RPC failed
inline constexpr int kExitUsage = 2;        // bad flags or arguments
inline constexpr int kExitInput = 3;        // bad input data (emit)

// Options shared by every command.
struct GlobalOptions {
  std::string server = "127.0.0.1:50151";
  bool json = false;
  // Deadline of each RPC.
  double timeout_seconds = 10;
  // TLS: on with --tls or any of the files below. `tls_ca` is the CA that
  // signed the server's certificate (the system's roots when empty);
  // `tls_cert` and `tls_key` are this client's certificate and key.
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Name the server's certificate must carry, when it is not the host of
  // --server (e.g. a probe dialling 127.0.0.1 inside a container).
  std::string tls_server_name;
  // Bearer token sent as `authorization: Bearer <token>`; empty: none.
  std::string token;
  // The PEM text of the files above, read by LoadCredentials.
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

// Reads the TLS files named in `options` into its *_pem fields. A usage
// error names the option whose file is missing or a key without its
// certificate.
absl::Status LoadCredentials(GlobalOptions& options);

// ---- Errors ---------------------------------------------------------------

// A mistake in the command line found after parsing (bad time, bad enum
// name). Exits with kExitUsage.
absl::Status UsageError(absl::string_view message);

// A bad record in the input. Exits with kExitInput.
absl::Status InputError(absl::string_view message);

// The exit code for a command's result: kExitOk, kExitUsage, kExitInput, or
// kExitServerError for everything else.
int ExitCodeOf(const absl::Status& status);

// One line for standard error, newlines removed: "usage error: <message>",
// "input error: <message>", or "<gRPC code name>: <message>".
std::string DescribeError(const absl::Status& status);

// Converts a failed RPC, keeping its code. The message names the RPC and the
// server, and lists the field violations of a google.rpc.BadRequest detail
// when the server sent one.
absl::Status FromGrpc(const grpc::Status& status, absl::string_view rpc,
                      const GlobalOptions& options);

// ---- Connection to the server --------------------------------------------

// A channel to the server and a stub per service.
class Client {
 public:
  explicit Client(GlobalOptions options);

  // Sets the per-call deadline from the options.
  void Prepare(grpc::ClientContext* context) const;

  const GlobalOptions& options() const { return options_; }
  v1::AuthEventIngest::Stub& ingest() { return *ingest_; }
  v1::AuthHistory::Stub& history() { return *history_; }
  v1::AuthTrailAdmin::Stub& admin() { return *admin_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  GlobalOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AuthEventIngest::Stub> ingest_;
  std::unique_ptr<v1::AuthHistory::Stub> history_;
  std::unique_ptr<v1::AuthTrailAdmin::Stub> admin_;
};

// What the server said about the events of one or more AppendEvents calls.
struct AppendCounts {
  uint64_t appended = 0;    // newly written
  uint64_t duplicates = 0;  // already stored with identical content
};

// One AppendEvents call. Thread-safe: many threads may share one Client.
absl::StatusOr<AppendCounts> Append(Client& client,
                                    const v1::AppendEventsRequest& request);

// Parses one JSON line into an event, accepting enum values with or without
// their prefix, in any case ("consent", "CONSENT", "STEP_CONSENT").
absl::StatusOr<v1::AuthEvent> ParseEventLine(absl::string_view line);

// ---- Commands -------------------------------------------------------------

struct EmitOptions {
  std::string file;  // "" or "-" for standard input
  int batch = 500;
};

// Arguments as typed (empty: not given); converted and checked when the
// command runs.
struct EventsOptions {
  std::string patient_id;
  std::string connection_id;
  std::string session_id;
  std::string request_id;
  std::string source_id;
  std::string error_code;
  std::string step;
  std::string outcome;
  std::string since;
  std::string until;
  int limit = 50;     // 0: no limit
  int page_size = 0;  // 0: min(limit, 1000)
  bool oldest_first = false;
};

struct TimelineOptions {
  std::string patient_id;
  std::string connection_id;
  std::string source_id;
  std::string since;  // default: until - 7 days
  std::string until;  // default: now
  std::string bucket = "1h";
  int max_events = 20;
};

// Reads AuthEvents as JSON lines and appends them in batches.
absl::Status RunEmit(const GlobalOptions& global, const EmitOptions& options);

absl::Status RunConnections(const GlobalOptions& global,
                            const std::string& patient_id);
absl::Status RunConnection(const GlobalOptions& global,
                           const std::string& connection_id);
absl::Status RunEvents(const GlobalOptions& global,
                       const EventsOptions& options);
absl::Status RunDiagnose(const GlobalOptions& global,
                         const std::string& session_id);
absl::Status RunTimeline(const GlobalOptions& global,
                         const TimelineOptions& options);
absl::Status RunStats(const GlobalOptions& global);
// grpc.health.v1 Check of the whole server: OK when SERVING, UNAVAILABLE
// otherwise. Needs no credentials, so it suits container probes.
absl::Status RunHealth(const GlobalOptions& global);

}  // namespace authtrail::cli

#endif  // AUTHTRAIL_CLI_COMMANDS_H_
