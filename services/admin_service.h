// AuthTrailAdmin: stats, the long operations (rebuild, verify, backup) run
// in the background and polled, and log ranges for export.
#ifndef AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_
#define AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_

#include "authtrail/v1/admin.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "services/operations.h"
#include "storage/event_store.h"

namespace authtrail::services {

class AdminService final
    : public authtrail::v1::AuthTrailAdmin::CallbackService {
 public:
  // `store`, `operations`, `metrics` and `auth` must outlive the service.
  // Every call needs the admin role.
  AdminService(storage::EventStore* store, Operations* operations,
               Metrics* metrics, Authenticator* auth)
      : store_(store),
        operations_(operations),
        guard_{auth, metrics, Role::kAdmin} {}

  grpc::ServerUnaryReactor* GetStats(
      grpc::CallbackServerContext* context,
      const authtrail::v1::GetStatsRequest* request,
      authtrail::v1::Stats* response) override;
  grpc::ServerUnaryReactor* StartRebuild(
      grpc::CallbackServerContext* context,
      const authtrail::v1::StartRebuildRequest* request,
      authtrail::v1::Operation* response) override;
  grpc::ServerUnaryReactor* StartVerify(
      grpc::CallbackServerContext* context,
      const authtrail::v1::StartVerifyRequest* request,
      authtrail::v1::Operation* response) override;
  grpc::ServerUnaryReactor* StartBackup(
      grpc::CallbackServerContext* context,
      const authtrail::v1::StartBackupRequest* request,
      authtrail::v1::Operation* response) override;
  grpc::ServerUnaryReactor* GetOperation(
      grpc::CallbackServerContext* context,
      const authtrail::v1::GetOperationRequest* request,
      authtrail::v1::Operation* response) override;
  grpc::ServerUnaryReactor* SetLogLevel(
      grpc::CallbackServerContext* context,
      const authtrail::v1::SetLogLevelRequest* request,
      authtrail::v1::SetLogLevelResponse* response) override;
  grpc::ServerUnaryReactor* ReadLog(
      grpc::CallbackServerContext* context,
      const authtrail::v1::ReadLogRequest* request,
      authtrail::v1::ReadLogResponse* response) override;

 private:
  storage::EventStore* store_;
  Operations* operations_;
  CallGuard guard_;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_
