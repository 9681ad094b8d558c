// ProjectionWriter: everything derived from one event — index entries,
// connection and session records, timeline counts — written into a write
// batch. The same code serves live appends and replays of the log (rebuild
// and verify), which is what makes a replay equal the live state.
#ifndef AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
#define AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_

#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "authtrail/records/v1/records.pb.h"
#include "authtrail/v1/event.pb.h"
#include "rocksdb/db.h"
#include "rocksdb/utilities/write_batch_with_index.h"
#include "storage/store_internal.h"

namespace authtrail::storage {

class ProjectionWriter {
 public:
  // Writes into `batch` for the derived families of `target`. Current
  // projection state is read through `batch` over `db`, so what earlier
  // writers put into the same batch is seen. Nothing is owned.
  ProjectionWriter(rocksdb::DB* db, const Columns& target,
                   rocksdb::WriteBatchWithIndex* batch)
      : db_(db), cf_(target), indexed_(batch), plain_(nullptr) {}
  // Writes into a plain `batch`, reading projection state from `db` only:
  // for a replay, where one writer covers a whole batch and so never needs
  // to read back what the batch holds.
  ProjectionWriter(rocksdb::DB* db, const Columns& target,
                   rocksdb::WriteBatch* batch)
      : db_(db), cf_(target), indexed_(nullptr), plain_(batch) {}

  // Adds what `recorded` derives. Records and counters are kept decoded
  // here between events and written by Finish. On error, discard this
  // writer and roll the batch back to a save point (or discard it).
  absl::Status Apply(const authtrail::v1::RecordedEvent& recorded);

  // Writes the records and counters changed by Apply into the batch.
  // REQUIRES: called once, after the last Apply.
  absl::Status Finish();

 private:
  // The record at `key`, read through the batch on first use; `created`
  // tells whether it did not exist yet.
  template <typename Record>
  absl::StatusOr<Record*> Load(rocksdb::ColumnFamilyHandle* cf,
                               const std::string& key,
                               std::unordered_map<std::string, Record>* cache,
                               bool* created);

  absl::Status WriteIndexes(const authtrail::v1::RecordedEvent& recorded);
  absl::Status ReduceInto(const authtrail::v1::RecordedEvent& recorded);
  absl::Status CountFailure(const authtrail::v1::RecordedEvent& recorded);
  // Adds one to the 8-byte counter at `key`.
  absl::Status Increment(rocksdb::ColumnFamilyHandle* cf,
                         const std::string& key);
  absl::StatusOr<std::string> Get(rocksdb::ColumnFamilyHandle* cf,
                                  const std::string& key);
  absl::Status Put(rocksdb::ColumnFamilyHandle* cf, const std::string& key,
                   const std::string& value);

  rocksdb::DB* db_;
  const Columns& cf_;
  // Exactly one of the two is set.
  rocksdb::WriteBatchWithIndex* indexed_;
  rocksdb::WriteBatch* plain_;
  // Decoded records and counters changed since construction, by key.
  std::unordered_map<std::string, records::v1::ConnectionRecord> connections_;
  std::unordered_map<std::string, records::v1::SessionRecord> sessions_;
  std::unordered_map<std::string, uint64_t> connection_counters_;
  std::unordered_map<std::string, uint64_t> timeline_counters_;
};

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
