#include "services/status_util.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "services/log.h"

namespace authtrail::services {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

grpc::Status InvalidArgument(const std::vector<Violation>& violations) {
  google::rpc::BadRequest bad_request;
  std::string message;
  for (const Violation& v : violations) {
    auto* fv = bad_request.add_field_violations();
    fv->set_field(v.field);
    fv->set_description(v.description);
    absl::StrAppend(&message, message.empty() ? "" : "; ", v.field, " ",
                    v.description);
  }
  google::rpc::Status rich;
  rich.set_code(grpc::StatusCode::INVALID_ARGUMENT);
  rich.set_message(message);
  rich.add_details()->PackFrom(bad_request);
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message,
                      rich.SerializeAsString());
}

std::string EchoRequestId(grpc::CallbackServerContext* context) {
  constexpr char kKey[] = "x-request-id";
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(kKey);
  if (it == metadata.end()) return "";
  // Bounded, and only printable ASCII goes back into a header.
  std::string id(it->second.data(), std::min<size_t>(it->second.size(), 128));
  for (char& c : id) {
    if (c < 0x20 || c > 0x7e) c = '_';
  }
  context->AddInitialMetadata(kKey, id);
  return id;
}

void LogCall(const char* rpc, const grpc::Status& status,
             absl::Duration latency, const std::string& request_id) {
  // Checked before the fields are built: this runs for every call.
  if (!spdlog::should_log(spdlog::level::debug)) return;
  LogEvent(spdlog::level::debug, "call",
           {{"rpc", rpc},
            {"code", CodeName(status.error_code())},
            {"micros", absl::ToInt64Microseconds(latency)},
            {"request_id", request_id}});
}

std::string CodeName(grpc::StatusCode code) {
  // Built once: this runs for every call.
  static const auto* const kNames = [] {
    auto* names = new std::vector<std::string>();
    for (int c = 0; c <= grpc::StatusCode::UNAUTHENTICATED; ++c) {
      names->push_back(
          absl::StatusCodeToString(static_cast<absl::StatusCode>(c)));
    }
    return names;
  }();
  size_t index = static_cast<size_t>(code);
  return index < kNames->size() ? (*kNames)[index] : "UNKNOWN";
}

grpc::Status CheckAlive(grpc::CallbackServerContext* context) {
  if (context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
  }
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "the deadline passed before work began");
  }
  return grpc::Status::OK;
}

}  // namespace authtrail::services
