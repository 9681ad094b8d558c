// Opaque paging tokens of ListEvents.
//
// A token is web-safe base64 of, big-endian:
//   version (1 byte, = 1)
//   partition (4 bytes; 0 on a single node)
//   query fingerprint (8 bytes: the first bytes of the SHA-256 of the
//     request with page_size and page_token cleared)
//   time seconds (8 bytes, sign flipped), nanos (4 bytes)
//   position (8 bytes)
// The position, not the time alone, marks where the next page starts, so
// pages stay exact while appends continue.
#ifndef AUTHTRAIL_SERVICES_PAGE_TOKEN_H_
#define AUTHTRAIL_SERVICES_PAGE_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"
#include "authtrail/v1/history.pb.h"
#include "storage/event_store.h"

namespace authtrail::services {

std::string EncodePageToken(const authtrail::v1::ListEventsRequest& request,
                            const storage::Cursor& cursor);

// INVALID_ARGUMENT when the token is malformed or was made for another
// query.
absl::StatusOr<storage::Cursor> DecodePageToken(
    const authtrail::v1::ListEventsRequest& request);

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_PAGE_TOKEN_H_
