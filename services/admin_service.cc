#include "services/admin_service.h"

#include "services/status_util.h"

namespace authtrail::services {

grpc::ServerUnaryReactor* AdminService::GetStats(
    grpc::CallbackServerContext* context,
    const authtrail::v1::GetStatsRequest* request,
    authtrail::v1::Stats* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = CheckAlive(context);
  if (status.ok()) {
    absl::StatusOr<authtrail::v1::Stats> stats = store_->GetStats();
    status = ToGrpc(stats.status());
    if (stats.ok()) *response = std::move(*stats);
  }
  reactor->Finish(status);
  return reactor;
}

}  // namespace authtrail::services
