// Turns fuzzer input into the append requests the harness feeds to the
// store model (fuzz/append_fuzzer.cc).
//
// Why two modes. Raw protobuf bytes are the honest input (they are what
// the ingest service receives), and they exercise parsing, unknown fields
// and every validation rule. But mutating raw bytes rarely produces a batch
// where several valid events share a connection and a session, arrive out
// of time order and span the stall window: the states the reducers are
// interesting in. The recipe mode spends the input on choices instead
// (which step, which outcome, which of a few ids, which catalog code, how
// far the clock moved), so almost every input is a valid history and the
// fuzzer can spend its effort on reducer states.
//
// Byte 0 chooses the mode:
//   even: wire mode. Bytes 1.. are one binary AppendEventsRequest,
//         appended at kNow. Bytes that do not parse are ignored.
//   odd:  recipe mode. Bytes 1.. are a list of operations, read front to
//         back (fuzz/gen_seeds.py writes them the same way); a missing
//         byte reads as 0.
//
// Recipe operations start with one byte `op`; op % 8 selects:
//   0..4  event: 7 more bytes
//           step     table kSteps (mostly the seven real steps; rarely
//                    UNSPECIFIED, which validation refuses, or unknown)
//           outcome  table kOutcomes (likewise)
//           ids      bits 0-1 connection ("", c-0..c-2), bits 2-4 session
//                    ("", s-0..s-6), bits 5-6 patient ("", p-0, p-1, p-0),
//                    bit 7 the event names its source
//           code     table kErrorCodes: every catalog code, unknown codes,
//                    and "" (refused when the outcome is a failure)
//           http     low 5 bits: table kHttpStatuses; bits 5-6 request id
//                    ("", r-0..r-2); bit 7 the time byte counts from the
//                    previous event instead of the batch's clock
//           delta    signed; occurred_at = base + delta * unit
//           flags    bits 0-1 unit (1 s, 1 min, 10 min, 2 h); bits 2-3
//                    nanos (0, 1, 0.5 s, 999999999); bit 4 an attribute;
//                    bit 5 an emitter; flags == 0xff adds a broken field
//                    (validation must refuse the batch)
//   5     retry: the next byte picks an earlier event, sent again as is
//   6     conflict: an earlier event's id with other content
//   7     flush: the batch so far is appended; the next byte moves the
//         server clock (kClockSteps) before the next batch
// Past the last operation the open batch is appended.
#ifndef AUTHTRAIL_FUZZ_RECIPE_H_
#define AUTHTRAIL_FUZZ_RECIPE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "authtrail/v1/ingest.pb.h"

namespace authtrail::fuzz {

// The server clock at the first append: 2026-06-01T12:00:00Z.
inline constexpr int64_t kNowUnixSeconds = 1780315200;

// One append request and the server clock when it arrives.
struct Batch {
  authtrail::v1::AppendEventsRequest request;
  absl::Time now;
};

// At most this many events in one recipe, so one input stays fast.
inline constexpr size_t kMaxRecipeEvents = 96;

// Decodes `data` (mode byte included) into batches, in arrival order.
std::vector<Batch> Decode(const uint8_t* data, size_t size);

}  // namespace authtrail::fuzz

#endif  // AUTHTRAIL_FUZZ_RECIPE_H_
