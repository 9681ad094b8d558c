// Crash safety of the real authtraild binary: concurrent clients keep a
// ledger of acknowledged events while the server is killed with SIGKILL at
// random moments; after each restart every acknowledged event must be there
// exactly once and verify must pass. Also the clean path: SIGTERM under
// load loses nothing and exits within its grace period.
//
// The default suite runs a few rounds; AUTHTRAIL_LONG=1 runs
// AUTHTRAIL_CRASH_ROUNDS (default 200).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "authtrail/v1/admin.grpc.pb.h"
#include "authtrail/v1/ingest.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

namespace authtrail::testing {
namespace {

// A channel that reconnects quickly: servers here restart within
// milliseconds, and gRPC's default backoff would wait seconds.
std::shared_ptr<grpc::Channel> FastChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
  // Not shared with earlier channels to the same address, whose backoff
  // from the previous server's death would carry over.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

// The authtraild binary in a child process.
class Daemon {
 public:
  Daemon(std::string data_dir, int port)
      : data_dir_(std::move(data_dir)), port_(port) {}
  ~Daemon() {
    if (pid_ > 0) Kill(SIGKILL);
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Starts the binary and waits until it answers.
  void Start() {
    pid_ = fork();
    if (pid_ == 0) {
      std::string listen = absl::StrCat("--listen=", address());
      std::string data = absl::StrCat("--data_dir=", data_dir_);
      execl(AUTHTRAILD_PATH, AUTHTRAILD_PATH, listen.c_str(), data.c_str(),
            "--plaintext", "--log_level=warn", "--shutdown_grace_seconds=5",
            "--metrics_listen=off", static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    ASSERT_TRUE(WaitForPort()) << "authtraild did not listen on " << address();
    channel_ = FastChannel(address());
    admin_ = v1::AuthTrailAdmin::NewStub(channel_);
    for (int i = 0; i < 300; ++i) {
      v1::Stats stats;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(200));
      if (admin_->GetStats(&context, {}, &stats).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "authtraild did not answer on " << address();
  }

  // Sends `signal` and waits for the process; returns how long it took to
  // exit and its wait status.
  std::pair<absl::Duration, int> Kill(int signal) {
    absl::Time sent = absl::Now();
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return {absl::Now() - sent, status};
  }

  v1::AuthTrailAdmin::Stub& admin() { return *admin_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  // Polls until the port accepts TCP connections (up to 20 s).
  bool WaitForPort() const {
    for (int i = 0; i < 2000; ++i) {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(port_));
      bool up =
          connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      close(fd);
      if (up) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string data_dir_;
  int port_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AuthTrailAdmin::Stub> admin_;
};

// What the clients were told: event id -> acknowledged position, and every
// event sent, so that acknowledged ones can be re-sent as probes.
struct Ledger {
  std::mutex mu;
  std::map<std::string, uint64_t> acknowledged;
  std::map<std::string, v1::AuthEvent> sent;
};

// Appends batches of 1-8 events until told to stop or the server is gone.
void Client(const std::string& address, int client, int round,
            std::atomic<bool>* stop, Ledger* ledger) {
  auto channel = FastChannel(address);
  auto stub = v1::AuthEventIngest::NewStub(channel);
  std::mt19937 random(client * 7919 + round);
  absl::Time t0 = absl::Now() - absl::Hours(1);
  for (int batch = 0; !stop->load(); ++batch) {
    std::vector<v1::AuthEvent> events;
    int n = 1 + static_cast<int>(random() % 8);
    for (int i = 0; i < n; ++i) {
      std::string id =
          absl::StrCat("r", round, "-c", client, "-b", batch, "-", i);
      events.push_back(Event(id)
                           .Patient(absl::StrCat("p-", client))
                           .Connection(absl::StrCat("c-", client, "-", i % 3))
                           .Session(absl::StrCat("s-", round, "-", client))
                           .At(t0 + absl::Milliseconds(batch))
                           .Step(v1::STEP_TOKEN_REFRESH)
                           .Succeeded());
    }
    {
      std::lock_guard<std::mutex> lock(ledger->mu);
      for (const auto& e : events) ledger->sent[e.event_id()] = e;
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(2));
    v1::AppendEventsResponse response;
    grpc::Status status =
        stub->AppendEvents(&context, Batch(events), &response);
    if (!status.ok()) {
      // Not acknowledged: the server is gone, or shutting down and
      // cancelling what it cannot finish.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
          status.error_code() == grpc::StatusCode::CANCELLED ||
          status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;  // the server is gone or going: keep trying until stop
      }
      ADD_FAILURE() << "append refused: " << status.error_message();
      return;
    }
    std::lock_guard<std::mutex> lock(ledger->mu);
    for (int i = 0; i < response.results_size(); ++i) {
      ledger->acknowledged[events[i].event_id()] =
          response.results(i).position();
    }
  }
}

// Re-sends every acknowledged event: each must come back as a duplicate
// at its acknowledged position. Then verify must pass: the log only, or
// also every projection against a replay when `full`.
void CheckLedger(Daemon& daemon, Ledger& ledger, bool full = true) {
  auto stub = v1::AuthEventIngest::NewStub(daemon.channel());
  std::vector<v1::AuthEvent> probes;
  std::vector<uint64_t> positions;
  auto flush = [&] {
    if (probes.empty()) return;
    grpc::ClientContext context;
    v1::AppendEventsResponse response;
    grpc::Status s = stub->AppendEvents(&context, Batch(probes), &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (size_t i = 0; i < probes.size(); ++i) {
      EXPECT_TRUE(response.results(i).duplicate())
          << "acknowledged event " << probes[i].event_id() << " was lost";
      EXPECT_EQ(response.results(i).position(), positions[i])
          << probes[i].event_id();
    }
    probes.clear();
    positions.clear();
  };
  for (const auto& [id, position] : ledger.acknowledged) {
    probes.push_back(ledger.sent.at(id));
    positions.push_back(position);
    if (probes.size() == 500) flush();
  }
  flush();

  v1::Operation op;
  {
    grpc::ClientContext context;
    v1::StartVerifyRequest request;
    request.set_log_only(!full);
    ASSERT_TRUE(daemon.admin().StartVerify(&context, request, &op).ok());
  }
  // Up to 5 minutes: the log grows with every round of a long run.
  for (int i = 0; i < 15000 && op.state() == v1::OPERATION_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    grpc::ClientContext context;
    v1::GetOperationRequest get;
    get.set_id(op.id());
    ASSERT_TRUE(daemon.admin().GetOperation(&context, get, &op).ok());
  }
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();
  EXPECT_TRUE(op.verify().ok()) << op.verify().problem();
}

int Rounds() {
  const char* long_run = std::getenv("AUTHTRAIL_LONG");
  if (long_run == nullptr || std::string(long_run) != "1") return 3;
  const char* rounds = std::getenv("AUTHTRAIL_CRASH_ROUNDS");
  return rounds != nullptr ? std::atoi(rounds) : 200;
}

// A start that fails (here: the port is taken by another server) exits
// with 1 and leaves no data folder of its own behind; the running server's
// folder is untouched.
TEST(CrashTest, FailedStartLeavesNoNewDataFolder) {
  TempDir temp;
  Daemon running(temp.path() + "/data", FreePort());
  ASSERT_NO_FATAL_FAILURE(running.Start());
  const std::string fresh = temp.path() + "/fresh";
  pid_t pid = fork();
  if (pid == 0) {
    std::string listen = absl::StrCat("--listen=", running.address());
    std::string data = absl::StrCat("--data_dir=", fresh);
    execl(AUTHTRAILD_PATH, AUTHTRAILD_PATH, listen.c_str(), data.c_str(),
          "--plaintext", "--log_level=off", "--metrics_listen=off",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_FALSE(std::filesystem::exists(fresh));
  EXPECT_TRUE(std::filesystem::exists(temp.path() + "/data/CURRENT"));
  v1::Stats stats;
  grpc::ClientContext context;
  EXPECT_TRUE(running.admin().GetStats(&context, {}, &stats).ok());
}

TEST(CrashTest, SigkillLosesNoAcknowledgedEvent) {
  TempDir temp;
  Daemon daemon(temp.path() + "/data", FreePort());
  Ledger ledger;
  std::mt19937 random(12345);
  const int rounds = Rounds();
  for (int round = 0; round < rounds; ++round) {
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    std::atomic<bool> stop = false;
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back(Client, daemon.address(), c, round, &stop, &ledger);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 400));
    daemon.Kill(SIGKILL);
    stop = true;
    for (auto& t : clients) t.join();
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    // A full verify replays the whole log: every 25 rounds and the last.
    bool full = round % 25 == 0 || round + 1 == rounds;
    ASSERT_NO_FATAL_FAILURE(CheckLedger(daemon, ledger, full));
    daemon.Kill(SIGKILL);
    if ((round + 1) % 25 == 0) {
      std::cout << "round " << round + 1 << " of " << rounds << ": "
                << ledger.acknowledged.size() << " acknowledged events"
                << std::endl;
    }
  }
  std::cout << "crash rounds: " << rounds
            << ", acknowledged events checked: " << ledger.acknowledged.size()
            << std::endl;
  EXPECT_GT(ledger.acknowledged.size(), 0u);
}

TEST(CrashTest, SigtermUnderLoadDrainsAndExitsInTime) {
  TempDir temp;
  Daemon daemon(temp.path() + "/data", FreePort());
  Ledger ledger;
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  // Idle clients: connected, sending nothing.
  std::vector<std::shared_ptr<grpc::Channel>> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(grpc::CreateChannel(daemon.address(),
                                       grpc::InsecureChannelCredentials()));
    idle.back()->WaitForConnected(std::chrono::system_clock::now() +
                                  std::chrono::seconds(2));
  }
  std::atomic<bool> stop = false;
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back(Client, daemon.address(), c, 0, &stop, &ledger);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto [took, status] = daemon.Kill(SIGTERM);
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "wait status " << status;
  EXPECT_LT(took, absl::Seconds(5 + 3)) << "shutdown took " << took;
  std::cout << "SIGTERM to exit: " << absl::FormatDuration(took) << std::endl;

  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(CheckLedger(daemon, ledger));
  EXPECT_GT(ledger.acknowledged.size(), 0u);
}

}  // namespace
}  // namespace authtrail::testing
