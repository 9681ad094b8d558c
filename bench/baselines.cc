// baselines: what the disk and RocksDB alone can do on this machine, for
// the benchmark targets to be read as ratios. Each subcommand prints one
// JSON object.
//
//   baselines fsync --dir DIR [--count N]
//       4 KiB appended with pwrite then fdatasync, N times: the cost of one
//       durable write (a WAL append).
//   baselines write --dir DIR --batch B [--count N]
//       raw RocksDB, one writer, WriteOptions.sync = true, batches of B log
//       records of realistic events: the same bytes authtrail's log holds
//       (chain hash + RecordedEvent) under the same keys, with the same
//       database options, and nothing else.
//   baselines write ... --extra_keys K [--sorted]
//       the same, plus K small random keys per event (the shape of the
//       index entries and projection records authtraild adds to each
//       event), optionally put in key order: what the memtable alone costs
//       for authtraild's key count, and what sorting a batch saves.
//   baselines scan --dir DIR --records N
//       a RocksDB log of N such records, filled once, then scanned in order
//       (iterator, 2 MiB readahead, no cache fill, as a rebuild reads).
//   baselines scan --authtrail_dir DIR
//       the same scan over the `log` family of a stopped authtraild's data
//       folder (opened read-only): the raw rate of the log a rebuild reads.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "bench/workload.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "rocksdb/table.h"
#include "storage/keys.h"
#include "storage/store_internal.h"

namespace authtrail::bench {
namespace {

using Json = nlohmann::ordered_json;

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
         usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

double NowSeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Percentiles of exact samples, in microseconds.
Json Percentiles(std::vector<double> seconds) {
  if (seconds.empty()) return nullptr;
  std::sort(seconds.begin(), seconds.end());
  auto at = [&](double q) {
    size_t rank = static_cast<size_t>(q * seconds.size());
    if (rank >= seconds.size()) rank = seconds.size() - 1;
    return seconds[rank] * 1e6;
  };
  return {{"p50", at(0.50)},
          {"p90", at(0.90)},
          {"p99", at(0.99)},
          {"p999", at(0.999)},
          {"max", seconds.back() * 1e6},
          {"min", seconds.front() * 1e6},
          {"count", seconds.size()}};
}

// The database options authtraild uses (storage/event_store.cc), for one
// column family.
rocksdb::Options RawOptions(size_t write_buffer_bytes = 0) {
  rocksdb::Options db;
  if (write_buffer_bytes > 0) db.write_buffer_size = write_buffer_bytes;
  db.create_if_missing = true;
  db.IncreaseParallelism(2);
  db.max_background_jobs = 2;
  db.bytes_per_sync = 1 << 20;
  db.max_total_wal_size = 256 << 20;
  db.compression = rocksdb::kLZ4Compression;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(size_t{64} << 20);
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  db.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return db;
}

// Log values as authtraild writes them: chain hash, then the recorded
// event serialized stably, for events of the benchmark workload.
class LogValues {
 public:
  explicit LogValues(uint64_t seed) {
    WorkloadOptions options;
    options.seed = seed;
    workload_ = std::make_unique<Workload>(options);
    chain_ = storage::GenesisHash();
  }
  std::string Next(uint64_t position) {
    authtrail::v1::RecordedEvent recorded;
    recorded.set_position(position);
    *recorded.mutable_recorded_at() = storage::ToProtoTime(absl::Now());
    *recorded.mutable_event() = workload_->Next();
    std::string record = storage::SerializeStable(recorded);
    chain_ = storage::ChainHash(chain_, position, record);
    return storage::EncodeLogValue(chain_, record);
  }

 private:
  std::unique_ptr<Workload> workload_;
  std::string chain_;
};

void Fail(const std::string& what, const rocksdb::Status& s) {
  std::cerr << "baselines: " << what << ": " << s.ToString() << "\n";
  std::exit(1);
}

int RunFsync(const std::string& dir, int count, size_t bytes) {
  std::filesystem::create_directories(dir);
  std::string path = dir + "/fsync-probe";
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (fd < 0) {
    std::perror("open");
    return 1;
  }
  std::string block(bytes, 'w');
  std::vector<double> samples;
  samples.reserve(count);
  double started = NowSeconds();
  for (int i = 0; i < count; ++i) {
    double t0 = NowSeconds();
    if (::pwrite(fd, block.data(), block.size(),
                 static_cast<off_t>(i) * static_cast<off_t>(bytes)) !=
            static_cast<ssize_t>(bytes) ||
        ::fdatasync(fd) != 0) {
      std::perror("pwrite/fdatasync");
      return 1;
    }
    samples.push_back(NowSeconds() - t0);
  }
  double elapsed = NowSeconds() - started;
  ::close(fd);
  std::filesystem::remove(path);
  Json out = {{"baseline", "fsync"},
              {"bytes", bytes},
              {"ops_per_second", count / elapsed},
              {"latency_us", Percentiles(samples)}};
  std::cout << out.dump() << std::endl;
  return 0;
}

int RunWrite(const std::string& dir, int batch, int count, double seconds,
             int extra_keys, bool sorted, size_t write_buffer_mb) {
  std::filesystem::remove_all(dir);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(RawOptions(write_buffer_mb << 20), dir, &raw);
  if (!s.ok()) Fail("open", s);
  std::unique_ptr<rocksdb::DB> db(raw);

  // Keys and values made before timing, so that only the writes are
  // measured. Extra keys: 40 random bytes, 48-byte values.
  LogValues values(static_cast<uint64_t>(absl::GetCurrentTimeNanos()));
  std::mt19937_64 rng(7);
  size_t n = static_cast<size_t>(batch) * count;
  std::vector<std::pair<std::string, std::string>> entries;
  entries.reserve(n * (1 + extra_keys));
  uint64_t value_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    entries.emplace_back(storage::LogKey(i + 1), values.Next(i + 1));
    value_bytes += entries.back().second.size();
    for (int k = 0; k < extra_keys; ++k) {
      std::string key(40, '\0');
      for (size_t b = 0; b < key.size(); b += 8) {
        uint64_t r = rng();
        std::memcpy(key.data() + b, &r, 8);
      }
      entries.emplace_back(std::move(key), std::string(48, 'v'));
    }
  }
  size_t per_write = static_cast<size_t>(batch) * (1 + extra_keys);
  if (sorted) {
    for (size_t i = 0; i < entries.size(); i += per_write) {
      std::sort(entries.begin() + i, entries.begin() + i + per_write);
    }
  }

  rocksdb::WriteOptions sync;
  sync.sync = true;
  std::vector<double> samples;
  double cpu = CpuSeconds();
  double started = NowSeconds();
  size_t next = 0;
  int writes = 0;
  for (; writes < count; ++writes) {
    if (seconds > 0 && NowSeconds() - started > seconds) break;
    double t0 = NowSeconds();
    rocksdb::WriteBatch wb;
    for (size_t j = 0; j < per_write; ++j, ++next) {
      s = wb.Put(entries[next].first, entries[next].second);
      if (!s.ok()) Fail("put", s);
    }
    s = db->Write(sync, &wb);
    if (!s.ok()) Fail("write", s);
    samples.push_back(NowSeconds() - t0);
  }
  double elapsed = NowSeconds() - started;
  cpu = CpuSeconds() - cpu;
  s = db->Close();
  db.reset();
  std::filesystem::remove_all(dir);
  double events = static_cast<double>(writes) * batch;
  Json out = {
      {"baseline", "rocksdb_sync_write"},
      {"batch", batch},
      {"extra_keys", extra_keys},
      {"sorted", sorted},
      {"write_buffer_mb", write_buffer_mb},
      {"writes", writes},
      {"value_bytes_mean", static_cast<double>(value_bytes) / n},
      {"writes_per_second", writes / elapsed},
      {"events_per_second", events / elapsed},
      {"cpu_seconds_per_1000_events", events > 0 ? cpu / (events / 1000) : 0},
      {"latency_us", Percentiles(samples)}};
  std::cout << out.dump() << std::endl;
  return 0;
}

// Scans `cf` of `db` in order, as a rebuild reads the log. Returns
// {records, bytes, seconds, parse_seconds}.
Json Scan(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, bool parse) {
  rocksdb::ReadOptions read;
  read.readahead_size = 2 << 20;
  read.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read, cf));
  uint64_t records = 0;
  uint64_t bytes = 0;
  authtrail::v1::RecordedEvent event;
  double started = NowSeconds();
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ++records;
    bytes += it->key().size() + it->value().size();
    if (parse) {
      rocksdb::Slice v = it->value();
      if (v.size() < storage::kChainHashBytes ||
          !event.ParseFromArray(
              v.data() + storage::kChainHashBytes,
              static_cast<int>(v.size() - storage::kChainHashBytes))) {
        std::cerr << "baselines: a log record does not parse\n";
        std::exit(1);
      }
    }
  }
  if (!it->status().ok()) Fail("scan", it->status());
  double elapsed = NowSeconds() - started;
  return {{"records", records},
          {"bytes", bytes},
          {"seconds", elapsed},
          {"records_per_second", records / elapsed},
          {"mb_per_second", bytes / elapsed / 1e6}};
}

int RunScan(const std::string& dir, uint64_t records,
            const std::string& authtrail_dir) {
  Json out = {{"baseline", "rocksdb_scan"}};
  if (!authtrail_dir.empty()) {
    rocksdb::Options options = RawOptions();
    options.create_if_missing = false;
    std::vector<std::string> names;
    rocksdb::Status s =
        rocksdb::DB::ListColumnFamilies(options, authtrail_dir, &names);
    if (!s.ok()) Fail("list families", s);
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    s = rocksdb::DB::OpenForReadOnly(options, authtrail_dir, descriptors,
                                     &handles, &raw);
    if (!s.ok()) Fail("open read-only", s);
    rocksdb::ColumnFamilyHandle* log = nullptr;
    for (auto* h : handles) {
      if (h->GetName() == storage::kLogColumn) log = h;
    }
    if (log == nullptr) {
      std::cerr << "baselines: no log family in " << authtrail_dir << "\n";
      return 1;
    }
    out["source"] = "authtrail_log";
    out["scan"] = Scan(raw, log, /*parse=*/false);
    out["scan_parse"] = Scan(raw, log, /*parse=*/true);
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
    std::cout << out.dump() << std::endl;
    return 0;
  }

  rocksdb::Options options = RawOptions();
  bool exists = std::filesystem::exists(dir + "/CURRENT");
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) Fail("open", s);
  std::unique_ptr<rocksdb::DB> db(raw);
  if (!exists) {
    // Filled without the WAL, then flushed: only the scan is measured.
    LogValues values(static_cast<uint64_t>(absl::GetCurrentTimeNanos()));
    rocksdb::WriteOptions fast;
    fast.disableWAL = true;
    for (uint64_t p = 1; p <= records;) {
      rocksdb::WriteBatch wb;
      for (int j = 0; j < 1000 && p <= records; ++j, ++p) {
        s = wb.Put(storage::LogKey(p), values.Next(p));
        if (!s.ok()) Fail("put", s);
      }
      s = db->Write(fast, &wb);
      if (!s.ok()) Fail("write", s);
    }
    s = db->Flush(rocksdb::FlushOptions());
    if (!s.ok()) Fail("flush", s);
  }
  out["source"] = "raw_log";
  out["scan"] = Scan(db.get(), db->DefaultColumnFamily(), /*parse=*/false);
  out["scan_parse"] = Scan(db.get(), db->DefaultColumnFamily(),
                           /*parse=*/true);
  s = db->Close();
  std::cout << out.dump() << std::endl;
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"baselines: disk and raw RocksDB rates for the benchmarks"};
  app.require_subcommand(1);
  std::string dir;
  int count = 2000;
  size_t bytes = 4096;
  int batch = 1;
  double seconds = 0;
  uint64_t records = 100000;
  std::string authtrail_dir;

  CLI::App* fsync = app.add_subcommand("fsync", "4 KiB pwrite + fdatasync");
  fsync->add_option("--dir", dir)->required();
  fsync->add_option("--count", count)->capture_default_str();
  fsync->add_option("--bytes", bytes)->capture_default_str();

  CLI::App* write = app.add_subcommand("write", "raw RocksDB sync writes");
  write->add_option("--dir", dir, "a scratch folder (replaced)")->required();
  write->add_option("--batch", batch)->capture_default_str();
  write->add_option("--count", count, "writes, at most")->capture_default_str();
  write->add_option("--seconds", seconds, "stop after this long (0: never)");
  int extra_keys = 0;
  bool sorted = false;
  write->add_option("--extra_keys", extra_keys,
                    "small random keys added per event");
  write->add_flag("--sorted", sorted, "put each batch in key order");
  size_t write_buffer_mb = 0;
  write->add_option("--write_buffer_mb", write_buffer_mb,
                    "memtable size (default: RocksDB's, as authtraild)");

  CLI::App* scan = app.add_subcommand("scan", "raw sequential log scan");
  scan->add_option("--dir", dir, "raw log folder (filled when missing)");
  scan->add_option("--records", records)->capture_default_str();
  scan->add_option("--authtrail_dir", authtrail_dir,
                   "scan this stopped authtraild's log instead");
  CLI11_PARSE(app, argc, argv);

  if (fsync->parsed()) return RunFsync(dir, count, bytes);
  if (write->parsed()) {
    return RunWrite(dir, batch, count, seconds, extra_keys, sorted,
                    write_buffer_mb);
  }
  if (dir.empty() && authtrail_dir.empty()) {
    std::cerr << "baselines scan: give --dir or --authtrail_dir\n";
    return 2;
  }
  return RunScan(dir, records, authtrail_dir);
}

}  // namespace
}  // namespace authtrail::bench

int main(int argc, char** argv) { return authtrail::bench::Main(argc, argv); }
