// The write half of EventStore: opening the database and the group commit.
#include "storage/event_store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <unordered_map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "authtrail/records/v1/records.pb.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "storage/keys.h"
#include "storage/projection_writer.h"
#include "storage/reducers.h"
#include "storage/store_internal.h"

namespace authtrail::storage {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::RecordedEvent;

constexpr size_t kMaxQueuedEvents = 64 * 1024;

rocksdb::Options DatabaseOptions(const StoreOptions& options) {
  rocksdb::Options db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  db.IncreaseParallelism(2);
  db.max_background_jobs = 2;
  db.bytes_per_sync = 1 << 20;
  // Metadata is written rarely; without a cap its unflushed writes would
  // keep every old WAL file alive.
  db.max_total_wal_size = 256 << 20;
  db.compression = rocksdb::kLZ4Compression;
  return db;
}

rocksdb::ColumnFamilyOptions ColumnOptions(
    const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  // Most point lookups are for keys that do not exist yet (a new event id,
  // a new connection or session): a bloom filter answers them without
  // reading data blocks.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Filters and indexes are split into small partitions behind a pinned
  // top level: a lookup loads the one partition it needs. With one filter
  // per file, a file's whole filter (megabytes at 10^6 events) was read
  // from disk again each time the cache had dropped it, which made the
  // id and record lookups of appends I/O-bound as the log grew.
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = 4096;
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_top_level_index_and_filter = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.compression = rocksdb::kLZ4Compression;
  return cf;
}

// Reads the stored format version, writing ours into a new database.
absl::Status CheckFormatVersion(rocksdb::DB* db,
                                rocksdb::ColumnFamilyHandle* meta) {
  std::string value;
  rocksdb::Status s =
      db->Get(rocksdb::ReadOptions(), meta, kFormatVersionKey, &value);
  if (s.IsNotFound()) {
    rocksdb::WriteOptions sync;
    sync.sync = true;
    return FromRocks(
        db->Put(sync, meta, kFormatVersionKey, std::to_string(kFormatVersion)));
  }
  if (!s.ok()) return FromRocks(s);
  uint32_t stored =
      static_cast<uint32_t>(std::strtoul(value.c_str(), nullptr, 10));
  if (stored > kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the data folder has on-disk format ", stored,
                     ", newer than this binary's format ", kFormatVersion,
                     "; use a newer authtraild"));
  }
  return absl::OkStatus();
}

struct Head {
  uint64_t position = 0;
  std::string hash;
};

absl::StatusOr<Head> ReadHead(rocksdb::DB* db,
                              rocksdb::ColumnFamilyHandle* log) {
  std::unique_ptr<rocksdb::Iterator> it(
      db->NewIterator(rocksdb::ReadOptions(), log));
  it->SeekToLast();
  if (!it->status().ok()) return FromRocks(it->status());
  if (!it->Valid()) return Head{0, GenesisHash()};
  std::optional<uint64_t> position = DecodeLogKey(it->key().ToStringView());
  if (!position.has_value()) {
    return absl::DataLossError("the log holds a key that is not a position");
  }
  Head head{*position, ""};
  RecordedEvent unused;
  if (absl::Status s = DecodeLogValue(it->value().ToStringView(), *position,
                                      &unused, &head.hash);
      !s.ok()) {
    return s;
  }
  return head;
}

}  // namespace

std::string GenesisHash() { return std::string(kChainHashBytes, '\0'); }

std::string ChainHash(std::string_view previous, uint64_t position,
                      std::string_view record) {
  std::string position_bytes = LogKey(position);
  std::string out(kChainHashBytes, '\0');
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  bool ok =
      context != nullptr &&
      EVP_DigestInit_ex(context, EVP_sha256(), nullptr) == 1 &&
      EVP_DigestUpdate(context, previous.data(), previous.size()) == 1 &&
      EVP_DigestUpdate(context, position_bytes.data(), position_bytes.size()) ==
          1 &&
      EVP_DigestUpdate(context, record.data(), record.size()) == 1 &&
      EVP_DigestFinal_ex(context, reinterpret_cast<unsigned char*>(out.data()),
                         nullptr) == 1;
  EVP_MD_CTX_free(context);
  if (!ok) std::abort();  // only on allocation failure inside OpenSSL
  return out;
}

std::string EncodeLogValue(std::string_view hash, std::string_view record) {
  std::string out;
  out.reserve(hash.size() + record.size());
  out.append(hash);
  out.append(record);
  return out;
}

rocksdb::Status SortedBatch::MoveTo(rocksdb::WriteBatch* batch) {
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const Entry& a, const Entry& b) {
                     uint32_t fa = a.cf->GetID();
                     uint32_t fb = b.cf->GetID();
                     return fa != fb ? fa < fb : a.key < b.key;
                   });
  for (const Entry& e : entries_) {
    rocksdb::Status s = batch->Put(e.cf, e.key, e.value);
    if (!s.ok()) return s;
  }
  entries_.clear();
  return rocksdb::Status::OK();
}

absl::Status DecodeLogValue(std::string_view value, uint64_t position,
                            RecordedEvent* event, std::string* hash) {
  if (value.size() < kChainHashBytes ||
      !event->ParseFromArray(
          value.data() + kChainHashBytes,
          static_cast<int>(value.size() - kChainHashBytes))) {
    return absl::DataLossError(
        absl::StrCat("log record ", position, " does not parse"));
  }
  if (hash != nullptr) hash->assign(value.substr(0, kChainHashBytes));
  return absl::OkStatus();
}

absl::Status FromRocks(const rocksdb::Status& status) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.ToString();
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (status.IsBusy() || status.IsTryAgain() || status.IsTimedOut()) {
    return absl::UnavailableError(message);
  }
  if (status.IsIOError() || status.IsNoSpace()) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

// ---------------------------------------------------------------------------
// Open and close.

// One queued append, or a task to run on the writer thread alone.
struct EventStore::PendingAppend {
  std::vector<AuthEvent> events;
  AppendCallback done;
  std::function<void()> task;
};

namespace {

// Reads a decimal number from metadata; `fallback` when absent.
absl::StatusOr<uint64_t> ReadMetaNumber(rocksdb::DB* db,
                                        rocksdb::ColumnFamilyHandle* meta,
                                        const char* key, uint64_t fallback) {
  std::string value;
  rocksdb::Status s = db->Get(rocksdb::ReadOptions(), meta, key, &value);
  if (s.IsNotFound()) return fallback;
  if (!s.ok()) return FromRocks(s);
  return std::strtoull(value.c_str(), nullptr, 10);
}

// Whether `name` is a derived family of some generation.
bool IsDerivedName(const std::string& name) {
  for (const char* base : kDerivedColumns) {
    if (name == base || name.rfind(std::string(base) + ".g", 0) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string ReplayRunsDir(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "replay-runs").string();
}

std::string DerivedColumnName(std::string_view base, uint64_t generation) {
  if (generation == 0) return std::string(base);
  return absl::StrCat(std::string(base), ".g", generation);
}

absl::StatusOr<std::unique_ptr<EventStore>> EventStore::Open(
    StoreOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create data folder ", options.data_dir, ": ", ec.message()));
  }
  std::filesystem::permissions(options.data_dir,
                               std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);

  rocksdb::Options db_options = DatabaseOptions(options);
  // Half of the cache is kept for filter and index partitions.
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes,
                                    /*num_shard_bits=*/-1,
                                    /*strict_capacity_limit=*/false,
                                    /*high_pri_pool_ratio=*/0.5);
  rocksdb::ColumnFamilyOptions cf_options = ColumnOptions(cache);

  // Open every column family on disk, including ones a newer version added
  // and this one does not know, plus the fixed ones that are missing.
  std::vector<std::string> names;
  rocksdb::Status listed =
      rocksdb::DB::ListColumnFamilies(db_options, options.data_dir, &names);
  if (!listed.ok()) names = {rocksdb::kDefaultColumnFamilyName};
  for (const char* fixed : {kLogColumn, kEventIdColumn}) {
    if (std::find(names.begin(), names.end(), fixed) == names.end()) {
      names.push_back(fixed);
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    descriptors.emplace_back(name, cf_options);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.data_dir,
                                        descriptors, &handles, &raw);
  if (s.IsIOError() && absl::StrContains(s.ToString(), "/LOCK")) {
    // RocksDB holds an exclusive lock on the folder's LOCK file while it is
    // open, whether by another process or by this one.
    return absl::FailedPreconditionError(absl::StrCat(
        "data folder ", options.data_dir,
        " is in use by another process (another authtraild, or a backup or "
        "rebuild opened on it); stop it or pick another --data_dir (",
        s.ToString(), ")"));
  }
  if (!s.ok()) return FromRocks(s);
  std::unique_ptr<rocksdb::DB> db(raw);
  // Table files of a replay that did not finish (the folder is ours now:
  // RocksDB holds its lock).
  std::filesystem::remove_all(ReplayRunsDir(options.data_dir), ec);
  auto fail = [&](absl::Status status) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    return status;
  };

  auto columns = std::make_shared<Columns>();
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    const std::string& name = h->GetName();
    if (name == rocksdb::kDefaultColumnFamilyName) columns->meta = h;
    if (name == kLogColumn) columns->log = h;
    if (name == kEventIdColumn) columns->event_ids = h;
  }
  if (absl::Status v = CheckFormatVersion(db.get(), columns->meta); !v.ok()) {
    return fail(v);
  }
  absl::StatusOr<uint64_t> generation =
      ReadMetaNumber(db.get(), columns->meta, kGenerationKey, 0);
  if (!generation.ok()) return fail(generation.status());
  columns->generation = *generation;

  // Pick the live generation's derived families; drop those of other
  // generations (left by an interrupted rebuild or verify).
  std::vector<rocksdb::ColumnFamilyHandle*> others;
  rocksdb::ColumnFamilyHandle** derived[] = {
      &columns->index, &columns->connections, &columns->sessions,
      &columns->timeline};
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    const std::string& name = h->GetName();
    bool live = false;
    for (size_t i = 0; i < std::size(kDerivedColumns); ++i) {
      if (name == DerivedColumnName(kDerivedColumns[i], *generation)) {
        *derived[i] = h;
        live = true;
      }
    }
    if (live || h == columns->meta || h == columns->log ||
        h == columns->event_ids) {
      continue;
    }
    if (IsDerivedName(name) || name.rfind("verify.", 0) == 0) {
      rocksdb::Status dropped = db->DropColumnFamily(h);
      if (!dropped.ok()) return fail(FromRocks(dropped));
    }
    others.push_back(h);
  }
  for (size_t i = 0; i < std::size(kDerivedColumns); ++i) {
    if (*derived[i] != nullptr) continue;
    rocksdb::ColumnFamilyHandle* created = nullptr;
    rocksdb::Status c = db->CreateColumnFamily(
        cf_options, DerivedColumnName(kDerivedColumns[i], *generation),
        &created);
    if (!c.ok()) return fail(FromRocks(c));
    handles.push_back(created);
    *derived[i] = created;
  }

  absl::StatusOr<Head> head = ReadHead(db.get(), columns->log);
  if (!head.ok()) return fail(head.status());
  // Projections of a new database are built by this version's reducers.
  absl::StatusOr<uint64_t> version = ReadMetaNumber(
      db.get(), columns->meta, kProjectionVersionKey, kProjectionVersion);
  if (!version.ok()) return fail(version.status());
  rocksdb::WriteOptions sync;
  sync.sync = true;
  rocksdb::Status put = db->Put(sync, columns->meta, kProjectionVersionKey,
                                std::to_string(*version));
  if (!put.ok()) return fail(FromRocks(put));

  std::unique_ptr<EventStore> store(new EventStore(
      std::move(options), std::move(db), std::move(others), std::move(columns),
      head->position, head->hash, cf_options));
  store->projection_version_.store(static_cast<uint32_t>(*version));
  return store;
}

EventStore::EventStore(StoreOptions options, std::unique_ptr<rocksdb::DB> db,
                       std::vector<rocksdb::ColumnFamilyHandle*> other_handles,
                       std::shared_ptr<const Columns> columns, uint64_t head,
                       std::string head_hash,
                       rocksdb::ColumnFamilyOptions cf_options)
    : options_(std::move(options)),
      db_(std::move(db)),
      cf_options_(std::move(cf_options)),
      other_handles_(std::move(other_handles)),
      cols_(std::move(columns)),
      head_position_(head),
      head_hash_(std::move(head_hash)),
      next_position_(head + 1),
      next_chain_(head_hash_),
      projection_state_(std::make_unique<ProjectionState>()) {
  committer_ = std::thread([this] { CommitterLoop(); });
  writer_ = std::thread([this] { WriterLoop(); });
}

EventStore::~EventStore() {
  Shutdown();
  std::shared_ptr<const Columns> cols = Cols();
  for (auto* h : {cols->meta, cols->log, cols->event_ids, cols->index,
                  cols->connections, cols->sessions, cols->timeline}) {
    db_->DestroyColumnFamilyHandle(h);
  }
  for (auto* h : other_handles_) db_->DestroyColumnFamilyHandle(h);
  for (auto* h : retired_) db_->DestroyColumnFamilyHandle(h);
  rocksdb::Status s = db_->Close();
  (void)s;  // Nothing more can be done about a failed close here.
}

void EventStore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    commit_stop_ = true;
  }
  commit_ready_.notify_all();
  if (committer_.joinable()) committer_.join();
}

// ---------------------------------------------------------------------------
// Appends.

void EventStore::Append(std::vector<AuthEvent> events, AppendCallback done) {
  auto pending = std::make_unique<PendingAppend>();
  pending->events = std::move(events);
  pending->done = std::move(done);
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the server is shutting down");
    } else if (queued_events_ + pending->events.size() > kMaxQueuedEvents) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "the append queue holds ", queued_events_, " events, the limit is ",
          kMaxQueuedEvents, "; retry shortly"));
    } else {
      queued_events_ += pending->events.size();
      queue_.push_back(std::move(pending));
    }
  }
  if (!refused.ok()) {
    pending->done(refused);
    return;
  }
  work_ready_.notify_one();
}

absl::StatusOr<std::vector<AppendOutcome>> EventStore::AppendAndWait(
    std::vector<AuthEvent> events) {
  std::promise<absl::StatusOr<std::vector<AppendOutcome>>> promise;
  auto future = promise.get_future();
  Append(std::move(events),
         [&promise](absl::StatusOr<std::vector<AppendOutcome>> result) {
           promise.set_value(std::move(result));
         });
  return future.get();
}

// Carried projection state above this many entries is dropped between
// groups (it is only a cache of what the database holds). Decoded records
// take about 1.7 KiB each: at 200,000 entries the server's RSS under load
// was 422 MiB against 261 MiB at this bound, and appends were no faster.
constexpr size_t kMaxCarriedEntries = 16'384;

void EventStore::WriterLoop() {
  while (true) {
    std::vector<std::unique_ptr<PendingAppend>> group;
    std::unique_ptr<PendingAppend> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping, and nothing left to commit
      if (queue_.front()->task) {
        task = std::move(queue_.front());
        queue_.pop_front();
      } else {
        TakeAppends(&group, options_.max_group_events, /*at_least_one=*/true);
      }
    }
    if (task != nullptr) {
      // A task sees every acknowledged group on disk and may switch the
      // families the carried state describes.
      ResetWriterState();
      task->task();
      ResetWriterState();
    } else {
      PrepareGroup(std::move(group));
      if (projection_state_->size() > kMaxCarriedEntries) ResetWriterState();
    }
  }
  Drain();
}

size_t EventStore::TakeAppends(
    std::vector<std::unique_ptr<PendingAppend>>* group, size_t room,
    bool at_least_one) {
  size_t events = 0;
  while (!queue_.empty() && !queue_.front()->task &&
         ((at_least_one && events == 0) ||
          events + queue_.front()->events.size() <= room)) {
    events += queue_.front()->events.size();
    queued_events_ -= queue_.front()->events.size();
    group->push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return events;
}

void EventStore::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  work_ready_.wait(lock, [this] { return committing_ == nullptr; });
}

void EventStore::ResetWriterState() {
  Drain();
  {
    std::lock_guard<std::mutex> lock(mu_);
    commit_failed_ = false;
  }
  projection_state_->Clear();
  inflight_ids_.clear();
  std::lock_guard<std::mutex> lock(head_mu_);
  next_position_ = head_position_.load() + 1;
  next_chain_ = head_hash_;
}

absl::Status EventStore::RunOnWriter(std::function<absl::Status()> task) {
  std::promise<absl::Status> promise;
  auto future = promise.get_future();
  auto pending = std::make_unique<PendingAppend>();
  pending->task = [&promise, &task] { promise.set_value(task()); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the store is shutting down");
    queue_.push_back(std::move(pending));
  }
  work_ready_.notify_one();
  return future.get();
}

// Builds the write batch of one group: log records, id index, secondary
// indexes and projection updates. Projection state is read through the
// writer's carried state, so a group sees what the groups before it wrote
// even while the newest of them is still being written.
class EventStore::GroupCommit {
 public:
  explicit GroupCommit(EventStore* store)
      : store_(store),
        cols_(store->Cols()),
        cf_(*cols_),
        projections_(store->db_.get(), cf_, &batch_,
                     store->projection_state_.get()),
        next_position_(store->next_position_),
        chain_(store->next_chain_) {}

  // Adds one request to the group, or refuses it whole without adding
  // anything. A refusal that leaves the group half-written (a failed read
  // of the database) is also kept in broken().
  absl::StatusOr<std::vector<AppendOutcome>> Add(
      const std::vector<AuthEvent>& events);
  // Finishes the batch; after an error the whole group is void.
  absl::Status Finish();

  const absl::Status& broken() const { return broken_; }
  uint64_t next_position() const { return next_position_; }
  const std::string& chain() const { return chain_; }
  SortedBatch& batch() { return batch_; }
  std::unordered_map<std::string, std::pair<uint64_t, std::string>>& written() {
    return written_;
  }

 private:
  // What to do with one event of a request.
  struct Plan {
    std::string bytes;               // stable serialization of the event
    std::optional<uint64_t> stored;  // already in the log at this position
    int same_as = -1;  // repeats an earlier event of the same request
  };

  absl::Status Resolve(const std::vector<AuthEvent>& events,
                       std::vector<Plan>* plans);
  absl::StatusOr<std::optional<uint64_t>> Lookup(const std::string& event_id,
                                                 const std::string& bytes);
  absl::Status Write(const AuthEvent& event, const std::string& bytes,
                     uint64_t position);

  EventStore* store_;
  std::shared_ptr<const Columns> cols_;
  const Columns& cf_;
  SortedBatch batch_;
  ProjectionWriter projections_;
  uint64_t next_position_;
  // Chain hash of the newest record in the group (or before it).
  std::string chain_;
  google::protobuf::Timestamp recorded_at_;
  // Event ids written by this group: position and stable bytes.
  std::unordered_map<std::string, std::pair<uint64_t, std::string>> written_;
  absl::Status broken_;
};

absl::StatusOr<std::optional<uint64_t>> EventStore::GroupCommit::Lookup(
    const std::string& event_id, const std::string& bytes) {
  auto conflict = [&] {
    return absl::AlreadyExistsError(
        absl::StrCat("event_id \"", event_id,
                     "\" was already appended with different content"));
  };
  for (const auto* recent : {&written_, &store_->inflight_ids_}) {
    if (auto it = recent->find(event_id); it != recent->end()) {
      if (it->second.second != bytes) return conflict();
      return std::optional<uint64_t>(it->second.first);
    }
  }
  std::string value;
  rocksdb::Status s =
      store_->db_->Get(rocksdb::ReadOptions(), cf_.event_ids, event_id, &value);
  if (s.IsNotFound()) return std::optional<uint64_t>();
  if (!s.ok()) return FromRocks(s);
  std::optional<uint64_t> position = GetFixed64(value);
  if (!position.has_value()) {
    return absl::DataLossError("malformed event id index entry");
  }
  absl::StatusOr<RecordedEvent> stored = store_->ReadEvent(*position);
  if (!stored.ok()) return stored.status();
  if (SerializeStable(stored->event()) != bytes) return conflict();
  return position;
}

absl::Status EventStore::GroupCommit::Resolve(
    const std::vector<AuthEvent>& events, std::vector<Plan>* plans) {
  std::unordered_map<std::string_view, int> first_in_request;
  plans->resize(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    Plan& plan = (*plans)[i];
    const std::string& id = events[i].event_id();
    plan.bytes = SerializeStable(events[i]);
    if (auto it = first_in_request.find(id); it != first_in_request.end()) {
      if ((*plans)[it->second].bytes != plan.bytes) {
        return absl::AlreadyExistsError(absl::StrCat(
            "events[", i, "].event_id \"", id, "\" repeats events[", it->second,
            "] with different content"));
      }
      plan.same_as = it->second;
      continue;
    }
    first_in_request.emplace(id, static_cast<int>(i));
    absl::StatusOr<std::optional<uint64_t>> stored = Lookup(id, plan.bytes);
    if (!stored.ok()) {
      return absl::Status(
          stored.status().code(),
          absl::StrCat("events[", i, "]: ", stored.status().message()));
    }
    plan.stored = *stored;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AppendOutcome>> EventStore::GroupCommit::Add(
    const std::vector<AuthEvent>& events) {
  if (!broken_.ok()) return broken_;
  recorded_at_ = ToProtoTime(store_->Now());
  std::vector<Plan> plans;
  if (absl::Status s = Resolve(events, &plans); !s.ok()) return s;

  std::vector<AppendOutcome> outcomes(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const Plan& plan = plans[i];
    if (plan.same_as >= 0) {
      outcomes[i] = {outcomes[plan.same_as].position, true};
    } else if (plan.stored.has_value()) {
      outcomes[i] = {*plan.stored, true};
    } else {
      uint64_t position = next_position_;
      if (absl::Status s = Write(events[i], plan.bytes, position); !s.ok()) {
        broken_ = s;
        return s;
      }
      ++next_position_;
      outcomes[i] = {position, false};
    }
  }
  return outcomes;
}

absl::Status EventStore::GroupCommit::Finish() {
  if (broken_.ok()) broken_ = projections_.Finish();
  return broken_;
}

absl::Status EventStore::GroupCommit::Write(const AuthEvent& event,
                                            const std::string& bytes,
                                            uint64_t position) {
  RecordedEvent recorded;
  recorded.set_position(position);
  *recorded.mutable_recorded_at() = recorded_at_;
  *recorded.mutable_event() = event;
  recorded.set_future_dated(IsFutureDated(event.occurred_at(), recorded_at_));

  std::string log_key = LogKey(position);
  std::string record = SerializeStable(recorded);
  chain_ = ChainHash(chain_, position, record);
  batch_.Put(cf_.log, log_key, EncodeLogValue(chain_, record));
  batch_.Put(cf_.event_ids, event.event_id(), log_key);
  written_[event.event_id()] = {position, bytes};
  return projections_.Apply(recorded, record);
}

// A group ready to be written, and the answers owed once it is.
struct EventStore::PreparedGroup {
  rocksdb::WriteBatch batch;
  std::vector<std::unique_ptr<PendingAppend>> appends;
  std::vector<absl::StatusOr<std::vector<AppendOutcome>>> results;
  uint64_t first_position = 0;
  uint64_t last_position = 0;  // first_position - 1 when it adds nothing
  std::string chain;

  void Answer(const absl::Status& failure) {
    for (size_t i = 0; i < appends.size(); ++i) {
      if (!failure.ok() && results[i].ok()) results[i] = failure;
      appends[i]->done(std::move(results[i]));
    }
  }
};

void EventStore::PrepareGroup(
    std::vector<std::unique_ptr<PendingAppend>> first) {
  bool failed_before = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed_before = commit_failed_ && committing_ == nullptr;
  }
  if (failed_before) ResetWriterState();

  auto prepared = std::make_unique<PreparedGroup>();
  prepared->first_position = next_position_;
  GroupCommit commit(this);
  size_t events = 0;
  auto add = [&](std::vector<std::unique_ptr<PendingAppend>>& appends) {
    for (auto& pending : appends) {
      events += pending->events.size();
      prepared->results.push_back(commit.Add(pending->events));
      prepared->appends.push_back(std::move(pending));
    }
  };
  add(first);
  // While the committer is still busy with the group before, this one
  // takes in what arrives meanwhile: the disk sync, not this thread, sets
  // the pace, and each sync then carries everything that was waiting.
  while (true) {
    std::vector<std::unique_ptr<PendingAppend>> more;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [&] {
        return committing_ == nullptr ||
               (!queue_.empty() && !queue_.front()->task &&
                events + queue_.front()->events.size() <=
                    options_.max_group_events);
      });
      if (committing_ == nullptr) break;
      TakeAppends(&more, options_.max_group_events - events,
                  /*at_least_one=*/false);
    }
    add(more);
  }

  if (absl::Status s = commit.Finish(); !s.ok()) {
    // Nothing of this group is written; what it changed in the carried
    // state is forgotten.
    prepared->Answer(absl::Status(
        s.code(), absl::StrCat("nothing was stored: ", s.message())));
    ResetWriterState();
    return;
  }
  if (rocksdb::Status s = commit.batch().MoveTo(&prepared->batch); !s.ok()) {
    prepared->Answer(absl::UnavailableError(
        absl::StrCat("nothing was stored: ", s.ToString())));
    ResetWriterState();
    return;
  }
  prepared->last_position = commit.next_position() - 1;
  prepared->chain = commit.chain();

  std::unique_lock<std::mutex> lock(mu_);
  if (commit_failed_) {
    // The group before this one did not reach the disk, and this one was
    // built on top of it.
    lock.unlock();
    prepared->Answer(
        absl::UnavailableError("an earlier write failed; nothing was stored"));
    ResetWriterState();
    return;
  }
  next_position_ = prepared->last_position + 1;
  next_chain_ = prepared->chain;
  inflight_ids_ = std::move(commit.written());
  committing_ = std::move(prepared);
  lock.unlock();
  commit_ready_.notify_one();
}

void EventStore::CommitterLoop() {
  while (true) {
    PreparedGroup* group = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      commit_ready_.wait(
          lock, [this] { return committing_ != nullptr || commit_stop_; });
      if (committing_ == nullptr) return;
      group = committing_.get();
    }
    rocksdb::WriteOptions write;
    write.sync = options_.sync;
    absl::Time write_started = absl::Now();
    rocksdb::Status s = db_->Write(write, &group->batch);
    if (s.ok()) {
      if (options_.on_group_commit) {
        options_.on_group_commit(
            group->last_position + 1 - group->first_position,
            absl::Now() - write_started);
      }
      std::lock_guard<std::mutex> lock(head_mu_);
      if (group->last_position >= group->first_position) {
        head_hash_ = group->chain;
        head_position_.store(group->last_position);
      }
    }
    std::unique_ptr<PreparedGroup> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done = std::move(committing_);
      if (!s.ok()) commit_failed_ = true;
    }
    work_ready_.notify_one();
    // Answered after the slot is freed, so that the writer can hand over
    // the next group meanwhile.
    done->Answer(
        s.ok() ? absl::OkStatus()
               : absl::UnavailableError(absl::StrCat(
                     "the write failed; nothing was stored: ", s.ToString())));
  }
}

}  // namespace authtrail::storage
