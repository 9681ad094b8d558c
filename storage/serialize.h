// Stable serialization, apart from the rest of the store so that code
// without RocksDB (the fuzz target) uses the very same function.
#ifndef AUTHTRAIL_STORAGE_SERIALIZE_H_
#define AUTHTRAIL_STORAGE_SERIALIZE_H_

#include <string>

#include "google/protobuf/message_lite.h"

namespace authtrail::storage {

// Serializes with a stable byte order (map entries sorted), so that equal
// messages give equal bytes: projections replayed from the log match the
// live ones byte for byte, and retries can be compared by their bytes.
std::string SerializeStable(const google::protobuf::MessageLite& message);

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_SERIALIZE_H_
