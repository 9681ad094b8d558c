// Text helpers of the `authtrail` CLI: aligned tables, key/value blocks,
// RFC 3339 times, short enum names and protobuf JSON. Nothing here talks to
// the server.

#ifndef AUTHTRAIL_CLI_FORMAT_H_
#define AUTHTRAIL_CLI_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace authtrail::cli {

// ---- Times ----------------------------------------------------------------

// RFC 3339 in UTC with milliseconds, e.g. "2024-05-01T12:00:00.250Z".
std::string FormatRfc3339(absl::Time time);

// As FormatTime; "-" when the timestamp is unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp);

google::protobuf::Timestamp ToTimestamp(absl::Time time);
absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp);

// Parses a time argument: RFC 3339 ("2024-05-01T12:00:00Z", offsets and
// fractions allowed), "now", or "now-<duration>" such as "now-2h". `now` is
// the instant that "now" stands for. INVALID_ARGUMENT otherwise.
absl::StatusOr<absl::Time> ParseTimeArg(absl::string_view text, absl::Time now);

// Parses a duration made of <integer><unit> parts with units s, m, h and d,
// e.g. "90s", "15m", "1h30m", "1d". INVALID_ARGUMENT otherwise, and for a
// zero duration.
absl::StatusOr<absl::Duration> ParseDurationArg(absl::string_view text);

// Compact duration such as "1d", "1h30m", "90s"; below a second "421ms"
// or "35us".
std::string FormatShortDuration(absl::Duration duration);

// ---- Enums ----------------------------------------------------------------

// The prefix shared by an enum's value names, taken from its zero value:
// "STEP_" for Step (whose zero value is STEP_UNSPECIFIED).
std::string EnumPrefix(const google::protobuf::EnumDescriptor& descriptor);

// The value's name without the prefix ("CONSENT" for STEP_CONSENT), "-" for
// the zero value and "?<number>" for a number this build does not know.
std::string ShortEnumName(const google::protobuf::EnumDescriptor& descriptor,
                          int value);

// Reads an enum value by name, case-insensitively, with or without the
// prefix ("consent", "CONSENT", "STEP_CONSENT"). INVALID_ARGUMENT naming the
// accepted values otherwise.
absl::StatusOr<int> ParseEnumArg(
    const google::protobuf::EnumDescriptor& descriptor, absl::string_view text);

// ---- Text -----------------------------------------------------------------

// Columns a UTF-8 string takes on a terminal, counted as code points (wide
// East Asian characters are not special-cased).
size_t DisplayWidth(absl::string_view text);

// A byte count for people: "812 B", "4.2 KiB", "1.5 GiB".
std::string FormatBytes(uint64_t bytes);

// `text`, or "-" when it is empty.
std::string OrDash(absl::string_view text);

// Plain text table: columns are as wide as their widest cell, separated by
// two spaces; the last column is not padded. Control characters in cells
// become spaces so that every row stays on one line.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // REQUIRES: cells.size() equals the number of headers.
  void AddRow(std::vector<std::string> cells);

  bool empty() const { return rows_.empty(); }
  size_t size() const { return rows_.size(); }

  // Writes the header line and every row.
  void Print(std::ostream& out) const;

 private:
  void PrintRow(std::ostream& out, const std::vector<std::string>& cells,
                const std::vector<size_t>& widths) const;

  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Lines of "key  value" with the values aligned.
using KeyValues = std::vector<std::pair<std::string, std::string>>;
void PrintKeyValues(std::ostream& out, const KeyValues& pairs);

// ---- JSON -----------------------------------------------------------------

// The message as protobuf JSON on one line, with proto field names
// ("event_id", not "eventId") and enum names. Fields at their default value
// are left out, as the protobuf JSON mapping does. INTERNAL if the message
// cannot be printed (e.g. a string field holding invalid UTF-8).
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

}  // namespace authtrail::cli

#endif  // AUTHTRAIL_CLI_FORMAT_H_
