// The authtrail server: the event store and the three gRPC services, with
// the standard health and reflection services, on one listening port.
#ifndef AUTHTRAIL_SERVICES_SERVER_H_
#define AUTHTRAIL_SERVICES_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "services/auth.h"
#include "storage/event_store.h"

namespace authtrail::services {

class IngestService;
class HistoryService;
class AdminService;
class Operations;
class Metrics;
class MetricsServer;

struct ServerOptions {
  // HOST:PORT; port 0 picks a free one (see AuthTrailServer::port()).
  std::string listen = "127.0.0.1:50151";
  storage::StoreOptions store;
  // How long Shutdown waits for in-flight calls before cancelling them.
  absl::Duration shutdown_grace = absl::Seconds(10);
  // HOST:PORT of the Prometheus endpoint (GET /metrics); empty: none.
  std::string metrics_listen;
  // Largest request accepted (and response sent); above the batch limit so
  // that a too-large batch gets a clear INVALID_ARGUMENT rather than a
  // transport error.
  int max_receive_bytes = 8 << 20;
  // Concurrent calls (HTTP/2 streams) per client connection.
  int max_concurrent_streams = 256;

  // TLS: PEM files of the server's certificate chain and private key. With
  // `tls_client_ca`, clients are asked for a certificate, and one that is
  // presented must chain to that CA (callers without one can still use a
  // bearer token). The files are watched and re-read every
  // `tls_refresh_seconds`, so rotated certificates need no restart.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  unsigned tls_refresh_seconds = 60;
  // Serve without TLS. Must be asked for: with neither TLS files nor this,
  // Start refuses.
  bool plaintext = false;

  // Identities, roles and rate limits (services/auth.h). Empty: every
  // caller has every role.
  std::string policy_file;
  // Append rate limit of identities without their own; 0: none.
  RateLimit default_append_rate;
};

class AuthTrailServer {
 public:
  // Opens the store, then starts serving; health reports SERVING once both
  // are up.
  static absl::StatusOr<std::unique_ptr<AuthTrailServer>> Start(
      ServerOptions options);
  ~AuthTrailServer();

  // The port actually bound.
  int port() const { return port_; }
  storage::EventStore* store() { return store_.get(); }
  Operations& operations() { return *operations_; }
  Metrics& metrics() { return *metrics_; }

  // Re-reads the policy file. On an error the current policy stays and the
  // error is returned (and logged). FAILED_PRECONDITION without a policy
  // file.
  absl::Status ReloadPolicy();

  // Reports NOT_SERVING, stops accepting, lets in-flight calls finish
  // within the grace period, commits queued appends and closes the store.
  // Idempotent.
  void Shutdown();

 private:
  AuthTrailServer() = default;
  void AddGauges();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() const;

  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<storage::EventStore> store_;
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<HistoryService> history_;
  std::unique_ptr<Operations> operations_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool stopped_ = false;
};

// The allocator serving this process ("jemalloc 5.3.0, background purging"
// or "glibc"), found at run time: profiles and memory figures read
// differently under each.
std::string AllocatorName();

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_SERVER_H_
