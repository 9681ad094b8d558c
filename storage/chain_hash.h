// The size and text form of a log record's chain hash, shared by the store,
// the admin service and the CLI (header-only: the CLI links no storage).
#ifndef AUTHTRAIL_STORAGE_CHAIN_HASH_H_
#define AUTHTRAIL_STORAGE_CHAIN_HASH_H_

#include <algorithm>
#include <cstddef>
#include <string_view>

#include "absl/strings/ascii.h"

namespace authtrail::storage {

inline constexpr size_t kChainHashBytes = 32;

// Whether `hex` is a chain hash as `stats` prints it: 64 hex digits.
inline bool IsChainHashHex(std::string_view hex) {
  return hex.size() == 2 * kChainHashBytes &&
         std::all_of(hex.begin(), hex.end(),
                     [](char c) { return absl::ascii_isxdigit(c); });
}

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_CHAIN_HASH_H_
