// `authtrail`: the command-line client of the authtrail server. This file
// only declares the command line (CLI11) and hands over to the commands.

#include <exception>
#include <functional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_replace.h"
#include "cli/commands.h"
#include "cli/ops.h"
#include "cli/simulate.h"

namespace authtrail::cli {
namespace {

constexpr char kFooter[] = R"(
The global options (--server, --json, --timeout, --tls, --tls_ca,
--tls_cert, --tls_key, --token) may also follow the command:
authtrail connections pat-000042 --json. The default is plaintext to
127.0.0.1:50151; a secured server needs --tls_ca (and a client certificate
or a token: AUTHTRAIL_TOKEN keeps it off the command line). The TLS options
read AUTHTRAIL_CLI_TLS, AUTHTRAIL_CLI_TLS_CA, AUTHTRAIL_CLI_TLS_CERT,
AUTHTRAIL_CLI_TLS_KEY and AUTHTRAIL_CLI_TLS_SERVER_NAME from the environment
(not AUTHTRAIL_TLS_*, which configure the server beside it).

Output: human-readable tables by default. With --json, commands that list
(connections, events) print one JSON object per line (JSON Lines); the other
commands print one JSON object. Messages use the protobuf JSON mapping with
proto field names; fields at their default value are left out.

Times are RFC 3339 (2024-05-01T12:00:00Z), a date (2024-05-01), now, or
now-<duration> (now-2h). Durations: 90s, 15m, 1h, 1h30m, 1d.

Exit codes: 0 ok; 1 the server or an RPC failed (the message names the gRPC
status code); 2 usage error; 3 bad input data (emit: a line that is not a
valid event). Errors are one line on standard error.)";

// The command chosen on the command line, ready to run.
using Action = std::function<absl::Status()>;

// Subcommands and what to run for each.
struct Commands {
  std::vector<std::pair<CLI::App*, Action>> actions;

  void Add(CLI::App* command, Action action) {
    actions.emplace_back(command, std::move(action));
  }
};

// Holds every option value; CLI11 writes into these while parsing.
struct Options {
  GlobalOptions global;
  EmitOptions emit;
  std::string patient_id;
  std::string connection_id;
  std::string session_id;
  EventsOptions events;
  TimelineOptions timeline;
  SimulateOptions simulate;
  VerifyCommandOptions verify;
  std::string backup_dir;
  std::string log_level;
  ExportOptions export_log;
  ImportOptions import_log;
};

void AddGlobalOptions(CLI::App& app, GlobalOptions& global) {
  app.add_option("--server", global.server, "Server address HOST:PORT")
      ->envname("AUTHTRAIL_SERVER")
      ->capture_default_str();
  app.add_flag("--json", global.json, "Print JSON instead of tables");
  app.add_option("--timeout", global.timeout_seconds,
                 "Deadline of each RPC, in seconds")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  app.add_flag("--tls", global.tls,
               "Use TLS (implied by --tls_ca or --tls_cert); without "
               "--tls_ca the system's CA roots check the server")
      ->envname("AUTHTRAIL_CLI_TLS");
  app.add_option("--tls_ca", global.tls_ca,
                 "PEM CA that signed the server's certificate")
      ->envname("AUTHTRAIL_CLI_TLS_CA");
  app.add_option("--tls_cert", global.tls_cert,
                 "PEM client certificate, for servers that map it to roles")
      ->envname("AUTHTRAIL_CLI_TLS_CERT");
  app.add_option("--tls_key", global.tls_key, "PEM key of --tls_cert")
      ->envname("AUTHTRAIL_CLI_TLS_KEY");
  app.add_option("--tls_server_name", global.tls_server_name,
                 "Name to expect in the server's certificate instead of the "
                 "host of --server")
      ->envname("AUTHTRAIL_CLI_TLS_SERVER_NAME");
  app.add_option("--token", global.token,
                 "Bearer token (prefer the environment variable: a command "
                 "line is visible to other users)")
      ->envname("AUTHTRAIL_TOKEN");
}

void AddEmit(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "emit", "Append events read as JSON lines, one AuthEvent per line");
  cmd->add_option("file", o.emit.file, "Input file; stdin when absent or -");
  cmd->add_option("--batch", o.emit.batch, "Events per AppendEvents call")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  commands.Add(cmd, [&o] { return RunEmit(o.global, o.emit); });
}

void AddConnectionCommands(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* list =
      app.add_subcommand("connections", "A patient's connections and state");
  list->add_option("patient_id", o.patient_id, "Patient id")->required();
  commands.Add(list, [&o] { return RunConnections(o.global, o.patient_id); });

  CLI::App* one = app.add_subcommand("connection", "One connection, in detail");
  one->add_option("connection_id", o.connection_id, "Connection id")
      ->required();
  commands.Add(one, [&o] { return RunConnection(o.global, o.connection_id); });
}

void AddEvents(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "events", "Events matching a filter, newest first, paged");
  EventsOptions& e = o.events;
  cmd->add_option("--patient", e.patient_id, "Patient id");
  cmd->add_option("--connection", e.connection_id, "Connection id");
  cmd->add_option("--session", e.session_id, "Session id");
  cmd->add_option("--request", e.request_id, "Request id");
  cmd->add_option("--source", e.source_id, "Source id");
  cmd->add_option("--error-code", e.error_code, "Error code (invalid_grant)");
  cmd->add_option("--step", e.step, "Step (TOKEN_EXCHANGE)");
  cmd->add_option("--outcome", e.outcome, "Outcome (FAILED)");
  cmd->add_option("--since", e.since, "Occurred at or after");
  cmd->add_option("--until", e.until, "Occurred before");
  cmd->add_option("--limit", e.limit, "Rows to print; 0: all")
      ->check(CLI::Range(0, 100000000))
      ->capture_default_str();
  cmd->add_option("--page-size", e.page_size,
                  "Events per ListEvents call (default: min(limit, 1000))")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--oldest-first", e.oldest_first, "Oldest first");
  commands.Add(cmd, [&o] { return RunEvents(o.global, o.events); });
}

void AddDiagnose(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "diagnose", "The five questions about one authorization attempt");
  cmd->add_option("session_id", o.session_id, "Session id")->required();
  commands.Add(cmd, [&o] { return RunDiagnose(o.global, o.session_id); });
}

void AddTimeline(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "timeline",
      "Failures over time of a patient, connection or source (exactly one "
      "of --patient, --connection, --source)");
  TimelineOptions& t = o.timeline;
  CLI::Option* patient =
      cmd->add_option("--patient", t.patient_id, "Patient id to count for");
  CLI::Option* connection = cmd->add_option("--connection", t.connection_id,
                                            "Connection id to count for");
  CLI::Option* source =
      cmd->add_option("--source", t.source_id, "Source id to count for");
  patient->excludes(connection)->excludes(source);
  connection->excludes(source);
  cmd->add_option("--since", t.since, "Start (default: --until minus 7d)");
  cmd->add_option("--until", t.until, "End, excluded (default: now)");
  cmd->add_option("--bucket", t.bucket,
                  "Bucket width: whole minutes, 1m to 31d")
      ->capture_default_str();
  cmd->add_option("--max-events", t.max_events, "Newest failures to list")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  commands.Add(cmd, [&o] { return RunTimeline(o.global, o.timeline); });
}

void AddStats(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand("stats", "Log and database statistics");
  commands.Add(cmd, [&o] { return RunStats(o.global); });
}

void AddHealth(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "health",
      "Whether the server is SERVING (grpc.health.v1; no credentials "
      "needed): exit 0 if so, 1 if not");
  commands.Add(cmd, [&o] { return RunHealth(o.global); });
}

void AddSimulate(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* cmd = app.add_subcommand(
      "simulate", "Generate realistic authorization traffic and send it");
  SimulateOptions& s = o.simulate;
  cmd->add_option("--patients", s.patients,
                  "Patients to simulate (about 20 events and 1.6 KB of "
                  "memory each)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--seed", s.seed, "Random seed")->capture_default_str();
  cmd->add_option("--concurrency", s.concurrency, "Client threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--batch", s.batch, "Events per AppendEvents call")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--start", s.start,
                  "Simulated day 0 (default: midnight UTC, --days ago)");
  cmd->add_option("--days", s.days, "Simulated days")
      ->check(CLI::Range(1, 365))
      ->capture_default_str();
  cmd->add_flag("--dry-run", s.dry_run,
                "Print the events as JSON lines (for emit) instead of "
                "sending; the report goes to stderr");
  commands.Add(cmd, [&o] { return RunSimulate(o.global, o.simulate); });
}

void AddOperations(CLI::App& app, Options& o, Commands& commands) {
  CLI::App* rebuild = app.add_subcommand(
      "rebuild",
      "Rebuild every projection from the log while serving, then switch");
  commands.Add(rebuild, [&o] { return RunRebuild(o.global); });

  CLI::App* verify = app.add_subcommand(
      "verify",
      "Check log continuity, checksums and hash chain, and that every "
      "projection equals a rebuild; exit 1 on a problem");
  verify->add_option("--anchor", o.verify.anchor,
                     "POSITION:HASH recorded earlier from `stats`: prove the "
                     "log up to there unchanged");
  verify->add_flag("--log-only", o.verify.log_only,
                   "Check only the log, not the projections");
  commands.Add(verify, [&o] { return RunVerify(o.global, o.verify); });

  CLI::App* backup = app.add_subcommand(
      "backup", "Write a consistent copy of the database while serving");
  backup
      ->add_option("dir", o.backup_dir,
                   "New folder, absolute path on the server's machine")
      ->required();
  commands.Add(backup, [&o] { return RunBackup(o.global, o.backup_dir); });

  CLI::App* level = app.add_subcommand(
      "log-level", "Change the server's log level until it restarts");
  level
      ->add_option("level", o.log_level,
                   "trace, debug, info, warn, error, critical or off")
      ->required();
  commands.Add(level, [&o] { return RunSetLogLevel(o.global, o.log_level); });

  CLI::App* exp = app.add_subcommand(
      "export", "Write events as JSON lines by position range (resumable)");
  exp->add_option("file", o.export_log.file,
                  "Output file; stdout when - or "
                  "absent");
  exp->add_option("--from", o.export_log.from, "First position")
      ->capture_default_str();
  exp->add_flag("--append", o.export_log.append,
                "Add to FILE instead of replacing it (to resume)");
  exp->add_option("--to", o.export_log.to,
                  "Last position (default: the head when export starts)");
  commands.Add(exp, [&o] { return RunExport(o.global, o.export_log); });

  CLI::App* imp = app.add_subcommand(
      "import", "Append the events of an export; idempotent by event id");
  imp->add_option("file", o.import_log.file,
                  "Input file; stdin when - or "
                  "absent");
  imp->add_option("--batch", o.import_log.batch, "Events per AppendEvents call")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  commands.Add(imp, [&o] { return RunImport(o.global, o.import_log); });
}

// Prints a parse error on one line and returns the exit code; --help and
// --version are not errors.
int ReportParseError(const CLI::App& app, const CLI::ParseError& error) {
  if (error.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
    return app.exit(error);
  }
  // Name the command the error is about, so that "x is required" says
  // which command wants x.
  std::string command = "authtrail";
  for (const CLI::App* sub : app.get_subcommands()) {
    absl::StrAppend(&command, " ", sub->get_name());
  }
  std::cerr << command << ": usage error: "
            << absl::StrReplaceAll(error.what(), {{"\n", " "}}) << " (run `"
            << command << " --help`)\n";
  return kExitUsage;
}

int Run(int argc, char** argv) {
  CLI::App app(
      "authtrail: the audit trail of patients' authorization "
      "attempts (SMART on FHIR / OAuth 2.0)",
      "authtrail");
  app.footer(kFooter);
  app.fallthrough();
  app.require_subcommand(1);
  Options options;
  Commands commands;
  AddGlobalOptions(app, options.global);
  AddEmit(app, options, commands);
  AddConnectionCommands(app, options, commands);
  AddEvents(app, options, commands);
  AddDiagnose(app, options, commands);
  AddTimeline(app, options, commands);
  AddStats(app, options, commands);
  AddHealth(app, options, commands);
  AddSimulate(app, options, commands);
  AddOperations(app, options, commands);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return ReportParseError(app, error);
  }
  if (absl::Status loaded = LoadCredentials(options.global); !loaded.ok()) {
    std::cerr << "authtrail: " << DescribeError(loaded) << '\n';
    return ExitCodeOf(loaded);
  }
  for (const auto& [command, action] : commands.actions) {
    if (!command->parsed()) continue;
    const absl::Status status = action();
    if (!status.ok()) {
      std::cerr << "authtrail " << command->get_name() << ": "
                << DescribeError(status) << '\n';
    }
    return ExitCodeOf(status);
  }
  return kExitUsage;
}

}  // namespace
}  // namespace authtrail::cli

int main(int argc, char** argv) {
  try {
    return authtrail::cli::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "authtrail: INTERNAL: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "authtrail: INTERNAL: unknown exception\n";
  }
  return authtrail::cli::kExitServerError;
}
