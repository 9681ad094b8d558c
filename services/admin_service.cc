#include "services/admin_service.h"

#include <algorithm>

#include "services/log.h"
#include "services/status_util.h"
#include "services/validation.h"
#include "storage/reducers.h"

namespace authtrail::services {
namespace {

using authtrail::v1::Operation;

constexpr size_t kDefaultReadLogEvents = 500;
constexpr size_t kMaxReadLogEvents = 1000;

grpc::Status Reply(const absl::StatusOr<Operation>& op, Operation* response) {
  if (!op.ok()) return ToGrpc(op.status());
  *response = *op;
  return grpc::Status::OK;
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::GetStats(
    grpc::CallbackServerContext* context,
    const authtrail::v1::GetStatsRequest* request,
    authtrail::v1::Stats* response) {
  return ServeUnary(context, guard_, "GetStats", [&]() -> grpc::Status {
    absl::StatusOr<authtrail::v1::Stats> stats = store_->GetStats();
    if (!stats.ok()) return ToGrpc(stats.status());
    *response = std::move(*stats);
    response->set_projection_version(store_->ProjectionVersion());
    response->set_server_projection_version(storage::kProjectionVersion);
    response->set_projection_generation(store_->Generation());
    if (auto last = operations_->Last()) {
      *response->mutable_last_operation() = *last;
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AdminService::StartRebuild(
    grpc::CallbackServerContext* context,
    const authtrail::v1::StartRebuildRequest* request, Operation* response) {
  return ServeUnary(context, guard_, "StartRebuild", [&] {
    return Reply(operations_->StartRebuild(), response);
  });
}

grpc::ServerUnaryReactor* AdminService::StartVerify(
    grpc::CallbackServerContext* context,
    const authtrail::v1::StartVerifyRequest* request, Operation* response) {
  return ServeUnary(context, guard_, "StartVerify", [&] {
    return Reply(operations_->StartVerify(*request), response);
  });
}

grpc::ServerUnaryReactor* AdminService::StartBackup(
    grpc::CallbackServerContext* context,
    const authtrail::v1::StartBackupRequest* request, Operation* response) {
  return ServeUnary(context, guard_, "StartBackup", [&] {
    return Reply(operations_->StartBackup(request->dir()), response);
  });
}

grpc::ServerUnaryReactor* AdminService::GetOperation(
    grpc::CallbackServerContext* context,
    const authtrail::v1::GetOperationRequest* request, Operation* response) {
  return ServeUnary(context, guard_, "GetOperation", [&] {
    return Reply(operations_->Get(request->id()), response);
  });
}

grpc::ServerUnaryReactor* AdminService::ReadLog(
    grpc::CallbackServerContext* context,
    const authtrail::v1::ReadLogRequest* request,
    authtrail::v1::ReadLogResponse* response) {
  return ServeUnary(context, guard_, "ReadLog", [&]() -> grpc::Status {
    if (request->max_events() < 0) {
      return InvalidArgument(
          {{"max_events", "is negative; use 0 (default 500) to 1000"}});
    }
    size_t asked = static_cast<size_t>(request->max_events());
    size_t limit =
        asked == 0 ? kDefaultReadLogEvents : std::min(asked, kMaxReadLogEvents);
    uint64_t from = std::max<uint64_t>(request->from_position(), 1);
    auto events = store_->ReadRange(from, limit);
    if (!events.ok()) return ToGrpc(events.status());
    uint64_t next = from;
    size_t bytes = 0;
    for (auto& e : *events) {
      bytes += e.ByteSizeLong();
      if (bytes > Limits::kMaxResponseBytes && response->events_size() > 0) {
        break;
      }
      next = e.position() + 1;
      *response->add_events() = std::move(e);
    }
    response->set_next_position(next);
    response->set_head_position(store_->HeadPosition());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AdminService::SetLogLevel(
    grpc::CallbackServerContext* context,
    const authtrail::v1::SetLogLevelRequest* request,
    authtrail::v1::SetLogLevelResponse* response) {
  return ServeUnary(context, guard_, "SetLogLevel", [&]() -> grpc::Status {
    std::string previous;
    if (!services::SetLogLevel(request->level(), &previous)) {
      return InvalidArgument(
          {{"level",
            "must be one of trace, debug, info, warn, error, "
            "critical, off"}});
    }
    response->set_previous_level(previous);
    response->set_level(request->level());
    return grpc::Status::OK;
  });
}

}  // namespace authtrail::services
