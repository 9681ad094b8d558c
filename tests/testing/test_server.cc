#include "tests/testing/test_server.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace authtrail::testing {

TempDir::TempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "authtrail-test-XXXXXX")
          .string();
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestServer::TestServer(std::string data_dir, absl::Duration stall_window)
    : stall_window_(stall_window) {
  if (data_dir.empty()) {
    temp_ = std::make_unique<TempDir>();
    data_dir = temp_->path() + "/data";
  }
  data_dir_ = std::move(data_dir);
  Start();
}

TestServer::~TestServer() { Stop(); }

void TestServer::Start() {
  services::ServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", port_);
  options.store.data_dir = data_dir_;
  options.store.stall_window = stall_window_;
  options.shutdown_grace = absl::Seconds(5);
  auto server = services::AuthTrailServer::Start(options);
  if (!server.ok()) {
    ADD_FAILURE() << "server did not start: " << server.status();
    std::abort();
  }
  server_ = std::move(*server);
  port_ = server_->port();
  channel_ = grpc::CreateChannel(address(),
                                 grpc::InsecureChannelCredentials());
  ingest_ = authtrail::v1::AuthEventIngest::NewStub(channel_);
  history_ = authtrail::v1::AuthHistory::NewStub(channel_);
  admin_ = authtrail::v1::AuthTrailAdmin::NewStub(channel_);
}

void TestServer::Stop() {
  ingest_.reset();
  history_.reset();
  admin_.reset();
  channel_.reset();
  if (server_ != nullptr) server_->Shutdown();
  server_.reset();
}

void TestServer::Restart() {
  Stop();
  Start();
}

std::string TestServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
  return context;
}

}  // namespace authtrail::testing
