// AuthHistory: the dashboard's and support's reads. Each call is a few
// point lookups or bounded index scans on a snapshot, done on the calling
// thread without waiting for the writer.
#ifndef AUTHTRAIL_SERVICES_HISTORY_SERVICE_H_
#define AUTHTRAIL_SERVICES_HISTORY_SERVICE_H_

#include "authtrail/v1/history.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "storage/event_store.h"

namespace authtrail::services {

// ListEvents is served as raw bytes: its reply is assembled from the log's
// stored event encodings instead of parsed and encoded again.
class HistoryService final
    : public authtrail::v1::AuthHistory::WithRawCallbackMethod_ListEvents<
          authtrail::v1::AuthHistory::CallbackService> {
 public:
  // `store`, `metrics` and `auth` must outlive the service. Every call
  // needs the reader role.
  HistoryService(const storage::EventStore* store, Metrics* metrics,
                 Authenticator* auth)
      : store_(store), guard_{auth, metrics, Role::kReader} {}

  grpc::ServerUnaryReactor* ListConnections(
      grpc::CallbackServerContext* context,
      const authtrail::v1::ListConnectionsRequest* request,
      authtrail::v1::ListConnectionsResponse* response) override;
  grpc::ServerUnaryReactor* GetConnection(
      grpc::CallbackServerContext* context,
      const authtrail::v1::GetConnectionRequest* request,
      authtrail::v1::Connection* response) override;
  // A ListEventsRequest in, a ListEventsResponse out, both encoded.
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetFailureTimeline(
      grpc::CallbackServerContext* context,
      const authtrail::v1::GetFailureTimelineRequest* request,
      authtrail::v1::GetFailureTimelineResponse* response) override;
  grpc::ServerUnaryReactor* DiagnoseSession(
      grpc::CallbackServerContext* context,
      const authtrail::v1::DiagnoseSessionRequest* request,
      authtrail::v1::SessionDiagnosis* response) override;

 private:
  const storage::EventStore* store_;
  CallGuard guard_;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_HISTORY_SERVICE_H_
