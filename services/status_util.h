// Conversions to grpc::Status at the service boundary.
#ifndef AUTHTRAIL_SERVICES_STATUS_UTIL_H_
#define AUTHTRAIL_SERVICES_STATUS_UTIL_H_

#include <vector>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "services/validation.h"

namespace authtrail::services {

// Same code (the two code sets match one to one) and message.
grpc::Status ToGrpc(const absl::Status& status);

// INVALID_ARGUMENT whose message lists the violations and whose details
// carry them as a google.rpc.BadRequest.
// REQUIRES: !violations.empty().
grpc::Status InvalidArgument(const std::vector<Violation>& violations);

// DEADLINE_EXCEEDED when the call's deadline has passed or the client
// cancelled it: then the handler must do no work. OK otherwise.
grpc::Status CheckAlive(grpc::CallbackServerContext* context);

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_STATUS_UTIL_H_
