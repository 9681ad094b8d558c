// AuthTrailAdmin: operations on the log and its projections.
#ifndef AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_
#define AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_

#include "authtrail/v1/admin.grpc.pb.h"
#include "storage/event_store.h"

namespace authtrail::services {

class AdminService final
    : public authtrail::v1::AuthTrailAdmin::CallbackService {
 public:
  // `store` must outlive the service.
  explicit AdminService(storage::EventStore* store) : store_(store) {}

  grpc::ServerUnaryReactor* GetStats(
      grpc::CallbackServerContext* context,
      const authtrail::v1::GetStatsRequest* request,
      authtrail::v1::Stats* response) override;

 private:
  storage::EventStore* store_;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_ADMIN_SERVICE_H_
