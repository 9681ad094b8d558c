// ProjectionWriter: everything derived from one event — index entries,
// connection and session records, timeline counts — written into a write
// batch. The same code serves live appends and replays of the log (rebuild
// and verify), which is what makes a replay equal the live state.
#ifndef AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
#define AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "authtrail/v1/event.pb.h"
#include "rocksdb/db.h"
#include "rocksdb/utilities/write_batch_with_index.h"
#include "storage/store_internal.h"

namespace authtrail::storage {

class ProjectionWriter {
 public:
  // Writes into `batch` for the derived families of `target`. Current
  // projection state is read through `batch` over `db`, so events applied
  // earlier to the same batch are seen. Nothing is owned.
  ProjectionWriter(rocksdb::DB* db, const Columns& target,
                   rocksdb::WriteBatchWithIndex* batch)
      : db_(db), cf_(target), batch_(batch) {}

  // Adds what `recorded` derives. On error the batch may hold part of it:
  // the caller rolls back to a save point or discards the batch.
  absl::Status Apply(const authtrail::v1::RecordedEvent& recorded);

 private:
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
  rocksdb::WriteBatchWithIndex* batch_;
};

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_PROJECTION_WRITER_H_
