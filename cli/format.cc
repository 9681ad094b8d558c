#include "cli/format.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "storage/proto_time.h"

namespace authtrail::cli {
namespace {

constexpr char kTimeFormat[] = "%Y-%m-%dT%H:%M:%E3SZ";
constexpr absl::string_view kNowWord = "now";

// Seconds in one unit letter of a duration argument; 0 for a bad letter.
int64_t SecondsPerUnit(char unit) {
  switch (unit) {
    case 's':
      return 1;
    case 'm':
      return 60;
    case 'h':
      return 3600;
    case 'd':
      return 86400;
    default:
      return 0;
  }
}

// Replaces tabs, newlines and other control bytes so that a cell is one line.
std::string OneLineCell(std::string cell) {
  for (char& c : cell) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return cell;
}

}  // namespace

std::string FormatRfc3339(absl::Time time) {
  return absl::FormatTime(kTimeFormat, time, absl::UTCTimeZone());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp) {
  if (timestamp.seconds() == 0 && timestamp.nanos() == 0) return "-";
  return FormatRfc3339(FromTimestamp(timestamp));
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  return storage::ToProtoTime(time);
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp) {
  return storage::FromProtoTime(timestamp);
}

absl::StatusOr<absl::Time> ParseTimeArg(absl::string_view text,
                                        absl::Time now) {
  const absl::string_view arg = absl::StripAsciiWhitespace(text);
  if (arg == kNowWord) return now;
  if (absl::StartsWith(arg, "now-")) {
    absl::StatusOr<absl::Duration> ago = ParseDurationArg(arg.substr(4));
    if (!ago.ok()) return ago.status();
    return now - *ago;
  }
  absl::Time time;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, arg, &time, &error)) return time;
  if (absl::ParseTime("%Y-%m-%d", arg, absl::UTCTimeZone(), &time, &error)) {
    return time;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "bad time '", arg,
      "': want RFC 3339 (2024-05-01T12:00:00Z), a date, now or now-2h"));
}

absl::StatusOr<absl::Duration> ParseDurationArg(absl::string_view text) {
  const absl::string_view arg = absl::StripAsciiWhitespace(text);
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad duration '", arg, "': want e.g. 90s, 15m, 1h, 1h30m or 1d"));
  };
  int64_t total_seconds = 0;
  size_t i = 0;
  while (i < arg.size()) {
    const size_t digits_begin = i;
    while (i < arg.size() && absl::ascii_isdigit(arg[i])) ++i;
    int64_t amount = 0;
    if (i == digits_begin || i == arg.size() ||
        !absl::SimpleAtoi(arg.substr(digits_begin, i - digits_begin),
                          &amount)) {
      return bad();
    }
    const int64_t unit = SecondsPerUnit(arg[i++]);
    if (unit == 0 || amount > (int64_t{1} << 40) / unit) return bad();
    total_seconds += amount * unit;
  }
  if (total_seconds <= 0) return bad();
  return absl::Seconds(total_seconds);
}

std::string FormatShortDuration(absl::Duration duration) {
  int64_t seconds = absl::ToInt64Seconds(duration);
  if (seconds <= 0) {
    // Below a second: whole milliseconds ("421ms"), or whole microseconds
    // below a millisecond, never the nanosecond digits of a measured time.
    absl::Duration unit = duration >= absl::Milliseconds(1)
                              ? absl::Milliseconds(1)
                              : absl::Microseconds(1);
    return absl::FormatDuration(absl::Trunc(duration + unit / 2, unit));
  }
  std::string out;
  for (const char unit : {'d', 'h', 'm', 's'}) {
    const int64_t per = SecondsPerUnit(unit);
    if (seconds >= per) {
      absl::StrAppend(&out, seconds / per, std::string(1, unit));
      seconds %= per;
    }
  }
  return out;
}

std::string EnumPrefix(const google::protobuf::EnumDescriptor& descriptor) {
  const google::protobuf::EnumValueDescriptor* zero =
      descriptor.FindValueByNumber(0);
  if (zero == nullptr) return "";
  absl::string_view name = zero->name();
  if (!absl::ConsumeSuffix(&name, "UNSPECIFIED")) return "";
  return std::string(name);
}

std::string ShortEnumName(const google::protobuf::EnumDescriptor& descriptor,
                          int value) {
  if (value == 0) return "-";
  const google::protobuf::EnumValueDescriptor* found =
      descriptor.FindValueByNumber(value);
  if (found == nullptr) return absl::StrCat("?", value);
  absl::string_view name = found->name();
  absl::ConsumePrefix(&name, EnumPrefix(descriptor));
  return std::string(name);
}

absl::StatusOr<int> ParseEnumArg(
    const google::protobuf::EnumDescriptor& descriptor,
    absl::string_view text) {
  const std::string upper =
      absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  const std::string prefix = EnumPrefix(descriptor);
  const google::protobuf::EnumValueDescriptor* found =
      descriptor.FindValueByName(upper);
  if (found == nullptr) found = descriptor.FindValueByName(prefix + upper);
  if (found != nullptr && found->number() != 0) return found->number();

  std::vector<std::string> names;
  for (int i = 0; i < descriptor.value_count(); ++i) {
    if (descriptor.value(i)->number() == 0) continue;
    names.push_back(ShortEnumName(descriptor, descriptor.value(i)->number()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", absl::AsciiStrToLower(descriptor.name()), " '",
                   text, "': one of ", absl::StrJoin(names, ", ")));
}

size_t DisplayWidth(absl::string_view text) {
  // Every code point has exactly one byte that is not a continuation byte
  // (10xxxxxx).
  return std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  });
}

std::string FormatBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  auto scaled = static_cast<double>(bytes);
  size_t unit = 0;
  while (scaled >= 1024 && unit + 1 < std::size(kUnits)) {
    scaled /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", scaled, kUnits[unit]);
}

std::string OrDash(absl::string_view text) {
  return text.empty() ? "-" : std::string(text);
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (std::string& cell : cells) cell = OneLineCell(std::move(cell));
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) {
    widths[i] = DisplayWidth(headers_[i]);
    for (const auto& row : rows_) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  PrintRow(out, headers_, widths);
  for (const auto& row : rows_) PrintRow(out, row, widths);
}

void Table::PrintRow(std::ostream& out, const std::vector<std::string>& cells,
                     const std::vector<size_t>& widths) const {
  std::string line;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) line.append("  ");
    line.append(cells[i]);
    if (i + 1 < cells.size()) {
      line.append(widths[i] - DisplayWidth(cells[i]), ' ');
    }
  }
  // An empty last cell would leave the padding behind.
  line.erase(line.find_last_not_of(' ') + 1);
  out << line << '\n';
}

void PrintKeyValues(std::ostream& out, const KeyValues& pairs) {
  size_t width = 0;
  for (const auto& [key, value] : pairs) {
    width = std::max(width, DisplayWidth(key));
  }
  for (const auto& [key, value] : pairs) {
    out << key << std::string(width - DisplayWidth(key) + 2, ' ')
        << OneLineCell(value) << '\n';
  }
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ",
                                            message.GetTypeName(),
                                            " as JSON: ", status.ToString()));
  }
  return json;
}

}  // namespace authtrail::cli
