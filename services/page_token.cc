#include "services/page_token.h"

#include <openssl/sha.h>

#include "absl/strings/escaping.h"
#include "storage/keys.h"
#include "storage/store_internal.h"

namespace authtrail::services {
namespace {

constexpr char kVersion = 1;
constexpr uint32_t kPartition = 0;
constexpr size_t kTokenBytes = 1 + 4 + 8 + 12 + 8;

std::string Fingerprint(const authtrail::v1::ListEventsRequest& request) {
  authtrail::v1::ListEventsRequest query = request;
  query.clear_page_size();
  query.clear_page_token();
  std::string bytes = storage::SerializeStable(query);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         digest);
  return std::string(reinterpret_cast<const char*>(digest), 8);
}

uint64_t ReadBigEndian(std::string_view in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) {
    value = (value << 8) | static_cast<unsigned char>(in[i]);
  }
  return value;
}

}  // namespace

std::string EncodePageToken(const authtrail::v1::ListEventsRequest& request,
                            const storage::Cursor& cursor) {
  std::string raw(1, kVersion);
  for (int shift = 24; shift >= 0; shift -= 8) {
    raw.push_back(static_cast<char>((kPartition >> shift) & 0xff));
  }
  raw += Fingerprint(request);
  storage::AppendTime(&raw, cursor.time);
  storage::AppendPosition(&raw, cursor.position);
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<storage::Cursor> DecodePageToken(
    const authtrail::v1::ListEventsRequest& request) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(request.page_token(), &raw) ||
      raw.size() != kTokenBytes || raw[0] != kVersion) {
    return absl::InvalidArgumentError(
        "page_token is not a token this server issued");
  }
  if (ReadBigEndian(std::string_view(raw).substr(1), 4) != kPartition) {
    return absl::InvalidArgumentError(
        "page_token belongs to another partition");
  }
  if (raw.substr(5, 8) != Fingerprint(request)) {
    return absl::InvalidArgumentError(
        "page_token was issued for a different filter or time range; keep "
        "every field but page_size unchanged while paging");
  }
  // Time and position are laid out as in an index key suffix.
  std::optional<storage::IndexEntry> entry =
      storage::DecodeIndexSuffix(std::string_view(raw).substr(0, 13), raw);
  if (!entry.has_value()) {
    return absl::InvalidArgumentError(
        "page_token is not a token this server issued");
  }
  storage::Cursor cursor{entry->time, entry->position};
  return cursor;
}

}  // namespace authtrail::services
