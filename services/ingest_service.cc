#include "services/ingest_service.h"

#include <vector>

#include "services/status_util.h"
#include "services/validation.h"

namespace authtrail::services {

grpc::ServerUnaryReactor* IngestService::AppendEvents(
    grpc::CallbackServerContext* context,
    const authtrail::v1::AppendEventsRequest* request,
    authtrail::v1::AppendEventsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Time received = absl::Now();
  uint64_t offered = request->events_size();
  std::string request_id = EchoRequestId(context);
  auto refuse = [this, reactor, offered, received,
                 request_id](const grpc::Status& status) {
    metrics_->CountAppended("refused", CodeName(status.error_code()), offered);
    LogCall("AppendEvents", status, absl::Now() - received, request_id);
    reactor->Finish(status);
  };
  if (grpc::Status alive = CheckAlive(context); !alive.ok()) {
    refuse(alive);
    return reactor;
  }
  // Before validation and the append: a refused call writes nothing.
  if (grpc::Status admitted =
          auth_->Admit(context, Role::kEmitter, "AppendEvents", offered);
      !admitted.ok()) {
    refuse(admitted);
    return reactor;
  }
  std::vector<Violation> violations = ValidateAppend(*request, received);
  if (!violations.empty()) {
    refuse(InvalidArgument(violations));
    return reactor;
  }
  std::vector<authtrail::v1::AuthEvent> events(request->events().begin(),
                                               request->events().end());
  store_->Append(
      std::move(events),
      [this, reactor, response, received, refuse,
       request_id](absl::StatusOr<std::vector<storage::AppendOutcome>> result) {
        if (!result.ok()) {
          refuse(ToGrpc(result.status()));
          return;
        }
        uint64_t duplicates = 0;
        for (const storage::AppendOutcome& outcome : *result) {
          auto* r = response->add_results();
          r->set_position(outcome.position);
          r->set_duplicate(outcome.duplicate);
          duplicates += outcome.duplicate ? 1 : 0;
        }
        metrics_->CountAppended("accepted", "", result->size() - duplicates);
        metrics_->CountAppended("duplicate", "", duplicates);
        absl::Duration took = absl::Now() - received;
        metrics_->ObserveAppendLatency(took);
        LogCall("AppendEvents", grpc::Status::OK, took, request_id);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

}  // namespace authtrail::services
