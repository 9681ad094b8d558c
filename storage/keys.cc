#include "storage/keys.h"

namespace authtrail::storage {
namespace {

constexpr uint64_t kSignBit = uint64_t{1} << 63;

uint64_t GetBigEndian64(std::string_view in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value = (value << 8) | static_cast<unsigned char>(in[i]);
  }
  return value;
}

uint32_t GetBigEndian32(std::string_view in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<unsigned char>(in[i]);
  }
  return value;
}

int64_t GetSignedBigEndian(std::string_view in) {
  return static_cast<int64_t>(GetBigEndian64(in) ^ kSignBit);
}

// Reads an id segment from the front of `in`; advances `in`.
std::optional<std::string_view> ConsumeId(std::string_view* in) {
  if (in->size() < 2) return std::nullopt;
  size_t len = (static_cast<unsigned char>((*in)[0]) << 8) |
               static_cast<unsigned char>((*in)[1]);
  if (in->size() < 2 + len) return std::nullopt;
  std::string_view id = in->substr(2, len);
  in->remove_prefix(2 + len);
  return id;
}

}  // namespace

void PutFixed64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

std::optional<uint64_t> GetFixed64(std::string_view in) {
  if (in.size() != 8) return std::nullopt;
  return GetBigEndian64(in);
}

void AppendPosition(std::string* out, uint64_t position) {
  PutFixed64(out, position);
}

void AppendSignedBigEndian(std::string* out, int64_t value) {
  PutFixed64(out, static_cast<uint64_t>(value) ^ kSignBit);
}

void AppendTime(std::string* out, const google::protobuf::Timestamp& time) {
  AppendSignedBigEndian(out, time.seconds());
  uint32_t nanos = static_cast<uint32_t>(time.nanos());
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((nanos >> shift) & 0xff));
  }
}

void AppendId(std::string* out, std::string_view id) {
  out->push_back(static_cast<char>((id.size() >> 8) & 0xff));
  out->push_back(static_cast<char>(id.size() & 0xff));
  out->append(id);
}

std::string LogKey(uint64_t position) {
  std::string key;
  AppendPosition(&key, position);
  return key;
}

std::optional<uint64_t> DecodeLogKey(std::string_view key) {
  return GetFixed64(key);
}

std::string IndexPrefix(IndexTag tag, std::string_view id) {
  std::string key(1, static_cast<char>(tag));
  if (tag != IndexTag::kAll) AppendId(&key, id);
  return key;
}

void AppendIndexKey(std::string* out, IndexTag tag, std::string_view id,
                    const google::protobuf::Timestamp& time,
                    uint64_t position) {
  out->push_back(static_cast<char>(tag));
  if (tag != IndexTag::kAll) AppendId(out, id);
  AppendTime(out, time);
  AppendPosition(out, position);
}

std::string IndexKey(IndexTag tag, std::string_view id,
                     const google::protobuf::Timestamp& time,
                     uint64_t position) {
  std::string key;
  AppendIndexKey(&key, tag, id, time, position);
  return key;
}

std::optional<uint64_t> IndexKeyPosition(std::string_view key) {
  if (key.size() < 8) return std::nullopt;
  return GetBigEndian64(key.substr(key.size() - 8));
}

std::optional<IndexEntry> DecodeIndexSuffix(std::string_view prefix,
                                            std::string_view key) {
  if (key.size() != prefix.size() + 20 ||
      key.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  std::string_view rest = key.substr(prefix.size());
  IndexEntry entry;
  entry.time.set_seconds(GetSignedBigEndian(rest.substr(0, 8)));
  entry.time.set_nanos(static_cast<int32_t>(GetBigEndian32(rest.substr(8))));
  entry.position = GetBigEndian64(rest.substr(12));
  return entry;
}

std::string TimelinePrefix(TimelineTag tag, std::string_view id) {
  std::string key(1, static_cast<char>(tag));
  AppendId(&key, id);
  return key;
}

std::string TimelineKey(TimelineTag tag, std::string_view id, int64_t minute,
                        std::string_view error_code) {
  std::string key = TimelinePrefix(tag, id);
  AppendSignedBigEndian(&key, minute);
  AppendId(&key, error_code);
  return key;
}

std::optional<TimelineEntry> DecodeTimelineSuffix(std::string_view prefix,
                                                  std::string_view key) {
  if (key.size() < prefix.size() + 8 ||
      key.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  std::string_view rest = key.substr(prefix.size());
  TimelineEntry entry;
  entry.minute = GetSignedBigEndian(rest.substr(0, 8));
  rest.remove_prefix(8);
  std::optional<std::string_view> code = ConsumeId(&rest);
  if (!code.has_value() || !rest.empty()) return std::nullopt;
  entry.error_code = std::string(*code);
  return entry;
}

std::string PatientConnectionsPrefix(std::string_view patient_id) {
  std::string key(1, '\0');
  AppendId(&key, patient_id);
  return key;
}

std::string PatientConnectionKey(std::string_view patient_id,
                                 std::string_view connection_id) {
  std::string key = PatientConnectionsPrefix(patient_id);
  AppendId(&key, connection_id);
  return key;
}

std::string ConnectionKey(std::string_view connection_id) {
  std::string key(1, '\1');
  key.append(connection_id);
  return key;
}

std::string CounterKey(std::string_view name) {
  std::string key(1, '\2');
  key.append(name);
  return key;
}

std::string PrefixSuccessor(std::string_view prefix) {
  std::string out(prefix);
  while (!out.empty()) {
    unsigned char last = static_cast<unsigned char>(out.back());
    if (last != 0xff) {
      out.back() = static_cast<char>(last + 1);
      return out;
    }
    out.pop_back();
  }
  return out;
}

}  // namespace authtrail::storage
