// ProjectionWriter: everything derived from one event — index entries,
// connection and session records, timeline counts — written into a write
// batch. The same code serves live appends and replays of the log (rebuild
// and verify), which is what makes a replay equal the live state.
#ifndef AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
#define AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "authtrail/records/v1/records.pb.h"
#include "authtrail/v1/event.pb.h"
#include "rocksdb/db.h"
#include "storage/store_internal.h"

namespace authtrail::storage {

// Decoded projection records and counters, kept by their only writer
// between write batches so that a hot connection is parsed once, not once
// per event. An entry is exact as long as nothing else writes its family:
// the owner clears the state whenever that may have happened (a failed
// write, a switch of families) and whenever it grows past a bound.
class ProjectionState {
 public:
  size_t size() const {
    return connections_.size() + sessions_.size() +
           connection_counters_.size() + timeline_counters_.size();
  }
  void Clear() {
    connections_.clear();
    sessions_.clear();
    connection_counters_.clear();
    timeline_counters_.clear();
  }

 private:
  friend class ProjectionWriter;
  template <typename Value>
  struct Entry {
    Value value{};
    // Changed by the writer that has not finished yet.
    bool dirty = false;
  };
  std::unordered_map<std::string, Entry<records::v1::ConnectionRecord>>
      connections_;
  std::unordered_map<std::string, Entry<records::v1::SessionRecord>> sessions_;
  std::unordered_map<std::string, Entry<uint64_t>> connection_counters_;
  std::unordered_map<std::string, Entry<uint64_t>> timeline_counters_;
};

// Takes the index entries of a replay in place of the write batch. The
// key and value are only valid during the call.
class IndexSink {
 public:
  virtual ~IndexSink() = default;
  virtual void Add(std::string_view key, std::string_view value) = 0;
};

class ProjectionWriter {
 public:
  // Writes into `batch` for the derived families of `target`, reading
  // projection state not in `state` from `db`; index entries go to
  // `index_sink` instead when it is set. Nothing is owned; `state` must
  // describe `target` as of the last batch written to it.
  ProjectionWriter(rocksdb::DB* db, const Columns& target, SortedBatch* batch,
                   ProjectionState* state, IndexSink* index_sink = nullptr)
      : db_(db),
        cf_(target),
        batch_(batch),
        state_(state),
        index_sink_(index_sink) {}

  // Adds what `recorded` derives; records and counters change in `state`
  // and are written by Finish. On error, discard the batch and clear the
  // state: it may hold half of an event.
  // `record` is `recorded` as the log stores it (serialized stably).
  absl::Status Apply(const authtrail::v1::RecordedEvent& recorded,
                     std::string_view record);

  // Writes the records and counters that Apply changed into the batch.
  // REQUIRES: called once, after the last Apply.
  absl::Status Finish();

 private:
  // The entry at `key`, read from the database on first use; `created`
  // tells whether the record did not exist yet. Marks it changed.
  template <typename Value>
  absl::StatusOr<Value*> Load(
      rocksdb::ColumnFamilyHandle* cf, const std::string& key,
      std::unordered_map<std::string, ProjectionState::Entry<Value>>* entries,
      std::vector<std::pair<const std::string*,
                            ProjectionState::Entry<Value>*>>* changed,
      bool* created);

  absl::Status WriteIndexes(const authtrail::v1::RecordedEvent& recorded,
                            std::string_view record);
  absl::Status ReduceInto(const authtrail::v1::RecordedEvent& recorded);
  absl::Status CountFailure(const authtrail::v1::RecordedEvent& recorded);
  // Adds one to the 8-byte counter at `key`.
  absl::Status Increment(rocksdb::ColumnFamilyHandle* cf,
                         const std::string& key);
  absl::Status Put(rocksdb::ColumnFamilyHandle* cf, std::string key,
                   std::string value);

  rocksdb::DB* db_;
  const Columns& cf_;
  SortedBatch* batch_;
  ProjectionState* state_;
  IndexSink* index_sink_;
  std::string key_;  // reused for each index key
  // Entries changed since construction (node pointers stay valid while the
  // maps grow).
  template <typename Value>
  using Changed = std::vector<
      std::pair<const std::string*, ProjectionState::Entry<Value>*>>;
  Changed<records::v1::ConnectionRecord> changed_connections_;
  Changed<records::v1::SessionRecord> changed_sessions_;
  Changed<uint64_t> changed_connection_counters_;
  Changed<uint64_t> changed_timeline_counters_;
};

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
