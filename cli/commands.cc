#include "cli/commands.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "cli/format.h"
#include "google/protobuf/util/json_util.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "nlohmann/json.hpp"

namespace authtrail::cli {
namespace {

using Json = nlohmann::ordered_json;

// Status payload that carries a local exit code (usage or input errors).
constexpr absl::string_view kExitCodeUrl = "authtrail.cli/exit_code";
// Largest response the client accepts; the server cuts pages at 4 MiB.
constexpr int kMaxReceiveBytes = 64 << 20;
constexpr int kMaxPageSize = 1000;
constexpr absl::Duration kDefaultTimelineRange = absl::Hours(24 * 7);
// Widest timeline bucket the API accepts.
constexpr absl::Duration kMaxBucket = absl::Hours(24 * 31);
// Codes of a timeline bucket printed before "+N more".
constexpr int kTopCodes = 3;

absl::Status WithExitCode(absl::Status status, int exit_code) {
  status.SetPayload(kExitCodeUrl, absl::Cord(absl::StrCat(exit_code)));
  return status;
}

// Lists the field violations of a google.rpc.BadRequest detail that the
// message does not already name.
std::string BadRequestFields(const grpc::Status& status) {
  google::rpc::Status rich;
  if (status.error_details().empty() ||
      !rich.ParseFromString(status.error_details())) {
    return "";
  }
  std::vector<std::string> fields;
  for (const auto& detail : rich.details()) {
    google::rpc::BadRequest bad_request;
    if (!detail.UnpackTo(&bad_request)) continue;
    for (const auto& violation : bad_request.field_violations()) {
      // Most servers name the field in the message too; say it once.
      if (absl::StrContains(status.error_message(), violation.field())) {
        continue;
      }
      fields.push_back(
          absl::StrCat(violation.field(), ": ", violation.description()));
    }
  }
  if (fields.empty()) return "";
  return absl::StrCat(" [", absl::StrJoin(fields, "; "), "]");
}

absl::Status PrintJson(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = ToJson(message);
  if (!json.ok()) return json.status();
  std::cout << *json << '\n';
  return absl::OkStatus();
}

// "name (id, KIND)", leaving out what is empty.
std::string DescribeSource(const v1::Source& source) {
  std::vector<std::string> parts;
  if (!source.id().empty()) parts.push_back(source.id());
  if (source.kind() != 0) {
    parts.push_back(ShortEnumName(*v1::SourceKind_descriptor(), source.kind()));
  }
  std::string label = source.name().empty() ? "-" : source.name();
  if (parts.empty()) return label;
  return absl::StrCat(label, " (", absl::StrJoin(parts, ", "), ")");
}

std::string SourceLabel(const v1::Source& source) {
  return OrDash(source.name().empty() ? source.id() : source.name());
}

std::string StepName(int step) {
  return ShortEnumName(*v1::Step_descriptor(), step);
}

std::string OutcomeName(int outcome) {
  return ShortEnumName(*v1::Outcome_descriptor(), outcome);
}

std::string HttpLabel(int http_status) {
  return http_status == 0 ? "-" : absl::StrCat(http_status);
}

// "STEP OUTCOME time", e.g. "CONSENT DENIED 2024-05-01T12:00:00.000Z".
std::string BriefRef(const v1::EventRef& ref) {
  return absl::StrCat(StepName(ref.step()), " ", OutcomeName(ref.outcome()),
                      " ", FormatTimestamp(ref.occurred_at()));
}

// BriefRef plus the position, session and request when known.
std::string FullRef(const v1::EventRef& ref) {
  if (ref.position() == 0 && ref.step() == 0) return "-";
  std::string text = absl::StrCat(BriefRef(ref), " #", ref.position());
  if (!ref.session_id().empty()) {
    absl::StrAppend(&text, " session ", ref.session_id());
  }
  if (!ref.request_id().empty()) {
    absl::StrAppend(&text, " request ", ref.request_id());
  }
  return text;
}

std::string CategoryName(int category) {
  return ShortEnumName(*v1::FailureCategory_descriptor(), category);
}

// "code (CATEGORY)" or "-".
std::string BriefFailure(const v1::Failure& failure) {
  if (failure.error_code().empty()) return "-";
  return absl::StrCat(failure.error_code(), " (",
                      CategoryName(failure.category()), ")");
}

std::string YesNo(bool value) { return value ? "yes" : "no"; }

}  // namespace

// ---- Errors ---------------------------------------------------------------

absl::Status UsageError(absl::string_view message) {
  return WithExitCode(absl::InvalidArgumentError(message), kExitUsage);
}

absl::Status InputError(absl::string_view message) {
  return WithExitCode(absl::InvalidArgumentError(message), kExitInput);
}

int ExitCodeOf(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  const absl::optional<absl::Cord> payload = status.GetPayload(kExitCodeUrl);
  int exit_code = 0;
  if (payload.has_value() &&
      absl::SimpleAtoi(std::string(*payload), &exit_code)) {
    return exit_code;
  }
  return kExitServerError;
}

std::string DescribeError(const absl::Status& status) {
  const std::string message = absl::StrReplaceAll(
      status.message(), {{"\r\n", " "}, {"\n", " "}, {"\r", " "}});
  switch (ExitCodeOf(status)) {
    case kExitUsage:
      return absl::StrCat("usage error: ", message);
    case kExitInput:
      return absl::StrCat("input error: ", message);
    default:
      return absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                          message);
  }
}

absl::Status FromGrpc(const grpc::Status& status, absl::string_view rpc,
                      const GlobalOptions& options) {
  if (status.ok()) return absl::OkStatus();
  // A refused handshake looks like a server that is not there.
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    bool tls =
        options.tls || !options.tls_ca.empty() || !options.tls_cert.empty();
    hint = tls ? "\n  (is authtraild running there? It may also have refused "
                 "this client's certificate)"
               : "\n  (is authtraild running there? If it serves TLS, add "
                 "--tls_ca)";
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(rpc, " (server ", options.server,
                                   "): ", status.error_message(),
                                   BadRequestFields(status), hint));
}

// ---- Client ---------------------------------------------------------------

absl::Status LoadCredentials(GlobalOptions& options) {
  auto read = [](const char* flag, const std::string& path,
                 std::string* out) -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in || text.str().empty()) {
      return UsageError(absl::StrCat(flag, " ", path, ": cannot read it"));
    }
    *out = text.str();
    return absl::OkStatus();
  };
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return UsageError("--tls_cert and --tls_key go together");
  }
  for (auto [flag, path, out] :
       {std::tuple{"--tls_ca", &options.tls_ca, &options.ca_pem},
        std::tuple{"--tls_cert", &options.tls_cert, &options.cert_pem},
        std::tuple{"--tls_key", &options.tls_key, &options.key_pem}}) {
    if (absl::Status s = read(flag, *path, out); !s.ok()) return s;
  }
  if (!options.tls_ca.empty() || !options.tls_cert.empty()) options.tls = true;
  return absl::OkStatus();
}

Client::Client(GlobalOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.ca_pem;
    ssl.pem_private_key = options_.key_pem;
    ssl.pem_cert_chain = options_.cert_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  if (!options_.tls_server_name.empty()) {
    arguments.SetSslTargetNameOverride(options_.tls_server_name);
  }
  channel_ = grpc::CreateCustomChannel(options_.server, credentials, arguments);
  ingest_ = v1::AuthEventIngest::NewStub(channel_);
  history_ = v1::AuthHistory::NewStub(channel_);
  admin_ = v1::AuthTrailAdmin::NewStub(channel_);
}

void Client::Prepare(grpc::ClientContext* context) const {
  const auto timeout = std::chrono::microseconds(
      static_cast<int64_t>(options_.timeout_seconds * 1e6));
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!options_.token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.token);
  }
}

absl::StatusOr<AppendCounts> Append(Client& client,
                                    const v1::AppendEventsRequest& request) {
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::AppendEventsResponse response;
  const grpc::Status status =
      client.ingest().AppendEvents(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, "AppendEvents", client.options());
  if (response.results_size() != request.events_size()) {
    return absl::InternalError(
        absl::StrCat("AppendEvents: server answered ", response.results_size(),
                     " results for ", request.events_size(), " events"));
  }
  AppendCounts counts;
  for (const v1::AppendResult& result : response.results()) {
    ++(result.duplicate() ? counts.duplicates : counts.appended);
  }
  return counts;
}

// ---- emit -----------------------------------------------------------------

namespace {

// Adds the enum prefix to a string value that lacks it and upper-cases it,
// so that "consent" and "CONSENT" read as STEP_CONSENT. A name that is not
// a value is refused with the list of values; numbers are left for the
// protobuf parser to judge.
absl::Status PrefixEnumValue(
    Json& object, const char* key,
    const google::protobuf::EnumDescriptor& descriptor) {
  if (!object.is_object()) return absl::OkStatus();
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return absl::OkStatus();
  const std::string given = it->get<std::string>();
  std::string value = absl::AsciiStrToUpper(given);
  const std::string prefix = EnumPrefix(descriptor);
  if (!absl::StartsWith(value, prefix)) value = prefix + value;
  if (descriptor.FindValueByName(value) == nullptr) {
    std::vector<std::string> names;
    for (int i = 0; i < descriptor.value_count(); ++i) {
      const std::string& name = descriptor.value(i)->name();
      if (absl::EndsWith(name, "_UNSPECIFIED")) continue;
      names.push_back(name.substr(prefix.size()));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        key, ": \"", given, "\" is not one of ", absl::StrJoin(names, ", ")));
  }
  *it = value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::AuthEvent> ParseEventLine(absl::string_view line) {
  std::string normalised;
  try {
    Json json = Json::parse(line);
    if (!json.is_object()) {
      return absl::InvalidArgumentError("not a JSON object");
    }
    absl::Status st = PrefixEnumValue(json, "step", *v1::Step_descriptor());
    if (st.ok()) {
      st = PrefixEnumValue(json, "outcome", *v1::Outcome_descriptor());
    }
    if (st.ok() && json.contains("source")) {
      st =
          PrefixEnumValue(json["source"], "kind", *v1::SourceKind_descriptor());
    }
    if (!st.ok()) return st;
    normalised = json.dump();
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  v1::AuthEvent event;
  const auto status =
      google::protobuf::util::JsonStringToMessage(normalised, &event);
  if (!status.ok()) {
    return absl::InvalidArgumentError(std::string(status.message()));
  }
  return event;
}

namespace {

// Collects events into batches and sends each when full.
class BatchSender {
 public:
  BatchSender(const GlobalOptions& global, int batch_size)
      : client_(global), batch_size_(batch_size) {}

  // Adds the event read from input line `line`, sending the batch once it
  // is full.
  absl::Status Add(v1::AuthEvent event, int line);

  // Sends what is waiting, if anything.
  absl::Status Flush();

  // Events sent so far.
  uint64_t events() const { return events_; }
  uint64_t batches() const { return batches_; }
  const AppendCounts& totals() const { return totals_; }

 private:
  // Which input lines a refused batch held and, when the server named an
  // event ("events[3]..."), which line that event came from.
  std::string DescribeRefusal(absl::string_view message) const;

  Client client_;
  const int batch_size_;
  v1::AppendEventsRequest request_;
  std::vector<int> lines_;  // input line of each event of request_
  uint64_t events_ = 0;
  uint64_t batches_ = 0;
  AppendCounts totals_;
};

absl::Status BatchSender::Add(v1::AuthEvent event, int line) {
  *request_.add_events() = std::move(event);
  lines_.push_back(line);
  if (request_.events_size() < batch_size_) return absl::OkStatus();
  return Flush();
}

absl::Status BatchSender::Flush() {
  if (request_.events().empty()) return absl::OkStatus();
  absl::StatusOr<AppendCounts> counts = Append(client_, request_);
  if (!counts.ok()) {
    std::string message =
        absl::StrCat(DescribeRefusal(counts.status().message()), " (", events_,
                     " events sent before): ", counts.status().message());
    // The server judged a line not to be a valid event: bad input data.
    if (absl::IsInvalidArgument(counts.status()) ||
        absl::IsAlreadyExists(counts.status())) {
      return InputError(message);
    }
    return absl::Status(counts.status().code(), message);
  }
  events_ += request_.events_size();
  ++batches_;
  totals_.appended += counts->appended;
  totals_.duplicates += counts->duplicates;
  request_.Clear();
  lines_.clear();
  return absl::OkStatus();
}

std::string BatchSender::DescribeRefusal(absl::string_view message) const {
  std::string where =
      lines_.size() == 1
          ? absl::StrCat("line ", lines_.front())
          : absl::StrCat("lines ", lines_.front(), "-", lines_.back());
  absl::StrAppend(&where, " not sent");
  constexpr absl::string_view kIndexStart = "events[";
  const size_t at = message.find(kIndexStart);
  if (at == absl::string_view::npos) return where;
  absl::string_view rest = message.substr(at + kIndexStart.size());
  size_t index = 0;
  if (!absl::SimpleAtoi(rest.substr(0, rest.find(']')), &index) ||
      index >= lines_.size()) {
    return where;
  }
  if (lines_.size() == 1) return absl::StrCat(where, ": the server refused it");
  return absl::StrCat(where, ", the server refused line ", lines_[index]);
}

void PrintEmitTotals(const GlobalOptions& global, const BatchSender& sender) {
  if (global.json) {
    const Json json = {{"events", sender.events()},
                       {"appended", sender.totals().appended},
                       {"duplicates", sender.totals().duplicates},
                       {"batches", sender.batches()}};
    std::cout << json.dump() << '\n';
    return;
  }
  PrintKeyValues(std::cout,
                 {{"events", absl::StrCat(sender.events())},
                  {"appended", absl::StrCat(sender.totals().appended)},
                  {"duplicates", absl::StrCat(sender.totals().duplicates)}});
}

bool IsBlank(absl::string_view line) {
  return absl::StripAsciiWhitespace(line).empty();
}

// Sends every event of `in`; stops at the first bad line.
absl::Status EmitStream(std::istream& in, BatchSender& sender) {
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (IsBlank(line)) continue;
    absl::StatusOr<v1::AuthEvent> event = ParseEventLine(line);
    if (!event.ok()) {
      return InputError(
          absl::StrCat("line ", line_number, ": ", event.status().message(),
                       " (nothing of this batch sent; ", sender.events(),
                       " events sent before it)"));
    }
    absl::Status status = sender.Add(*std::move(event), line_number);
    if (!status.ok()) return status;
  }
  if (in.bad()) {
    return InputError(absl::StrCat("read error after line ", line_number));
  }
  return sender.Flush();
}

}  // namespace

absl::Status RunEmit(const GlobalOptions& global, const EmitOptions& options) {
  const bool from_stdin = options.file.empty() || options.file == "-";
  std::ifstream file;
  if (!from_stdin) {
    file.open(options.file);
    if (!file) return InputError(absl::StrCat("cannot open ", options.file));
  }
  BatchSender sender(global, options.batch);
  absl::Status status = EmitStream(from_stdin ? std::cin : file, sender);
  if (!status.ok()) return status;
  PrintEmitTotals(global, sender);
  return absl::OkStatus();
}

// ---- connections / connection ---------------------------------------------

namespace {

std::string RefreshLabel(const v1::Connection& connection) {
  std::vector<std::string> parts;
  if (connection.degraded()) parts.emplace_back("degraded");
  if (connection.consecutive_refresh_failures() > 0) {
    parts.push_back(
        absl::StrCat(connection.consecutive_refresh_failures(), " failed"));
  }
  if (connection.refresh_pending()) parts.emplace_back("pending");
  if (connection.refresh_outcome_unknown()) parts.emplace_back("unknown");
  return parts.empty() ? "-" : absl::StrJoin(parts, ", ");
}

std::string StateName(const v1::Connection& connection) {
  return ShortEnumName(*v1::ConnectionState_descriptor(), connection.state());
}

void PrintConnectionTable(const v1::ListConnectionsResponse& response) {
  Table table({"CONNECTION", "SOURCE", "KIND", "STATE", "REFRESH", "LAST EVENT",
               "LAST FAILURE", "SUMMARY"});
  for (const v1::Connection& c : response.connections()) {
    table.AddRow(
        {c.connection_id(), SourceLabel(c.source()),
         ShortEnumName(*v1::SourceKind_descriptor(), c.source().kind()),
         StateName(c), RefreshLabel(c), BriefRef(c.last_event()),
         BriefFailure(c.last_failure()), OrDash(c.summary())});
  }
  table.Print(std::cout);
}

KeyValues FailureLines(const v1::Failure& failure) {
  if (failure.error_code().empty()) return {{"last failure", "-"}};
  return {
      {"last failure", BriefFailure(failure)},
      {"  at", FullRef(failure.event())},
      {"  http status", HttpLabel(failure.http_status())},
      {"  description", OrDash(failure.error_description())},
      {"  follows earlier", YesNo(failure.follows_earlier_failure())},
  };
}

void PrintConnectionDetail(const v1::Connection& c) {
  KeyValues lines = {
      {"connection", c.connection_id()},
      {"patient", OrDash(c.patient_id())},
      {"source", DescribeSource(c.source())},
      {"state", StateName(c)},
      {"reconnect reason",
       ShortEnumName(*v1::ReconnectReason_descriptor(), c.reconnect_reason())},
      {"degraded", YesNo(c.degraded())},
      {"refresh failures", absl::StrCat(c.consecutive_refresh_failures())},
      {"refresh", RefreshLabel(c)},
      {"current session", OrDash(c.current_session_id())},
      {"events",
       absl::StrCat(c.event_count(), " (", c.late_event_count(), " late)")},
      {"first seen", FormatTimestamp(c.first_seen_at())},
      {"last seen", FormatTimestamp(c.last_seen_at())},
      {"last event", FullRef(c.last_event())},
  };
  for (auto& line : FailureLines(c.last_failure())) {
    lines.push_back(std::move(line));
  }
  lines.emplace_back("summary", OrDash(c.summary()));
  PrintKeyValues(std::cout, lines);
}

}  // namespace

absl::Status RunConnections(const GlobalOptions& global,
                            const std::string& patient_id) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::ListConnectionsRequest request;
  request.set_patient_id(patient_id);
  v1::ListConnectionsResponse response;
  const grpc::Status status =
      client.history().ListConnections(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, "ListConnections", global);

  if (global.json) {
    for (const v1::Connection& connection : response.connections()) {
      absl::Status printed = PrintJson(connection);
      if (!printed.ok()) return printed;
    }
  } else if (response.connections().empty()) {
    std::cout << "no connections for patient " << patient_id << '\n';
  } else {
    PrintConnectionTable(response);
  }
  return absl::OkStatus();
}

absl::Status RunConnection(const GlobalOptions& global,
                           const std::string& connection_id) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::GetConnectionRequest request;
  request.set_connection_id(connection_id);
  v1::Connection connection;
  const grpc::Status status =
      client.history().GetConnection(&context, request, &connection);
  if (!status.ok()) return FromGrpc(status, "GetConnection", global);

  if (global.json) return PrintJson(connection);
  PrintConnectionDetail(connection);
  return absl::OkStatus();
}

// ---- events ---------------------------------------------------------------

namespace {

std::vector<std::string> EventHeaders() {
  return {"POS",  "OCCURRED_AT", "STEP",    "OUTCOME", "ERROR",
          "HTTP", "SESSION",     "REQUEST", "SOURCE"};
}

// One table row; a future-dated event's time is marked with '*'.
std::vector<std::string> EventRow(const v1::RecordedEvent& recorded) {
  const v1::AuthEvent& e = recorded.event();
  std::string time = FormatTimestamp(e.occurred_at());
  if (recorded.future_dated()) time += "*";
  return {absl::StrCat(recorded.position()),
          time,
          StepName(e.step()),
          OutcomeName(e.outcome()),
          OrDash(e.error_code()),
          HttpLabel(e.http_status()),
          OrDash(e.session_id()),
          OrDash(e.request_id()),
          SourceLabel(e.source())};
}

void AddEventRows(
    const google::protobuf::RepeatedPtrField<v1::RecordedEvent>& events,
    Table& table, bool& any_future) {
  for (const v1::RecordedEvent& recorded : events) {
    table.AddRow(EventRow(recorded));
    any_future = any_future || recorded.future_dated();
  }
}

void PrintFutureLegend(bool any_future) {
  if (any_future) {
    std::cout << "* future-dated: the emitter's clock was ahead of the "
                 "server's\n";
  }
}

absl::Status SetEventFilter(const EventsOptions& options,
                            v1::EventFilter& filter) {
  filter.set_patient_id(options.patient_id);
  filter.set_connection_id(options.connection_id);
  filter.set_session_id(options.session_id);
  filter.set_request_id(options.request_id);
  filter.set_source_id(options.source_id);
  filter.set_error_code(options.error_code);
  if (!options.step.empty()) {
    absl::StatusOr<int> step =
        ParseEnumArg(*v1::Step_descriptor(), options.step);
    if (!step.ok()) return UsageError(step.status().message());
    filter.set_step(static_cast<v1::Step>(*step));
  }
  if (!options.outcome.empty()) {
    absl::StatusOr<int> outcome =
        ParseEnumArg(*v1::Outcome_descriptor(), options.outcome);
    if (!outcome.ok()) return UsageError(outcome.status().message());
    filter.set_outcome(static_cast<v1::Outcome>(*outcome));
  }
  return absl::OkStatus();
}

// Sets the bounds that were given; an absent bound leaves the range open
// (mutable_*() alone would mark the field present).
absl::Status SetEventRange(const EventsOptions& options,
                           v1::ListEventsRequest& request) {
  const absl::Time now = absl::Now();
  if (!options.since.empty()) {
    absl::StatusOr<absl::Time> since = ParseTimeArg(options.since, now);
    if (!since.ok()) return UsageError(since.status().message());
    *request.mutable_start_time() = ToTimestamp(*since);
  }
  if (!options.until.empty()) {
    absl::StatusOr<absl::Time> until = ParseTimeArg(options.until, now);
    if (!until.ok()) return UsageError(until.status().message());
    *request.mutable_end_time() = ToTimestamp(*until);
  }
  return absl::OkStatus();
}

absl::Status BuildEventsRequest(const EventsOptions& options,
                                v1::ListEventsRequest& request) {
  absl::Status status = SetEventFilter(options, *request.mutable_filter());
  if (status.ok()) status = SetEventRange(options, request);
  if (!status.ok()) return status;
  const int page_size =
      options.limit > 0 ? std::min(options.limit, kMaxPageSize) : kMaxPageSize;
  request.set_page_size(options.page_size > 0 ? options.page_size : page_size);
  request.set_oldest_first(options.oldest_first);
  return absl::OkStatus();
}

// Pages through ListEvents, handing each event to `sink` until `limit`
// events were handed (0: all). Sets `more` when events remain.
template <typename Sink>
absl::Status PageEvents(Client& client, v1::ListEventsRequest request,
                        int limit, Sink sink, bool& more) {
  int handed = 0;
  more = false;
  while (true) {
    grpc::ClientContext context;
    client.Prepare(&context);
    v1::ListEventsResponse response;
    const grpc::Status status =
        client.history().ListEvents(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, "ListEvents", client.options());
    for (int i = 0; i < response.events_size(); ++i) {
      if (limit > 0 && handed == limit) {
        more = true;
        return absl::OkStatus();
      }
      absl::Status sunk = sink(response.events(i));
      if (!sunk.ok()) return sunk;
      ++handed;
    }
    if (response.next_page_token().empty()) return absl::OkStatus();
    if (limit > 0 && handed == limit) {
      more = true;
      return absl::OkStatus();
    }
    request.set_page_token(response.next_page_token());
  }
}

}  // namespace

absl::Status RunEvents(const GlobalOptions& global,
                       const EventsOptions& options) {
  v1::ListEventsRequest request;
  absl::Status built = BuildEventsRequest(options, request);
  if (!built.ok()) return built;

  Client client(global);
  Table table(EventHeaders());
  bool any_future = false;
  bool more = false;
  const auto sink = [&](const v1::RecordedEvent& recorded) {
    if (global.json) return PrintJson(recorded);
    table.AddRow(EventRow(recorded));
    any_future = any_future || recorded.future_dated();
    return absl::OkStatus();
  };
  absl::Status status = PageEvents(client, request, options.limit, sink, more);
  if (!status.ok() || global.json) return status;

  if (table.empty()) {
    std::cout << "no events match\n";
    return absl::OkStatus();
  }
  table.Print(std::cout);
  PrintFutureLegend(any_future);
  if (more) {
    std::cout << table.size() << " events shown; more match (raise --limit)\n";
  }
  return absl::OkStatus();
}

// ---- diagnose -------------------------------------------------------------

namespace {

void PrintFindings(const v1::SessionDiagnosis& d) {
  const std::pair<const char*, const v1::Finding*> questions[] = {
      {"1. reached the portal?", &d.reached_portal()},
      {"2. signed in?", &d.signed_in()},
      {"3. approved access?", &d.approved_access()},
      {"4. token exchange succeeded?", &d.token_exchanged()},
      {"5. a refresh failed later?", &d.refresh_failed_later()},
  };
  Table table({"QUESTION", "ANSWER", "EVIDENCE", "NOTE"});
  for (const auto& [question, finding] : questions) {
    const v1::EventRef& evidence = finding->evidence();
    table.AddRow(
        {question, ShortEnumName(*v1::Answer_descriptor(), finding->answer()),
         evidence.position() == 0
             ? "-"
             : absl::StrCat(BriefRef(evidence), " #", evidence.position()),
         OrDash(finding->note())});
  }
  table.Print(std::cout);
}

KeyValues RootCauseLines(const v1::SessionDiagnosis& d) {
  if (!d.has_root_cause()) return {{"root cause", "none: nothing failed"}};
  const v1::Failure& cause = d.root_cause();
  return {
      {"root cause", BriefFailure(cause)},
      {"  at", FormatTimestamp(cause.event().occurred_at())},
      {"  step", absl::StrCat(StepName(cause.event().step()), " ",
                              OutcomeName(cause.event().outcome()), " #",
                              cause.event().position())},
      {"  request id", OrDash(cause.event().request_id())},
      {"  http status", HttpLabel(cause.http_status())},
      {"  description", OrDash(cause.error_description())},
  };
}

void PrintDiagnosis(const v1::SessionDiagnosis& d) {
  PrintKeyValues(
      std::cout,
      {{"session", d.session_id()},
       {"patient", OrDash(d.patient_id())},
       {"connection", OrDash(d.connection_id())},
       {"source", DescribeSource(d.source())},
       {"events",
        absl::StrCat(d.event_count(), ", ", FormatTimestamp(d.first_event_at()),
                     " .. ", FormatTimestamp(d.last_event_at()))},
       {"abandoned", YesNo(d.abandoned())}});
  std::cout << '\n';
  PrintFindings(d);
  std::cout << '\n';
  KeyValues lines = {{"furthest step", StepName(d.furthest_step())}};
  for (auto& line : RootCauseLines(d)) lines.push_back(std::move(line));
  lines.emplace_back("summary", OrDash(d.summary()));
  PrintKeyValues(std::cout, lines);
}

}  // namespace

absl::Status RunDiagnose(const GlobalOptions& global,
                         const std::string& session_id) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::DiagnoseSessionRequest request;
  request.set_session_id(session_id);
  v1::SessionDiagnosis diagnosis;
  const grpc::Status status =
      client.history().DiagnoseSession(&context, request, &diagnosis);
  if (!status.ok()) return FromGrpc(status, "DiagnoseSession", global);

  if (global.json) return PrintJson(diagnosis);
  PrintDiagnosis(diagnosis);
  return absl::OkStatus();
}

// ---- timeline -------------------------------------------------------------

namespace {

// Sets the scope from whichever of the three ids was given.
absl::Status SetScope(const TimelineOptions& options,
                      v1::TimelineScope& scope) {
  const int given = !options.patient_id.empty() +
                    !options.connection_id.empty() + !options.source_id.empty();
  if (given != 1) {
    return UsageError(
        "timeline needs exactly one of --patient, --connection, --source");
  }
  if (!options.patient_id.empty()) scope.set_patient_id(options.patient_id);
  if (!options.connection_id.empty()) {
    scope.set_connection_id(options.connection_id);
  }
  if (!options.source_id.empty()) scope.set_source_id(options.source_id);
  return absl::OkStatus();
}

absl::Status SetRange(const TimelineOptions& options,
                      v1::GetFailureTimelineRequest& request) {
  const absl::Time now = absl::Now();
  absl::StatusOr<absl::Time> until =
      options.until.empty() ? now : ParseTimeArg(options.until, now);
  if (!until.ok()) return UsageError(until.status().message());
  absl::StatusOr<absl::Time> since = options.since.empty()
                                         ? *until - kDefaultTimelineRange
                                         : ParseTimeArg(options.since, now);
  if (!since.ok()) return UsageError(since.status().message());
  if (*since >= *until) return UsageError("--since must be before --until");
  *request.mutable_start_time() = ToTimestamp(*since);
  *request.mutable_end_time() = ToTimestamp(*until);

  absl::StatusOr<absl::Duration> bucket = ParseDurationArg(options.bucket);
  if (!bucket.ok()) return UsageError(bucket.status().message());
  if (*bucket % absl::Minutes(1) != absl::ZeroDuration() ||
      *bucket > kMaxBucket) {
    return UsageError(absl::StrCat("--bucket ", options.bucket,
                                   ": want whole minutes, 1m to 31d"));
  }
  request.mutable_bucket()->set_seconds(absl::ToInt64Seconds(*bucket));
  return absl::OkStatus();
}

std::string ScopeLabel(const v1::TimelineScope& scope) {
  switch (scope.scope_case()) {
    case v1::TimelineScope::kPatientId:
      return absl::StrCat("patient ", scope.patient_id());
    case v1::TimelineScope::kConnectionId:
      return absl::StrCat("connection ", scope.connection_id());
    case v1::TimelineScope::kSourceId:
      return absl::StrCat("source ", scope.source_id());
    default:
      return "-";
  }
}

// "server_error 38, state_expired 3, +2 more".
std::string TopCodes(const v1::TimelineBucket& bucket) {
  std::vector<std::string> parts;
  for (int i = 0; i < bucket.counts_size() && i < kTopCodes; ++i) {
    parts.push_back(absl::StrCat(bucket.counts(i).error_code(), " ",
                                 bucket.counts(i).count()));
  }
  if (bucket.counts_size() > kTopCodes) {
    parts.push_back(
        absl::StrCat("+", bucket.counts_size() - kTopCodes, " more"));
  }
  return absl::StrJoin(parts, ", ");
}

void PrintTimeline(const v1::GetFailureTimelineRequest& request,
                   const v1::GetFailureTimelineResponse& response) {
  PrintKeyValues(
      std::cout,
      {{"scope", ScopeLabel(request.scope())},
       {"range", absl::StrCat(FormatTimestamp(request.start_time()), " .. ",
                              FormatTimestamp(request.end_time()))},
       {"bucket",
        FormatShortDuration(absl::Seconds(request.bucket().seconds()))},
       {"failures", absl::StrCat(response.total(), " (burst threshold ",
                                 response.burst_threshold(), ")")}});
  if (response.buckets().empty()) return;

  std::cout << '\n';
  Table buckets({"START", "TOTAL", "CODES", "BURST"});
  for (const v1::TimelineBucket& bucket : response.buckets()) {
    buckets.AddRow({FormatTimestamp(bucket.start_time()),
                    absl::StrCat(bucket.total()), TopCodes(bucket),
                    bucket.burst_error_code().empty()
                        ? ""
                        : absl::StrCat("BURST ", bucket.burst_error_code())});
  }
  buckets.Print(std::cout);

  std::cout << "\nnewest failures (" << response.events_size() << " of "
            << response.total() << "):\n";
  Table events(EventHeaders());
  bool any_future = false;
  AddEventRows(response.events(), events, any_future);
  events.Print(std::cout);
  PrintFutureLegend(any_future);
}

}  // namespace

absl::Status RunTimeline(const GlobalOptions& global,
                         const TimelineOptions& options) {
  v1::GetFailureTimelineRequest request;
  absl::Status status = SetScope(options, *request.mutable_scope());
  if (status.ok()) status = SetRange(options, request);
  if (!status.ok()) return status;
  request.set_max_events(options.max_events);

  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::GetFailureTimelineResponse response;
  const grpc::Status rpc =
      client.history().GetFailureTimeline(&context, request, &response);
  if (!rpc.ok()) return FromGrpc(rpc, "GetFailureTimeline", global);

  if (global.json) return PrintJson(response);
  PrintTimeline(request, response);
  return absl::OkStatus();
}

// ---- stats ----------------------------------------------------------------

absl::Status RunHealth(const GlobalOptions& global) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  // grpc.health.v1.HealthCheckRequest{service: ""} is empty on the wire;
  // HealthCheckResponse is {status = 1: enum}, SERVING being 1. Sent as
  // bytes so the CLI needs no health stubs.
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> status;
  grpc::GenericStub(client.channel())
      .UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &request,
                 &response, [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = std::move(s);
                   cv.notify_one();
                 });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return status.has_value(); });
  }
  if (!status->ok()) return FromGrpc(*status, "Health/Check", global);
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
  }
  const bool serving = bytes == std::string("\x08\x01", 2);
  const char* name = serving ? "SERVING" : "NOT_SERVING";
  if (global.json) {
    std::cout << nlohmann::json{{"status", name}}.dump() << '\n';
  } else {
    std::cout << name << '\n';
  }
  if (!serving) {
    return absl::UnavailableError(absl::StrCat("Health/Check (server ",
                                               global.server,
                                               "): the server is not serving"));
  }
  return absl::OkStatus();
}

absl::Status RunStats(const GlobalOptions& global) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::Stats stats;
  const grpc::Status status =
      client.admin().GetStats(&context, v1::GetStatsRequest(), &stats);
  if (!status.ok()) return FromGrpc(status, "GetStats", global);
  if (global.json) return PrintJson(stats);

  KeyValues lines = {
      {"events", absl::StrCat(stats.event_count())},
      {"head position", absl::StrCat(stats.head_position())},
      {"head hash", OrDash(stats.head_hash())},
      {"connections", absl::StrCat(stats.connection_count())},
      {"sessions", absl::StrCat(stats.session_count())},
      {"disk", absl::StrCat(FormatBytes(stats.disk_bytes()), " (",
                            stats.disk_bytes(), " bytes)")},
      {"format version", absl::StrCat(stats.format_version())},
      {"memtables", FormatBytes(stats.memtable_bytes())},
  };
  std::vector<std::pair<std::string, uint64_t>> families(
      stats.column_family_bytes().begin(), stats.column_family_bytes().end());
  std::sort(families.begin(), families.end());
  // Memtables count with what they have reserved, not what they hold, so
  // on a small log these add up to more than the disk figure.
  for (const auto& [name, bytes] : families) {
    lines.emplace_back(absl::StrCat("cf ", name, " (tables + memtables)"),
                       FormatBytes(bytes));
  }
  PrintKeyValues(std::cout, lines);
  return absl::OkStatus();
}

}  // namespace authtrail::cli
