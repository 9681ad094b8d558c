// Conversions to grpc::Status at the service boundary.
#ifndef AUTHTRAIL_SERVICES_STATUS_UTIL_H_
#define AUTHTRAIL_SERVICES_STATUS_UTIL_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "services/validation.h"

namespace authtrail::services {

// Same code (the two code sets match one to one) and message.
grpc::Status ToGrpc(const absl::Status& status);

// INVALID_ARGUMENT whose message lists the violations and whose details
// carry them as a google.rpc.BadRequest.
// REQUIRES: !violations.empty().
grpc::Status InvalidArgument(const std::vector<Violation>& violations);

// The caller's `x-request-id` metadata, echoed back in the response's
// initial metadata; empty when the caller sent none.
std::string EchoRequestId(grpc::CallbackServerContext* context);

// Logs one call at debug level: RPC, status code, latency, request id.
void LogCall(const char* rpc, const grpc::Status& status,
             absl::Duration latency, const std::string& request_id);

// "INVALID_ARGUMENT" for INVALID_ARGUMENT, and so on.
std::string CodeName(grpc::StatusCode code);

// DEADLINE_EXCEEDED when the call's deadline has passed or the client
// cancelled it: then the handler must do no work. OK otherwise.
grpc::Status CheckAlive(grpc::CallbackServerContext* context);

// Runs `body` (returning grpc::Status) for a unary call unless the call is
// already dead or its caller lacks `guard.role`, finishes the call with its
// status, and records the call's latency and code under `rpc`.
template <typename Body>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* context,
                                     const CallGuard& guard, const char* rpc,
                                     Body body) {
  absl::Time started = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::string request_id = EchoRequestId(context);
  grpc::Status status = CheckAlive(context);
  if (status.ok()) status = guard.auth->Admit(context, guard.role, rpc);
  if (status.ok()) status = body();
  absl::Duration took = absl::Now() - started;
  guard.metrics->ObserveQuery(rpc, CodeName(status.error_code()), took);
  LogCall(rpc, status, took, request_id);
  reactor->Finish(status);
  return reactor;
}

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_STATUS_UTIL_H_
