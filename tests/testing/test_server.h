// A real authtrail server for tests: RocksDB in a fresh temporary folder,
// gRPC on a free loopback port, and stubs connected to it.
#ifndef AUTHTRAIL_TESTS_TESTING_TEST_SERVER_H_
#define AUTHTRAIL_TESTS_TESTING_TEST_SERVER_H_

#include <memory>
#include <string>

#include "authtrail/v1/admin.grpc.pb.h"
#include "authtrail/v1/history.grpc.pb.h"
#include "authtrail/v1/ingest.grpc.pb.h"
#include "services/server.h"

namespace authtrail::testing {

// A temporary folder removed (with its contents) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// How a TestServer is set up beyond the defaults (plaintext, no policy).
struct TestServerOptions {
  std::string data_dir;  // a fresh temporary folder when empty
  absl::Duration stall_window = absl::Minutes(30);
  // TLS files (PEM); plaintext when tls_cert is empty.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  unsigned tls_refresh_seconds = 60;
  std::string policy_file;
  services::RateLimit default_append_rate;
  std::string metrics_listen;  // HOST:PORT, or empty for none
  // Credentials of the stubs below; insecure when null.
  std::shared_ptr<grpc::ChannelCredentials> client_credentials;
};

class TestServer {
 public:
  // Starts on `data_dir` (a fresh temporary folder when empty), plaintext
  // and without a policy.
  explicit TestServer(std::string data_dir = "",
                      absl::Duration stall_window = absl::Minutes(30));
  explicit TestServer(TestServerOptions options);
  ~TestServer();

  // Stops the server and starts it again on the same folder and port.
  void Restart();
  void Stop();

  const std::string& data_dir() const { return data_dir_; }
  std::string address() const;
  authtrail::v1::AuthEventIngest::Stub& ingest() { return *ingest_; }
  authtrail::v1::AuthHistory::Stub& history() { return *history_; }
  authtrail::v1::AuthTrailAdmin::Stub& admin() { return *admin_; }
  services::AuthTrailServer& server() { return *server_; }

 private:
  void Start();

  std::unique_ptr<TempDir> temp_;
  std::string data_dir_;
  TestServerOptions options_;
  int port_ = 0;
  std::unique_ptr<services::AuthTrailServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<authtrail::v1::AuthEventIngest::Stub> ingest_;
  std::unique_ptr<authtrail::v1::AuthHistory::Stub> history_;
  std::unique_ptr<authtrail::v1::AuthTrailAdmin::Stub> admin_;
};

// A free loopback port (bound, then released for a server to take).
int FreePort();

// The body of an HTTP GET of `path` on 127.0.0.1:`port`; empty on failure.
std::string HttpGet(int port, const std::string& path);

// A client context with a 10 s deadline.
std::unique_ptr<grpc::ClientContext> Context();

// Polls `op` every 20 ms, up to 600 times, until it leaves RUNNING; returns
// its last state.
authtrail::v1::Operation AwaitOperation(
    authtrail::v1::AuthTrailAdmin::Stub& admin, authtrail::v1::Operation op);

}  // namespace authtrail::testing

#endif  // AUTHTRAIL_TESTS_TESTING_TEST_SERVER_H_
