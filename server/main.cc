// authtraild: the authtrail server. With no flags it keeps its data in
// ./authtrail-data and listens on 127.0.0.1:50151.
#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "services/auth.h"
#include "services/log.h"
#include "services/server.h"

#ifdef AUTHTRAIL_JEMALLOC
// jemalloc reads its options from this at its first allocation. A
// background thread hands freed pages back to the system (a second after
// they were freed, and at once rather than lazily), so RSS follows the
// memtables that flushes free without the serving threads doing the work.
// Blocks of 1 MiB and more (memtable arenas, large batches) come from an
// arena of their own that returns them as soon as they are freed: a
// flushed memtable leaves RSS at once instead of a second later.
extern "C" {
const char* malloc_conf =
    "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,"
    "oversize_threshold:1048576";
}
#endif

namespace {

// Blocks SIGTERM, SIGINT (stop) and SIGHUP (reload the policy) in every
// thread so that main can wait for them with sigwait. REQUIRES: called
// before any thread starts.
sigset_t BlockHandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Rebuilds or verifies a stopped server's data folder. Prints one JSON line
// with the result on stdout.
int RunOffline(const authtrail::storage::StoreOptions& options, bool rebuild) {
  using authtrail::services::LogEvent;
  auto store = authtrail::storage::EventStore::Open(options);
  if (!store.ok()) {
    LogEvent(spdlog::level::critical, "open_failed",
             {{"error", store.status().ToString()}});
    return 1;
  }
  auto progress = [](uint64_t done, uint64_t total) {
    LogEvent(spdlog::level::info, "progress",
             {{"done", done}, {"total", total}});
  };
  nlohmann::json out;
  if (rebuild) {
    auto result = (*store)->Rebuild(progress);
    if (!result.ok()) {
      LogEvent(spdlog::level::err, "rebuild_failed",
               {{"error", result.status().ToString()}});
      return 1;
    }
    double seconds = absl::ToDoubleSeconds(result->elapsed);
    out = {{"rebuilt_events", result->events},
           {"generation", result->generation},
           {"seconds", seconds},
           {"events_per_second", seconds > 0 ? result->events / seconds : 0}};
  } else {
    auto report = (*store)->Verify({}, progress);
    if (!report.ok()) {
      LogEvent(spdlog::level::err, "verify_failed",
               {{"error", report.status().ToString()}});
      return 1;
    }
    out = {{"ok", report->ok},
           {"events", report->events},
           {"head_hash", absl::BytesToHexString(report->head_hash)},
           {"seconds", absl::ToDoubleSeconds(report->elapsed)}};
    if (!report->ok) {
      out["problem"] = report->problem;
      out["position"] = report->position;
      out["family"] = report->family;
      out["key"] = report->key;
    }
    std::cout << out.dump() << std::endl;
    return report->ok ? 0 : 3;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

// Prints the SHA-256 (hex) of a token read from standard input, for the
// policy's "tokens" entries. One trailing newline is not part of the token.
int HashToken() {
  std::string token((std::istreambuf_iterator<char>(std::cin)),
                    std::istreambuf_iterator<char>());
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.empty()) {
    std::cerr << "--hash_token: no token on standard input\n";
    return 2;
  }
  if (token.size() < 32) {
    std::cerr << "--hash_token: warning: a token shorter than 32 characters "
                 "is easy to guess; use e.g. `openssl rand -hex 32`\n";
  }
  std::cout << authtrail::services::Sha256Hex(token) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#ifndef AUTHTRAIL_JEMALLOC
  // glibc's defaults keep the memory of flushed memtables in per-thread
  // arenas: two arenas and mmap for large blocks give it back.
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
  // Debian's Abseil checks every mutex acquisition for lock-order cycles,
  // which gRPC's locks pay for on every call; a debugging aid, not for
  // serving.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Everything the server creates (database files, backups) is the
  // owner's alone: it holds patient identifiers.
  umask(0077);
  authtrail::services::ServerOptions options;
  options.store.data_dir = "authtrail-data";
  options.metrics_listen = "127.0.0.1:50152";
  std::string log_level = "info";
  int stall_minutes = 30;
  int grace_seconds = 10;
  int block_cache_mb = 64;
  bool unsafe_no_sync = false;
  bool offline_rebuild = false;
  bool offline_verify = false;
  bool hash_token = false;
  int max_message_mb = 8;

  // Each option comes from, in order of precedence: the command line, the
  // config file (--config), the environment variable, the default.
  CLI::App app{
      "authtraild: the audit trail of patients' authorization "
      "attempts, served over gRPC. Every option can also be set in "
      "the environment (AUTHTRAIL_<NAME>) or in a --config file "
      "(name = value per line); see docs/CONFIGURATION.md."};
  // The file named by AUTHTRAIL_CONFIG is the default of --config, and then
  // must exist. Unknown names in the file are errors, not silently ignored.
  const char* config_env = std::getenv("AUTHTRAIL_CONFIG");
  std::string default_config = config_env != nullptr ? config_env : "";
  app.set_config("--config", default_config,
                 "Read options from this file (env AUTHTRAIL_CONFIG)",
                 /*config_required=*/!default_config.empty());
  app.allow_config_extras(false);
  app.add_option("--listen", options.listen, "HOST:PORT to serve gRPC on")
      ->envname("AUTHTRAIL_LISTEN")
      ->capture_default_str();
  app.add_option("--data_dir", options.store.data_dir,
                 "RocksDB data folder, created (owner-only) when missing")
      ->envname("AUTHTRAIL_DATA_DIR")
      ->capture_default_str();
  app.add_option("--metrics_listen", options.metrics_listen,
                 "HOST:PORT of the Prometheus endpoint GET /metrics, or "
                 "off")
      ->envname("AUTHTRAIL_METRICS_LISTEN")
      ->capture_default_str();
  app.add_option("--log_level", log_level,
                 "trace, debug, info, warn, error, critical or off")
      ->envname("AUTHTRAIL_LOG_LEVEL")
      ->capture_default_str();
  app.add_option("--stall_window_minutes", stall_minutes,
                 "an attempt silent this long reads as abandoned, and a "
                 "started step or refresh with no end as outcome unknown")
      ->envname("AUTHTRAIL_STALL_WINDOW_MINUTES")
      ->capture_default_str()
      ->check(CLI::Range(1, 7 * 24 * 60));
  app.add_option("--shutdown_grace_seconds", grace_seconds,
                 "how long SIGTERM waits for in-flight calls")
      ->envname("AUTHTRAIL_SHUTDOWN_GRACE_SECONDS")
      ->capture_default_str()
      ->check(CLI::Range(0, 600));
  app.add_option("--block_cache_mb", block_cache_mb,
                 "RocksDB block cache for reads, in MiB")
      ->envname("AUTHTRAIL_BLOCK_CACHE_MB")
      ->capture_default_str()
      ->check(CLI::Range(8, 1 << 20));
  app.add_option("--tls_cert", options.tls_cert,
                 "PEM certificate chain of the server; with --tls_key turns "
                 "on TLS (files are re-read when they change)")
      ->envname("AUTHTRAIL_TLS_CERT");
  app.add_option("--tls_key", options.tls_key,
                 "PEM private key of --tls_cert (unencrypted, owner-only)")
      ->envname("AUTHTRAIL_TLS_KEY");
  app.add_option("--tls_client_ca", options.tls_client_ca,
                 "PEM CA bundle for client certificates: clients are asked "
                 "for one and a presented one must chain to it")
      ->envname("AUTHTRAIL_TLS_CLIENT_CA");
  app.add_option("--tls_refresh_seconds", options.tls_refresh_seconds,
                 "how often the TLS files are checked for rotation")
      ->envname("AUTHTRAIL_TLS_REFRESH_SECONDS")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_flag("--plaintext", options.plaintext,
               "serve WITHOUT TLS (loopback or a trusted network only); "
               "needed when no --tls_cert/--tls_key is given")
      ->envname("AUTHTRAIL_PLAINTEXT");
  app.add_option("--policy", options.policy_file,
                 "JSON file of identities, roles, token hashes and rate "
                 "limits (docs/SECURITY.md); reloaded on SIGHUP. Without "
                 "it every caller has every role")
      ->envname("AUTHTRAIL_POLICY");
  app.add_option("--append_rate", options.default_append_rate.events_per_second,
                 "events per second each identity may append, unless the "
                 "policy says otherwise; 0: no limit")
      ->envname("AUTHTRAIL_APPEND_RATE")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--append_burst", options.default_append_rate.burst,
                 "events an identity may append at once above --append_rate "
                 "(default: one second's worth, at least 1000)")
      ->envname("AUTHTRAIL_APPEND_BURST")
      ->check(CLI::Range(1.0, 1e8));
  app.add_option("--max_message_mb", max_message_mb,
                 "largest request or response message, in MiB (above the "
                 "4 MiB batch limit)")
      ->envname("AUTHTRAIL_MAX_MESSAGE_MB")
      ->capture_default_str()
      ->check(CLI::Range(5, 1024));
  app.add_option("--max_concurrent_streams", options.max_concurrent_streams,
                 "concurrent calls per client connection")
      ->envname("AUTHTRAIL_MAX_CONCURRENT_STREAMS")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_flag("--hash_token", hash_token,
               "print the SHA-256 hex of a token read from standard input "
               "(for the policy's \"tokens\"), then exit");
  app.add_flag("--unsafe_no_sync", unsafe_no_sync,
               "DO NOT USE IN PRODUCTION: acknowledge appends before they "
               "are on disk (benchmarks only; a crash loses events)")
      ->envname("AUTHTRAIL_UNSAFE_NO_SYNC");
  app.add_flag("--offline_rebuild", offline_rebuild,
               "rebuild every projection of --data_dir from the log, then "
               "exit (the server must be stopped)");
  app.add_flag("--offline_verify", offline_verify,
               "verify the log and projections of --data_dir, then exit "
               "(0: ok, 3: a problem was found)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }

  if (hash_token) return HashToken();
  if (!authtrail::services::InitLogging(log_level)) {
    std::cerr << "--log_level: unknown level \"" << log_level << "\"\n";
    return 2;
  }
  if (options.metrics_listen == "off") options.metrics_listen.clear();
  options.store.stall_window = absl::Minutes(stall_minutes);
  options.store.block_cache_bytes = static_cast<size_t>(block_cache_mb) << 20;
  options.store.sync = !unsafe_no_sync;
  options.shutdown_grace = absl::Seconds(grace_seconds);
  options.max_receive_bytes = max_message_mb << 20;
  authtrail::services::RateLimit& rate = options.default_append_rate;
  if (rate.burst == 0) rate.burst = std::max(rate.events_per_second, 1000.0);
  if (unsafe_no_sync) {
    authtrail::services::LogEvent(
        spdlog::level::warn, "UNSAFE_NO_SYNC",
        {{"warning",
          "appends are acknowledged before they are on disk; a "
          "crash or power loss LOSES acknowledged events; for "
          "benchmarks only"}});
  }
  if (offline_rebuild || offline_verify) {
    return RunOffline(options.store, offline_rebuild);
  }
  if (options.tls_cert.empty() && options.tls_key.empty() &&
      !options.plaintext) {
    std::cerr
        << "authtraild: no transport security chosen. Either serve TLS "
           "with --tls_cert=FILE --tls_key=FILE (and --tls_client_ca=FILE "
           "to accept client certificates), or pass --plaintext to "
           "serve without TLS on loopback or a trusted network.\n";
    return 2;
  }
  sigset_t handled_signals = BlockHandledSignals();

  using authtrail::services::LogEvent;
  LogEvent(spdlog::level::info, "starting",
           {{"listen", options.listen}, {"data_dir", options.store.data_dir}});
  std::error_code ec;
  const bool new_folder = !std::filesystem::exists(options.store.data_dir, ec);
  auto server = authtrail::services::AuthTrailServer::Start(options);
  if (!server.ok()) {
    LogEvent(spdlog::level::critical, "start_failed",
             {{"error", server.status().ToString()}});
    // A folder made by this failed start (the port was taken, say) holds
    // no event: it would only be mistaken for a server's data later.
    if (new_folder) std::filesystem::remove_all(options.store.data_dir, ec);
    return 1;
  }
  LogEvent(spdlog::level::info, "ready",
           {{"listen", options.listen},
            {"port", (*server)->port()},
            {"head_position", (*server)->store()->HeadPosition()},
            {"allocator", authtrail::services::AllocatorName()}});

  int signal_number = 0;
  while (sigwait(&handled_signals, &signal_number) == 0 &&
         signal_number == SIGHUP) {
    // A bad file keeps the policy in force; Reload logs either outcome.
    absl::Status reloaded = (*server)->ReloadPolicy();
    if (!reloaded.ok() && absl::IsFailedPrecondition(reloaded)) {
      LogEvent(spdlog::level::warn, "sighup_ignored",
               {{"reason", std::string(reloaded.message())}});
    }
  }
  LogEvent(spdlog::level::info, "shutting_down",
           {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*server)->Shutdown();
  LogEvent(spdlog::level::info, "stopped");
  return 0;
}
