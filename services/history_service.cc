#include "services/history_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "services/page_token.h"
#include "services/status_util.h"
#include "services/validation.h"
#include "storage/proto_time.h"

namespace authtrail::services {
namespace {

using google::protobuf::Timestamp;

// Appends a length-delimited field (wire type 2) numbered below 16.
void AppendField(int number, std::string_view bytes, std::string* out) {
  uint8_t head[1 + 5];  // tag, then a varint32 of at most 5 bytes
  head[0] = static_cast<uint8_t>(number << 3 | 2);
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(bytes.size()), head + 1);
  out->append(reinterpret_cast<const char*>(head), end - head);
  out->append(bytes);
}

// A ListEventsResponse in its wire encoding: each event (a serialized
// RecordedEvent) as field 1, then the page token as field 2. The buffer is
// handed to gRPC without a copy.
grpc::ByteBuffer EncodeListEventsResponse(
    const std::vector<std::string>& events, const std::string& token) {
  constexpr int kEventsField =
      authtrail::v1::ListEventsResponse::kEventsFieldNumber;
  constexpr int kTokenField =
      authtrail::v1::ListEventsResponse::kNextPageTokenFieldNumber;
  static_assert(kEventsField < 16 && kTokenField < 16);
  size_t size = token.size() + 6;
  for (const std::string& e : events) size += e.size() + 6;
  auto* out = new std::string();
  out->reserve(size);
  for (const std::string& e : events) AppendField(kEventsField, e, out);
  if (!token.empty()) AppendField(kTokenField, token, out);
  grpc::Slice slice(
      out->data(), out->size(),
      [](void* owned) { delete static_cast<std::string*>(owned); }, out);
  return grpc::ByteBuffer(&slice, 1);
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Checks a timeline request and turns it into a store query.
grpc::Status TimelineQueryOf(
    const authtrail::v1::GetFailureTimelineRequest& request,
    storage::TimelineQuery* query) {
  std::vector<Violation> v;
  using Scope = authtrail::v1::TimelineScope;
  switch (request.scope().scope_case()) {
    case Scope::kPatientId:
      query->kind = storage::TimelineScopeKind::kPatient;
      query->id = request.scope().patient_id();
      break;
    case Scope::kConnectionId:
      query->kind = storage::TimelineScopeKind::kConnection;
      query->id = request.scope().connection_id();
      break;
    case Scope::kSourceId:
      query->kind = storage::TimelineScopeKind::kSource;
      query->id = request.scope().source_id();
      break;
    default:
      v.push_back({"scope",
                   "is required: set patient_id, connection_id or "
                   "source_id"});
  }
  for (const Violation& id : ValidateId("scope", query->id, true)) {
    if (v.empty()) v.push_back(id);
  }
  if (!request.has_start_time()) v.push_back({"start_time", "is required"});
  if (!request.has_end_time()) v.push_back({"end_time", "is required"});
  if (!v.empty()) return InvalidArgument(v);

  query->start = request.start_time();
  query->end = request.end_time();
  absl::Duration span =
      storage::FromProtoTime(query->end) - storage::FromProtoTime(query->start);
  query->bucket =
      request.has_bucket() ? ToDuration(request.bucket()) : absl::Hours(1);
  if (!storage::TimeBefore(query->start, query->end)) {
    v.push_back({"end_time", "must be after start_time"});
  } else if (span > Limits::kMaxTimelineSpan) {
    v.push_back(
        {"end_time", absl::StrCat("is ", absl::FormatDuration(span),
                                  " after start_time; the limit is 400 days")});
  }
  if (query->bucket < absl::Minutes(1) || query->bucket > Limits::kMaxBucket ||
      query->bucket % absl::Minutes(1) != absl::ZeroDuration()) {
    v.push_back({"bucket",
                 "must be a whole number of minutes from 1 minute "
                 "to 31 days"});
  } else if (span / query->bucket >
             static_cast<double>(Limits::kMaxTimelineBuckets)) {
    v.push_back(
        {"bucket", absl::StrCat("gives more than ", Limits::kMaxTimelineBuckets,
                                " buckets over the range; widen it")});
  }
  if (request.max_events() < 0) {
    v.push_back({"max_events", "is negative; use 0 (default) to 1000"});
  }
  if (!v.empty()) return InvalidArgument(v);
  size_t asked = static_cast<size_t>(request.max_events());
  query->max_events = asked == 0 ? Limits::kDefaultTimelineEvents
                                 : std::min(asked, Limits::kMaxTimelineEvents);
  query->max_bytes = Limits::kMaxResponseBytes;
  return grpc::Status::OK;
}

}  // namespace

grpc::ServerUnaryReactor* HistoryService::ListConnections(
    grpc::CallbackServerContext* context,
    const authtrail::v1::ListConnectionsRequest* request,
    authtrail::v1::ListConnectionsResponse* response) {
  return ServeUnary(context, guard_, "ListConnections", [&]() -> grpc::Status {
    auto v = ValidateId("patient_id", request->patient_id(), true);
    if (!v.empty()) return InvalidArgument(v);
    auto connections = store_->ListConnections(
        request->patient_id(), Limits::kMaxConnectionsPerPatient);
    if (!connections.ok()) return ToGrpc(connections.status());
    for (auto& c : *connections) *response->add_connections() = std::move(c);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* HistoryService::GetConnection(
    grpc::CallbackServerContext* context,
    const authtrail::v1::GetConnectionRequest* request,
    authtrail::v1::Connection* response) {
  return ServeUnary(context, guard_, "GetConnection", [&]() -> grpc::Status {
    auto v = ValidateId("connection_id", request->connection_id(), true);
    if (!v.empty()) return InvalidArgument(v);
    auto connection = store_->GetConnection(request->connection_id());
    if (!connection.ok()) return ToGrpc(connection.status());
    *response = std::move(*connection);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* HistoryService::ListEvents(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
    grpc::ByteBuffer* response) {
  return ServeUnary(context, guard_, "ListEvents", [&]() -> grpc::Status {
    authtrail::v1::ListEventsRequest request;
    // The reader only reads the buffer's slices.
    grpc::ProtoBufferReader reader(
        const_cast<grpc::ByteBuffer*>(request_bytes));
    if (!request.ParseFromZeroCopyStream(&reader)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the request is not a ListEventsRequest");
    }
    auto v = ValidateListEvents(request);
    if (!v.empty()) return InvalidArgument(v);
    storage::EventQuery query;
    query.filter = request.filter();
    if (request.has_start_time()) query.start = request.start_time();
    if (request.has_end_time()) query.end = request.end_time();
    query.oldest_first = request.oldest_first();
    size_t asked = static_cast<size_t>(request.page_size());
    query.limit = asked == 0 ? Limits::kDefaultPageSize
                             : std::min(asked, Limits::kMaxPageSize);
    // Room for the next page token beside the events.
    query.max_bytes =
        Limits::kMaxResponseBytes - Limits::kMaxPageTokenBytes - 8;
    if (!request.page_token().empty()) {
      absl::StatusOr<storage::Cursor> cursor = DecodePageToken(request);
      if (!cursor.ok()) {
        return InvalidArgument(
            {{"page_token", std::string(cursor.status().message())}});
      }
      query.after = *cursor;
    }
    absl::StatusOr<storage::EventPage> page = store_->ListEvents(query);
    if (!page.ok()) return ToGrpc(page.status());
    std::string token;
    if (page->next.has_value()) token = EncodePageToken(request, *page->next);
    *response = EncodeListEventsResponse(page->events, token);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* HistoryService::GetFailureTimeline(
    grpc::CallbackServerContext* context,
    const authtrail::v1::GetFailureTimelineRequest* request,
    authtrail::v1::GetFailureTimelineResponse* response) {
  return ServeUnary(
      context, guard_, "GetFailureTimeline", [&]() -> grpc::Status {
        storage::TimelineQuery query;
        if (grpc::Status s = TimelineQueryOf(*request, &query); !s.ok())
          return s;
        auto timeline = store_->FailureTimeline(query);
        if (!timeline.ok()) return ToGrpc(timeline.status());
        *response = std::move(*timeline);
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* HistoryService::DiagnoseSession(
    grpc::CallbackServerContext* context,
    const authtrail::v1::DiagnoseSessionRequest* request,
    authtrail::v1::SessionDiagnosis* response) {
  return ServeUnary(context, guard_, "DiagnoseSession", [&]() -> grpc::Status {
    auto v = ValidateId("session_id", request->session_id(), true);
    if (!v.empty()) return InvalidArgument(v);
    auto diagnosis = store_->DiagnoseSession(request->session_id());
    if (!diagnosis.ok()) return ToGrpc(diagnosis.status());
    *response = std::move(*diagnosis);
    return grpc::Status::OK;
  });
}

}  // namespace authtrail::services
