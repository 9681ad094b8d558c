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

}  // namespace

absl::Status ProjectionWriter::Apply(const RecordedEvent& recorded) {
  if (absl::Status s = WriteIndexes(recorded); !s.ok()) return s;
  if (absl::Status s = ReduceInto(recorded); !s.ok()) return s;
  return CountFailure(recorded);
}

absl::StatusOr<std::string> ProjectionWriter::Get(
    rocksdb::ColumnFamilyHandle* cf, const std::string& key) {
  std::string value;
  rocksdb::Status s = indexed_ != nullptr
                          ? indexed_->GetFromBatchAndDB(
                                db_, rocksdb::ReadOptions(), cf, key, &value)
                          : db_->Get(rocksdb::ReadOptions(), cf, key, &value);
  if (s.IsNotFound()) return std::string();
  if (!s.ok()) return FromRocks(s);
  return value;
}

absl::Status ProjectionWriter::Put(rocksdb::ColumnFamilyHandle* cf,
                                   const std::string& key,
                                   const std::string& value) {
  return FromRocks(indexed_ != nullptr ? indexed_->Put(cf, key, value)
                                       : plain_->Put(cf, key, value));
}

absl::Status ProjectionWriter::Increment(rocksdb::ColumnFamilyHandle* cf,
                                         const std::string& key) {
  auto& counters =
      cf == cf_.timeline ? timeline_counters_ : connection_counters_;
  auto it = counters.find(key);
  if (it == counters.end()) {
    absl::StatusOr<std::string> value = Get(cf, key);
    if (!value.ok()) return value.status();
    it = counters.emplace(key, GetFixed64(*value).value_or(0)).first;
  }
  ++it->second;
  return absl::OkStatus();
}

template <typename Record>
absl::StatusOr<Record*> ProjectionWriter::Load(
    rocksdb::ColumnFamilyHandle* cf, const std::string& key,
    std::unordered_map<std::string, Record>* cache, bool* created) {
  *created = false;
  auto it = cache->find(key);
  if (it != cache->end()) return &it->second;
  absl::StatusOr<std::string> value = Get(cf, key);
  if (!value.ok()) return value.status();
  Record record;
  if (!record.ParseFromString(*value)) {
    return absl::DataLossError(
        absl::StrCat("malformed record in ", cf->GetName()));
  }
  *created = value->empty();
  return &cache->emplace(key, std::move(record)).first->second;
}

absl::Status ProjectionWriter::Finish() {
  for (const auto& [key, record] : connections_) {
    if (absl::Status s = Put(cf_.connections, key, SerializeStable(record));
        !s.ok()) {
      return s;
    }
  }
  for (const auto& [key, record] : sessions_) {
    if (absl::Status s = Put(cf_.sessions, key, SerializeStable(record));
        !s.ok()) {
      return s;
    }
  }
  for (auto* counters : {&connection_counters_, &timeline_counters_}) {
    rocksdb::ColumnFamilyHandle* cf =
        counters == &timeline_counters_ ? cf_.timeline : cf_.connections;
    for (const auto& [key, count] : *counters) {
      std::string encoded;
      PutFixed64(&encoded, count);
      if (absl::Status s = Put(cf, key, encoded); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ProjectionWriter::WriteIndexes(const RecordedEvent& recorded) {
  const AuthEvent& event = recorded.event();
  for (const IndexFor& index : IndexesOf(event)) {
    std::string key = IndexKey(index.tag, index.id ? *index.id : "",
                               event.occurred_at(), recorded.position());
    if (absl::Status s = Put(cf_.index, key, ""); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ProjectionWriter::ReduceInto(const RecordedEvent& recorded) {
  const AuthEvent& e = recorded.event();
  bool created = false;
  if (!e.connection_id().empty()) {
    absl::StatusOr<ConnectionRecord*> record =
        Load(cf_.connections, ConnectionKey(e.connection_id()), &connections_,
             &created);
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
        Load(cf_.sessions, e.session_id(), &sessions_, &created);
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
