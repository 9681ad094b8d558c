// Pieces shared by the write and read halves of EventStore. Not part of
// the storage API.
#ifndef AUTHTRAIL_STORAGE_STORE_INTERNAL_H_
#define AUTHTRAIL_STORAGE_STORE_INTERNAL_H_

#include <string>
#include <string_view>
#include <vector>

#include "google/protobuf/message_lite.h"
#include "rocksdb/db.h"
#include "storage/chain_hash.h"
#include "storage/event_store.h"
#include "storage/proto_time.h"
#include "storage/serialize.h"

namespace authtrail::storage {

// Column family names. `default` holds metadata (the format version).
inline constexpr char kLogColumn[] = "log";
inline constexpr char kEventIdColumn[] = "event_ids";
inline constexpr char kIndexColumn[] = "idx";
inline constexpr char kConnectionColumn[] = "connections";
inline constexpr char kSessionColumn[] = "sessions";
inline constexpr char kTimelineColumn[] = "timeline";
inline constexpr char kFormatVersionKey[] = "format_version";

// Metadata key: the generation of the live projection families.
inline constexpr char kGenerationKey[] = "projection_generation";
// Metadata key: the reducer version the live projections were built with.
inline constexpr char kProjectionVersionKey[] = "projection_version";

// The handles a reader or writer uses. The log, the id index and metadata
// never move; the derived families (secondary indexes and projections) are
// replaced as a set when a rebuild switches generations. A Columns is
// immutable once published; the handles it does not own stay valid while
// any copy of the shared pointer lives.
struct Columns {
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* log = nullptr;
  rocksdb::ColumnFamilyHandle* event_ids = nullptr;
  // Derived: rebuilt from the log.
  rocksdb::ColumnFamilyHandle* index = nullptr;
  rocksdb::ColumnFamilyHandle* connections = nullptr;
  rocksdb::ColumnFamilyHandle* sessions = nullptr;
  rocksdb::ColumnFamilyHandle* timeline = nullptr;
  uint64_t generation = 0;

  std::vector<rocksdb::ColumnFamilyHandle*> Derived() const {
    return {index, connections, sessions, timeline};
  }
};

// Where a bulk replay writes the table files it ingests; removed when the
// replay ends, and at open (left by a crash).
std::string ReplayRunsDir(const std::string& data_dir);

// The name of a derived family in `generation`: the bare base name for
// generation 0, `base.gN` after N rebuilds.
std::string DerivedColumnName(std::string_view base, uint64_t generation);
// The bases of the derived families, in Columns::Derived() order.
inline constexpr const char* kDerivedColumns[] = {
    kIndexColumn, kConnectionColumn, kSessionColumn, kTimelineColumn};

// A log value is the record's chain hash followed by the record:
//   hash (32 bytes) | RecordedEvent, serialized stably
// where hash = SHA-256(previous record's hash | position (8 bytes,
// big-endian) | record bytes), and the hash before position 1 is 32 zero
// bytes. Changing, removing, inserting or reordering a record breaks the
// chain from that position on.
// (kChainHashBytes: storage/chain_hash.h)

// The hash of the record at `position`, chained to `previous`.
std::string ChainHash(std::string_view previous, uint64_t position,
                      std::string_view record);
// The hash that precedes position 1.
std::string GenesisHash();
// Builds a log value from its parts.
std::string EncodeLogValue(std::string_view hash, std::string_view record);
// Splits a log value. DATA_LOSS when it is too short or does not parse.
absl::Status DecodeLogValue(std::string_view value, uint64_t position,
                            authtrail::v1::RecordedEvent* event,
                            std::string* hash = nullptr);

// The puts of one write batch, collected and then written out in (family,
// key) order. RocksDB's memtable remembers where its last insert went, so
// keys that arrive in order are inserted far faster than scattered ones;
// with about ten keys per event spread over the key space, that is most of
// the cost of a write.
class SortedBatch {
 public:
  void Put(rocksdb::ColumnFamilyHandle* cf, std::string key,
           std::string value) {
    entries_.push_back({cf, std::move(key), std::move(value)});
  }
  bool empty() const { return entries_.empty(); }
  // Moves the puts into `batch`, sorted; of two puts of one key the later
  // one comes last and so wins.
  rocksdb::Status MoveTo(rocksdb::WriteBatch* batch);

 private:
  struct Entry {
    rocksdb::ColumnFamilyHandle* cf;
    std::string key;
    std::string value;
  };
  std::vector<Entry> entries_;
};

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_STORE_INTERNAL_H_
