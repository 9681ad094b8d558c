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
  if (grpc::Status alive = CheckAlive(context); !alive.ok()) {
    reactor->Finish(alive);
    return reactor;
  }
  std::vector<Violation> violations = ValidateAppend(*request, absl::Now());
  if (!violations.empty()) {
    reactor->Finish(InvalidArgument(violations));
    return reactor;
  }
  std::vector<authtrail::v1::AuthEvent> events(request->events().begin(),
                                               request->events().end());
  store_->Append(
      std::move(events),
      [reactor, response](
          absl::StatusOr<std::vector<storage::AppendOutcome>> result) {
        if (!result.ok()) {
          reactor->Finish(ToGrpc(result.status()));
          return;
        }
        for (const storage::AppendOutcome& outcome : *result) {
          auto* r = response->add_results();
          r->set_position(outcome.position);
          r->set_duplicate(outcome.duplicate);
        }
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

}  // namespace authtrail::services
