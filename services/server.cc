#include "services/server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "services/admin_service.h"
#include "services/history_service.h"
#include "services/ingest_service.h"
#include "services/log.h"
#include "services/operations.h"
#include "storage/reducers.h"

namespace authtrail::services {

absl::StatusOr<std::unique_ptr<AuthTrailServer>> AuthTrailServer::Start(
    ServerOptions options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<AuthTrailServer> server(new AuthTrailServer());
  server->options_ = options;
  auto store = storage::EventStore::Open(options.store);
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);
  LogEvent(spdlog::level::info, "database_open",
           {{"data_dir", options.store.data_dir},
            {"head_position", server->store_->HeadPosition()}});

  server->ingest_ = std::make_unique<IngestService>(server->store_.get());
  server->history_ = std::make_unique<HistoryService>(server->store_.get());
  server->operations_ = std::make_unique<Operations>(server->store_.get());
  server->admin_ = std::make_unique<AdminService>(server->store_.get(),
                                                  server->operations_.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
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
  server->server_->GetHealthCheckService()->SetServingStatus(true);
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
