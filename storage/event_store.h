// EventStore: the durable event log of authtrail and the projections kept
// from it, in one RocksDB database (layout in docs/STORAGE.md).
//
// Writes go through one writer thread that commits groups of appends with a
// single synced write (group commit); the projection updates of a group are
// in the same write batch as its log records, so the projections are never
// ahead of or behind the log. Reads never wait for the writer.
//
// Thread safety: every public method may be called from any thread.
#ifndef AUTHTRAIL_STORAGE_EVENT_STORE_H_
#define AUTHTRAIL_STORAGE_EVENT_STORE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "authtrail/v1/admin.pb.h"
#include "authtrail/v1/event.pb.h"
#include "authtrail/v1/history.pb.h"
#include "rocksdb/db.h"

namespace authtrail::storage {

// The on-disk format this binary writes. A data folder of a newer major
// version is refused at open.
inline constexpr uint32_t kFormatVersion = 1;

struct StoreOptions {
  // The RocksDB folder; created when missing.
  std::string data_dir;
  // Sync the WAL before acknowledging. Only benchmarks turn this off.
  bool sync = true;
  // Most events one group commit takes.
  size_t max_group_events = 4096;
  // RocksDB block cache for reads.
  size_t block_cache_bytes = size_t{64} << 20;
  // A rebuild or verify gathers index entries into table files of about
  // this many bytes (before compression) and ingests them.
  size_t replay_run_bytes = size_t{64} << 20;
  // Abandonment and pending bounds, applied when reading.
  absl::Duration stall_window = absl::Minutes(30);
  // Called on the commit thread after each group commit's synced write
  // with the events written and how long the write took.
  std::function<void(size_t events, absl::Duration write_time)> on_group_commit;
  // Source of the recorded_at clock; tests replace it.
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// The fate of one appended event.
struct AppendOutcome {
  uint64_t position = 0;
  bool duplicate = false;
};

// Called exactly once per Append, on the writer thread, after the batch is
// durable (OK) or refused (no part of it written).
using AppendCallback =
    std::function<void(absl::StatusOr<std::vector<AppendOutcome>>)>;

// A place in an index: where a page of events stops.
struct Cursor {
  google::protobuf::Timestamp time;
  uint64_t position = 0;
};

struct EventQuery {
  authtrail::v1::EventFilter filter;
  // Half-open [start, end) on occurred_at; unset means open.
  std::optional<google::protobuf::Timestamp> start;
  std::optional<google::protobuf::Timestamp> end;
  bool oldest_first = false;
  // Most events returned, and most bytes of them.
  size_t limit = 100;
  size_t max_bytes = size_t{4} << 20;
  // Continue after this place (exclusive).
  std::optional<Cursor> after;
};

struct EventPage {
  // Each a serialized authtrail.v1.RecordedEvent, the bytes the log holds:
  // a reply can carry them as they are, with no parsing or re-encoding.
  std::vector<std::string> events;
  // Set when more events may follow.
  std::optional<Cursor> next;
};

enum class TimelineScopeKind { kPatient, kConnection, kSource };

struct TimelineQuery {
  TimelineScopeKind kind = TimelineScopeKind::kPatient;
  std::string id;
  google::protobuf::Timestamp start;
  google::protobuf::Timestamp end;
  absl::Duration bucket = absl::Hours(1);
  size_t max_events = 100;
  uint32_t burst_threshold = 5;
  // Most bytes of the response: the newest events are cut to fit beside
  // the counts (and `events_truncated` is set).
  size_t max_bytes = size_t{4} << 20;
};

struct Columns;
class ProjectionState;

// Progress of a long operation: events done out of a total that may grow
// while appends go on. Called from the operation's thread.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

struct RebuildResult {
  // Events replayed, in all.
  uint64_t events = 0;
  // The generation of derived families now live.
  uint64_t generation = 0;
  absl::Duration elapsed;
};

struct VerifyOptions {
  // When set, the chain hash at `anchor_position` must equal `anchor_hash`
  // (32 raw bytes): proof that the log up to there is the one anchored.
  std::optional<uint64_t> anchor_position;
  std::string anchor_hash;
  // Also compare every derived family with a replay of the log.
  bool check_projections = true;
};

struct VerifyReport {
  bool ok = true;
  // Log records checked (the head at the snapshot verified).
  uint64_t events = 0;
  std::string head_hash;
  // When !ok: what is wrong, where. `position` is set for log problems,
  // `family` and `key` for derived families that differ from a replay.
  std::string problem;
  uint64_t position = 0;
  std::string family;
  std::string key;
  absl::Duration elapsed;
};

class EventStore {
 public:
  // Opens (or creates) the database in `options.data_dir` and starts the
  // writer. Fails with FAILED_PRECONDITION for a newer on-disk format.
  static absl::StatusOr<std::unique_ptr<EventStore>> Open(StoreOptions options);

  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;
  // Finishes the queued appends, stops the writer and closes the database.
  ~EventStore();

  // Queues a batch of validated events and returns at once. `done` runs
  // once the batch is durable, or refused: ALREADY_EXISTS when an event id
  // is stored with other content, UNAVAILABLE after Shutdown or when the
  // write failed. A refused batch writes nothing.
  void Append(std::vector<authtrail::v1::AuthEvent> events,
              AppendCallback done);
  // Append, waiting for the result.
  absl::StatusOr<std::vector<AppendOutcome>> AppendAndWait(
      std::vector<authtrail::v1::AuthEvent> events);

  // Commits what is queued, then refuses new appends. Idempotent.
  void Shutdown();

  // NOT_FOUND when no event named the connection.
  absl::StatusOr<authtrail::v1::Connection> GetConnection(
      std::string_view connection_id) const;
  // At most `limit` connections of the patient, by connection id.
  absl::StatusOr<std::vector<authtrail::v1::Connection>> ListConnections(
      std::string_view patient_id, size_t limit) const;
  absl::StatusOr<EventPage> ListEvents(const EventQuery& query) const;
  // NOT_FOUND when no event carried the session id.
  absl::StatusOr<authtrail::v1::SessionDiagnosis> DiagnoseSession(
      std::string_view session_id) const;
  absl::StatusOr<authtrail::v1::GetFailureTimelineResponse> FailureTimeline(
      const TimelineQuery& query) const;
  absl::StatusOr<authtrail::v1::Stats> GetStats() const;
  // NOT_FOUND past the head.
  absl::StatusOr<authtrail::v1::RecordedEvent> ReadEvent(
      uint64_t position) const;

  // Replays the whole log into a fresh set of derived families beside the
  // live ones, then switches to them atomically. Appends and reads go on
  // meanwhile; events appended during the rebuild are in the result.
  // ABORTED when another rebuild or verify is running.
  absl::StatusOr<RebuildResult> Rebuild(const ProgressFn& progress = nullptr);

  // Checks, at one snapshot, that log positions are gap-free from 1, that
  // every record parses and its chain hash holds, that the id index matches
  // the log, and that every derived family equals a replay of the log. The
  // first problem found is reported (ok = false), not returned as an error.
  absl::StatusOr<VerifyReport> Verify(const VerifyOptions& options = {},
                                      const ProgressFn& progress = nullptr);

  // Makes a running rebuild or verify stop soon with CANCELLED (a rebuild
  // that stops leaves the live projections as they were). Later ones are
  // cancelled at once. Used at shutdown.
  void CancelMaintenance() { maintenance_cancelled_.store(true); }

  // Writes a consistent copy of the database (a RocksDB checkpoint: hard
  // links where possible) into `dir`, which must not exist yet.
  absl::Status Backup(const std::string& dir);

  // Events from `from` (>= 1) on, at most `limit` of them, by position.
  absl::StatusOr<std::vector<authtrail::v1::RecordedEvent>> ReadRange(
      uint64_t from, size_t limit) const;

  // A RocksDB integer property summed over the live column families
  // (e.g. "rocksdb.estimate-live-data-size"), or of the database as a whole
  // when `per_family` is false (e.g. "rocksdb.block-cache-usage", whose
  // cache all families share); 0 when unknown.
  uint64_t IntProperty(const std::string& name, bool per_family) const;

  // The reducer version the live projections were built with.
  uint32_t ProjectionVersion() const;
  // The generation of the live derived families.
  uint64_t Generation() const;

  // Position of the newest durable event; 0 for an empty log.
  uint64_t HeadPosition() const { return head_position_.load(); }
  // Chain hash of the newest durable record (32 bytes; zeros when empty).
  std::string HeadHash() const {
    std::lock_guard<std::mutex> lock(head_mu_);
    return head_hash_;
  }

 private:
  struct PendingAppend;
  class GroupCommit;
  struct PreparedGroup;

  EventStore(StoreOptions options, std::unique_ptr<rocksdb::DB> db,
             std::vector<rocksdb::ColumnFamilyHandle*> other_handles,
             std::shared_ptr<const Columns> columns, uint64_t head,
             std::string head_hash, rocksdb::ColumnFamilyOptions cf_options);

  // Runs `task` on the writer thread between two groups, so that no append
  // commits while it runs, and returns its result.
  absl::Status RunOnWriter(std::function<absl::Status()> task);
  // Replays log positions [from, to] into the derived families of `target`.
  absl::Status Replay(const Columns& target, uint64_t from, uint64_t to,
                      bool durable, const ProgressFn& progress,
                      uint64_t total) const;
  // Creates the derived families named by `name_of(base)`.
  absl::StatusOr<std::shared_ptr<Columns>> CreateDerived(
      const Columns& like, uint64_t generation,
      const std::function<std::string(const char*)>& name_of);
  absl::Status DropDerived(const Columns& columns);

  // Appends go through two threads: the writer builds the write batch of
  // a group (ids, log records, projections) while the committer writes and
  // syncs the one before it, then answers its callers.
  void WriterLoop();
  // Moves queued appends (up to a task, at most `room` events, but the
  // first one whatever its size when `at_least_one`) into `group`; returns
  // the events moved. REQUIRES: mu_ held.
  size_t TakeAppends(std::vector<std::unique_ptr<PendingAppend>>* group,
                     size_t room, bool at_least_one);
  // Builds a group from `first` and from whatever else queues up until the
  // committer is free, then hands it over.
  void PrepareGroup(std::vector<std::unique_ptr<PendingAppend>> first);
  void CommitterLoop();
  // Waits until the committer has written every group handed to it.
  void Drain();
  // Forgets the writer's carried state and starts again from the durable
  // head: after a failed write, a switch of families, or to bound memory.
  // REQUIRES: on the writer thread.
  void ResetWriterState();
  absl::Time Now() const { return options_.clock(); }

  const StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  // Options of every column family, for the ones rebuilds create.
  const rocksdb::ColumnFamilyOptions cf_options_;
  // The live column families; replaced whole when a rebuild switches.
  std::shared_ptr<const Columns> Cols() const {
    std::lock_guard<std::mutex> lock(cols_mu_);
    return cols_;
  }

  // Handles of families opened but not in use by this version (a newer
  // version's, or leftovers); closed before db_.
  std::vector<rocksdb::ColumnFamilyHandle*> other_handles_;
  mutable std::mutex cols_mu_;
  std::shared_ptr<const Columns> cols_;  // guarded by cols_mu_
  std::atomic<uint64_t> head_position_;
  mutable std::mutex head_mu_;
  std::string head_hash_;  // guarded by head_mu_
  // Held by a rebuild or verify for its whole run.
  std::mutex maintenance_mu_;
  std::atomic<uint32_t> projection_version_{0};
  std::atomic<bool> maintenance_cancelled_{false};
  // Handles of dropped families, destroyed at close (readers may still
  // hold a Columns that names them).
  std::mutex retired_mu_;
  std::vector<rocksdb::ColumnFamilyHandle*> retired_;  // guarded by retired_mu_

  std::mutex mu_;
  // Wakes the writer: an append or task queued, the committer's slot
  // freed, or shutdown.
  std::condition_variable work_ready_;
  std::deque<std::unique_ptr<PendingAppend>> queue_;  // guarded by mu_
  size_t queued_events_ = 0;                          // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  std::thread writer_;

  // Owned by the writer thread: where the next group starts, the decoded
  // projection state carried between groups, and the event ids of the
  // group the committer may still be writing (position, stable bytes).
  uint64_t next_position_;
  std::string next_chain_;
  std::unique_ptr<ProjectionState> projection_state_;
  std::unordered_map<std::string, std::pair<uint64_t, std::string>>
      inflight_ids_;

  // Wakes the committer: a group handed over, or shutdown.
  std::condition_variable commit_ready_;
  // The group being written; null when the committer is idle.
  std::unique_ptr<PreparedGroup> committing_;  // guarded by mu_
  // The last write failed: what the writer carries is not on disk.
  bool commit_failed_ = false;  // guarded by mu_
  bool commit_stop_ = false;    // guarded by mu_
  std::thread committer_;
};

// Converts a RocksDB status to the nearest absl::Status.
absl::Status FromRocks(const rocksdb::Status& status);

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_EVENT_STORE_H_
