#include "services/server.h"

#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "services/admin_service.h"
#include "services/history_service.h"
#include "services/ingest_service.h"
#include "services/log.h"
#include "services/metrics.h"
#include "services/operations.h"
#include "storage/reducers.h"

namespace authtrail::services {
namespace {

// Resident memory of this process, from /proc/self/statm (its second
// field, in pages); 0 where that cannot be read.
double ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return static_cast<double>(resident) * sysconf(_SC_PAGESIZE);
}

// jemalloc's control call, when the process runs on jemalloc (authtraild
// is linked with it; tests and other builds may not be): looked up at run
// time, so this library does not depend on it.
using MallctlFn = int (*)(const char*, void*, size_t*, void*, size_t);
MallctlFn FindMallctl() {
  return reinterpret_cast<MallctlFn>(dlsym(RTLD_DEFAULT, "mallctl"));
}

// A byte count from jemalloc's statistics, refreshed first (they are
// cached until the "epoch" is advanced).
double AllocatorBytes(MallctlFn mallctl, const char* name) {
  uint64_t epoch = 1;
  size_t length = sizeof(epoch);
  mallctl("epoch", &epoch, &length, &epoch, length);
  size_t value = 0;
  length = sizeof(value);
  if (mallctl(name, &value, &length, nullptr, 0) != 0) return 0;
  return static_cast<double>(value);
}

// The data folder holds patient data: owner-only. Created 0700 when
// missing (with its parents, which keep the umask's mode); an existing one
// that others can open is served anyway, with a warning, since changing an
// operator's folder under them could break their setup.
absl::Status PrepareDataDir(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    std::error_code ec;
    std::filesystem::path dir(path);
    if (dir.has_parent_path()) {
      std::filesystem::create_directories(dir.parent_path(), ec);
    }
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat(
          "--data_dir ", path, ": cannot create: ", std::strerror(errno)));
    }
    // mkdir's mode is cut by the umask; owner-only is what is wanted.
    chmod(path.c_str(), 0700);
    return absl::OkStatus();
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_dir ", path, ": exists and is not a folder"));
  }
  if ((st.st_mode & 077) != 0) {
    LogEvent(spdlog::level::warn, "data_dir_permissions",
             {{"data_dir", path},
              {"mode", absl::StrFormat("%04o", st.st_mode & 07777)},
              {"warning",
               "the data folder is open to group or others; it holds "
               "patient data: chmod 700 it"}});
  }
  return absl::OkStatus();
}

// Reads PEM objects at start, so that a wrong path or a key that does not
// belong to the certificate stops the server with a clear message instead
// of failing every handshake later.
absl::Status CheckTlsFiles(const ServerOptions& options) {
  auto open = [](const std::string& flag,
                 const std::string& path) -> absl::StatusOr<BIO*> {
    BIO* bio = BIO_new_file(path.c_str(), "r");
    if (bio == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": cannot read the file"));
    }
    return bio;
  };
  auto cert_bio = open("--tls_cert", options.tls_cert);
  if (!cert_bio.ok()) return cert_bio.status();
  X509* cert = PEM_read_bio_X509(*cert_bio, nullptr, nullptr, nullptr);
  BIO_free(*cert_bio);
  auto key_bio = open("--tls_key", options.tls_key);
  if (!key_bio.ok()) {
    X509_free(cert);
    return key_bio.status();
  }
  EVP_PKEY* key = PEM_read_bio_PrivateKey(*key_bio, nullptr, nullptr, nullptr);
  BIO_free(*key_bio);
  absl::Status status;
  if (cert == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert ", options.tls_cert, ": no PEM certificate in it"));
  } else if (key == nullptr) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--tls_key ", options.tls_key,
                     ": no PEM private key in it (or it is encrypted)"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "--tls_key ", options.tls_key,
        " is not the key of the certificate in --tls_cert ", options.tls_cert));
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  if (!status.ok() || options.tls_client_ca.empty()) return status;
  auto ca_bio = open("--tls_client_ca", options.tls_client_ca);
  if (!ca_bio.ok()) return ca_bio.status();
  X509* ca = PEM_read_bio_X509(*ca_bio, nullptr, nullptr, nullptr);
  BIO_free(*ca_bio);
  if (ca == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_client_ca ", options.tls_client_ca, ": no PEM certificate"));
  }
  X509_free(ca);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
AuthTrailServer::Credentials() const {
  const ServerOptions& o = options_;
  bool tls = !o.tls_cert.empty() || !o.tls_key.empty();
  if (!tls && !o.tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key");
  }
  if (!tls) {
    if (!o.plaintext) {
      return absl::FailedPreconditionError(
          "no transport security chosen: give --tls_cert and --tls_key "
          "(and --tls_client_ca for client certificates), or --plaintext "
          "to serve without TLS on a trusted network");
    }
    LogEvent(spdlog::level::warn, "PLAINTEXT",
             {{"listen", o.listen},
              {"warning",
               "serving WITHOUT TLS: calls, tokens and patient data cross "
               "the network in clear text; use only on loopback or a "
               "trusted network"}});
    // TODO(security): bearer tokens are accepted on a plaintext port too,
    // where anyone on the path can copy them; refusing them there would
    // break token callers of a development server behind a trusted proxy.
    return grpc::InsecureServerCredentials();
  }
  if (o.plaintext) {
    return absl::InvalidArgumentError(
        "--plaintext and --tls_cert/--tls_key contradict each other; "
        "give one");
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert and --tls_key");
  }
  if (absl::Status s = CheckTlsFiles(o); !s.ok()) return s;
  // TODO(security): no CRL or OCSP check of client certificates; one is
  // revoked by removing its identity from the policy or rotating the CA.
  // The provider re-reads the files every refresh interval: rotated
  // certificates, keys and CA bundles take effect for new connections
  // without a restart.
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          o.tls_key, o.tls_cert, o.tls_client_ca, o.tls_refresh_seconds);
  grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
  tls_options.watch_identity_key_cert_pairs();
  if (o.tls_client_ca.empty()) {
    tls_options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls_options.watch_root_certs();
    // Asked for, and verified when given; callers without one may still
    // present a bearer token.
    tls_options.set_cert_request_type(
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  LogEvent(spdlog::level::info, "tls",
           {{"cert", o.tls_cert},
            {"client_ca", o.tls_client_ca.empty() ? "none" : o.tls_client_ca},
            {"refresh_seconds", o.tls_refresh_seconds}});
  return grpc::experimental::TlsServerCredentials(tls_options);
}

absl::Status AuthTrailServer::ReloadPolicy() {
  if (options_.policy_file.empty()) {
    return absl::FailedPreconditionError(
        "no policy file to reload: the server started without --policy");
  }
  return auth_->Reload(options_.policy_file);
}

absl::StatusOr<std::unique_ptr<AuthTrailServer>> AuthTrailServer::Start(
    ServerOptions options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<AuthTrailServer> server(new AuthTrailServer());
  server->options_ = options;
  server->metrics_ = std::make_unique<Metrics>();
  Metrics* metrics = server->metrics_.get();
  auto credentials = server->Credentials();
  if (!credentials.ok()) return credentials.status();
  std::optional<Policy> policy;
  if (!options.policy_file.empty()) {
    absl::StatusOr<Policy> loaded = Policy::Load(options.policy_file);
    if (!loaded.ok()) return loaded.status();
    LogEvent(spdlog::level::info, "policy_loaded",
             {{"path", options.policy_file},
              {"identities", loaded->identity_count()},
              {"tokens", loaded->token_count()}});
    policy = std::move(*loaded);
  } else {
    LogEvent(spdlog::level::warn, "NO_POLICY",
             {{"warning",
               "no --policy: EVERY caller may append, read and administer; "
               "give a policy file to require identities and roles"}});
  }
  server->auth_ = std::make_unique<Authenticator>(
      std::move(policy), options.default_append_rate, metrics);
  Authenticator* auth = server->auth_.get();
  if (absl::Status s = PrepareDataDir(options.store.data_dir); !s.ok()) {
    return s;
  }
  options.store.on_group_commit = [metrics](size_t events,
                                            absl::Duration write_time) {
    metrics->ObserveGroupCommit(events, write_time);
  };
  auto store = storage::EventStore::Open(options.store);
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);
  LogEvent(spdlog::level::info, "database_open",
           {{"data_dir", options.store.data_dir},
            {"head_position", server->store_->HeadPosition()}});

  server->ingest_ =
      std::make_unique<IngestService>(server->store_.get(), metrics, auth);
  server->history_ =
      std::make_unique<HistoryService>(server->store_.get(), metrics, auth);
  server->operations_ = std::make_unique<Operations>(server->store_.get());
  server->admin_ = std::make_unique<AdminService>(
      server->store_.get(), server->operations_.get(), metrics, auth);
  server->AddGauges();

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &server->port_);
  // One server per port: a second one must fail, not share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Keepalive: ping idle clients every minute and drop those that do not
  // answer in 20 s; accept client pings down to every 10 s.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Bounded concurrent calls per connection.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams);
  builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  builder.SetMaxSendMessageSize(options.max_receive_bytes);
  builder.RegisterService(server->ingest_.get());
  builder.RegisterService(server->history_.get());
  builder.RegisterService(server->admin_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     " (address in use or not local?)"));
  }
  if (!options.metrics_listen.empty()) {
    server->metrics_server_ =
        MetricsServer::Start(options.metrics_listen, metrics);
    if (server->metrics_server_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", options.metrics_listen,
                       " (in use? give --metrics_listen=HOST:PORT, or off)"));
    }
  }
  // Health answers for the server as a whole ("") and for each service.
  grpc::HealthCheckServiceInterface* health =
      server->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const char* name :
       {"authtrail.v1.AuthEventIngest", "authtrail.v1.AuthHistory",
        "authtrail.v1.AuthTrailAdmin"}) {
    health->SetServingStatus(name, true);
  }
  if (server->store_->ProjectionVersion() < storage::kProjectionVersion) {
    // Projections built by older reducers: bring them to this version while
    // serving; until the switch, reads answer from the old ones.
    LogEvent(spdlog::level::warn, "projections_outdated",
             {{"version", server->store_->ProjectionVersion()},
              {"expected", storage::kProjectionVersion}});
    auto started = server->operations_->StartRebuild();
    if (!started.ok()) return started.status();
  }
  return server;
}

AuthTrailServer::~AuthTrailServer() { Shutdown(); }

void AuthTrailServer::AddGauges() {
  storage::EventStore* store = store_.get();
  Metrics& m = *metrics_;
  m.AddGauge("authtrail_build_info{version=\"" AUTHTRAIL_VERSION "\"}",
             "Build of the running server.", [] { return 1.0; });
  m.AddGauge("authtrail_head_position", "Position of the newest event.",
             [store] { return static_cast<double>(store->HeadPosition()); });
  m.AddGauge("authtrail_projection_generation",
             "Times the projections were rebuilt in place.",
             [store] { return static_cast<double>(store->Generation()); });
  struct Property {
    const char* metric;
    const char* property;
    const char* help;
    bool per_family;
  };
  static constexpr Property kProperties[] = {
      {"authtrail_rocksdb_write_stopped", "rocksdb.is-write-stopped",
       "1 while RocksDB stops writes (a write stall).", false},
      {"authtrail_rocksdb_delayed_write_rate_bytes",
       "rocksdb.actual-delayed-write-rate",
       "Write rate RocksDB throttles to during a slowdown; 0 when none.",
       false},
      {"authtrail_rocksdb_pending_compaction_bytes",
       "rocksdb.estimate-pending-compaction-bytes",
       "Bytes compaction still has to rewrite.", true},
      {"authtrail_rocksdb_live_data_bytes", "rocksdb.estimate-live-data-size",
       "Estimated live data.", true},
      {"authtrail_rocksdb_memtable_bytes", "rocksdb.cur-size-all-mem-tables",
       "Memory held by memtables.", true},
      {"authtrail_rocksdb_block_cache_usage_bytes", "rocksdb.block-cache-usage",
       "Memory held by the block cache.", false},
      {"authtrail_rocksdb_table_readers_bytes",
       "rocksdb.estimate-table-readers-mem",
       "Memory held by open table files outside the block cache.", true},
  };
  for (const Property& p : kProperties) {
    std::string property = p.property;
    bool per_family = p.per_family;
    m.AddGauge(p.metric, p.help, [store, property, per_family] {
      return static_cast<double>(store->IntProperty(property, per_family));
    });
  }
  // What RSS is made of, beside the memtables and the block cache.
  m.AddGauge("process_resident_memory_bytes",
             "Resident memory of the server process.", ResidentBytes);
  if (MallctlFn mallctl = FindMallctl(); mallctl != nullptr) {
    m.AddGauge(
        "authtrail_allocator_allocated_bytes",
        "Bytes the server holds from the allocator (jemalloc).",
        [mallctl] { return AllocatorBytes(mallctl, "stats.allocated"); });
    m.AddGauge("authtrail_allocator_resident_bytes",
               "Resident pages of the allocator: what the server holds, the "
               "allocator's own metadata, and freed pages not yet returned.",
               [mallctl] { return AllocatorBytes(mallctl, "stats.resident"); });
  }
  Operations* operations = operations_.get();
  auto progress = [operations](bool done) {
    std::optional<authtrail::v1::Operation> op =
        operations->LastOf(authtrail::v1::OPERATION_KIND_REBUILD);
    if (!op.has_value()) return 0.0;
    return static_cast<double>(done ? op->done() : op->total());
  };
  m.AddGauge("authtrail_rebuild_events{stage=\"done\"}",
             "Events replayed by the running or last rebuild, and its total.",
             [progress] { return progress(true); });
  m.AddGauge("authtrail_rebuild_events{stage=\"total\"}", "",
             [progress] { return progress(false); });
}

void AuthTrailServer::Shutdown() {
  if (stopped_) return;
  stopped_ = true;
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    auto deadline = std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.shutdown_grace);
    server_->Shutdown(deadline);
    server_->Wait();
  }
  // The gauges read the store and the operations: no scrape may run once
  // they are gone. civetweb's stop waits for its threads (most of a second).
  if (metrics_server_ != nullptr) {
    metrics_server_.reset();
    LogEvent(spdlog::level::info, "metrics_stopped");
  }
  if (store_ != nullptr) store_->CancelMaintenance();
  operations_.reset();  // waits for a cancelled operation to stop
  if (store_ != nullptr) {
    store_->Shutdown();
    store_.reset();
    LogEvent(spdlog::level::info, "database_closed");
  }
}

std::string AllocatorName() {
  MallctlFn mallctl = FindMallctl();
  if (mallctl == nullptr) return "glibc";
  const char* version = nullptr;
  size_t size = sizeof(version);
  if (mallctl("version", &version, &size, nullptr, 0) != 0) return "jemalloc";
  bool background = false;
  size = sizeof(background);
  mallctl("background_thread", &background, &size, nullptr, 0);
  std::string_view v(version);
  return absl::StrCat("jemalloc ", std::string(v.substr(0, v.find('-'))),
                      background ? ", background purging" : "");
}

}  // namespace authtrail::services
