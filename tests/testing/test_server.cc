#include "tests/testing/test_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

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

namespace {

TestServerOptions PlainOptions(std::string data_dir,
                               absl::Duration stall_window) {
  TestServerOptions options;
  options.data_dir = std::move(data_dir);
  options.stall_window = stall_window;
  return options;
}

}  // namespace

TestServer::TestServer(std::string data_dir, absl::Duration stall_window)
    : TestServer(PlainOptions(std::move(data_dir), stall_window)) {}

TestServer::TestServer(TestServerOptions options)
    : options_(std::move(options)) {
  if (options_.data_dir.empty()) {
    temp_ = std::make_unique<TempDir>();
    options_.data_dir = temp_->path() + "/data";
  }
  data_dir_ = options_.data_dir;
  Start();
}

TestServer::~TestServer() { Stop(); }

void TestServer::Start() {
  services::ServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", port_);
  options.store.data_dir = data_dir_;
  options.store.stall_window = options_.stall_window;
  options.shutdown_grace = absl::Seconds(5);
  options.tls_cert = options_.tls_cert;
  options.tls_key = options_.tls_key;
  options.tls_client_ca = options_.tls_client_ca;
  options.tls_refresh_seconds = options_.tls_refresh_seconds;
  options.plaintext = options_.tls_cert.empty();
  options.policy_file = options_.policy_file;
  options.default_append_rate = options_.default_append_rate;
  options.metrics_listen = options_.metrics_listen;
  auto server = services::AuthTrailServer::Start(options);
  if (!server.ok()) {
    ADD_FAILURE() << "server did not start: " << server.status();
    std::abort();
  }
  server_ = std::move(*server);
  port_ = server_->port();
  channel_ =
      grpc::CreateChannel(address(), options_.client_credentials != nullptr
                                         ? options_.client_credentials
                                         : grpc::InsecureChannelCredentials());
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

// A free loopback port (bound, then released for the server to take).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string request = absl::StrCat("GET ", path,
                                     " HTTP/1.1\r\nHost: localhost\r\n"
                                     "Connection: close\r\n\r\n");
  if (write(fd, request.data(), request.size()) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) {
    response.append(buffer, n);
  }
  close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
  return context;
}

authtrail::v1::Operation AwaitOperation(
    authtrail::v1::AuthTrailAdmin::Stub& admin, authtrail::v1::Operation op) {
  for (int i = 0;
       i < 600 && op.state() == authtrail::v1::OPERATION_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    authtrail::v1::GetOperationRequest get;
    get.set_id(op.id());
    EXPECT_TRUE(admin.GetOperation(Context().get(), get, &op).ok());
  }
  return op;
}

}  // namespace authtrail::testing
