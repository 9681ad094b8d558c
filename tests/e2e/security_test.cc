// Transport security, identities, roles and the append rate limit, end to
// end: a test CA and certificates made with the openssl command at test
// time, a real server with TLS and a policy, real stubs with client
// certificates or bearer tokens. Also the real authtraild binary (policy
// reload on SIGHUP, refusal to start without a transport choice) and the
// real CLI with a token.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "services/auth.h"
#include "services/metrics.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

extern char** environ;

namespace authtrail::testing {
namespace {

using grpc::StatusCode;

const char kDashboardToken[] = "dashboard-token-5f1c0e8a9b7d4e2f";
const char kLimitedToken[] = "limited-emitter-token-0d9e8c7b6a5f";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Makes, with the openssl command: a CA and a second, unrelated CA; a
// server certificate for 127.0.0.1 and localhost; client certificates for
// an emitter (URI SAN), a reader (DNS SAN), an admin (common name only), a
// stranger not in the policy, one signed by the other CA, and an expired
// one for the admin.
constexpr char kMakeCertificates[] = R"SH(
set -eu
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
          -out "$1.key"; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() {  # name, signing CA, common name, subjectAltName or ""
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3"
  echo "basicConstraints=CA:FALSE" > "$1.ext"
  if [ -n "$4" ]; then echo "subjectAltName=$4" >> "$1.ext"; fi
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext"
}
ca ca
ca otherca
leaf server ca localhost "IP:127.0.0.1,DNS:localhost"
leaf emitter ca emitter-cn "URI:spiffe://authtrail/emitter"
leaf reader ca reader-cn "DNS:reader.authtrail.test"
leaf admin ca authtrail-admin ""
leaf stranger ca stranger "DNS:stranger.authtrail.test"
leaf foreign otherca reader-cn "DNS:reader.authtrail.test"
leaf rotated otherca localhost "IP:127.0.0.1,DNS:localhost"
# Expired: `openssl ca` takes explicit dates in the past.
key expired
openssl req -new -key expired.key -out expired.csr -subj "/CN=authtrail-admin"
mkdir -p issued
: > index.txt
echo 1000 > serial
cat > ca.cnf <<'EOF'
[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = issued
certificate = ca.pem
private_key = ca.key
serial = serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
openssl ca -batch -config ca.cnf -in expired.csr -out expired.pem -notext \
  -startdate 20200101000000Z -enddate 20200102000000Z
)SH";

std::string PolicyJson(bool with_dashboard_token) {
  std::string tokens =
      absl::StrCat(R"({"identity": "limited-emitter", "sha256": ")",
                   services::Sha256Hex(kLimitedToken), R"("})");
  if (with_dashboard_token) {
    absl::StrAppend(&tokens, R"(, {"identity": "dashboard", "sha256": ")",
                    services::Sha256Hex(kDashboardToken), R"("})");
  }
  return absl::StrCat(R"({
    "identities": {
      "spiffe://authtrail/emitter": {"roles": ["emitter"]},
      "reader.authtrail.test": {"roles": ["reader"]},
      "authtrail-admin": {"roles": ["admin"]},
      "dashboard": {"roles": ["reader"]},
      "limited-emitter": {
        "roles": ["emitter"],
        "append_rate": {"events_per_second": 1, "burst": 30}
      }
    },
    "tokens": [)",
                      tokens, "]}");
}

// Status codes of one call to each of the three services.
struct Codes {
  StatusCode ingest, history, admin;
};

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir();
    std::string script = certs_->path() + "/make.sh";
    std::ofstream(script) << kMakeCertificates;
    std::string command = absl::StrCat("cd ", certs_->path(), " && bash ",
                                       script, " > make.log 2>&1");
    int rc = std::system(command.c_str());
    ASSERT_EQ(rc, 0) << ReadFile(certs_->path() + "/make.log");
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  static std::string Cert(const std::string& name) {
    return absl::StrCat(certs_->path(), "/", name);
  }

  void SetUp() override {
    policy_file_ = policy_dir_.path() + "/policy.json";
    std::ofstream(policy_file_) << PolicyJson(true);
  }

  // A TLS server with client certificates and the policy above.
  std::unique_ptr<TestServer> StartServer(int metrics_port = 0) {
    TestServerOptions options;
    options.tls_cert = Cert("server.pem");
    options.tls_key = Cert("server.key");
    options.tls_client_ca = Cert("ca.pem");
    options.policy_file = policy_file_;
    if (metrics_port != 0) {
      options.metrics_listen = absl::StrCat("127.0.0.1:", metrics_port);
    }
    return std::make_unique<TestServer>(options);
  }

  // A fresh channel (no connection reuse between credentials) trusting
  // `ca` for the server, presenting client certificate `client` if any.
  static std::shared_ptr<grpc::Channel> TlsChannel(
      const TestServer& server, const std::string& client,
      const std::string& ca = "ca") {
    return TlsChannel(server.address(), client, ca);
  }
  static std::shared_ptr<grpc::Channel> TlsChannel(
      const std::string& address, const std::string& client,
      const std::string& ca = "ca") {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(Cert(ca + ".pem"));
    if (!client.empty()) {
      ssl.pem_cert_chain = ReadFile(Cert(client + ".pem"));
      ssl.pem_private_key = ReadFile(Cert(client + ".key"));
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
  }

  // One call of each service: the status codes of AppendEvents,
  // ListConnections and GetStats.
  Codes CallEach(const std::shared_ptr<grpc::Channel>& channel,
                 const std::string& token = "") {
    auto with_token = [&] {
      auto context = Context();
      if (!token.empty()) {
        context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
      }
      return context;
    };
    v1::AppendEventsRequest append =
        Batch({Event(absl::StrCat("e-", ++event_counter_))
                   .Patient("p-1")
                   .Connection("c-1")
                   .Session("s-1")
                   .Step(v1::STEP_PORTAL_REDIRECT)
                   .Started()});
    v1::AppendEventsResponse appended;
    auto ingest_context = with_token();
    StatusCode ingest =
        v1::AuthEventIngest::NewStub(channel)
            ->AppendEvents(ingest_context.get(), append, &appended)
            .error_code();
    v1::ListConnectionsRequest list;
    list.set_patient_id("p-1");
    v1::ListConnectionsResponse connections;
    auto history_context = with_token();
    StatusCode history =
        v1::AuthHistory::NewStub(channel)
            ->ListConnections(history_context.get(), list, &connections)
            .error_code();
    v1::Stats stats;
    auto admin_context = with_token();
    StatusCode admin = v1::AuthTrailAdmin::NewStub(channel)
                           ->GetStats(admin_context.get(), {}, &stats)
                           .error_code();
    return {ingest, history, admin};
  }

  static inline TempDir* certs_ = nullptr;
  TempDir policy_dir_;
  std::string policy_file_;
  int event_counter_ = 0;
};

void ExpectCodes(const char* who, Codes got, StatusCode ingest,
                 StatusCode history, StatusCode admin) {
  EXPECT_EQ(got.ingest, ingest) << who << " AppendEvents";
  EXPECT_EQ(got.history, history) << who << " ListConnections";
  EXPECT_EQ(got.admin, admin) << who << " GetStats";
}

TEST_F(SecurityTest, EachRoleReachesOnlyItsService) {
  auto server = StartServer();
  using enum grpc::StatusCode;
  ExpectCodes("emitter", CallEach(TlsChannel(*server, "emitter")), OK,
              PERMISSION_DENIED, PERMISSION_DENIED);
  ExpectCodes("reader", CallEach(TlsChannel(*server, "reader")),
              PERMISSION_DENIED, OK, PERMISSION_DENIED);
  ExpectCodes("admin", CallEach(TlsChannel(*server, "admin")),
              PERMISSION_DENIED, PERMISSION_DENIED, OK);
  // A certificate from the right CA naming no identity of the policy.
  ExpectCodes("stranger", CallEach(TlsChannel(*server, "stranger")),
              PERMISSION_DENIED, PERMISSION_DENIED, PERMISSION_DENIED);
}

TEST_F(SecurityTest, ThePermissionDeniedMessageNamesTheRoleNotTheData) {
  auto server = StartServer();
  auto stub = v1::AuthHistory::NewStub(TlsChannel(*server, "emitter"));
  v1::ListConnectionsRequest request;
  request.set_patient_id("p-secret-42");
  v1::ListConnectionsResponse response;
  auto context = Context();
  grpc::Status status =
      stub->ListConnections(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "reader role"))
      << status.error_message();
  EXPECT_FALSE(absl::StrContains(status.error_message(), "p-secret-42"));
}

TEST_F(SecurityTest, NoCredentialsIsUnauthenticated) {
  auto server = StartServer();
  using enum grpc::StatusCode;
  // TLS without a client certificate or a token.
  ExpectCodes("anonymous", CallEach(TlsChannel(*server, "")), UNAUTHENTICATED,
              UNAUTHENTICATED, UNAUTHENTICATED);
}

TEST_F(SecurityTest, TokensAuthenticateWrongOnesDoNot) {
  auto server = StartServer();
  using enum grpc::StatusCode;
  auto channel = TlsChannel(*server, "");
  ExpectCodes("dashboard token", CallEach(channel, kDashboardToken),
              PERMISSION_DENIED, OK, PERMISSION_DENIED);
  ExpectCodes("wrong token", CallEach(channel, "not-a-token"), UNAUTHENTICATED,
              UNAUTHENTICATED, UNAUTHENTICATED);
  // A malformed authorization entry is not a token.
  auto context = Context();
  context->AddMetadata("authorization", kDashboardToken);
  v1::Stats stats;
  EXPECT_EQ(v1::AuthTrailAdmin::NewStub(channel)
                ->GetStats(context.get(), {}, &stats)
                .error_code(),
            UNAUTHENTICATED);
}

TEST_F(SecurityTest, ARevokedTokenStopsWorkingAfterReload) {
  auto server = StartServer();
  auto channel = TlsChannel(*server, "");
  EXPECT_EQ(CallEach(channel, kDashboardToken).history, StatusCode::OK);

  // A broken file keeps the old policy: the token still works.
  std::ofstream(policy_file_) << R"({"identities": {}, "tokens": [)";
  EXPECT_FALSE(server->server().ReloadPolicy().ok());
  EXPECT_EQ(CallEach(channel, kDashboardToken).history, StatusCode::OK);

  std::ofstream(policy_file_) << PolicyJson(/*with_dashboard_token=*/false);
  ASSERT_TRUE(server->server().ReloadPolicy().ok());
  EXPECT_EQ(CallEach(channel, kDashboardToken).history,
            StatusCode::UNAUTHENTICATED);
  // Certificates keep working across the reload, on the same connection.
  EXPECT_EQ(CallEach(TlsChannel(*server, "reader")).history, StatusCode::OK);
}

TEST_F(SecurityTest, HandshakesFailForWrongCaExpiredCertAndPlaintext) {
  auto server = StartServer();
  using enum grpc::StatusCode;
  ExpectCodes("other CA", CallEach(TlsChannel(*server, "foreign")), UNAVAILABLE,
              UNAVAILABLE, UNAVAILABLE);
  ExpectCodes("expired", CallEach(TlsChannel(*server, "expired")), UNAVAILABLE,
              UNAVAILABLE, UNAVAILABLE);
  ExpectCodes("plaintext",
              CallEach(grpc::CreateChannel(server->address(),
                                           grpc::InsecureChannelCredentials())),
              UNAVAILABLE, UNAVAILABLE, UNAVAILABLE);
  // A client that does not trust the server's CA gives up too.
  ExpectCodes("untrusted server", CallEach(TlsChannel(*server, "", "otherca")),
              UNAVAILABLE, UNAVAILABLE, UNAVAILABLE);
  // And the server still serves properly authenticated callers.
  EXPECT_EQ(CallEach(TlsChannel(*server, "admin")).admin, OK);
}

TEST_F(SecurityTest, RotatedServerCertificateIsServedWithoutRestart) {
  TempDir tls;
  auto copy = [&](const std::string& from, const std::string& to) {
    // Written to a new file and renamed, as rotation tools do.
    std::ofstream(tls.path() + "/tmp") << ReadFile(Cert(from));
    std::rename((tls.path() + "/tmp").c_str(), (tls.path() + "/" + to).c_str());
  };
  copy("server.pem", "server.pem");
  copy("server.key", "server.key");
  TestServerOptions options;
  options.tls_cert = tls.path() + "/server.pem";
  options.tls_key = tls.path() + "/server.key";
  options.tls_client_ca = Cert("ca.pem");
  options.tls_refresh_seconds = 1;
  options.policy_file = policy_file_;
  TestServer server(options);
  EXPECT_EQ(CallEach(TlsChannel(server, "admin")).admin, StatusCode::OK);

  // A certificate from the other CA replaces it on disk; new connections
  // get it within the refresh interval, and the server keeps running.
  copy("rotated.key", "server.key");
  copy("rotated.pem", "server.pem");
  bool rotated = false;
  for (int i = 0; i < 100 && !rotated; ++i) {
    rotated = CallEach(TlsChannel(server, "", "otherca")).admin ==
              StatusCode::UNAUTHENTICATED;
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(rotated) << "the rotated certificate was not served in 5 s";
  EXPECT_EQ(CallEach(TlsChannel(server, "admin")).admin,
            StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, HealthNeedsNoCredentials) {
  auto server = StartServer();
  grpc::GenericStub stub(TlsChannel(*server, ""));
  // grpc.health.v1.HealthCheckRequest{service: ""} is empty on the wire;
  // the response {status: SERVING} is field 1 = 1.
  grpc::ByteBuffer request, response;
  std::string empty;
  grpc::Slice slice(empty);
  request = grpc::ByteBuffer(&slice, 1);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &request,
                 &response,
                 [&done](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(SecurityTest, RateLimitRefusesWithRetryInfoAndLosesNothing) {
  auto server = StartServer();
  auto channel = TlsChannel(*server, "");
  auto ingest = v1::AuthEventIngest::NewStub(channel);
  // Burst 30 at 1 event per second: three batches of 10 pass, the fourth
  // is refused (unless ~10 s pass between them, which a test run does not).
  std::vector<std::string> accepted_ids;
  grpc::Status refused;
  std::multimap<std::string, std::string> refused_metadata;
  for (int batch = 0; batch < 4; ++batch) {
    std::vector<v1::AuthEvent> events;
    for (int i = 0; i < 10; ++i) {
      std::string id = absl::StrCat("rate-", batch, "-", i);
      events.push_back(Event(id)
                           .Patient("p-rate")
                           .Connection("c-rate")
                           .Session("s-rate")
                           .Step(v1::STEP_PORTAL_REDIRECT)
                           .Started());
    }
    auto context = Context();
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", kLimitedToken));
    v1::AppendEventsResponse response;
    grpc::Status status =
        ingest->AppendEvents(context.get(), Batch(events), &response);
    if (status.ok()) {
      ASSERT_EQ(response.results_size(), 10);
      for (const auto& e : events) accepted_ids.push_back(e.event_id());
      continue;
    }
    refused = status;
    // Initial metadata, or the trailers of a trailers-only response.
    for (const auto* metadata : {&context->GetServerInitialMetadata(),
                                 &context->GetServerTrailingMetadata()}) {
      for (const auto& [key, value] : *metadata) {
        refused_metadata.emplace(std::string(key.data(), key.size()),
                                 std::string(value.data(), value.size()));
      }
    }
    break;
  }
  ASSERT_EQ(accepted_ids.size(), 30u);
  ASSERT_EQ(refused.error_code(), StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(),
                                "1 events per second (burst 30)"))
      << refused.error_message();
  google::rpc::Status rich;
  ASSERT_TRUE(rich.ParseFromString(refused.error_details()));
  ASSERT_EQ(rich.details_size(), 1);
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(rich.details(0).UnpackTo(&retry));
  int64_t delay_ms = retry.retry_delay().seconds() * 1000 +
                     retry.retry_delay().nanos() / 1'000'000;
  EXPECT_GT(delay_ms, 0);
  EXPECT_LE(delay_ms, 10'000);
  auto header = refused_metadata.find("retry-after-ms");
  ASSERT_NE(header, refused_metadata.end());
  EXPECT_EQ(header->second, absl::StrCat(delay_ms));

  // Everything acknowledged is there, nothing of the refused batch is.
  auto admin = v1::AuthTrailAdmin::NewStub(TlsChannel(*server, "admin"));
  v1::ReadLogRequest read;
  read.set_from_position(1);
  v1::ReadLogResponse log;
  auto context = Context();
  ASSERT_TRUE(admin->ReadLog(context.get(), read, &log).ok());
  std::vector<std::string> stored;
  for (const auto& e : log.events()) stored.push_back(e.event().event_id());
  EXPECT_EQ(stored, accepted_ids);
}

TEST_F(SecurityTest, RefusalsAreCountedInMetrics) {
  int metrics_port = FreePort();
  auto server = StartServer(metrics_port);
  CallEach(TlsChannel(*server, ""));                   // 3 UNAUTHENTICATED
  CallEach(TlsChannel(*server, "emitter"));            // 2 PERMISSION_DENIED
  CallEach(TlsChannel(*server, ""), "not-the-token");  // 3 UNAUTHENTICATED
  std::string body = HttpGet(metrics_port, "/metrics");
  for (const char* line : {
           "authtrail_refused_calls_total{rpc=\"AppendEvents\","
           "code=\"UNAUTHENTICATED\"} 2",
           "authtrail_refused_calls_total{rpc=\"ListConnections\","
           "code=\"UNAUTHENTICATED\"} 2",
           "authtrail_refused_calls_total{rpc=\"GetStats\","
           "code=\"PERMISSION_DENIED\"} 1",
           "authtrail_refused_calls_total{rpc=\"ListConnections\","
           "code=\"PERMISSION_DENIED\"} 1",
       }) {
    EXPECT_TRUE(absl::StrContains(body, line)) << line << "\n" << body;
  }
  // No token and no caller text in the exposition.
  EXPECT_FALSE(absl::StrContains(body, "not-the-token"));
  EXPECT_FALSE(absl::StrContains(body, "spiffe"));
}

TEST_F(SecurityTest, DataFolderIsOwnerOnly) {
  TempDir temp;
  std::string data = temp.path() + "/nested/data";
  mode_t old_umask = umask(022);
  { TestServer server(data); }
  umask(old_umask);
  struct stat st;
  ASSERT_EQ(stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ServerOptionsTest, NoTransportChoiceIsRefused) {
  TempDir temp;
  services::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.store.data_dir = temp.path() + "/data";
  auto server = services::AuthTrailServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(absl::StrContains(server.status().message(), "--tls_cert"));
  EXPECT_TRUE(absl::StrContains(server.status().message(), "--plaintext"));
  options.plaintext = true;
  options.tls_cert = "/nonexistent/cert.pem";
  options.tls_key = "/nonexistent/key.pem";
  EXPECT_FALSE(services::AuthTrailServer::Start(options).ok());
}

// ---- The real binaries -----------------------------------------------------

struct ProgramRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` with `input` on stdin and the environment plus `env`,
// collecting output in files (small outputs only).
ProgramRun RunProgram(std::vector<std::string> argv, const std::string& input,
                      const std::vector<std::string>& env,
                      const TempDir& temp) {
  std::string in = temp.path() + "/stdin", out = temp.path() + "/stdout",
              err = temp.path() + "/stderr";
  std::ofstream(in) << input;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "AUTHTRAIL_")) env_strings.push_back(*e);
  }
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  ProgramRun run;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data()) ==
      0) {
    int status = 0;
    waitpid(pid, &status, 0);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  run.out = ReadFile(out);
  run.err = ReadFile(err);
  return run;
}

TEST(AuthtraildTest, RefusesToStartWithoutTlsOrPlaintext) {
  TempDir temp;
  ProgramRun run = RunProgram(
      {AUTHTRAILD_PATH, "--listen=127.0.0.1:0", "--metrics_listen=off",
       absl::StrCat("--data_dir=", temp.path(), "/data")},
      "", {}, temp);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(run.err, "--tls_cert")) << run.err;
  EXPECT_TRUE(absl::StrContains(run.err, "--plaintext")) << run.err;
}

TEST(AuthtraildTest, HashTokenPrintsTheSha256OfStdin) {
  TempDir temp;
  ProgramRun run =
      RunProgram({AUTHTRAILD_PATH, "--hash_token"}, "abc\n", {}, temp);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            "\n");
}

// Polls `check` every 20 ms for up to 10 s.
template <typename Check>
bool Eventually(Check check) {
  for (int i = 0; i < 500; ++i) {
    if (check()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The real authtraild in a child process, its standard error in a file.
class Authtraild {
 public:
  // Starts it on a fresh port with `args` and waits (10 s at most) for its
  // "ready" line.
  Authtraild(const TempDir& temp, std::vector<std::string> args)
      : address_(absl::StrCat("127.0.0.1:", FreePort())),
        log_path_(temp.path() + "/authtraild.log") {
    args.insert(args.begin(),
                {AUTHTRAILD_PATH, absl::StrCat("--listen=", address_),
                 absl::StrCat("--data_dir=", temp.path(), "/data")});
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(AUTHTRAILD_PATH, argv.data());
      _exit(127);
    }
    ready_ = pid_ > 0 && Eventually([&] {
               return absl::StrContains(log(), "\"event\":\"ready\"");
             });
  }
  ~Authtraild() {
    if (pid_ > 0) Stop();
  }

  // Whether it said it was ready (a channel made before would sit in
  // reconnect backoff).
  bool ready() const { return ready_; }
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return ReadFile(log_path_); }

  // SIGTERM, then its exit code (-1 when it did not exit normally).
  int Stop() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  std::string address_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// The binary runs on the allocator it was built with, and with the
// options compiled into it (jemalloc's background purging, which an
// environment without them would not give); the ready line names it and
// the metrics break its memory down.
TEST(AuthtraildTest, RunsOnItsAllocatorAndReportsIt) {
  TempDir temp;
  int metrics_port = FreePort();
  Authtraild server(temp,
                    {absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port),
                     "--plaintext"});
  ASSERT_TRUE(server.ready()) << server.log();
  std::string metrics = HttpGet(metrics_port, "/metrics");
  EXPECT_EQ(server.Stop(), 0);
  std::string log = server.log();
  // A gauge's value, or -1 when it is missing.
  auto gauge = [&metrics](absl::string_view name) {
    for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
      double value = 0;
      if (absl::ConsumePrefix(&line, absl::StrCat(name, " ")) &&
          absl::SimpleAtod(line, &value)) {
        return value;
      }
    }
    return -1.0;
  };
  double rss = gauge("process_resident_memory_bytes");
  EXPECT_GT(rss, 4 << 20) << metrics;
  EXPECT_GE(gauge("authtrail_rocksdb_table_readers_bytes"), 0) << metrics;
#ifdef AUTHTRAIL_JEMALLOC
  EXPECT_TRUE(absl::StrContains(log, "\"allocator\":\"jemalloc 5.") &&
              absl::StrContains(log, ", background purging\""))
      << log;
  double allocated = gauge("authtrail_allocator_allocated_bytes");
  double resident = gauge("authtrail_allocator_resident_bytes");
  EXPECT_GT(allocated, 0) << metrics;
  EXPECT_GE(resident, allocated) << metrics;
  EXPECT_LE(resident, rss) << metrics;
#else
  EXPECT_TRUE(absl::StrContains(log, "\"allocator\":\"glibc\"")) << log;
  EXPECT_EQ(gauge("authtrail_allocator_resident_bytes"), -1) << metrics;
#endif
}

TEST_F(SecurityTest, SighupReloadsThePolicyOfTheRealServer) {
  TempDir temp;
  Authtraild server(temp, {"--metrics_listen=off", "--plaintext",
                           absl::StrCat("--policy=", policy_file_)});
  ASSERT_TRUE(server.ready()) << server.log();
  auto channel =
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto reader_code = [&] {
    auto context = Context();
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", kDashboardToken));
    v1::ListConnectionsRequest request;
    request.set_patient_id("p-1");
    v1::ListConnectionsResponse response;
    return v1::AuthHistory::NewStub(channel)
        ->ListConnections(context.get(), request, &response)
        .error_code();
  };
  EXPECT_EQ(reader_code(), StatusCode::OK) << server.log();

  std::ofstream(policy_file_) << PolicyJson(/*with_dashboard_token=*/false);
  kill(server.pid(), SIGHUP);
  // The reload is asynchronous to this process: wait for its effect.
  EXPECT_TRUE(Eventually([&] {
    return reader_code() == StatusCode::UNAUTHENTICATED;
  })) << server.log();

  channel.reset();
  EXPECT_EQ(server.Stop(), 0);
  std::string log = server.log();
  EXPECT_TRUE(absl::StrContains(log, "\"event\":\"policy_loaded\"")) << log;
  EXPECT_FALSE(absl::StrContains(log, kDashboardToken)) << log;
  // Plaintext was asked for, and said so loudly.
  EXPECT_TRUE(absl::StrContains(log, "\"level\":\"warning\"") &&
              absl::StrContains(log, "\"event\":\"PLAINTEXT\""))
      << log;
}

// The real binary with TLS, client certificates and the policy, logging at
// info: every kind of call and refusal, carrying ids and a description
// that must show up in no log line, no metric and no message to a caller
// without the role to read them.
TEST_F(SecurityTest, NoPatientDataReachesLogsMetricsOrOtherRoles) {
  TempDir temp;
  int metrics_port = FreePort();
  Authtraild server(
      temp,
      {absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port),
       "--log_level=info", absl::StrCat("--tls_cert=", Cert("server.pem")),
       absl::StrCat("--tls_key=", Cert("server.key")),
       absl::StrCat("--tls_client_ca=", Cert("ca.pem")),
       absl::StrCat("--policy=", policy_file_)});
  ASSERT_TRUE(server.ready()) << server.log();
  const std::string kMark = "phi7f3a";
  const std::string patient = "pat-" + kMark, connection = "conn-" + kMark,
                    session = "sess-" + kMark, request = "req-" + kMark,
                    description = "description-" + kMark;
  auto tls = [&](const std::string& client) {
    return TlsChannel(server.address(), client);
  };
  auto emitter = v1::AuthEventIngest::NewStub(tls("emitter"));
  auto reader = v1::AuthHistory::NewStub(tls("reader"));
  auto admin = v1::AuthTrailAdmin::NewStub(tls("admin"));
  std::vector<std::string> messages;  // every error message sent
  auto note = [&](const grpc::Status& status) {
    messages.push_back(status.error_message());
    return status.error_code();
  };
  auto append = [&](v1::AuthEventIngest::Stub& stub,
                    const std::vector<v1::AuthEvent>& events) {
    auto context = Context();
    v1::AppendEventsResponse response;
    return note(stub.AppendEvents(context.get(), Batch(events), &response));
  };
  auto failed = [&](const std::string& id) {
    return Event(id)
        .Patient(patient)
        .Connection(connection)
        .Session(session)
        .Request(request)
        .Step(v1::STEP_TOKEN_EXCHANGE)
        .Failed("invalid_grant", 400, description);
  };

  const v1::AuthEvent first = failed("phi-1");
  EXPECT_EQ(append(*emitter, {first}), StatusCode::OK);
  // A duplicate, an id reused for other content, an invalid event.
  EXPECT_EQ(append(*emitter, {first}), StatusCode::OK);
  v1::AuthEvent reused = first;
  reused.set_error_description(description + "-changed");
  EXPECT_NE(append(*emitter, {reused}), StatusCode::OK);
  v1::AuthEvent invalid = failed("phi-2");
  invalid.clear_error_code();
  EXPECT_EQ(append(*emitter, {invalid}), StatusCode::INVALID_ARGUMENT);

  // Callers of another role, or none, asking about the patient.
  v1::ListConnectionsRequest list;
  list.set_patient_id(patient);
  v1::ListConnectionsResponse connections;
  for (const char* client : {"emitter", "admin", ""}) {
    auto stub = v1::AuthHistory::NewStub(tls(client));
    auto context = Context();
    EXPECT_NE(note(stub->ListConnections(context.get(), list, &connections)),
              StatusCode::OK);
  }
  EXPECT_EQ(
      append(*v1::AuthEventIngest::NewStub(tls("reader")), {failed("phi-3")}),
      StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(append(*v1::AuthEventIngest::NewStub(tls("")), {failed("phi-4")}),
            StatusCode::UNAUTHENTICATED);

  // The reader's own calls, answered and refused.
  {
    auto context = Context();
    ASSERT_EQ(note(reader->ListConnections(context.get(), list, &connections)),
              StatusCode::OK);
    ASSERT_EQ(connections.connections_size(), 1);
  }
  {
    auto context = Context();
    v1::DiagnoseSessionRequest diagnose;
    diagnose.set_session_id(session);
    v1::SessionDiagnosis diagnosis;
    EXPECT_EQ(
        note(reader->DiagnoseSession(context.get(), diagnose, &diagnosis)),
        StatusCode::OK);
  }
  {
    auto context = Context();
    v1::GetConnectionRequest get;
    get.set_connection_id(connection + "-unknown");
    v1::Connection missing;
    EXPECT_EQ(reader->GetConnection(context.get(), get, &missing).error_code(),
              StatusCode::NOT_FOUND);
  }
  {
    auto context = Context();
    v1::ListEventsRequest events;
    events.mutable_filter()->set_patient_id(patient);
    events.set_page_token("not-a-token-" + kMark);
    v1::ListEventsResponse page;
    EXPECT_EQ(reader->ListEvents(context.get(), events, &page).error_code(),
              StatusCode::INVALID_ARGUMENT);
  }

  // The admin's operations, which read every record.
  for (int kind = 0; kind < 2; ++kind) {
    auto context = Context();
    v1::Operation started;
    grpc::Status status = kind == 0
                              ? admin->StartRebuild(context.get(), {}, &started)
                              : admin->StartVerify(context.get(), {}, &started);
    ASSERT_TRUE(status.ok()) << status.error_message();
    v1::Operation op;
    EXPECT_TRUE(Eventually([&] {
      auto poll = Context();
      v1::GetOperationRequest get;
      get.set_id(started.id());
      return admin->GetOperation(poll.get(), get, &op).ok() &&
             op.state() != v1::OPERATION_STATE_RUNNING;
    }));
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();
  }

  // Handshakes refused before any call: a certificate from another CA,
  // and plaintext to the TLS port.
  EXPECT_EQ(
      append(*v1::AuthEventIngest::NewStub(tls("foreign")), {failed("phi-5")}),
      StatusCode::UNAVAILABLE);
  EXPECT_EQ(append(*v1::AuthEventIngest::NewStub(grpc::CreateChannel(
                       server.address(), grpc::InsecureChannelCredentials())),
                   {failed("phi-6")}),
            StatusCode::UNAVAILABLE);

  std::string metrics = HttpGet(metrics_port, "/metrics");
  for (const char* line : {
           "authtrail_refused_calls_total{rpc=\"AppendEvents\","
           "code=\"PERMISSION_DENIED\"} 1",
           "authtrail_refused_calls_total{rpc=\"AppendEvents\","
           "code=\"UNAUTHENTICATED\"} 1",
           "authtrail_refused_calls_total{rpc=\"ListConnections\","
           "code=\"PERMISSION_DENIED\"} 2",
       }) {
    EXPECT_TRUE(absl::StrContains(metrics, line)) << line << "\n" << metrics;
  }
  uint64_t handshakes = 0;
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (absl::ConsumePrefix(&line, "authtrail_tls_handshake_failures_total ")) {
      ASSERT_TRUE(absl::SimpleAtoi(line, &handshakes)) << line;
    }
  }
  EXPECT_GE(handshakes, 2u) << metrics;
  EXPECT_EQ(server.Stop(), 0);
  std::string log = server.log();
  // The log did record the session: start, refusals, operations, stop.
  for (const char* event : {"\"ready\"", "\"rebuild_finished\"",
                            "\"verify_finished\"", "\"stopped\""}) {
    EXPECT_TRUE(absl::StrContains(log, event)) << event << "\n" << log;
  }
  EXPECT_FALSE(absl::StrContains(log, kMark)) << log;
  EXPECT_FALSE(absl::StrContains(metrics, kMark)) << metrics;
  // Messages to callers without the reader role: the first four calls
  // were the emitter's own; the next five had no reader role.
  ASSERT_GE(messages.size(), 9u);
  for (size_t i = 4; i < 9; ++i) {
    EXPECT_FALSE(absl::StrContains(messages[i], kMark)) << messages[i];
  }
}

// The transport limits: a message over --max_message_mb is refused whole,
// and one stream per connection makes concurrent callers queue, not fail.
TEST(AuthtraildLimitsTest, MessageSizeAndStreamLimitsLoseNothing) {
  TempDir temp;
  Authtraild server(temp, {"--metrics_listen=off", "--plaintext",
                           "--max_message_mb=5", "--max_concurrent_streams=1"});
  ASSERT_TRUE(server.ready()) << server.log();
  auto channel =
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto ingest = v1::AuthEventIngest::NewStub(channel);
  auto head = [&] {
    auto context = Context();
    v1::Stats stats;
    EXPECT_TRUE(v1::AuthTrailAdmin::NewStub(channel)
                    ->GetStats(context.get(), {}, &stats)
                    .ok());
    return stats.head_position();
  };
  // An event of about 6 KiB, or a small one.
  auto event = [](const std::string& id, bool big) {
    Event e =
        Event(id)
            .Patient("p-big")
            .Connection("c-big")
            .Session("s-big")
            .Step(v1::STEP_TOKEN_EXCHANGE)
            .Failed("server_error", 503, std::string(big ? 2000 : 10, 'd'));
    for (int i = 0; big && i < 8; ++i) {
      e.Attribute(absl::StrCat("k", i), std::string(500, 'v'));
    }
    return e;
  };

  // 950 events of about 6 KiB: over the 5 MiB message limit (the batch
  // limits, 1000 events and 4 MiB, are not reached: the transport refuses
  // the message before it is parsed).
  std::vector<v1::AuthEvent> big;
  for (int i = 0; i < 950; ++i)
    big.push_back(event(absl::StrCat("b-", i), true));
  ASSERT_GT(Batch(big).ByteSizeLong(), size_t{5} << 20);
  {
    auto context = Context();
    v1::AppendEventsResponse response;
    grpc::Status status =
        ingest->AppendEvents(context.get(), Batch(big), &response);
    EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
  }
  EXPECT_EQ(head(), 0u);
  big.resize(300);  // about 1.8 MiB
  {
    auto context = Context();
    v1::AppendEventsResponse response;
    grpc::Status status =
        ingest->AppendEvents(context.get(), Batch(big), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(head(), 300u);

  // Eight callers on the one connection at once, 25 appends each.
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto context = Context();
        v1::AppendEventsResponse response;
        if (!ingest
                 ->AppendEvents(
                     context.get(),
                     Batch({event(absl::StrCat("s-", t, "-", i), false)}),
                     &response)
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(head(), 500u);
  channel.reset();
  ingest.reset();
  EXPECT_EQ(server.Stop(), 0);
}

TEST_F(SecurityTest, CliUsesTheCaAndAToken) {
  auto server = StartServer();
  TempDir temp;
  // The token from the environment, TLS checked against the test CA.
  ProgramRun stats =
      RunProgram({AUTHTRAIL_CLI_PATH, "--server", server->address(), "--tls_ca",
                  Cert("ca.pem"), "connections", "p-1", "--json"},
                 "", {absl::StrCat("AUTHTRAIL_TOKEN=", kDashboardToken)}, temp);
  EXPECT_EQ(stats.exit_code, 0) << stats.err;

  ProgramRun wrong =
      RunProgram({AUTHTRAIL_CLI_PATH, "--server", server->address(), "--tls_ca",
                  Cert("ca.pem"), "--token", "nope", "connections", "p-1"},
                 "", {}, temp);
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(wrong.err, "UNAUTHENTICATED")) << wrong.err;

  // A client certificate instead of a token: the admin may read stats.
  ProgramRun admin =
      RunProgram({AUTHTRAIL_CLI_PATH, "--server", server->address(), "--tls_ca",
                  Cert("ca.pem"), "--tls_cert", Cert("admin.pem"), "--tls_key",
                  Cert("admin.key"), "stats", "--json"},
                 "", {}, temp);
  EXPECT_EQ(admin.exit_code, 0) << admin.err;
  EXPECT_TRUE(absl::StrContains(admin.out, "head")) << admin.out;

  // Health, for probes: no credentials, the certificate checked by name.
  ProgramRun health =
      RunProgram({AUTHTRAIL_CLI_PATH, "--server", server->address(), "--tls_ca",
                  Cert("ca.pem"), "--tls_server_name", "localhost", "health"},
                 "", {}, temp);
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
  ProgramRun wrong_name = RunProgram(
      {AUTHTRAIL_CLI_PATH, "--server", server->address(), "--tls_ca",
       Cert("ca.pem"), "--tls_server_name", "elsewhere.test", "health"},
      "", {}, temp);
  EXPECT_EQ(wrong_name.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(wrong_name.err, "UNAVAILABLE"))
      << wrong_name.err;
}

}  // namespace
}  // namespace authtrail::testing
