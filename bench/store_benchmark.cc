// In-process benchmarks of the storage layer (no gRPC): the append path,
// the reads behind GetConnection and ListEvents, the reducers alone, and a
// rebuild of a pre-filled store. Items per second are events (appends,
// reducers, rebuild), lookups (GetConnection) or events returned
// (ListEvents).
//
// The store lives in $AUTHTRAIL_BENCH_DIR (default: a folder under /tmp),
// pre-filled once per process with $AUTHTRAIL_BENCH_EVENTS events of the
// benchmark workload (default 100000), unsynced, then reopened with sync
// on. Run with --benchmark_repetitions=N for medians.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "bench/workload.h"
#include "storage/event_store.h"
#include "storage/reducers.h"
#include "storage/store_internal.h"

namespace authtrail::bench {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::RecordedEvent;

constexpr uint64_t kHeavyPatients = 50;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// The shared pre-filled store, opened on first use, closed at exit.
class Fixture {
 public:
  static Fixture& Get() {
    static Fixture* fixture = [] { return existing_ = new Fixture(); }();
    return *fixture;
  }
  // The fixture if some benchmark used it, else null.
  static Fixture* Existing() { return existing_; }

  storage::EventStore& store() { return *store_; }
  uint64_t patients() const { return patients_; }
  uint64_t events() const { return events_; }

  // Live traffic: new patients, and refreshes of known connections.
  std::vector<AuthEvent> NextEvents(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<AuthEvent> out;
    out.reserve(n);
    for (int i = 0; i < n; ++i) out.push_back(live_->Next());
    return out;
  }

  // Closes the store and removes its folder.
  void Close() {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

 private:
  Fixture() {
    const char* env_dir = std::getenv("AUTHTRAIL_BENCH_DIR");
    dir_ = env_dir != nullptr && *env_dir != '\0'
               ? std::string(env_dir)
               : "/tmp/authtrail-store-bench-" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
    uint64_t target = EnvNumber("AUTHTRAIL_BENCH_EVENTS", 100000);
    Fill(target);
    store_ = Open(/*sync=*/true);
    WorkloadOptions live;
    live.seed = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
    live.first_patient = 100'000'000;
    live.start = absl::Now() - absl::Minutes(30);
    live.step_per_patient = absl::ZeroDuration();
    live.refresh_share = 0.3;
    live.existing_patients = patients_;
    live_ = std::make_unique<Workload>(live);
  }

  std::unique_ptr<storage::EventStore> Open(bool sync) {
    storage::StoreOptions options;
    options.data_dir = dir_;
    options.sync = sync;
    auto store = storage::EventStore::Open(options);
    if (!store.ok()) {
      std::cerr << "store_benchmark: " << store.status() << "\n";
      std::exit(1);
    }
    return std::move(*store);
  }

  void Fill(uint64_t target) {
    auto store = Open(/*sync=*/false);
    WorkloadOptions options;
    options.seed = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
    options.heavy_patients = kHeavyPatients;
    options.start = absl::Now() - absl::Hours(240);
    options.step_per_patient =
        absl::Hours(230) / std::max<double>(1, target / 20.0);
    Workload workload(options);
    while (events_ < target || !workload.at_patient_boundary()) {
      std::vector<AuthEvent> batch;
      while (batch.size() < 1000 &&
             (events_ < target || !workload.at_patient_boundary())) {
        batch.push_back(workload.Next());
        ++events_;
      }
      auto result = store->AppendAndWait(std::move(batch));
      if (!result.ok()) {
        std::cerr << "store_benchmark: fill: " << result.status() << "\n";
        std::exit(1);
      }
    }
    patients_ = workload.patients_done();
    std::cerr << "store_benchmark: filled " << events_ << " events of "
              << patients_ << " patients in " << dir_ << "\n";
  }

  static inline Fixture* existing_ = nullptr;
  std::string dir_;
  uint64_t events_ = 0;
  uint64_t patients_ = 0;
  std::unique_ptr<storage::EventStore> store_;
  std::mutex mu_;
  std::unique_ptr<Workload> live_;
};

// AppendAndWait with sync on; range(0) events per call. With threads,
// concurrent callers share group commits.
void BM_AppendAndWait(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<AuthEvent> events = f.NextEvents(n);
    state.ResumeTiming();
    auto result = f.store().AppendAndWait(std::move(events));
    if (!result.ok()) state.SkipWithError(result.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_AppendAndWait)->Arg(1)->Arg(100)->UseRealTime();
BENCHMARK(BM_AppendAndWait)->Arg(1)->Threads(32)->UseRealTime();

void BM_GetConnection(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  std::mt19937_64 rng(state.thread_index() + 1);
  for (auto _ : state) {
    uint64_t p = rng() % f.patients();
    int k = static_cast<int>(rng() % ConnectionsOf(p));
    auto connection = f.store().GetConnection(ConnectionId(p, k));
    if (!connection.ok()) {
      state.SkipWithError(connection.status().ToString().c_str());
    }
    benchmark::DoNotOptimize(connection);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GetConnection);

// A page of 100 events of one long-lived connection, newest first.
void BM_ListEvents(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  std::mt19937_64 rng(state.thread_index() + 1);
  uint64_t returned = 0;
  for (auto _ : state) {
    storage::EventQuery query;
    query.filter.set_connection_id(ConnectionId(rng() % kHeavyPatients, 0));
    query.limit = 100;
    auto page = f.store().ListEvents(query);
    if (!page.ok()) {
      state.SkipWithError(page.status().ToString().c_str());
      break;
    }
    returned += page->events.size();
  }
  state.SetItemsProcessed(static_cast<int64_t>(returned));
  state.counters["events_per_page"] = benchmark::Counter(
      static_cast<double>(returned) / std::max<int64_t>(1, state.iterations()));
}
BENCHMARK(BM_ListEvents);

// A realistic stream as the reducers see it: recorded events grouped by
// connection and by session, in log order.
struct Streams {
  std::vector<std::vector<RecordedEvent>> by_connection;
  std::vector<std::vector<RecordedEvent>> by_session;
  size_t connection_events = 0;
  size_t session_events = 0;
};

const Streams& ReducerStreams() {
  static const Streams* streams = [] {
    auto* s = new Streams();
    WorkloadOptions options;
    options.seed = 42;
    options.heavy_patients = 20;
    options.start = absl::Now() - absl::Hours(240);
    options.step_per_patient = absl::Minutes(5);
    Workload workload(options);
    std::map<std::string, size_t> connections;
    std::map<std::string, size_t> sessions;
    auto recorded_at = storage::ToProtoTime(absl::Now());
    for (uint64_t position = 1;
         workload.patients_done() < 2000 || !workload.at_patient_boundary();
         ++position) {
      RecordedEvent e;
      e.set_position(position);
      *e.mutable_recorded_at() = recorded_at;
      *e.mutable_event() = workload.Next();
      auto add = [](const std::string& id, std::map<std::string, size_t>& ids,
                    std::vector<std::vector<RecordedEvent>>& groups,
                    const RecordedEvent& event) {
        auto [it, added] = ids.emplace(id, groups.size());
        if (added) groups.emplace_back();
        groups[it->second].push_back(event);
      };
      add(e.event().connection_id(), connections, s->by_connection, e);
      ++s->connection_events;
      if (!e.event().session_id().empty()) {
        add(e.event().session_id(), sessions, s->by_session, e);
        ++s->session_events;
      }
    }
    return s;
  }();
  return *streams;
}

void BM_ReduceConnection(benchmark::State& state) {
  const Streams& s = ReducerStreams();
  for (auto _ : state) {
    for (const auto& events : s.by_connection) {
      storage::ConnectionRecord record;
      for (const RecordedEvent& e : events) {
        storage::ReduceConnection(e, &record);
      }
      benchmark::DoNotOptimize(record);
    }
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<int64_t>(s.connection_events));
}
BENCHMARK(BM_ReduceConnection);

void BM_ReduceSession(benchmark::State& state) {
  const Streams& s = ReducerStreams();
  for (auto _ : state) {
    for (const auto& events : s.by_session) {
      storage::SessionRecord record;
      for (const RecordedEvent& e : events) {
        storage::ReduceSession(e, &record);
      }
      benchmark::DoNotOptimize(record);
    }
  }
  state.SetItemsProcessed(state.iterations() *
                          static_cast<int64_t>(s.session_events));
}
BENCHMARK(BM_ReduceSession);

// Replays the whole pre-filled log into fresh projections.
void BM_Rebuild(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  uint64_t replayed = 0;
  for (auto _ : state) {
    auto result = f.store().Rebuild();
    if (!result.ok()) {
      state.SkipWithError(result.status().ToString().c_str());
      break;
    }
    replayed += result->events;
  }
  state.SetItemsProcessed(static_cast<int64_t>(replayed));
}
BENCHMARK(BM_Rebuild)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace authtrail::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (auto* fixture = authtrail::bench::Fixture::Existing()) fixture->Close();
  return 0;
}
