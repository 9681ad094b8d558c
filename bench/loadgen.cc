// loadgen: drives a running authtraild (or the echo baseline server) over
// gRPC with the callback API, and prints one JSON object with the result.
//
// Modes:
//   closed  N calls in flight; each completion starts the next call. Peak
//           throughput; latency from the moment each call is sent.
//   open    calls start at a fixed rate whatever the server does; latency
//           is measured from each call's intended start time, so a server
//           (or client) that falls behind is charged for the wait
//           (no coordinated omission).
//   fill    appends a pre-filled population (batches, N in flight) until
//           --events have been sent, whole patients only; prints the
//           number of patients for later runs.
//
// RPCs: append (AppendEvents, --batch events per call), get_connection,
// list_events (a page of 100 of one long-lived connection), echo.
//
// With --server_pid, samples the server's RSS every 100 ms, its CPU time
// (/proc/PID/stat utime + stime) and bytes written (/proc/PID/io) over the
// measured window. With --stats (authtraild only), also reads the server's
// memtable bytes from GetStats every 500 ms and at the end of the window.
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "authtrail/v1/admin.grpc.pb.h"
#include "authtrail/v1/history.grpc.pb.h"
#include "authtrail/v1/ingest.grpc.pb.h"
#include "bench/histogram.h"
#include "bench/workload.h"
#include "echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace authtrail::bench {
namespace {

using Json = nlohmann::ordered_json;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t t) {
  int64_t now = NowNs();
  if (t > now) std::this_thread::sleep_for(std::chrono::nanoseconds(t - now));
}

// Runs when a call ends: its status, when it was sent and when it ended.
using Done =
    std::function<void(const grpc::Status&, int64_t sent_ns, int64_t ended_ns)>;

// One kind of call. Start may be called from any thread, including from
// inside a Done.
class Rpc {
 public:
  virtual ~Rpc() = default;
  // Starts one call; false (and `done` never runs) when there is nothing
  // more to send.
  virtual bool Start(Done done) = 0;
  virtual int events_per_call() const { return 1; }

  // Sizes of what was sent and received, and items per response.
  void Count(size_t request, size_t response, size_t items) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    request_bytes_.fetch_add(request, std::memory_order_relaxed);
    response_bytes_.fetch_add(response, std::memory_order_relaxed);
    items_.fetch_add(items, std::memory_order_relaxed);
  }
  Json Sizes() const {
    double n = std::max<double>(1, calls_.load());
    return {{"request_bytes_mean", request_bytes_.load() / n},
            {"response_bytes_mean", response_bytes_.load() / n},
            {"items_per_response_mean", items_.load() / n}};
  }

 private:
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> request_bytes_{0};
  std::atomic<uint64_t> response_bytes_{0};
  std::atomic<uint64_t> items_{0};
};

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(60);
}

// Starts `stub_call` on a fresh call object and reports through `done`.
template <typename Call, typename StubCall, typename Sized>
void Issue(std::unique_ptr<Call> owned, StubCall stub_call, Sized sized,
           Done done) {
  Call* call = owned.release();
  call->context.set_deadline(Deadline());
  int64_t sent = NowNs();
  stub_call(call,
            [call, sent, done = std::move(done), sized](grpc::Status status) {
              int64_t ended = NowNs();
              // Done last: once it returns for the last call, the run may end
              // and the Rpc go away.
              sized(call);
              delete call;
              done(status, sent, ended);
            });
}

class AppendRpc final : public Rpc {
 public:
  AppendRpc(const std::shared_ptr<grpc::Channel>& channel,
            WorkloadOptions options, int batch, uint64_t limit_events)
      : stub_(authtrail::v1::AuthEventIngest::NewStub(channel)),
        workload_(options),
        batch_(batch),
        limit_events_(limit_events) {}

  int events_per_call() const override { return batch_; }
  uint64_t patients_done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return workload_.patients_done();
  }
  uint64_t events_generated() const {
    std::lock_guard<std::mutex> lock(mu_);
    return generated_;
  }

  bool Start(Done done) override {
    struct Call {
      grpc::ClientContext context;
      authtrail::v1::AppendEventsRequest request;
      authtrail::v1::AppendEventsResponse response;
    };
    auto call = std::make_unique<Call>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int i = 0; i < batch_; ++i) {
        if (limit_events_ > 0 && generated_ >= limit_events_ &&
            workload_.at_patient_boundary()) {
          break;
        }
        *call->request.add_events() = workload_.Next();
        ++generated_;
      }
    }
    if (call->request.events_size() == 0) return false;
    size_t request_bytes = call->request.ByteSizeLong();
    Issue(
        std::move(call),
        [this](Call* c, std::function<void(grpc::Status)> cb) {
          stub_->async()->AppendEvents(&c->context, &c->request, &c->response,
                                       std::move(cb));
        },
        [this, request_bytes](Call* c) {
          Count(request_bytes, c->response.ByteSizeLong(),
                c->response.results_size());
        },
        std::move(done));
    return true;
  }

 private:
  std::unique_ptr<authtrail::v1::AuthEventIngest::Stub> stub_;
  mutable std::mutex mu_;
  Workload workload_;
  uint64_t generated_ = 0;
  const int batch_;
  const uint64_t limit_events_;
};

// A random generator per thread, seeded from `seed` and the thread.
std::mt19937_64& ThreadRng(uint64_t seed) {
  thread_local std::mt19937_64 rng(
      Mix(seed, std::hash<std::thread::id>()(std::this_thread::get_id())));
  return rng;
}

class GetConnectionRpc final : public Rpc {
 public:
  GetConnectionRpc(const std::shared_ptr<grpc::Channel>& channel,
                   uint64_t patients, uint64_t seed)
      : stub_(authtrail::v1::AuthHistory::NewStub(channel)),
        patients_(patients),
        seed_(seed) {}

  bool Start(Done done) override {
    struct Call {
      grpc::ClientContext context;
      authtrail::v1::GetConnectionRequest request;
      authtrail::v1::Connection response;
    };
    auto& rng = ThreadRng(seed_);
    uint64_t p = std::uniform_int_distribution<uint64_t>(0, patients_ - 1)(rng);
    int k = static_cast<int>(rng() % ConnectionsOf(p));
    auto call = std::make_unique<Call>();
    call->request.set_connection_id(ConnectionId(p, k));
    size_t request_bytes = call->request.ByteSizeLong();
    Issue(
        std::move(call),
        [this](Call* c, std::function<void(grpc::Status)> cb) {
          stub_->async()->GetConnection(&c->context, &c->request, &c->response,
                                        std::move(cb));
        },
        [this, request_bytes](Call* c) {
          Count(request_bytes, c->response.ByteSizeLong(), 1);
        },
        std::move(done));
    return true;
  }

 private:
  std::unique_ptr<authtrail::v1::AuthHistory::Stub> stub_;
  const uint64_t patients_;
  const uint64_t seed_;
};

class ListEventsRpc final : public Rpc {
 public:
  ListEventsRpc(const std::shared_ptr<grpc::Channel>& channel, uint64_t heavy,
                uint64_t seed)
      : stub_(authtrail::v1::AuthHistory::NewStub(channel)),
        heavy_(heavy),
        seed_(seed) {}

  bool Start(Done done) override {
    struct Call {
      grpc::ClientContext context;
      authtrail::v1::ListEventsRequest request;
      authtrail::v1::ListEventsResponse response;
    };
    auto& rng = ThreadRng(seed_);
    uint64_t p = std::uniform_int_distribution<uint64_t>(0, heavy_ - 1)(rng);
    auto call = std::make_unique<Call>();
    call->request.mutable_filter()->set_connection_id(ConnectionId(p, 0));
    call->request.set_page_size(100);
    size_t request_bytes = call->request.ByteSizeLong();
    Issue(
        std::move(call),
        [this](Call* c, std::function<void(grpc::Status)> cb) {
          stub_->async()->ListEvents(&c->context, &c->request, &c->response,
                                     std::move(cb));
        },
        [this, request_bytes](Call* c) {
          Count(request_bytes, c->response.ByteSizeLong(),
                c->response.events_size());
        },
        std::move(done));
    return true;
  }

 private:
  std::unique_ptr<authtrail::v1::AuthHistory::Stub> stub_;
  const uint64_t heavy_;
  const uint64_t seed_;
};

class EchoRpc final : public Rpc {
 public:
  EchoRpc(const std::shared_ptr<grpc::Channel>& channel, size_t request_bytes,
          size_t response_bytes)
      : stub_(authtrail::bench::Echo::NewStub(channel)),
        payload_(request_bytes, 'p'),
        response_bytes_(response_bytes) {}

  bool Start(Done done) override {
    struct Call {
      grpc::ClientContext context;
      authtrail::bench::EchoRequest request;
      authtrail::bench::EchoResponse response;
    };
    auto call = std::make_unique<Call>();
    call->request.set_payload(payload_);
    call->request.set_response_bytes(static_cast<uint32_t>(response_bytes_));
    size_t request_bytes = call->request.ByteSizeLong();
    Issue(
        std::move(call),
        [this](Call* c, std::function<void(grpc::Status)> cb) {
          stub_->async()->Echo(&c->context, &c->request, &c->response,
                               std::move(cb));
        },
        [this, request_bytes](Call* c) {
          Count(request_bytes, c->response.ByteSizeLong(), 1);
        },
        std::move(done));
    return true;
  }

 private:
  std::unique_ptr<authtrail::bench::Echo::Stub> stub_;
  const std::string payload_;
  const size_t response_bytes_;
};

// Calls that count: successes into the histogram, failures by count (and
// the first one's message).
class Recorder {
 public:
  Recorder(int64_t begin_ns, int64_t end_ns)
      : begin_ns_(begin_ns), end_ns_(end_ns) {}

  // `key_ns` decides whether the call is in the measured window; latency
  // is ended - from.
  void Record(int64_t key_ns, int64_t from_ns, int64_t ended_ns,
              const grpc::Status& status) {
    if (key_ns < begin_ns_ || key_ns >= end_ns_) return;
    if (!status.ok()) {
      if (errors_.fetch_add(1) == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        first_error_ =
            std::to_string(status.error_code()) + ": " + status.error_message();
      }
      return;
    }
    histogram_.Record(
        static_cast<uint64_t>(std::max<int64_t>(0, ended_ns - from_ns)));
  }

  const Histogram& histogram() const { return histogram_; }
  uint64_t errors() const { return errors_.load(); }
  std::string first_error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }
  double window_seconds() const { return (end_ns_ - begin_ns_) / 1e9; }

 private:
  const int64_t begin_ns_;
  const int64_t end_ns_;
  Histogram histogram_;
  std::atomic<uint64_t> errors_{0};
  mutable std::mutex mu_;
  std::string first_error_;
};

// ---- The server's resources, from /proc ------------------------------------

struct ProcSample {
  double cpu_seconds = 0;
  uint64_t write_bytes = 0;
  uint64_t rss_bytes = 0;
};

ProcSample SampleProcess(int pid) {
  ProcSample out;
  std::string base = "/proc/" + std::to_string(pid);
  {
    std::ifstream stat(base + "/stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the command name (which may hold spaces) start at ')'.
    size_t close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::string field;
      uint64_t utime = 0;
      uint64_t stime = 0;
      // Fields 3..13 come first; utime is 14 and stime 15.
      for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
      }
      out.cpu_seconds = static_cast<double>(utime + stime) /
                        static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  {
    std::ifstream io(base + "/io");
    std::string key;
    uint64_t value = 0;
    while (io >> key >> value) {
      if (key == "write_bytes:") out.write_bytes = value;
    }
  }
  {
    std::ifstream status(base + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) {
        out.rss_bytes = std::stoull(line.substr(6)) * 1024;  // in kB
      }
    }
  }
  return out;
}

// The server's store figures from GetStats, memtable bytes among them.
Json StoreStats(const std::shared_ptr<grpc::Channel>& channel) {
  auto admin = authtrail::v1::AuthTrailAdmin::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  authtrail::v1::Stats stats;
  grpc::Status s = admin->GetStats(&context, {}, &stats);
  if (!s.ok()) return {{"error", s.error_message()}};
  uint64_t families = 0;
  for (const auto& [name, bytes] : stats.column_family_bytes()) {
    families += bytes;
  }
  return {{"event_count", stats.event_count()},
          {"family_bytes", families},
          {"memtable_bytes", stats.memtable_bytes()},
          {"disk_bytes", stats.disk_bytes()}};
}

// Samples the server's RSS during the window, and its CPU and writes at
// both ends of it. With `memtables`, also pairs an RSS sample with the
// server's memtable bytes every 500 ms, to compare the two at one moment.
class ProcessMonitor {
 public:
  ProcessMonitor(int pid, int64_t begin_ns, int64_t end_ns,
                 std::function<uint64_t()> memtables)
      : pid_(pid), memtables_(std::move(memtables)) {
    if (pid_ <= 0) return;
    thread_ = std::thread([this, begin_ns, end_ns] {
      SleepUntilNs(begin_ns);
      first_ = SampleProcess(pid_);
      int64_t next = begin_ns;
      for (int i = 0; NowNs() < end_ns; ++i) {
        uint64_t rss = SampleProcess(pid_).rss_bytes;
        rss_.push_back(rss);
        if (memtables_ && i % 5 == 0) pairs_.emplace_back(rss, memtables_());
        next += 100'000'000;
        SleepUntilNs(std::min(next, end_ns));
      }
      last_ = SampleProcess(pid_);
      rss_.push_back(last_.rss_bytes);
      if (memtables_) pairs_.emplace_back(last_.rss_bytes, memtables_());
    });
  }
  ~ProcessMonitor() {
    if (thread_.joinable()) thread_.join();
  }

  // REQUIRES: the window has ended.
  Json Result(uint64_t events) {
    if (pid_ <= 0) return nullptr;
    thread_.join();
    std::vector<uint64_t> rss = rss_;
    std::sort(rss.begin(), rss.end());
    // Median RSS of each tenth of the window, in sampling order: whether
    // memory grows over a long run.
    Json tenths = Json::array();
    if (rss_.size() >= 10) {
      for (size_t t = 0; t < 10; ++t) {
        std::vector<uint64_t> part(rss_.begin() + t * rss_.size() / 10,
                                   rss_.begin() + (t + 1) * rss_.size() / 10);
        std::nth_element(part.begin(), part.begin() + part.size() / 2,
                         part.end());
        tenths.push_back(part[part.size() / 2]);
      }
    }
    double cpu = last_.cpu_seconds - first_.cpu_seconds;
    uint64_t written = last_.write_bytes - first_.write_bytes;
    double per_thousand = events > 0 ? cpu / (events / 1000.0) : 0;
    Json out = {{"pid", pid_},
                {"rss_max_bytes", rss.empty() ? 0 : rss.back()},
                {"rss_median_bytes", rss.empty() ? 0 : rss[rss.size() / 2]},
                {"rss_tenths_median_bytes", tenths},
                {"cpu_seconds", cpu},
                {"cpu_seconds_per_1000_events", per_thousand},
                {"write_bytes", written},
                {"write_bytes_per_event",
                 events > 0 ? static_cast<double>(written) / events : 0}};
    // The moment RSS exceeded the memtables by the most.
    std::pair<uint64_t, uint64_t> worst{0, 0};
    for (const auto& pair : pairs_) {
      if (pair.first - std::min(pair.first, pair.second) >
          worst.first - std::min(worst.first, worst.second)) {
        worst = pair;
      }
    }
    if (!pairs_.empty()) {
      out["memory"] = {{"samples", pairs_.size()},
                       {"rss_bytes", worst.first},
                       {"memtable_bytes", worst.second}};
    }
    return out;
  }

 private:
  const int pid_;
  std::function<uint64_t()> memtables_;
  std::thread thread_;
  ProcSample first_;
  ProcSample last_;
  std::vector<uint64_t> rss_;
  // (RSS, memtable bytes) at the same moment.
  std::vector<std::pair<uint64_t, uint64_t>> pairs_;
};

double ClientCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
         usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

struct Options {
  std::string target = "127.0.0.1:50151";
  std::string mode = "closed";
  std::string rpc = "append";
  int batch = 1;
  int concurrency = 1;
  double rate = 1000;
  double duration = 5;
  double warmup = 1;
  uint64_t patients = 0;
  uint64_t heavy = 0;
  uint64_t first_patient = 0;
  uint64_t events = 0;
  uint64_t seed = 0;
  int server_pid = 0;
  bool stats = false;
  size_t echo_request_bytes = 400;
  size_t echo_response_bytes = 8;
  int max_outstanding = 4096;
  std::string label;
  int64_t since_ns = 0;
};

// first_answer: how long after `since_ns` (when the server process was
// started) a GetConnection of a pre-filled connection first succeeds.
// Tries every 5 ms with a fresh short deadline; gives up after 120 s.
int FirstAnswer(const Options& o) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 20);
  auto channel = grpc::CreateCustomChannel(
      o.target, grpc::InsecureChannelCredentials(), args);
  auto stub = authtrail::v1::AuthHistory::NewStub(channel);
  authtrail::v1::GetConnectionRequest request;
  request.set_connection_id(ConnectionId(0, 0));
  // Wall-clock nanoseconds, comparable with `date +%s%N` in a script.
  auto wall_ns = [] { return absl::GetCurrentTimeNanos(); };
  int64_t since = o.since_ns > 0 ? o.since_ns : wall_ns();
  int attempts = 0;
  grpc::Status last;
  while (wall_ns() - since < int64_t{120'000'000'000}) {
    ++attempts;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(200));
    context.set_wait_for_ready(true);
    authtrail::v1::Connection reply;
    last = stub->GetConnection(&context, request, &reply);
    if (last.ok()) {
      Json out;
      out["label"] = o.label;
      out["mode"] = "first_answer";
      out["first_answer_seconds"] = (wall_ns() - since) / 1e9;
      out["attempts"] = attempts;
      std::cout << out.dump() << std::endl;
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::cerr << "loadgen: no answer within 120 s: " << last.error_message()
            << "\n";
  return 1;
}

std::unique_ptr<Rpc> MakeRpc(const Options& o,
                             const std::shared_ptr<grpc::Channel>& channel) {
  if (o.rpc == "append") {
    WorkloadOptions w;
    w.seed = o.seed;
    w.heavy_patients = o.mode == "fill" ? o.heavy : 0;
    if (o.mode == "fill") {
      w.first_patient = o.first_patient;
      // Spread the population over the last ten days.
      double patients = std::max<double>(1, o.events / 20.0);
      w.start = absl::Now() - absl::Hours(240);
      w.step_per_patient = absl::Hours(230) / patients;
    } else {
      // Live traffic: new patients far above the pre-filled ones, a third
      // of the events refreshes of known connections, all dated now.
      w.first_patient = 100'000'000 + (o.seed % 1000) * 1'000'000;
      w.start = absl::Now() - absl::Minutes(30);
      w.step_per_patient = absl::ZeroDuration();
      w.refresh_share = o.patients > 0 ? 0.3 : 0;
      w.existing_patients = o.patients;
    }
    uint64_t limit = o.mode == "fill" ? o.events : 0;
    return std::make_unique<AppendRpc>(channel, w, o.batch, limit);
  }
  if (o.rpc == "get_connection") {
    return std::make_unique<GetConnectionRpc>(channel, o.patients, o.seed);
  }
  if (o.rpc == "list_events") {
    return std::make_unique<ListEventsRpc>(channel, o.heavy, o.seed);
  }
  return std::make_unique<EchoRpc>(channel, o.echo_request_bytes,
                                   o.echo_response_bytes);
}

// Keeps `n` calls in flight until `stop_ns` (or until the RPC has nothing
// more to send), then waits for the last ones.
void RunClosed(Rpc& rpc, int n, int64_t stop_ns, Recorder& recorder) {
  std::atomic<int> in_flight{0};
  std::function<void()> issue = [&] {
    in_flight.fetch_add(1);
    bool started =
        rpc.Start([&](const grpc::Status& status, int64_t sent, int64_t ended) {
          recorder.Record(ended, sent, ended, status);
          // Start the next one before letting go of this one, so that the
          // count reaches zero only when the loop is over.
          if (ended < stop_ns) issue();
          in_flight.fetch_sub(1);
        });
    if (!started) in_flight.fetch_sub(1);
  };
  for (int i = 0; i < n; ++i) issue();
  while (in_flight.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Starts calls at `rate` per second from `begin_ns` to `stop_ns`, each
// measured from its intended start. Calls that would exceed
// `max_outstanding` in flight are not sent and counted as shed.
uint64_t RunOpen(Rpc& rpc, double rate, int64_t begin_ns, int64_t stop_ns,
                 int max_outstanding, Recorder& recorder) {
  std::atomic<int> in_flight{0};
  uint64_t shed = 0;
  double period = 1e9 / rate;
  for (uint64_t i = 0;; ++i) {
    int64_t intended = begin_ns + static_cast<int64_t>(i * period);
    if (intended >= stop_ns) break;
    SleepUntilNs(intended);
    if (in_flight.load() >= max_outstanding) {
      ++shed;
      continue;
    }
    in_flight.fetch_add(1);
    rpc.Start(
        [&, intended](const grpc::Status& status, int64_t sent, int64_t ended) {
          recorder.Record(intended, intended, ended, status);
          in_flight.fetch_sub(1);
        });
  }
  while (in_flight.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return shed;
}

Json Latency(const Histogram& h) {
  auto us = [](uint64_t ns) { return ns / 1000.0; };
  return {{"p50", us(h.Quantile(0.50))}, {"p90", us(h.Quantile(0.90))},
          {"p99", us(h.Quantile(0.99))}, {"p999", us(h.Quantile(0.999))},
          {"max", us(h.max())},          {"min", us(h.min())},
          {"mean", h.mean() / 1000.0},   {"count", h.count()}};
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "loadgen: closed- and open-loop gRPC load against authtraild "
      "or the echo baseline; prints one JSON object"};
  app.add_option("--target", o.target, "HOST:PORT")->capture_default_str();
  app.add_option("--mode", o.mode, "closed, open, fill or first_answer")
      ->check(CLI::IsMember({"closed", "open", "fill", "first_answer"}));
  app.add_option("--since_ns", o.since_ns,
                 "first_answer: when the server was started (ns since the "
                 "epoch; default: now)");
  app.add_option("--rpc", o.rpc, "append, get_connection, list_events, echo")
      ->check(
          CLI::IsMember({"append", "get_connection", "list_events", "echo"}));
  app.add_option("--batch", o.batch, "events per AppendEvents call")
      ->check(CLI::Range(1, 1000));
  app.add_option("--concurrency", o.concurrency, "calls in flight (closed)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--rate", o.rate, "calls per second (open)");
  app.add_option("--duration", o.duration, "measured seconds");
  app.add_option("--warmup", o.warmup, "seconds before measuring");
  app.add_option("--patients", o.patients,
                 "pre-filled patients [0, N): targets of reads and refreshes");
  app.add_option("--heavy", o.heavy,
                 "heavy pre-filled patients [0, H): targets of ListEvents");
  app.add_option("--first_patient", o.first_patient, "fill: first patient");
  app.add_option("--events", o.events, "fill: events to append");
  app.add_option("--seed", o.seed, "random seed (default: from the clock)");
  app.add_option("--server_pid", o.server_pid,
                 "sample this process's RSS, CPU and writes");
  app.add_flag("--stats", o.stats,
               "read authtraild's memtable bytes from GetStats");
  app.add_option("--echo_request_bytes", o.echo_request_bytes);
  app.add_option("--echo_response_bytes", o.echo_response_bytes);
  app.add_option("--max_outstanding", o.max_outstanding);
  app.add_option("--label", o.label, "copied into the output");
  CLI11_PARSE(app, argc, argv);
  if (o.seed == 0) o.seed = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
  if (o.mode == "first_answer") return FirstAnswer(o);
  if ((o.rpc == "get_connection" && o.patients == 0) ||
      (o.rpc == "list_events" && o.heavy == 0)) {
    std::cerr << "loadgen: reads need --patients (and --heavy for "
                 "list_events) of a filled server\n";
    return 2;
  }
  // Wake-ups on time for open-loop pacing.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  auto channel = grpc::CreateCustomChannel(
      o.target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::seconds(30))) {
    std::cerr << "loadgen: cannot connect to " << o.target << "\n";
    return 1;
  }
  std::unique_ptr<Rpc> rpc = MakeRpc(o, channel);

  Json out;
  out["label"] = o.label;
  out["rpc"] = o.rpc;
  out["mode"] = o.mode;
  out["batch"] = o.rpc == "append" ? o.batch : 0;
  int64_t start = NowNs() + 5'000'000;
  int64_t begin = start + static_cast<int64_t>(o.warmup * 1e9);
  int64_t end = begin + static_cast<int64_t>(o.duration * 1e9);
  if (o.mode == "fill") {
    begin = start;
    end = std::numeric_limits<int64_t>::max() / 2;
  }
  Recorder recorder(begin, end);
  std::function<uint64_t()> memtables;
  if (o.stats) {
    memtables = [&channel]() -> uint64_t {
      return StoreStats(channel).value("memtable_bytes", uint64_t{0});
    };
  }
  ProcessMonitor monitor(o.mode == "fill" ? 0 : o.server_pid, begin, end,
                         memtables);
  double client_cpu = ClientCpuSeconds();
  int64_t started = NowNs();
  uint64_t shed = 0;
  if (o.mode == "open") {
    out["rate"] = o.rate;
    shed = RunOpen(*rpc, o.rate, start, end, o.max_outstanding, recorder);
    out["shed"] = shed;
  } else {
    out["concurrency"] = o.concurrency;
    RunClosed(*rpc, o.concurrency, end, recorder);
  }
  double elapsed = (NowNs() - started) / 1e9;
  client_cpu = ClientCpuSeconds() - client_cpu;

  const Histogram& h = recorder.histogram();
  double window = o.mode == "fill" ? elapsed : recorder.window_seconds();
  double calls_per_second = h.count() / window;
  uint64_t events = h.count() * static_cast<uint64_t>(rpc->events_per_call());
  out["seconds"] = window;
  out["calls"] = h.count();
  out["errors"] = recorder.errors();
  if (recorder.errors() > 0) out["first_error"] = recorder.first_error();
  out["calls_per_second"] = calls_per_second;
  out["events_per_second"] = calls_per_second * rpc->events_per_call();
  out["latency_us"] = Latency(h);
  out["sizes"] = rpc->Sizes();
  out["client_cpu_seconds"] = client_cpu;
  if (o.mode == "fill") {
    auto* append = static_cast<AppendRpc*>(rpc.get());
    out["events"] = append->events_generated();
    out["patients"] = o.first_patient + append->patients_done();
    out["events_per_second"] = append->events_generated() / elapsed;
  } else if (o.server_pid > 0) {
    out["server"] = monitor.Result(o.rpc == "append" ? events : h.count());
  }
  if (o.stats) {
    out["store"] = StoreStats(channel);
  }
  std::cout << out.dump() << std::endl;
  return recorder.errors() > 0 ? 3 : 0;
}

}  // namespace
}  // namespace authtrail::bench

int main(int argc, char** argv) { return authtrail::bench::Main(argc, argv); }
