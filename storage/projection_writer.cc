#include "storage/projection_writer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "authtrail/records/v1/records.pb.h"
#include "storage/keys.h"
#include "storage/reducers.h"

namespace authtrail::storage {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::RecordedEvent;

// Whether an index tag applies to `event`, and with which id.
struct IndexFor {
  IndexTag tag;
  const std::string* id;
};

// TODO(key-shape): an event writes up to nine index entries beside its log
// record, id entry and records; RocksDB's memtable inserts of these keys
// cost more CPU than the whole gRPC call (docs/BENCHMARKS.md). Folding the
// failure indexes into the main ones and serving "all events" from the log
// would cut them, at the price of a new projection version.
std::vector<IndexFor> IndexesOf(const AuthEvent& e) {
  std::vector<IndexFor> out;
  out.push_back({IndexTag::kAll, nullptr});
  auto add = [&out](IndexTag tag, const std::string& id) {
    if (!id.empty()) out.push_back({tag, &id});
  };
  add(IndexTag::kPatient, e.patient_id());
  add(IndexTag::kConnection, e.connection_id());
  add(IndexTag::kSession, e.session_id());
  add(IndexTag::kRequest, e.request_id());
  add(IndexTag::kSource, e.source().id());
  add(IndexTag::kErrorCode, e.error_code());
  if (IsFailure(e)) {
    add(IndexTag::kPatientFailure, e.patient_id());
    add(IndexTag::kConnectionFailure, e.connection_id());
    add(IndexTag::kSourceFailure, e.source().id());
  }
  return out;
}

int64_t MinuteOf(const google::protobuf::Timestamp& ts) {
  int64_t s = ts.seconds();
  return s >= 0 ? s / 60 : -((-s + 59) / 60);
}

// Decoding of stored values; false when malformed.
bool Decode(const std::string& bytes, uint64_t* counter) {
  *counter = bytes.empty() ? 0 : GetFixed64(bytes).value_or(0);
  return bytes.empty() || GetFixed64(bytes).has_value();
}
template <typename Record>
bool Decode(const std::string& bytes, Record* record) {
  return record->ParseFromString(bytes);
}

std::string Encode(uint64_t counter) {
  std::string out;
  PutFixed64(&out, counter);
  return out;
}
template <typename Record>
std::string Encode(const Record& record) {
  return SerializeStable(record);
}

}  // namespace

absl::Status ProjectionWriter::Apply(const RecordedEvent& recorded,
                                     std::string_view record) {
  if (absl::Status s = WriteIndexes(recorded, record); !s.ok()) return s;
  if (absl::Status s = ReduceInto(recorded); !s.ok()) return s;
  return CountFailure(recorded);
}

absl::Status ProjectionWriter::Put(rocksdb::ColumnFamilyHandle* cf,
                                   std::string key, std::string value) {
  batch_->Put(cf, std::move(key), std::move(value));
  return absl::OkStatus();
}

template <typename Value>
absl::StatusOr<Value*> ProjectionWriter::Load(
    rocksdb::ColumnFamilyHandle* cf, const std::string& key,
    std::unordered_map<std::string, ProjectionState::Entry<Value>>* entries,
    Changed<Value>* changed, bool* created) {
  *created = false;
  auto it = entries->find(key);
  if (it == entries->end()) {
    std::string bytes;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf, key, &bytes);
    if (!s.ok() && !s.IsNotFound()) return FromRocks(s);
    ProjectionState::Entry<Value> entry;
    if (!Decode(bytes, &entry.value)) {
      return absl::DataLossError(
          absl::StrCat("malformed value in ", cf->GetName()));
    }
    *created = bytes.empty();
    it = entries->emplace(key, std::move(entry)).first;
  }
  if (!it->second.dirty) {
    it->second.dirty = true;
    changed->emplace_back(&it->first, &it->second);
  }
  return &it->second.value;
}

absl::Status ProjectionWriter::Increment(rocksdb::ColumnFamilyHandle* cf,
                                         const std::string& key) {
  bool timeline = cf == cf_.timeline;
  bool created = false;
  absl::StatusOr<uint64_t*> counter =
      timeline ? Load(cf, key, &state_->timeline_counters_,
                      &changed_timeline_counters_, &created)
               : Load(cf, key, &state_->connection_counters_,
                      &changed_connection_counters_, &created);
  if (!counter.ok()) return counter.status();
  ++**counter;
  return absl::OkStatus();
}

absl::Status ProjectionWriter::Finish() {
  absl::Status status;
  auto flush = [&](rocksdb::ColumnFamilyHandle* cf, auto& changed) {
    for (auto& [key, entry] : changed) {
      entry->dirty = false;
      if (status.ok()) status = Put(cf, *key, Encode(entry->value));
    }
    changed.clear();
  };
  flush(cf_.connections, changed_connections_);
  flush(cf_.sessions, changed_sessions_);
  flush(cf_.connections, changed_connection_counters_);
  flush(cf_.timeline, changed_timeline_counters_);
  return status;
}

absl::Status ProjectionWriter::WriteIndexes(const RecordedEvent& recorded,
                                            std::string_view record) {
  const AuthEvent& event = recorded.event();
  for (const IndexFor& index : IndexesOf(event)) {
    key_.clear();
    AppendIndexKey(&key_, index.tag, index.id ? *index.id : "",
                   event.occurred_at(), recorded.position());
    std::string_view value =
        IndexCarriesRecord(index.tag) ? record : std::string_view();
    if (index_sink_ != nullptr) {
      index_sink_->Add(key_, value);
    } else if (absl::Status s = Put(cf_.index, key_, std::string(value));
               !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ProjectionWriter::ReduceInto(const RecordedEvent& recorded) {
  const AuthEvent& e = recorded.event();
  bool created = false;
  if (!e.connection_id().empty()) {
    absl::StatusOr<ConnectionRecord*> record =
        Load(cf_.connections, ConnectionKey(e.connection_id()),
             &state_->connections_, &changed_connections_, &created);
    if (!record.ok()) return record.status();
    if (created) {
      absl::Status s =
          Increment(cf_.connections, CounterKey(kConnectionCounter));
      if (!s.ok()) return s;
    }
    std::string patient_before = (*record)->view().patient_id();
    ReduceConnection(recorded, *record);
    const std::string& patient = (*record)->view().patient_id();
    if (patient != patient_before && !patient.empty()) {
      absl::Status s =
          Put(cf_.connections, PatientConnectionKey(patient, e.connection_id()),
              "");
      if (!s.ok()) return s;
    }
  }
  if (!e.session_id().empty()) {
    absl::StatusOr<SessionRecord*> record =
        Load(cf_.sessions, e.session_id(), &state_->sessions_,
             &changed_sessions_, &created);
    if (!record.ok()) return record.status();
    if (created) {
      absl::Status s = Increment(cf_.connections, CounterKey(kSessionCounter));
      if (!s.ok()) return s;
    }
    ReduceSession(recorded, *record);
  }
  return absl::OkStatus();
}

absl::Status ProjectionWriter::CountFailure(const RecordedEvent& recorded) {
  const AuthEvent& e = recorded.event();
  if (!IsFailure(e)) return absl::OkStatus();
  int64_t minute = MinuteOf(e.occurred_at());
  std::pair<TimelineTag, const std::string*> scopes[] = {
      {TimelineTag::kPatient, &e.patient_id()},
      {TimelineTag::kConnection, &e.connection_id()},
      {TimelineTag::kSource, &e.source().id()},
  };
  for (const auto& [tag, id] : scopes) {
    if (id->empty()) continue;
    absl::Status s =
        Increment(cf_.timeline, TimelineKey(tag, *id, minute, e.error_code()));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace authtrail::storage
