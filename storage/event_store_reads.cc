// The read half of EventStore: projection lookups and index scans, each
// against one consistent snapshot. Reads never take the writer's lock.
#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "authtrail/records/v1/records.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "storage/event_store.h"
#include "storage/keys.h"
#include "storage/reducers.h"
#include "storage/store_internal.h"

namespace authtrail::storage {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::EventFilter;
using authtrail::v1::RecordedEvent;
using google::protobuf::Timestamp;

// Most index entries one call examines; bounds the work of filters that
// the chosen index cannot answer alone.
// TODO(filter-index): a step or outcome filter over a large index may use
// up this budget and return a short (even empty) page with a token; an
// index keyed by step and outcome would answer such filters exactly.
constexpr size_t kMaxScannedEntries = 20000;
// Events read from the log per MultiGet.
constexpr size_t kReadChunk = 128;

// A snapshot released when it leaves scope, with read options bound to it.
class SnapshotReader {
 public:
  explicit SnapshotReader(rocksdb::DB* db) : db_(db), snapshot_(db) {
    options_.snapshot = snapshot_.snapshot();
  }
  const rocksdb::ReadOptions& options() const { return options_; }
  rocksdb::DB* db() const { return db_; }

 private:
  rocksdb::DB* db_;
  rocksdb::ManagedSnapshot snapshot_;
  rocksdb::ReadOptions options_;
};

// Index scan over [lower, upper) in either direction. The bound strings
// are owned here and outlive the iterator.
//
// Newest first is the common order, and a step back in a RocksDB memtable
// is a fresh skiplist search: about 3 us against well under 1 us for a
// step forward (a third of a page of ListEvents went to it). So a reverse
// scan over index keys (prefix, 12-byte time, 8-byte position) reads
// windows of time forward, newest window first, and hands out each
// window's entries from the end. A window starts a second wide and grows
// eightfold while it holds fewer entries than the scan expects to need;
// one denser than kMaxWindowEntries falls back to stepping back, and so
// do scans that expect only a few entries.
class IndexScan {
 public:
  IndexScan(const SnapshotReader& reader, rocksdb::ColumnFamilyHandle* cf,
            std::string lower, std::string upper, bool reverse,
            size_t expected = kReadChunk)
      : lower_(std::move(lower)),
        upper_(std::move(upper)),
        lower_slice_(lower_),
        upper_slice_(upper_),
        reverse_(reverse),
        expected_(std::max<size_t>(expected, 1)) {
    rocksdb::ReadOptions options = reader.options();
    options.iterate_lower_bound = &lower_slice_;
    if (!upper_.empty()) options.iterate_upper_bound = &upper_slice_;
    it_.reset(reader.db()->NewIterator(options, cf));
    if (!reverse_) {
      it_->SeekToFirst();
      return;
    }
    it_->SeekToLast();
    // Nothing to read, or too few entries expected to be worth a window.
    if (!it_->Valid() || upper_.empty() || expected_ < kMinWindowed) return;
    std::string_view newest = it_->key().ToStringView();
    if (newest.size() < kTimeAndPosition) return;
    prefix_ = std::string(newest.substr(0, newest.size() - kTimeAndPosition));
    std::optional<IndexEntry> entry = DecodeIndexSuffix(prefix_, newest);
    if (!entry.has_value()) return;
    windows_ = true;
    window_end_ = upper_;
    window_seconds_ = entry->time.seconds() + 1;
    FillWindows();
  }

  bool Valid() const { return windows_ ? !window_.empty() : it_->Valid(); }
  std::string_view key() const {
    return windows_ ? std::string_view(window_.back().first)
                    : it_->key().ToStringView();
  }
  std::string_view value() const {
    return windows_ ? std::string_view(window_.back().second)
                    : it_->value().ToStringView();
  }
  void Next() {
    if (windows_) {
      window_.pop_back();
      if (window_.empty()) FillWindows();
    } else if (reverse_) {
      it_->Prev();
    } else {
      it_->Next();
    }
  }
  absl::Status status() const { return FromRocks(it_->status()); }

 private:
  static constexpr size_t kTimeAndPosition = 20;
  static constexpr size_t kMaxWindowEntries = 1024;
  static constexpr size_t kMinWindowed = 8;

  // Reads windows, newest first, until one holds an entry or the lower
  // bound is reached.
  void FillWindows() {
    while (window_.empty() && window_end_ > lower_ && it_->status().ok()) {
      // Seconds far below any real time stop at the lower bound.
      window_seconds_ = window_seconds_ > kOldest + width_
                            ? window_seconds_ - width_
                            : kOldest;
      Timestamp from;
      from.set_seconds(window_seconds_);
      std::string start = prefix_;
      AppendTime(&start, from);
      if (window_seconds_ == kOldest || start < lower_) start = lower_;
      for (it_->Seek(start);
           it_->Valid() && it_->key().ToStringView() < window_end_;
           it_->Next()) {
        if (window_.size() >= kMaxWindowEntries) {
          // Too dense to hold: step back from the window's end instead.
          window_.clear();
          windows_ = false;
          it_->SeekForPrev(window_end_);
          if (it_->Valid() && it_->key().ToStringView() >= window_end_) {
            it_->Prev();
          }
          return;
        }
        window_.emplace_back(it_->key().ToString(), it_->value().ToString());
      }
      window_end_ = std::move(start);
      if (window_.size() < expected_ && width_ < (int64_t{1} << 40)) {
        width_ *= 8;
      }
    }
  }

  static constexpr int64_t kOldest = -(int64_t{1} << 50);

  std::string lower_;
  std::string upper_;
  rocksdb::Slice lower_slice_;
  rocksdb::Slice upper_slice_;
  bool reverse_;
  size_t expected_;
  std::unique_ptr<rocksdb::Iterator> it_;

  // Reverse scans read in windows (see above).
  bool windows_ = false;
  std::string prefix_;
  std::string window_end_;      // exclusive end of the next window
  int64_t window_seconds_ = 0;  // start of the window last read
  int64_t width_ = 1;           // seconds
  std::vector<std::pair<std::string, std::string>> window_;  // oldest first
};

struct IndexChoice {
  IndexTag tag;
  std::string id;
};

// The most selective index the filter allows.
IndexChoice ChooseIndex(const EventFilter& f) {
  if (!f.session_id().empty()) return {IndexTag::kSession, f.session_id()};
  if (!f.request_id().empty()) return {IndexTag::kRequest, f.request_id()};
  if (!f.connection_id().empty()) {
    return {IndexTag::kConnection, f.connection_id()};
  }
  if (!f.patient_id().empty()) return {IndexTag::kPatient, f.patient_id()};
  if (!f.error_code().empty()) return {IndexTag::kErrorCode, f.error_code()};
  if (!f.source_id().empty()) return {IndexTag::kSource, f.source_id()};
  return {IndexTag::kAll, ""};
}

bool Matches(const EventFilter& f, const AuthEvent& e) {
  auto same = [](const std::string& want, const std::string& have) {
    return want.empty() || want == have;
  };
  return same(f.patient_id(), e.patient_id()) &&
         same(f.connection_id(), e.connection_id()) &&
         same(f.session_id(), e.session_id()) &&
         same(f.request_id(), e.request_id()) &&
         same(f.source_id(), e.source().id()) &&
         same(f.error_code(), e.error_code()) &&
         (f.step() == 0 || f.step() == e.step()) &&
         (f.outcome() == 0 || f.outcome() == e.outcome());
}

std::string TimeBound(const std::string& prefix, const Timestamp& time) {
  std::string key = prefix;
  AppendTime(&key, time);
  return key;
}

// Fills in the log records named by `positions`: (*records)[i], when not
// empty, already holds the record (carried by its index entry); the others
// are read from the log with one batched lookup (RocksDB sorts the keys and
// reads each block once). A record is a serialized RecordedEvent, the log
// value without its chain hash; it is not parsed here.
absl::Status ReadRecords(const SnapshotReader& reader,
                         rocksdb::ColumnFamilyHandle* log,
                         const std::vector<uint64_t>& positions,
                         std::vector<std::string>* records) {
  records->resize(positions.size());
  std::vector<size_t> wanted;
  std::vector<std::string> keys;
  for (size_t i = 0; i < positions.size(); ++i) {
    if (!(*records)[i].empty()) continue;
    wanted.push_back(i);
    keys.push_back(LogKey(positions[i]));
  }
  if (wanted.empty()) return absl::OkStatus();
  size_t n = wanted.size();
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  reader.db()->MultiGet(reader.options(), log, n, slices.data(), values.data(),
                        statuses.data(), /*sorted_input=*/false);
  for (size_t j = 0; j < n; ++j) {
    uint64_t position = positions[wanted[j]];
    if (!statuses[j].ok()) {
      return absl::DataLossError(absl::StrCat(
          "index names position ", position,
          " but the log cannot give it: ", statuses[j].ToString()));
    }
    if (values[j].size() <= kChainHashBytes) {
      return absl::DataLossError(
          absl::StrCat("log record ", position, " is too short"));
    }
    (*records)[wanted[j]].assign(
        values[j].ToStringView().substr(kChainHashBytes));
  }
  return absl::OkStatus();
}

// As ReadRecords, then parsed.
absl::Status ReadEvents(const SnapshotReader& reader,
                        rocksdb::ColumnFamilyHandle* log,
                        const std::vector<uint64_t>& positions,
                        std::vector<std::string> records,
                        std::vector<RecordedEvent>* out) {
  if (absl::Status s = ReadRecords(reader, log, positions, &records); !s.ok()) {
    return s;
  }
  out->reserve(out->size() + records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    if (!out->emplace_back().ParseFromString(records[i])) {
      return absl::DataLossError(
          absl::StrCat("log record ", positions[i], " does not parse"));
    }
  }
  return absl::OkStatus();
}

// Reads log records by position, in the order given.
absl::Status ReadLog(const SnapshotReader& reader,
                     rocksdb::ColumnFamilyHandle* log,
                     const std::vector<uint64_t>& positions,
                     std::vector<RecordedEvent>* out) {
  return ReadEvents(reader, log, positions, {}, out);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

TimelineTag TimelineTagFor(TimelineScopeKind kind) {
  switch (kind) {
    case TimelineScopeKind::kPatient:
      return TimelineTag::kPatient;
    case TimelineScopeKind::kConnection:
      return TimelineTag::kConnection;
    case TimelineScopeKind::kSource:
      break;
  }
  return TimelineTag::kSource;
}

IndexTag FailureIndexFor(TimelineScopeKind kind) {
  switch (kind) {
    case TimelineScopeKind::kPatient:
      return IndexTag::kPatientFailure;
    case TimelineScopeKind::kConnection:
      return IndexTag::kConnectionFailure;
    case TimelineScopeKind::kSource:
      break;
  }
  return IndexTag::kSourceFailure;
}

Timestamp MinuteStart(int64_t minute) {
  Timestamp ts;
  ts.set_seconds(minute * 60);
  return ts;
}

// Bytes a message of `size` bytes takes as one element of a repeated
// field numbered below 16 of a response: tag, length and body.
size_t FramedSize(size_t size) {
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) + size;
}

// Whether every event under `index` matches `filter`: the filter names
// nothing but the index's own id.
bool IndexAnswers(const EventFilter& filter, const IndexChoice& index) {
  EventFilter rest = filter;
  switch (index.tag) {
    case IndexTag::kSession:
      rest.clear_session_id();
      break;
    case IndexTag::kRequest:
      rest.clear_request_id();
      break;
    case IndexTag::kConnection:
      rest.clear_connection_id();
      break;
    case IndexTag::kPatient:
      rest.clear_patient_id();
      break;
    case IndexTag::kErrorCode:
      rest.clear_error_code();
      break;
    case IndexTag::kSource:
      rest.clear_source_id();
      break;
    default:
      break;
  }
  return rest.ByteSizeLong() == 0;
}

// Whether an event matching `filter` is in the index between `lower` and
// `upper`. Examines at most kMaxScannedEntries entries; true when it gave
// up, since more may then follow.
absl::StatusOr<bool> AnyMatch(const SnapshotReader& reader, const Columns& cols,
                              const IndexChoice& index,
                              const std::string& prefix, std::string lower,
                              std::string upper, bool reverse,
                              const EventFilter& filter) {
  bool answers = IndexAnswers(filter, index);
  IndexScan scan(reader, cols.index, std::move(lower), std::move(upper),
                 reverse, answers ? 1 : kReadChunk);
  if (answers) return scan.Valid();
  size_t scanned = 0;
  while (scan.Valid()) {
    std::vector<uint64_t> positions;
    std::vector<std::string> records;
    for (; scan.Valid() && positions.size() < kReadChunk; scan.Next()) {
      if (scanned++ >= kMaxScannedEntries) return true;
      std::optional<IndexEntry> entry = DecodeIndexSuffix(prefix, scan.key());
      if (!entry.has_value()) return absl::DataLossError("malformed index key");
      positions.push_back(entry->position);
      records.emplace_back(scan.value());
    }
    std::vector<RecordedEvent> events;
    if (absl::Status s = ReadEvents(reader, cols.log, positions,
                                    std::move(records), &events);
        !s.ok()) {
      return s;
    }
    for (const RecordedEvent& e : events) {
      if (Matches(filter, e.event())) return true;
    }
  }
  if (absl::Status s = scan.status(); !s.ok()) return s;
  return false;
}

}  // namespace

absl::StatusOr<RecordedEvent> EventStore::ReadEvent(uint64_t position) const {
  std::shared_ptr<const Columns> cols = Cols();
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), cols->log, LogKey(position), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no event at position ", position));
  }
  if (!s.ok()) return FromRocks(s);
  RecordedEvent event;
  if (absl::Status st = DecodeLogValue(value, position, &event); !st.ok()) {
    return st;
  }
  return event;
}

absl::StatusOr<authtrail::v1::Connection> EventStore::GetConnection(
    std::string_view connection_id) const {
  std::shared_ptr<const Columns> cols = Cols();
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cols->connections,
                               ConnectionKey(connection_id), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no event named connection_id \"",
                                            std::string(connection_id), "\""));
  }
  if (!s.ok()) return FromRocks(s);
  ConnectionRecord record;
  if (!record.ParseFromString(value)) {
    return absl::DataLossError("malformed connection record");
  }
  return ViewConnection(std::move(record), {options_.stall_window, Now()});
}

absl::StatusOr<std::vector<authtrail::v1::Connection>>
EventStore::ListConnections(std::string_view patient_id, size_t limit) const {
  std::shared_ptr<const Columns> cols = Cols();
  SnapshotReader reader(db_.get());
  std::string prefix = PatientConnectionsPrefix(patient_id);
  IndexScan scan(reader, cols->connections, prefix, PrefixSuccessor(prefix),
                 /*reverse=*/false);
  // The keys sort by id length first (ids are length-prefixed), so the
  // patient's ids are all read and sorted before the limit applies.
  std::vector<std::string> ids;
  for (; scan.Valid(); scan.Next()) {
    std::string_view rest = scan.key().substr(prefix.size());
    if (rest.size() < 2) return absl::DataLossError("malformed patient key");
    ids.emplace_back(rest.substr(2));
  }
  if (absl::Status s = scan.status(); !s.ok()) return s;
  std::sort(ids.begin(), ids.end());
  if (ids.size() > limit) ids.resize(limit);
  std::vector<std::string> keys;
  keys.reserve(ids.size());
  for (const std::string& id : ids) keys.push_back(ConnectionKey(id));

  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::ColumnFamilyHandle*> cfs(keys.size(), cols->connections);
  std::vector<std::string> values;
  std::vector<rocksdb::Status> statuses =
      db_->MultiGet(reader.options(), cfs, slices, &values);
  std::vector<authtrail::v1::Connection> out;
  ReadPolicy policy{options_.stall_window, Now()};
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!statuses[i].ok()) return FromRocks(statuses[i]);
    ConnectionRecord record;
    if (!record.ParseFromString(values[i])) {
      return absl::DataLossError("malformed connection record");
    }
    out.push_back(ViewConnection(std::move(record), policy));
  }
  return out;
}

absl::StatusOr<EventPage> EventStore::ListEvents(
    const EventQuery& query) const {
  std::shared_ptr<const Columns> cols = Cols();
  SnapshotReader reader(db_.get());
  IndexChoice index = ChooseIndex(query.filter);
  std::string prefix = IndexPrefix(index.tag, index.id);
  std::string lower = query.start ? TimeBound(prefix, *query.start) : prefix;
  std::string upper =
      query.end ? TimeBound(prefix, *query.end) : PrefixSuccessor(prefix);
  if (query.after.has_value()) {
    const Cursor& c = *query.after;
    if (query.oldest_first) {
      lower = std::max(lower,
                       IndexKey(index.tag, index.id, c.time, c.position + 1));
    } else {
      upper =
          std::min(upper, IndexKey(index.tag, index.id, c.time, c.position));
    }
  }
  EventPage page;
  if (lower >= upper) return page;
  IndexScan scan(reader, cols->index, lower, upper, !query.oldest_first,
                 query.limit + 1);
  bool answers = IndexAnswers(query.filter, index);

  size_t scanned = 0;
  size_t bytes = 0;
  std::optional<Cursor> last_scanned;
  Cursor last_returned;
  bool full = false;
  std::optional<bool> more_known;  // whether a matching event follows
  while (scan.Valid() && !full && scanned < kMaxScannedEntries) {
    std::vector<uint64_t> positions;
    std::vector<Cursor> cursors;
    std::vector<std::string> events;
    // When every entry matches, read no further than the page needs.
    size_t chunk = answers
                       ? std::clamp<size_t>(query.limit - page.events.size(), 1,
                                            kReadChunk)
                       : kReadChunk;
    for (; scan.Valid() && positions.size() < chunk &&
           scanned < kMaxScannedEntries;
         scan.Next(), ++scanned) {
      std::optional<IndexEntry> entry = DecodeIndexSuffix(prefix, scan.key());
      if (!entry.has_value()) return absl::DataLossError("malformed index key");
      positions.push_back(entry->position);
      cursors.push_back({entry->time, entry->position});
      events.emplace_back(scan.value());
    }
    if (absl::Status s = ReadRecords(reader, cols->log, positions, &events);
        !s.ok()) {
      return s;
    }
    RecordedEvent parsed;
    for (size_t i = 0; i < events.size(); ++i) {
      last_scanned = cursors[i];
      if (!answers) {
        // The filter names fields the index does not hold: look inside.
        if (!parsed.ParseFromString(events[i])) {
          return absl::DataLossError(
              absl::StrCat("log record ", positions[i], " does not parse"));
        }
        if (!Matches(query.filter, parsed.event())) continue;
      }
      size_t size = FramedSize(events[i].size());
      if (!page.events.empty() && bytes + size > query.max_bytes) {
        full = true;  // cut by bytes: this event starts the next page
        if (answers) more_known = true;
        break;
      }
      bytes += size;
      page.events.push_back(std::move(events[i]));
      last_returned = cursors[i];
      if (page.events.size() >= query.limit) {
        full = true;
        // Stop exactly after this event; what was read past it is re-read
        // by the next page. When every entry matches, the next entry of
        // the scan says whether another page follows.
        if (answers) more_known = i + 1 < events.size() || scan.Valid();
        break;
      }
    }
  }
  if (absl::Status s = scan.status(); !s.ok()) return s;

  bool more = full || (scan.Valid() && scanned >= kMaxScannedEntries);
  if (full) {
    // The next page starts after the last event returned.
    const Cursor c = last_returned;
    page.next = c;
    // Whether a matching event follows: the index alone cannot tell when
    // the filter has fields the index does not hold.
    std::string after_last =
        IndexKey(index.tag, index.id, c.time,
                 query.oldest_first ? c.position + 1 : c.position);
    std::string probe_lower = query.oldest_first ? after_last : lower;
    std::string probe_upper = query.oldest_first ? upper : after_last;
    if (more_known.has_value()) {
      if (!*more_known) page.next.reset();
    } else if (probe_lower >= probe_upper) {
      page.next.reset();
    } else {
      absl::StatusOr<bool> more_match =
          AnyMatch(reader, *cols, index, prefix, std::move(probe_lower),
                   std::move(probe_upper), !query.oldest_first, query.filter);
      if (!more_match.ok()) return more_match.status();
      if (!*more_match) page.next.reset();
    }
  } else if (more && last_scanned.has_value()) {
    page.next = last_scanned;
  }
  return page;
}

absl::StatusOr<authtrail::v1::SessionDiagnosis> EventStore::DiagnoseSession(
    std::string_view session_id) const {
  std::shared_ptr<const Columns> cols = Cols();
  SnapshotReader reader(db_.get());
  std::string value;
  rocksdb::Status s = db_->Get(reader.options(), cols->sessions,
                               std::string(session_id), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no event carried session_id \"",
                                            std::string(session_id), "\""));
  }
  if (!s.ok()) return FromRocks(s);
  SessionRecord record;
  if (!record.ParseFromString(value)) {
    return absl::DataLossError("malformed session record");
  }

  // Question five: refreshes of the connection after this session's
  // exchange, until a newer attempt takes over.
  RefreshFinding refresh;
  bool issued =
      record.steps_size() > authtrail::v1::STEP_TOKEN_EXCHANGE &&
      record.steps(authtrail::v1::STEP_TOKEN_EXCHANGE).has_succeeded();
  if (issued && !record.connection_id().empty()) {
    const auto& exchange =
        record.steps(authtrail::v1::STEP_TOKEN_EXCHANGE).succeeded();
    std::string prefix =
        IndexPrefix(IndexTag::kConnection, record.connection_id());
    IndexScan scan(reader, cols->index,
                   TimeBound(prefix, exchange.occurred_at()),
                   PrefixSuccessor(prefix), /*reverse=*/false);
    bool go_on = true;
    for (size_t n = 0; go_on && scan.Valid() && n < kMaxScannedEntries;) {
      std::vector<uint64_t> positions;
      std::vector<std::string> records;
      for (; scan.Valid() && positions.size() < kReadChunk; scan.Next(), ++n) {
        positions.push_back(IndexKeyPosition(scan.key()).value_or(0));
        records.emplace_back(scan.value());
      }
      std::vector<RecordedEvent> events;
      if (absl::Status st = ReadEvents(reader, cols->log, positions,
                                       std::move(records), &events);
          !st.ok()) {
        return st;
      }
      for (const RecordedEvent& e : events) {
        if (IsAttemptStep(e.event().step()) &&
            e.event().session_id() != record.session_id()) {
          go_on = false;  // a newer attempt owns what follows
          break;
        }
        if (!refresh.Add(e)) {
          go_on = false;
          break;
        }
      }
    }
    if (absl::Status st = scan.status(); !st.ok()) return st;
  }
  return Diagnose(record, refresh.Result(issued),
                  {options_.stall_window, Now()});
}

absl::StatusOr<authtrail::v1::GetFailureTimelineResponse>
EventStore::FailureTimeline(const TimelineQuery& query) const {
  std::shared_ptr<const Columns> cols = Cols();
  SnapshotReader reader(db_.get());
  authtrail::v1::GetFailureTimelineResponse out;
  out.set_burst_threshold(query.burst_threshold);
  const int64_t width = absl::ToInt64Seconds(query.bucket);
  // bucket start (seconds) -> code -> count
  std::map<int64_t, std::map<std::string, uint64_t>> buckets;
  auto count = [&](int64_t seconds, const std::string& code, uint64_t n) {
    buckets[FloorDiv(seconds, width) * width][code] += n;
  };

  // Whole minutes inside the range come from the per-minute counts; the
  // ragged edges are counted event by event from the failure index.
  const Timestamp& start = query.start;
  const Timestamp& end = query.end;
  int64_t first_minute = FloorDiv(start.seconds(), 60);
  if (start.seconds() % 60 != 0 || start.nanos() != 0) ++first_minute;
  int64_t end_minute = FloorDiv(end.seconds(), 60);
  std::string index_prefix = IndexPrefix(FailureIndexFor(query.kind), query.id);

  auto count_events = [&](const Timestamp& from,
                          const Timestamp& to) -> absl::Status {
    IndexScan scan(reader, cols->index, TimeBound(index_prefix, from),
                   TimeBound(index_prefix, to), /*reverse=*/false);
    std::vector<uint64_t> positions;
    std::vector<int64_t> seconds;
    for (; scan.Valid(); scan.Next()) {
      std::optional<IndexEntry> e = DecodeIndexSuffix(index_prefix, scan.key());
      if (!e.has_value()) return absl::DataLossError("malformed index key");
      positions.push_back(e->position);
      seconds.push_back(e->time.seconds());
    }
    if (absl::Status s = scan.status(); !s.ok()) return s;
    std::vector<RecordedEvent> events;
    if (absl::Status s = ReadLog(reader, cols->log, positions, &events);
        !s.ok()) {
      return s;
    }
    for (size_t i = 0; i < events.size(); ++i) {
      count(seconds[i], events[i].event().error_code(), 1);
    }
    return absl::OkStatus();
  };

  if (first_minute >= end_minute) {
    if (absl::Status s = count_events(start, end); !s.ok()) return s;
  } else {
    if (absl::Status s = count_events(start, MinuteStart(first_minute));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = count_events(MinuteStart(end_minute), end); !s.ok()) {
      return s;
    }
    std::string prefix = TimelinePrefix(TimelineTagFor(query.kind), query.id);
    std::string lower = prefix;
    AppendSignedBigEndian(&lower, first_minute);
    std::string upper = prefix;
    AppendSignedBigEndian(&upper, end_minute);
    IndexScan scan(reader, cols->timeline, lower, upper, /*reverse=*/false);
    for (; scan.Valid(); scan.Next()) {
      std::optional<TimelineEntry> e = DecodeTimelineSuffix(prefix, scan.key());
      std::optional<uint64_t> n = GetFixed64(scan.value());
      if (!e.has_value() || !n.has_value()) {
        return absl::DataLossError("malformed timeline entry");
      }
      count(e->minute * 60, e->error_code, *n);
    }
    if (absl::Status s = scan.status(); !s.ok()) return s;
  }

  uint64_t total = 0;
  for (const auto& [bucket_start, codes] : buckets) {
    auto* bucket = out.add_buckets();
    bucket->mutable_start_time()->set_seconds(bucket_start);
    std::vector<std::pair<std::string, uint64_t>> sorted(codes.begin(),
                                                         codes.end());
    std::stable_sort(
        sorted.begin(), sorted.end(),
        [](const auto& a, const auto& b) { return a.second > b.second; });
    uint64_t bucket_total = 0;
    for (const auto& [code, n] : sorted) {
      auto* c = bucket->add_counts();
      c->set_error_code(code);
      c->set_count(n);
      bucket_total += n;
    }
    bucket->set_total(bucket_total);
    if (!sorted.empty() && sorted.front().second >= query.burst_threshold) {
      bucket->set_burst_error_code(sorted.front().first);
    }
    total += bucket_total;
  }
  out.set_total(total);

  // The newest failures of the range.
  IndexScan newest(reader, cols->index, TimeBound(index_prefix, start),
                   TimeBound(index_prefix, end), /*reverse=*/true,
                   query.max_events);
  std::vector<uint64_t> positions;
  for (; newest.Valid() && positions.size() < query.max_events; newest.Next()) {
    positions.push_back(IndexKeyPosition(newest.key()).value_or(0));
  }
  if (absl::Status s = newest.status(); !s.ok()) return s;
  // Set while sizing so that the flag is counted; decided below.
  out.set_events_truncated(true);
  std::vector<RecordedEvent> events;
  if (absl::Status s = ReadLog(reader, cols->log, positions, &events);
      !s.ok()) {
    return s;
  }
  // The events are cut to what fits beside the counts.
  size_t bytes = out.ByteSizeLong();
  bool cut = false;
  for (RecordedEvent& e : events) {
    size_t size = FramedSize(e.ByteSizeLong());
    if (bytes + size > query.max_bytes) {
      cut = true;
      break;
    }
    bytes += size;
    *out.add_events() = std::move(e);
  }
  out.set_events_truncated(cut || newest.Valid());
  return out;
}

absl::StatusOr<authtrail::v1::Stats> EventStore::GetStats() const {
  std::shared_ptr<const Columns> cols = Cols();
  authtrail::v1::Stats stats;
  uint64_t head = head_position_.load();
  stats.set_head_position(head);
  stats.set_head_hash(absl::BytesToHexString(HeadHash()));
  stats.set_event_count(head);  // positions are gap-free from 1
  stats.set_format_version(kFormatVersion);
  for (rocksdb::ColumnFamilyHandle* h :
       {cols->meta, cols->log, cols->event_ids, cols->index, cols->connections,
        cols->sessions, cols->timeline}) {
    uint64_t sst = 0;
    uint64_t mem = 0;
    db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &sst);
    db_->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &mem);
    (*stats.mutable_column_family_bytes())[h->GetName()] = sst + mem;
    stats.set_memtable_bytes(stats.memtable_bytes() + mem);
  }
  auto counter = [&](const char* name) -> uint64_t {
    std::string value;
    rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), cols->connections,
                                  CounterKey(name), &value);
    return st.ok() ? GetFixed64(value).value_or(0) : 0;
  };
  stats.set_connection_count(counter(kConnectionCounter));
  stats.set_session_count(counter(kSessionCounter));
  // Disk use: every file in the data folder (tables, logs, manifests).
  std::error_code ec;
  uint64_t disk = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(options_.data_dir, ec)) {
    if (entry.is_regular_file(ec)) disk += entry.file_size(ec);
  }
  stats.set_disk_bytes(disk);
  return stats;
}

}  // namespace authtrail::storage
