// Operations on the whole log: replay, rebuild, verify, backup, ranges.
#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/utilities/checkpoint.h"
#include "storage/event_store.h"
#include "storage/keys.h"
#include "storage/projection_writer.h"
#include "storage/reducers.h"
#include "storage/store_internal.h"

namespace authtrail::storage {
namespace {

using authtrail::v1::RecordedEvent;

// Events replayed per write batch.
constexpr size_t kReplayChunk = 2000;
// Decoded records a replay keeps between chunks, at most.
constexpr size_t kReplayCarriedEntries = 32'768;
// A rebuild pauses appends only for the last stretch of at most this many
// events.
constexpr uint64_t kCatchUpEvents = 5000;

// A thread of its own that works on one item at a time while the caller
// prepares the next. The first failure sticks: items given after it are
// dropped and it is returned instead.
template <typename Item>
class Handoff {
 public:
  explicit Handoff(std::function<absl::Status(Item)> work)
      : work_(std::move(work)), thread_([this] { Run(); }) {}
  ~Handoff() { Stop(); }

  // Waits for the item in hand, then takes `item`. The first failure of an
  // earlier item, if any (`item` is then dropped).
  absl::Status Give(Item item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !next_.has_value() && !busy_; });
    if (!status_.ok()) return status_;
    next_.emplace(std::move(item));
    cv_.notify_all();
    return absl::OkStatus();
  }

  // Waits until every item given is done; the first failure.
  absl::Status Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !next_.has_value() && !busy_; });
    return status_;
  }

  // The first failure so far, without waiting.
  absl::Status FirstFailure() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

  // Ends the thread once the item in hand is done (a waiting one is
  // dropped). Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      next_.reset();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || next_.has_value(); });
      if (!next_.has_value()) return;
      Item item = std::move(*next_);
      next_.reset();
      busy_ = true;
      lock.unlock();
      // The item is the work's to keep or free: nothing of it is held
      // while the next one is taken.
      absl::Status s = work_(std::move(item));
      lock.lock();
      busy_ = false;
      if (!s.ok() && status_.ok()) status_ = s;
      cv_.notify_all();
    }
  }

  const std::function<absl::Status(Item)> work_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Item> next_;
  bool busy_ = false;
  bool stop_ = false;
  absl::Status status_;
  std::thread thread_;  // last: starts once the rest is built
};

// Writes a replay's chunks on a thread of its own, one chunk at a time, so
// that the memtable inserts of one chunk overlap the decoding and reducing
// of the next. A chunk's reads of records it does not carry see every
// chunk before the one in flight; the replay waits (Drain) before it drops
// the records it carries, so they see that one too.
Handoff<SortedBatch> ChunkWriter(rocksdb::DB* db,
                                 rocksdb::WriteOptions options) {
  return Handoff<SortedBatch>([db, options](SortedBatch sorted) {
    rocksdb::WriteBatch batch;
    rocksdb::Status s = sorted.MoveTo(&batch);
    if (s.ok()) s = db->Write(options, &batch);
    return FromRocks(s);
  });
}

// Index entries of a bulk replay skip the memtable: they are gathered into
// runs of about StoreOptions::replay_run_bytes, and each run is sorted, written
// as a table file and ingested into the index family, on a thread of its own
// while the replay goes on. A replay never reads the index family it writes,
// and its keys are unique (each ends with a position), so runs may land in any
// order and need not be visible before the replay ends. Each ingestion
// briefly holds up the database's writes while it registers the file.
class RunIngester : public IndexSink {
 public:
  RunIngester(rocksdb::DB* db, rocksdb::Options options,
              rocksdb::ColumnFamilyHandle* family, std::filesystem::path dir,
              size_t run_bytes)
      : run_bytes_(run_bytes),
        db_(db),
        options_(std::move(options)),
        family_(family),
        dir_(std::move(dir)),
        ingesting_([this](Pack run) { return Ingest(&run); }) {}
  ~RunIngester() {
    ingesting_.Stop();  // before the folder goes
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Copies the entry into the run being gathered.
  void Add(std::string_view key, std::string_view value) override {
    gathering_.slots.push_back({gathering_.bytes.size(),
                                static_cast<uint32_t>(key.size()),
                                static_cast<uint32_t>(value.size())});
    gathering_.bytes.append(key);
    gathering_.bytes.append(value);
  }

  // Hands the run over once it is full. The first failure of an earlier
  // run, if any.
  absl::Status HandOverIfFull() {
    if (gathering_.bytes.size() < run_bytes_) {
      return ingesting_.FirstFailure();
    }
    return HandOver();
  }

  // Hands over what remains and waits until every run is ingested.
  absl::Status Finish() {
    if (absl::Status s = HandOver(); !s.ok()) return s;
    return ingesting_.Drain();
  }

 private:
  // Entries packed into one buffer: no allocation per entry.
  struct Slot {
    size_t offset;
    uint32_t key_size;
    uint32_t value_size;
  };
  struct Pack {
    std::string bytes;
    std::vector<Slot> slots;
    std::string_view Key(const Slot& slot) const {
      return std::string_view(bytes).substr(slot.offset, slot.key_size);
    }
    std::string_view Value(const Slot& slot) const {
      return std::string_view(bytes).substr(slot.offset + slot.key_size,
                                            slot.value_size);
    }
  };

  absl::Status HandOver() {
    if (gathering_.slots.empty()) return ingesting_.FirstFailure();
    absl::Status s = ingesting_.Give(std::move(gathering_));
    gathering_ = Pack();
    return s;
  }

  absl::Status Ingest(Pack* run) {
    std::sort(run->slots.begin(), run->slots.end(),
              [run](const Slot& a, const Slot& b) {
                return run->Key(a) < run->Key(b);
              });
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat(
          "cannot create ", dir_.string(), " for replay runs: ", ec.message()));
    }
    std::string path = (dir_ / absl::StrCat("run-", ++runs_, ".sst")).string();
    rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), options_, family_);
    rocksdb::Status s = writer.Open(path);
    for (size_t i = 0; s.ok() && i < run->slots.size(); ++i) {
      const Slot& slot = run->slots[i];
      s = writer.Put(rocksdb::Slice(run->Key(slot)),
                     rocksdb::Slice(run->Value(slot)));
    }
    if (s.ok()) s = writer.Finish();
    if (s.ok()) {
      rocksdb::IngestExternalFileOptions ingest;
      ingest.move_files = true;
      s = db_->IngestExternalFile(family_, {path}, ingest);
    }
    std::filesystem::remove(path, ec);  // a link to it stays if ingested
    return FromRocks(s);
  }

  const size_t run_bytes_;
  rocksdb::DB* db_;
  const rocksdb::Options options_;
  rocksdb::ColumnFamilyHandle* family_;
  const std::filesystem::path dir_;
  Pack gathering_;           // owned by the replay's thread
  int runs_ = 0;             // owned by the ingesting thread
  Handoff<Pack> ingesting_;  // last: its thread starts once the rest is built
};

std::string Hex(std::string_view bytes) {
  return absl::BytesToHexString(absl::string_view(bytes.data(), bytes.size()));
}

}  // namespace

uint32_t EventStore::ProjectionVersion() const {
  return projection_version_.load();
}

uint64_t EventStore::Generation() const { return Cols()->generation; }

uint64_t EventStore::IntProperty(const std::string& name,
                                 bool per_family) const {
  std::shared_ptr<const Columns> cols = Cols();
  uint64_t total = 0;
  if (!per_family) {
    return db_->GetIntProperty(cols->meta, name, &total) ? total : 0;
  }
  for (rocksdb::ColumnFamilyHandle* h :
       {cols->meta, cols->log, cols->event_ids, cols->index, cols->connections,
        cols->sessions, cols->timeline}) {
    uint64_t value = 0;
    if (db_->GetIntProperty(h, name, &value)) total += value;
  }
  return total;
}

absl::StatusOr<std::shared_ptr<Columns>> EventStore::CreateDerived(
    const Columns& like, uint64_t generation,
    const std::function<std::string(const char*)>& name_of) {
  auto out = std::make_shared<Columns>(like);
  out->generation = generation;
  rocksdb::ColumnFamilyHandle** slots[] = {&out->index, &out->connections,
                                           &out->sessions, &out->timeline};
  for (size_t i = 0; i < std::size(kDerivedColumns); ++i) {
    rocksdb::ColumnFamilyHandle* created = nullptr;
    rocksdb::Status s = db_->CreateColumnFamily(
        cf_options_, name_of(kDerivedColumns[i]), &created);
    if (!s.ok()) {
      for (size_t j = 0; j < i; ++j) {
        rocksdb::Status dropped = db_->DropColumnFamily(*slots[j]);
        (void)dropped;  // dropped again at the next open if this fails
        db_->DestroyColumnFamilyHandle(*slots[j]);
      }
      return FromRocks(s);
    }
    *slots[i] = created;
  }
  return out;
}

absl::Status EventStore::DropDerived(const Columns& columns) {
  absl::Status result;
  std::lock_guard<std::mutex> lock(retired_mu_);
  for (rocksdb::ColumnFamilyHandle* h : columns.Derived()) {
    rocksdb::Status s = db_->DropColumnFamily(h);
    if (!s.ok() && result.ok()) result = FromRocks(s);
    retired_.push_back(h);
  }
  return result;
}

// TODO(rebuild-speed): a bulk replay ingests its index entries as table
// files, but the records and counters still go through memtables (sorted
// batches, inserted on a second thread while the next chunk is reduced),
// since the replay reads them back; and the ingested runs overlap, so
// compaction merges them later. Parsing each record once bounds any replay
// at about a quarter of the raw scan rate.
absl::Status EventStore::Replay(const Columns& target, uint64_t from,
                                uint64_t to, bool durable,
                                const ProgressFn& progress,
                                uint64_t total) const {
  if (from > to) return absl::OkStatus();
  std::string lower = LogKey(from);
  std::string upper = LogKey(to + 1);
  rocksdb::Slice lower_slice(lower);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions read;
  read.iterate_lower_bound = &lower_slice;
  read.iterate_upper_bound = &upper_slice;
  read.readahead_size = 2 << 20;
  read.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, target.log));

  rocksdb::WriteOptions write;
  write.disableWAL = !durable;
  write.sync = durable && options_.sync;
  uint64_t expected = from;
  Handoff<SortedBatch> chunks = ChunkWriter(db_.get(), write);
  // A bulk replay (no WAL) ingests its index entries as table files.
  std::optional<RunIngester> runs;
  if (!durable) {
    runs.emplace(db_.get(), rocksdb::Options(db_->GetDBOptions(), cf_options_),
                 target.index, ReplayRunsDir(options_.data_dir),
                 options_.replay_run_bytes);
  }
  // Records of busy connections stay decoded from one chunk to the next.
  ProjectionState state;
  it->SeekToFirst();
  uint64_t submitted = from - 1;  // last position of the chunk in flight
  while (it->Valid()) {
    if (maintenance_cancelled_.load()) {
      return absl::CancelledError("the replay was cancelled (shutdown)");
    }
    if (state.size() > kReplayCarriedEntries) {
      if (absl::Status s = chunks.Drain(); !s.ok()) return s;
      state.Clear();
    }
    SortedBatch sorted;
    ProjectionWriter writer(db_.get(), target, &sorted, &state,
                            runs.has_value() ? &*runs : nullptr);
    size_t n = 0;
    for (; it->Valid() && n < kReplayChunk; it->Next(), ++n, ++expected) {
      std::optional<uint64_t> position = DecodeLogKey(it->key().ToStringView());
      if (position != expected) {
        return absl::DataLossError(
            absl::StrCat("the log has no record at position ", expected));
      }
      RecordedEvent recorded;
      std::string_view value = it->value().ToStringView();
      if (absl::Status s = DecodeLogValue(value, expected, &recorded);
          !s.ok()) {
        return s;
      }
      if (absl::Status s =
              writer.Apply(recorded, value.substr(kChainHashBytes));
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = writer.Finish(); !s.ok()) return s;
    if (runs.has_value()) {
      if (absl::Status s = runs->HandOverIfFull(); !s.ok()) return s;
    }
    if (absl::Status s = chunks.Give(std::move(sorted)); !s.ok()) return s;
    // The chunk before this one is written.
    if (progress && submitted >= from) progress(submitted, total);
    submitted = expected - 1;
  }
  if (absl::Status s = chunks.Drain(); !s.ok()) return s;
  if (runs.has_value()) {
    if (absl::Status s = runs->Finish(); !s.ok()) return s;
  }
  if (progress && submitted >= from) progress(submitted, total);
  if (!it->status().ok()) return FromRocks(it->status());
  if (expected != to + 1) {
    return absl::DataLossError(
        absl::StrCat("the log has no record at position ", expected));
  }
  return absl::OkStatus();
}

absl::StatusOr<RebuildResult> EventStore::Rebuild(const ProgressFn& progress) {
  std::unique_lock<std::mutex> maintenance(maintenance_mu_, std::try_to_lock);
  if (!maintenance.owns_lock()) {
    return absl::AbortedError("a rebuild or verify is already running");
  }
  absl::Time started = absl::Now();
  std::shared_ptr<const Columns> live = Cols();
  uint64_t generation = live->generation + 1;
  absl::StatusOr<std::shared_ptr<Columns>> shadow =
      CreateDerived(*live, generation, [generation](const char* base) {
        return DerivedColumnName(base, generation);
      });
  if (!shadow.ok()) return shadow.status();

  // Bulk: replay without pausing appends (and without the WAL: the new
  // families are flushed before they go live, and dropped at the next open
  // if the rebuild does not finish).
  uint64_t done = 0;
  absl::Status status;
  for (uint64_t head = HeadPosition();
       status.ok() && head > done + kCatchUpEvents; head = HeadPosition()) {
    status =
        Replay(**shadow, done + 1, head, /*durable=*/false, progress, head);
    done = head;
  }
  if (status.ok()) {
    std::vector<rocksdb::ColumnFamilyHandle*> families = (*shadow)->Derived();
    status = FromRocks(db_->Flush(rocksdb::FlushOptions(), families));
  }
  // Switch: with appends paused, replay the last stretch durably, record
  // the new generation in the same synced write, and publish it.
  uint64_t final_head = 0;
  if (status.ok()) {
    status = RunOnWriter([&]() -> absl::Status {
      final_head = HeadPosition();
      if (absl::Status s = Replay(**shadow, done + 1, final_head,
                                  /*durable=*/true, progress, final_head);
          !s.ok()) {
        return s;
      }
      rocksdb::WriteBatch meta;
      rocksdb::Status s1 =
          meta.Put(live->meta, kGenerationKey, std::to_string(generation));
      rocksdb::Status s2 = meta.Put(live->meta, kProjectionVersionKey,
                                    std::to_string(kProjectionVersion));
      if (!s1.ok() || !s2.ok()) return FromRocks(s1.ok() ? s2 : s1);
      rocksdb::WriteOptions sync;
      sync.sync = true;
      if (absl::Status s = FromRocks(db_->Write(sync, &meta)); !s.ok()) {
        return s;
      }
      {
        std::lock_guard<std::mutex> lock(cols_mu_);
        cols_ = *shadow;
      }
      projection_version_.store(kProjectionVersion);
      return absl::OkStatus();
    });
  }
  if (!status.ok()) {
    absl::Status dropped = DropDerived(**shadow);
    (void)dropped;  // leftovers are dropped at the next open
    return status;
  }
  // Readers that still hold the old set keep reading it; its files go once
  // they let go.
  if (absl::Status s = DropDerived(*live); !s.ok()) return s;
  return RebuildResult{final_head, generation, absl::Now() - started};
}

absl::StatusOr<VerifyReport> EventStore::Verify(const VerifyOptions& options,
                                                const ProgressFn& progress) {
  std::unique_lock<std::mutex> maintenance(maintenance_mu_, std::try_to_lock);
  if (!maintenance.owns_lock()) {
    return absl::AbortedError("a rebuild or verify is already running");
  }
  absl::Time started = absl::Now();
  std::shared_ptr<const Columns> live = Cols();
  rocksdb::ManagedSnapshot snapshot(db_.get());
  rocksdb::ReadOptions read;
  read.snapshot = snapshot.snapshot();
  read.fill_cache = false;
  VerifyReport report;
  auto fail = [&](std::string problem, uint64_t position) {
    report.ok = false;
    report.problem = std::move(problem);
    report.position = position;
    report.elapsed = absl::Now() - started;
    return report;
  };

  // 1. The log: gap-free positions, parsable records, an unbroken chain,
  //    and an id index entry pointing back at each record.
  std::string chain = GenesisHash();
  uint64_t expected = 1;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, live->log));
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++expected) {
      std::optional<uint64_t> position = DecodeLogKey(it->key().ToStringView());
      if (!position.has_value()) {
        return fail("a log key is not a position", expected);
      }
      if (*position != expected) {
        return fail(
            absl::StrCat("position ", expected,
                         " is missing (next record is at ", *position, ")"),
            expected);
      }
      std::string_view value = it->value().ToStringView();
      RecordedEvent recorded;
      std::string stored_hash;
      if (!DecodeLogValue(value, expected, &recorded, &stored_hash).ok()) {
        return fail("the record does not parse", expected);
      }
      std::string_view record = value.substr(kChainHashBytes);
      std::string computed = ChainHash(chain, expected, record);
      if (computed != stored_hash) {
        return fail(
            "the chain hash does not match: the record was changed, "
            "removed, inserted or moved at or before this position",
            expected);
      }
      if (recorded.position() != expected) {
        return fail(
            absl::StrCat("the record says position ", recorded.position()),
            expected);
      }
      if (options.anchor_position == expected &&
          stored_hash != options.anchor_hash) {
        return fail("the chain hash differs from the anchored one", expected);
      }
      std::string id_value;
      rocksdb::Status s = db_->Get(read, live->event_ids,
                                   recorded.event().event_id(), &id_value);
      if (!s.ok() || GetFixed64(id_value) != expected) {
        return fail("the event id index does not point at this record",
                    expected);
      }
      chain = std::move(stored_hash);
      if (expected % 10000 == 0) {
        if (maintenance_cancelled_.load()) {
          return absl::CancelledError("verify was cancelled (shutdown)");
        }
        if (progress) progress(expected, 0);
      }
    }
    if (!it->status().ok()) return FromRocks(it->status());
  }
  report.events = expected - 1;
  report.head_hash = chain;
  if (options.anchor_position.has_value() &&
      *options.anchor_position > report.events) {
    return fail("the anchored position is past the head of the log",
                *options.anchor_position);
  }
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(read, live->event_ids));
    uint64_t ids = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++ids;
    if (!it->status().ok()) return FromRocks(it->status());
    if (ids != report.events) {
      return fail(absl::StrCat("the event id index has ", ids, " entries for ",
                               report.events, " records"),
                  0);
    }
  }

  // 2. The derived families: equal, key for key, to a replay of the same
  //    log into scratch families.
  if (options.check_projections) {
    absl::StatusOr<std::shared_ptr<Columns>> scratch = CreateDerived(
        *live, 0,
        [](const char* base) { return absl::StrCat("verify.", base); });
    if (!scratch.ok()) return scratch.status();
    absl::Status replayed = Replay(**scratch, 1, report.events,
                                   /*durable=*/false, progress, report.events);
    std::vector<rocksdb::ColumnFamilyHandle*> ours = live->Derived();
    std::vector<rocksdb::ColumnFamilyHandle*> theirs = (*scratch)->Derived();
    for (size_t i = 0; replayed.ok() && report.ok && i < ours.size(); ++i) {
      std::unique_ptr<rocksdb::Iterator> a(db_->NewIterator(read, ours[i]));
      std::unique_ptr<rocksdb::Iterator> b(
          db_->NewIterator(rocksdb::ReadOptions(), theirs[i]));
      a->SeekToFirst();
      b->SeekToFirst();
      for (; a->Valid() && b->Valid(); a->Next(), b->Next()) {
        if (a->key() != b->key() || a->value() != b->value()) break;
      }
      if (a->Valid() || b->Valid()) {
        std::string key =
            a->Valid() && b->Valid()
                ? std::min(a->key().ToString(), b->key().ToString())
                : (a->Valid() ? a->key() : b->key()).ToString();
        fail(
            absl::StrCat("family ", kDerivedColumns[i],
                         " differs from a replay of the log at key ", Hex(key)),
            0);
        report.family = kDerivedColumns[i];
        report.key = Hex(key);
      }
    }
    absl::Status dropped = DropDerived(**scratch);
    if (!replayed.ok()) return replayed;
    if (!dropped.ok()) return dropped;
  }
  report.elapsed = absl::Now() - started;
  return report;
}

absl::Status EventStore::Backup(const std::string& dir) {
  if (std::filesystem::exists(dir)) {
    return absl::AlreadyExistsError(
        absl::StrCat("backup folder ", dir, " already exists"));
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return FromRocks(s);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocks(checkpoint->CreateCheckpoint(dir));
}

absl::StatusOr<std::vector<RecordedEvent>> EventStore::ReadRange(
    uint64_t from, size_t limit) const {
  std::shared_ptr<const Columns> cols = Cols();
  std::string lower = LogKey(std::max<uint64_t>(from, 1));
  rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions read;
  read.iterate_lower_bound = &lower_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, cols->log));
  std::vector<RecordedEvent> out;
  for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
    uint64_t position = DecodeLogKey(it->key().ToStringView()).value_or(0);
    RecordedEvent recorded;
    if (absl::Status s =
            DecodeLogValue(it->value().ToStringView(), position, &recorded);
        !s.ok()) {
      return s;
    }
    out.push_back(std::move(recorded));
  }
  if (!it->status().ok()) return FromRocks(it->status());
  return out;
}

}  // namespace authtrail::storage
