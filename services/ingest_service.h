// AuthEventIngest: validates a batch on the calling thread, hands it to the
// store's writer and returns; the writer finishes the call once the batch
// is durable. No server thread waits for the disk.
#ifndef AUTHTRAIL_SERVICES_INGEST_SERVICE_H_
#define AUTHTRAIL_SERVICES_INGEST_SERVICE_H_

#include "authtrail/v1/ingest.grpc.pb.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "storage/event_store.h"

namespace authtrail::services {

class IngestService final
    : public authtrail::v1::AuthEventIngest::CallbackService {
 public:
  // `store`, `metrics` and `auth` must outlive the service. Every call
  // needs the emitter role and passes the caller's append rate limit.
  IngestService(storage::EventStore* store, Metrics* metrics,
                Authenticator* auth)
      : store_(store), metrics_(metrics), auth_(auth) {}

  grpc::ServerUnaryReactor* AppendEvents(
      grpc::CallbackServerContext* context,
      const authtrail::v1::AppendEventsRequest* request,
      authtrail::v1::AppendEventsResponse* response) override;

 private:
  storage::EventStore* store_;
  Metrics* metrics_;
  Authenticator* auth_;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_INGEST_SERVICE_H_
