// Binary key encoding of the authtrail column families. The layout is
// documented in docs/STORAGE.md; this file is its single implementation.
//
// Building blocks:
//   position  8 bytes, big-endian unsigned: sorts numerically.
//   time      12 bytes: seconds since the epoch as a big-endian uint64 with
//             the sign bit flipped (so negative times sort first), then
//             nanoseconds as a big-endian uint32.
//   id        2-byte big-endian length, then the bytes. A prefix scan for
//             one id can never match a longer id that starts the same way
//             (`p-1` never returns `p-10`).
#ifndef AUTHTRAIL_STORAGE_KEYS_H_
#define AUTHTRAIL_STORAGE_KEYS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "google/protobuf/timestamp.pb.h"

namespace authtrail::storage {

// Tags of the secondary index column family (`idx`). Each index key is
//   tag, id, time, position
// except kIndexAll, which has no id.
enum class IndexTag : char {
  kAll = 'A',         // every event by time
  kPatient = 'P',     // patient_id
  kConnection = 'C',  // connection_id
  kSession = 'S',     // session_id
  kRequest = 'R',     // request_id
  kErrorCode = 'E',   // error_code, when present
  kSource = 'O',      // source.id (or name when the id is empty)
  // Failures (FAILED or DENIED) per scope, for timelines.
  kPatientFailure = 'p',
  kConnectionFailure = 'c',
  kSourceFailure = 'o',
};

// Tags of the `timeline` column family: per-minute failure counts.
//   tag, id, minute (8 bytes, sign-flipped big-endian), error code (id)
//   -> count as 8-byte big-endian.
enum class TimelineTag : char {
  kPatient = 'p',
  kConnection = 'c',
  kSource = 'o',
};

// Whether entries of `tag` carry a copy of the event's log record (the
// serialized RecordedEvent, without its chain hash) as their value, so that
// a page of them is one range read instead of a lookup per event; other
// entries have empty values and readers fetch the log. The connection index
// carries them: it backs the dashboard's event list and the refresh history
// of a diagnosis. Each copy costs the record's size again in writes.
constexpr bool IndexCarriesRecord(IndexTag tag) {
  return tag == IndexTag::kConnection;
}

// Largest id that fits the 2-byte length prefix.
inline constexpr size_t kMaxKeyIdBytes = 0xffff;

void AppendPosition(std::string* out, uint64_t position);
void AppendTime(std::string* out, const google::protobuf::Timestamp& time);
void AppendSignedBigEndian(std::string* out, int64_t value);
// REQUIRES: id.size() <= kMaxKeyIdBytes.
void AppendId(std::string* out, std::string_view id);

// The log key of `position`: 8 big-endian bytes.
std::string LogKey(uint64_t position);
// Decodes a log key. Returns nullopt when `key` is not 8 bytes.
std::optional<uint64_t> DecodeLogKey(std::string_view key);

// tag + id: the prefix shared by all entries of one id in one index.
std::string IndexPrefix(IndexTag tag, std::string_view id);
// Full index key, appended to `out`.
void AppendIndexKey(std::string* out, IndexTag tag, std::string_view id,
                    const google::protobuf::Timestamp& time, uint64_t position);
// Full index key.
std::string IndexKey(IndexTag tag, std::string_view id,
                     const google::protobuf::Timestamp& time,
                     uint64_t position);
// The last 8 bytes of an index key: the position.
std::optional<uint64_t> IndexKeyPosition(std::string_view key);
// The time and position that follow `prefix` in an index key.
struct IndexEntry {
  google::protobuf::Timestamp time;
  uint64_t position = 0;
};
std::optional<IndexEntry> DecodeIndexSuffix(std::string_view prefix,
                                            std::string_view key);

// Timeline count key and its parts.
std::string TimelinePrefix(TimelineTag tag, std::string_view id);
std::string TimelineKey(TimelineTag tag, std::string_view id, int64_t minute,
                        std::string_view error_code);
struct TimelineEntry {
  int64_t minute = 0;
  std::string error_code;
};
std::optional<TimelineEntry> DecodeTimelineSuffix(std::string_view prefix,
                                                  std::string_view key);

// Connection projection key is the bare connection id; the patient's list
// of connections is kept in the same column family under this prefix so the
// two never collide: 0x00 is not a valid first byte of a stored id.
std::string PatientConnectionsPrefix(std::string_view patient_id);
std::string PatientConnectionKey(std::string_view patient_id,
                                 std::string_view connection_id);
std::string ConnectionKey(std::string_view connection_id);
// Counters kept beside the connections: `0x02` + name -> 8-byte count.
inline constexpr char kConnectionCounter[] = "connections";
inline constexpr char kSessionCounter[] = "sessions";
std::string CounterKey(std::string_view name);

void PutFixed64(std::string* out, uint64_t value);
std::optional<uint64_t> GetFixed64(std::string_view in);

// The smallest key greater than every key that starts with `prefix`;
// empty when none exists (prefix all 0xff).
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_KEYS_H_
