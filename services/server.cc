#include "services/server.h"

#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "services/admin_service.h"
#include "services/history_service.h"
#include "services/ingest_service.h"
#include "services/log.h"
#include "services/metrics.h"
#include "services/operations.h"
#include "storage/reducers.h"

namespace authtrail::services {

absl::StatusOr<std::unique_ptr<AuthTrailServer>> AuthTrailServer::Start(
    ServerOptions options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<AuthTrailServer> server(new AuthTrailServer());
  server->options_ = options;
  server->metrics_ = std::make_unique<Metrics>();
  Metrics* metrics = server->metrics_.get();
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
      std::make_unique<IngestService>(server->store_.get(), metrics);
  server->history_ =
      std::make_unique<HistoryService>(server->store_.get(), metrics);
  server->operations_ = std::make_unique<Operations>(server->store_.get());
  server->admin_ = std::make_unique<AdminService>(
      server->store_.get(), server->operations_.get(), metrics);
  server->AddGauges();

  grpc::ServerBuilder builder;
  // TODO(tls): plaintext only, for loopback or a trusted network; TLS,
  // caller identities and roles are not built yet.
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
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
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 256);
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
          absl::StrCat("cannot serve metrics on ", options.metrics_listen));
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
  };
  for (const Property& p : kProperties) {
    std::string property = p.property;
    bool per_family = p.per_family;
    m.AddGauge(p.metric, p.help, [store, property, per_family] {
      return static_cast<double>(store->IntProperty(property, per_family));
    });
  }
  Operations* operations = operations_.get();
  auto progress = [operations](bool done) {
    std::optional<authtrail::v1::Operation> op = operations->Last();
    if (!op.has_value() ||
        op->kind() != authtrail::v1::OPERATION_KIND_REBUILD) {
      return 0.0;
    }
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
  if (store_ != nullptr) store_->CancelMaintenance();
  operations_.reset();  // waits for a cancelled operation to stop
  if (store_ != nullptr) {
    store_->Shutdown();
    store_.reset();
    LogEvent(spdlog::level::info, "database_closed");
  }
}

}  // namespace authtrail::services
