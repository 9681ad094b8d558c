// Pieces shared by the write and read halves of EventStore. Not part of
// the storage API.
#ifndef AUTHTRAIL_STORAGE_STORE_INTERNAL_H_
#define AUTHTRAIL_STORAGE_STORE_INTERNAL_H_

#include <string>
#include <string_view>

#include "google/protobuf/message_lite.h"
#include "rocksdb/db.h"
#include "storage/event_store.h"

namespace authtrail::storage {

// Column family names. `default` holds metadata (the format version).
inline constexpr char kLogColumn[] = "log";
inline constexpr char kEventIdColumn[] = "event_ids";
inline constexpr char kIndexColumn[] = "idx";
inline constexpr char kConnectionColumn[] = "connections";
inline constexpr char kSessionColumn[] = "sessions";
inline constexpr char kTimelineColumn[] = "timeline";
inline constexpr char kFormatVersionKey[] = "format_version";

struct EventStore::Columns {
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* log = nullptr;
  rocksdb::ColumnFamilyHandle* event_ids = nullptr;
  rocksdb::ColumnFamilyHandle* index = nullptr;
  rocksdb::ColumnFamilyHandle* connections = nullptr;
  rocksdb::ColumnFamilyHandle* sessions = nullptr;
  rocksdb::ColumnFamilyHandle* timeline = nullptr;
};

// Serializes with a stable byte order (map entries sorted), so that equal
// messages give equal bytes: projections replayed from the log match the
// live ones byte for byte, and retries can be compared by their bytes.
std::string SerializeStable(const google::protobuf::MessageLite& message);

// A log value is the record's chain hash followed by the record:
//   hash (32 bytes) | RecordedEvent, serialized stably
// where hash = SHA-256(previous record's hash | position (8 bytes,
// big-endian) | record bytes), and the hash before position 1 is 32 zero
// bytes. Changing, removing, inserting or reordering a record breaks the
// chain from that position on.
inline constexpr size_t kChainHashBytes = 32;

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

// google::protobuf::Timestamp <-> absl::Time.
absl::Time FromProtoTime(const google::protobuf::Timestamp& ts);
google::protobuf::Timestamp ToProtoTime(absl::Time time);

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_STORE_INTERNAL_H_
