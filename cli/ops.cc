#include "cli/ops.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/format.h"
#include "nlohmann/json.hpp"
#include "storage/chain_hash.h"

namespace authtrail::cli {
namespace {

using Json = nlohmann::json;

// Polls start quick, for the many operations that end in a few
// milliseconds, and slow down to this.
constexpr auto kFirstPoll = std::chrono::milliseconds(5);
constexpr auto kLongestPoll = std::chrono::milliseconds(250);

// A progress line on standard error, redrawn in place; silent when standard
// error is not a terminal.
class ProgressLine {
 public:
  explicit ProgressLine(std::string what)
      : what_(std::move(what)), enabled_(isatty(STDERR_FILENO) == 1) {}
  ~ProgressLine() { Done(); }

  void Update(uint64_t done, uint64_t total, double rate) {
    if (!enabled_) return;
    constexpr int kWidth = 24;
    double fraction = total > 0 ? std::min(1.0, 1.0 * done / total) : 0;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar =
        std::string(filled, '=') + std::string(kWidth - filled, ' ');
    std::string eta = "-";
    if (rate > 0 && total > done) {
      eta = FormatShortDuration(absl::Seconds((total - done) / rate));
    }
    std::fprintf(stderr, "\r%s [%s] %3d%% %llu/%llu events, %.0f/s, ETA %s  ",
                 what_.c_str(), bar.c_str(), static_cast<int>(fraction * 100),
                 static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total), rate, eta.c_str());
    drawn_ = true;
  }

  void Done() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  std::string what_;
  bool enabled_;
  bool drawn_ = false;
};

// Polls an operation until it ends, drawing its progress.
absl::StatusOr<v1::Operation> Follow(Client& client, v1::Operation op,
                                     const std::string& what) {
  ProgressLine progress(what);
  auto wait = std::chrono::milliseconds(kFirstPoll);
  while (op.state() == v1::OPERATION_STATE_RUNNING) {
    progress.Update(op.done(), op.total(), op.events_per_second());
    std::this_thread::sleep_for(wait);
    wait = std::min<std::chrono::milliseconds>(wait * 2, kLongestPoll);
    grpc::ClientContext context;
    client.Prepare(&context);
    v1::GetOperationRequest request;
    request.set_id(op.id());
    grpc::Status status = client.admin().GetOperation(&context, request, &op);
    if (!status.ok()) return FromGrpc(status, "GetOperation", client.options());
  }
  progress.Done();
  if (op.state() == v1::OPERATION_STATE_FAILED) {
    return absl::InternalError(absl::StrCat(what, " failed: ", op.error()));
  }
  return op;
}

absl::Status PrintOperation(const GlobalOptions& global,
                            const v1::Operation& op, KeyValues lines) {
  if (global.json) {
    absl::StatusOr<std::string> json = ToJson(op);
    if (!json.ok()) return json.status();
    std::cout << *json << '\n';
    return absl::OkStatus();
  }
  absl::Duration took =
      FromTimestamp(op.finished_at()) - FromTimestamp(op.started_at());
  lines.push_back({"operation", op.id()});
  lines.push_back({"took", FormatShortDuration(took)});
  lines.push_back(
      {"rate", absl::StrCat(static_cast<uint64_t>(op.events_per_second()),
                            " events/s")});
  PrintKeyValues(std::cout, lines);
  return absl::OkStatus();
}

// Starts an operation with `start` and follows it.
template <typename Start>
absl::StatusOr<v1::Operation> StartAndFollow(Client& client,
                                             const std::string& rpc,
                                             const std::string& what,
                                             Start start) {
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::Operation op;
  grpc::Status status = start(&context, &op);
  if (!status.ok()) return FromGrpc(status, rpc, client.options());
  return Follow(client, op, what);
}

}  // namespace

absl::Status RunRebuild(const GlobalOptions& global) {
  Client client(global);
  auto op =
      StartAndFollow(client, "StartRebuild", "rebuild",
                     [&](grpc::ClientContext* context, v1::Operation* out) {
                       return client.admin().StartRebuild(context, {}, out);
                     });
  if (!op.ok()) return op.status();
  return PrintOperation(
      global, *op,
      {{"rebuilt events", absl::StrCat(op->rebuild().events())},
       {"generation", absl::StrCat(op->rebuild().generation())}});
}

absl::Status RunVerify(const GlobalOptions& global,
                       const VerifyCommandOptions& options) {
  v1::StartVerifyRequest request;
  request.set_log_only(options.log_only);
  if (!options.anchor.empty()) {
    std::pair<std::string, std::string> parts =
        absl::StrSplit(options.anchor, absl::MaxSplits(':', 1));
    uint64_t position = 0;
    if (!absl::SimpleAtoi(parts.first, &position) || position == 0 ||
        !storage::IsChainHashHex(parts.second)) {
      return UsageError(
          "--anchor must be POSITION:HASH, the hash 64 hex digits, as "
          "`stats` shows them (head position and head hash)");
    }
    request.set_anchor_position(position);
    request.set_anchor_hash(parts.second);
  }
  Client client(global);
  auto op =
      StartAndFollow(client, "StartVerify", "verify",
                     [&](grpc::ClientContext* context, v1::Operation* out) {
                       return client.admin().StartVerify(context, request, out);
                     });
  if (!op.ok()) return op.status();
  const v1::VerifyResult& v = op->verify();
  KeyValues lines = {{"result", v.ok() ? "OK" : "PROBLEM"},
                     {"events checked", absl::StrCat(v.events())},
                     {"head hash", OrDash(v.head_hash())}};
  if (!v.ok()) {
    lines.push_back({"problem", v.problem()});
    if (v.position() != 0) {
      lines.push_back({"position", absl::StrCat(v.position())});
    }
    if (!v.family().empty()) lines.push_back({"family", v.family()});
    if (!v.key().empty()) lines.push_back({"key (hex)", v.key()});
  }
  if (absl::Status s = PrintOperation(global, *op, lines); !s.ok()) return s;
  if (!v.ok()) {
    return absl::DataLossError(
        absl::StrCat("verify found a problem: ", v.problem()));
  }
  return absl::OkStatus();
}

absl::Status RunSetLogLevel(const GlobalOptions& global,
                            const std::string& level) {
  Client client(global);
  grpc::ClientContext context;
  client.Prepare(&context);
  v1::SetLogLevelRequest request;
  request.set_level(level);
  v1::SetLogLevelResponse response;
  grpc::Status status =
      client.admin().SetLogLevel(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, "SetLogLevel", global);
  std::cout << "log level " << response.previous_level() << " -> "
            << response.level() << '\n';
  return absl::OkStatus();
}

absl::Status RunBackup(const GlobalOptions& global, const std::string& dir) {
  v1::StartBackupRequest request;
  request.set_dir(dir);
  Client client(global);
  auto op =
      StartAndFollow(client, "StartBackup", "backup",
                     [&](grpc::ClientContext* context, v1::Operation* out) {
                       return client.admin().StartBackup(context, request, out);
                     });
  if (!op.ok()) return op.status();
  return PrintOperation(global, *op,
                        {{"backup folder", op->backup_dir()},
                         {"events (at least)", absl::StrCat(op->done())}});
}

absl::Status RunExport(const GlobalOptions& global,
                       const ExportOptions& options) {
  std::ofstream file;
  std::ostream* out = &std::cout;
  if (!options.file.empty() && options.file != "-") {
    file.open(options.file, std::ios::out | (options.append ? std::ios::app
                                                            : std::ios::trunc));
    if (!file) return UsageError(absl::StrCat("cannot write ", options.file));
    out = &file;
  }
  Client client(global);
  uint64_t next = std::max<uint64_t>(options.from, 1);
  uint64_t last = options.to;
  uint64_t written = 0;
  ProgressLine progress("export");
  absl::Time started = absl::Now();
  while (last == 0 || next <= last) {
    grpc::ClientContext context;
    client.Prepare(&context);
    v1::ReadLogRequest request;
    request.set_from_position(next);
    request.set_max_events(1000);
    v1::ReadLogResponse response;
    grpc::Status status = client.admin().ReadLog(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, "ReadLog", global);
    if (last == 0) last = response.head_position();
    for (const v1::RecordedEvent& recorded : response.events()) {
      if (recorded.position() > last) break;
      absl::StatusOr<std::string> json = ToJson(recorded);
      if (!json.ok()) return json.status();
      // The exact bytes ride along: JSON cannot carry unknown fields.
      std::string line = json->substr(0, json->size() - 1);
      absl::StrAppend(&line, ",\"event_bytes\":\"",
                      absl::Base64Escape(recorded.event().SerializeAsString()),
                      "\"}");
      *out << line << '\n';
      ++written;
      next = recorded.position() + 1;
    }
    double seconds = absl::ToDoubleSeconds(absl::Now() - started);
    uint64_t total = last >= options.from ? last - options.from + 1 : 0;
    progress.Update(written, total, seconds > 0 ? written / seconds : 0);
    if (response.events().empty()) break;
  }
  progress.Done();
  out->flush();
  if (!*out) return absl::DataLossError("writing the export failed");
  std::cerr << "exported " << written << " events, positions " << options.from
            << ".." << next - 1 << (written > 0 ? "" : " (none)")
            << "; resume with --from " << next << " --append\n";
  return absl::OkStatus();
}

namespace {

// One line of an export (or a plain AuthEvent line) as an event.
absl::StatusOr<v1::AuthEvent> ImportLine(const std::string& line) {
  Json json;
  try {
    json = Json::parse(line);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  if (!json.is_object()) return absl::InvalidArgumentError("not an object");
  v1::AuthEvent event;
  if (json.contains("event_bytes")) {
    std::string bytes;
    if (!json["event_bytes"].is_string() ||
        !absl::Base64Unescape(json["event_bytes"].get<std::string>(), &bytes) ||
        !event.ParseFromString(bytes)) {
      return absl::InvalidArgumentError("event_bytes is not a valid event");
    }
    return event;
  }
  const Json& body = json.contains("event") ? json["event"] : json;
  return ParseEventLine(body.dump());
}

}  // namespace

absl::Status RunImport(const GlobalOptions& global,
                       const ImportOptions& options) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (!options.file.empty() && options.file != "-") {
    file.open(options.file);
    if (!file) return UsageError(absl::StrCat("cannot read ", options.file));
    in = &file;
  }
  Client client(global);
  v1::AppendEventsRequest request;
  AppendCounts totals;
  ProgressLine progress("import");
  absl::Time started = absl::Now();
  auto flush = [&]() -> absl::Status {
    if (request.events().empty()) return absl::OkStatus();
    absl::StatusOr<AppendCounts> counts = Append(client, request);
    if (!counts.ok()) return counts.status();
    totals.appended += counts->appended;
    totals.duplicates += counts->duplicates;
    request.clear_events();
    uint64_t done = totals.appended + totals.duplicates;
    double seconds = absl::ToDoubleSeconds(absl::Now() - started);
    progress.Update(done, done, seconds > 0 ? done / seconds : 0);
    return absl::OkStatus();
  };
  std::string line;
  for (int number = 1; std::getline(*in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<v1::AuthEvent> event = ImportLine(line);
    if (!event.ok()) {
      // Send what came before the bad line, so that a retry from here on
      // (or of the whole file, which is idempotent) completes the import.
      absl::Status sent = flush();
      progress.Done();
      return InputError(absl::StrCat(
          "line ", number, ": ", event.status().message(), "; ",
          sent.ok() ? "the lines before it were imported"
                    : "the lines before it may not all be imported"));
    }
    *request.add_events() = std::move(*event);
    if (request.events_size() >= options.batch) {
      if (absl::Status s = flush(); !s.ok()) return s;
    }
  }
  if (absl::Status s = flush(); !s.ok()) return s;
  progress.Done();
  if (global.json) {
    std::cout << Json{{"appended", totals.appended},
                      {"duplicates", totals.duplicates}}
                     .dump()
              << '\n';
  } else {
    std::cout << "imported " << totals.appended << " new events, "
              << totals.duplicates << " already present\n";
  }
  return absl::OkStatus();
}

}  // namespace authtrail::cli
