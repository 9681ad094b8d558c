// echo_server: the baseline gRPC server. Built with the same ServerBuilder
// settings as authtraild (callback API, default health service, reflection,
// 8 MiB message limits); the handler answers inline on the callback thread.
//
//   echo_server --listen=127.0.0.1:PORT
#include <csignal>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "echo.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace {

class EchoService final : public authtrail::bench::Echo::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(
      grpc::CallbackServerContext* context,
      const authtrail::bench::EchoRequest* request,
      authtrail::bench::EchoResponse* response) override {
    response->mutable_payload()->assign(request->response_bytes(), 'x');
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:50153";
  CLI::App app{"echo_server: the trivial gRPC baseline of the benchmarks"};
  app.add_option("--listen", listen, "HOST:PORT")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // As authtraild does: no lock-order checks on every mutex acquisition.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  EchoService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.SetMaxSendMessageSize(8 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "echo_server: cannot listen on " << listen << "\n";
    return 1;
  }
  std::cout << "{\"event\":\"ready\",\"port\":" << port << "}" << std::endl;
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  server->Shutdown();
  return 0;
}
