// End-to-end tests of the `authtrail` CLI: the real binary runs in a child
// process against a TestServer (a real server on a free loopback port over
// RocksDB in a temporary folder). The tests assert on what it prints, on its
// exit code, and on what the server holds afterwards (read through the
// stubs, not through the CLI).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "authtrail/v1/admin.grpc.pb.h"
#include "authtrail/v1/history.grpc.pb.h"
#include "authtrail/v1/ingest.grpc.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/serialize.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

extern char** environ;

namespace authtrail::testing {
namespace {

using Json = nlohmann::json;

// ---- Running the binary ---------------------------------------------------

struct CliResult {
  int exit_code = -1;  // -1: killed (timeout) or did not start
  std::string out;
  std::string err;

  // Everything, for failure messages.
  std::string Describe() const {
    return absl::StrCat("exit ", exit_code, "\n--- stdout:\n", out,
                        "--- stderr:\n", err);
  }
};

// Runs `authtrail args...`, feeding `input` on standard input, and collects
// standard output, standard error and the exit code. Kills the child after
// `timeout`.
CliResult RunCli(const std::vector<std::string>& args,
                 const std::string& input = "",
                 absl::Duration timeout = absl::Seconds(60)) {
  CliResult result;
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return result;
  }
  std::vector<std::string> argv_strings = {AUTHTRAIL_CLI_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // The environment minus AUTHTRAIL_SERVER: every call names its server.
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "AUTHTRAIL_SERVER=")) env.push_back(*e);
  }
  env.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, AUTHTRAIL_CLI_PATH, &actions, nullptr,
                                  argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (spawned != 0) {
    ADD_FAILURE() << "cannot run " << AUTHTRAIL_CLI_PATH << ": errno "
                  << spawned;
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }

  // Feed stdin and drain both outputs together, so that no pipe fills up.
  int in_fd = in_pipe[1];
  fcntl(in_fd, F_SETFL, O_NONBLOCK);
  size_t written = 0;
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  }
  int out_fd = out_pipe[0];
  int err_fd = err_pipe[0];
  const absl::Time deadline = absl::Now() + timeout;
  bool killed = false;
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    const int64_t wait_ms =
        std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (wait_ms == 0 && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    if (poll(fds, n, killed ? 1000 : static_cast<int>(wait_ms)) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        const ssize_t w =
            write(in_fd, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = input.size();
        if (written == input.size()) {
          close(in_fd);
          in_fd = -1;
        }
        continue;
      }
      char buffer[65536];
      const ssize_t r = read(fds[i].fd, buffer, sizeof(buffer));
      if (r > 0) {
        (fds[i].fd == out_fd ? result.out : result.err).append(buffer, r);
      } else if (r == 0 || errno != EAGAIN) {
        close(fds[i].fd);
        (fds[i].fd == out_fd ? out_fd : err_fd) = -1;
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0) close(err_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!killed && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (killed) ADD_FAILURE() << "authtrail timed out: " << result.Describe();
  return result;
}

// ---- Helpers ----------------------------------------------------------------

// A fixed simulated period, far enough in the past that only the
// simulator's clock-ahead events are dated after the run.
constexpr char kSimStart[] = "2026-01-05T00:00:00Z";

absl::Time T(const std::string& rfc3339) {
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &error)) {
    ADD_FAILURE() << rfc3339 << ": " << error;
  }
  return t;
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// A uint64 of the protobuf JSON mapping (a string) or a plain JSON number.
uint64_t U64(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer())
    return static_cast<uint64_t>(value.get<int64_t>());
  uint64_t out = 0;
  if (!value.is_string() || !absl::SimpleAtoi(value.get<std::string>(), &out)) {
    ADD_FAILURE() << "not a uint64: " << value.dump();
  }
  return out;
}

Json ParseJson(const std::string& text) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << "not JSON: " << text;
  return json;
}

// Non-blank lines of `text`.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StripAsciiWhitespace(line).empty()) {
      lines.emplace_back(line);
    }
  }
  return lines;
}

// The value of "key   value" in a key/value block, or "" when absent.
std::string KeyValue(const std::string& text, const std::string& key) {
  for (const std::string& line : Lines(text)) {
    if (!absl::StartsWith(line, key + "  ")) continue;
    return std::string(
        absl::StripAsciiWhitespace(absl::string_view(line).substr(key.size())));
  }
  return "";
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::out | std::ios::trunc);
  file << text;
  ASSERT_TRUE(file.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

// Deterministic bytes of a message (maps sorted), unknown fields included.
std::string Bytes(const google::protobuf::Message& message) {
  return storage::SerializeStable(message);
}

v1::Stats GetStats(TestServer& server) {
  v1::Stats stats;
  const grpc::Status status =
      server.admin().GetStats(Context().get(), {}, &stats);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return stats;
}

// The whole log, through ReadLog.
std::vector<v1::RecordedEvent> ReadAll(TestServer& server) {
  std::vector<v1::RecordedEvent> out;
  uint64_t next = 1;
  while (true) {
    v1::ReadLogRequest request;
    request.set_from_position(next);
    request.set_max_events(1000);
    v1::ReadLogResponse response;
    const grpc::Status status =
        server.admin().ReadLog(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok() || response.events().empty()) break;
    for (const auto& e : response.events()) out.push_back(e);
    next = response.next_position();
    if (next > response.head_position()) break;
  }
  return out;
}

void AppendOk(TestServer& server, const std::vector<v1::AuthEvent>& events) {
  v1::AppendEventsResponse response;
  const grpc::Status status =
      server.ingest().AppendEvents(Context().get(), Batch(events), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
}

class CliTest : public ::testing::Test {
 protected:
  // `authtrail --server <server_> args...`.
  CliResult Cli(std::vector<std::string> args, const std::string& input = "") {
    return CliAt(server_, std::move(args), input);
  }
  static CliResult CliAt(TestServer& server, std::vector<std::string> args,
                         const std::string& input = "") {
    args.insert(args.begin(), {"--server", server.address()});
    return RunCli(args, input);
  }

  std::string Path(const std::string& name) const {
    return absl::StrCat(temp_.path(), "/", name);
  }

  TempDir temp_;
  TestServer server_;
};

// The emit input of tests 1 and 3: patient pat-1 declines a payer (conn-1,
// session sess-denied) and connects an EHR (conn-2, session sess-ok), whose
// refresh later fails. Enum values are written every way emit accepts.
std::string EmitInput() {
  const std::string source1 =
      R"("source":{"id":"src-aetna","name":"Aetna","kind":"PAYER"})";
  const std::string source1_prefixed =
      R"("source":{"id":"src-aetna","name":"Aetna","kind":"SOURCE_KIND_PAYER"})";
  const std::string source2 =
      R"("source":{"id":"src-epic","name":"Epic MyChart","kind":"ehr"})";
  const std::string c1 =
      R"("patient_id":"pat-1","connection_id":"conn-1","session_id":"sess-denied")";
  const std::string c2 =
      R"("patient_id":"pat-1","connection_id":"conn-2","session_id":"sess-ok")";
  const std::vector<std::string> lines = {
      // 1-3: conn-1, declined.
      absl::StrCat(R"({"event_id":"ev-1",)", c1, ",", source1,
                   R"(,"step":"PORTAL_REDIRECT","outcome":"SUCCEEDED",)",
                   R"("occurred_at":"2026-11-01T10:00:00Z"})"),
      absl::StrCat(R"({"event_id":"ev-2",)", c1, ",", source1_prefixed,
                   R"(,"step":"STEP_SIGN_IN","outcome":"OUTCOME_SUCCEEDED",)",
                   R"("occurred_at":"2026-11-01T10:01:00Z"})"),
      absl::StrCat(R"({"event_id":"ev-3",)", c1, ",", source1,
                   R"(,"step":"CONSENT","outcome":"DENIED",)",
                   R"("error_code":"access_denied",)",
                   R"("occurred_at":"2026-11-01T10:02:00Z"})"),
      // 4-9: conn-2, all the way to tokens.
      absl::StrCat(R"({"event_id":"ev-4",)", c2, ",", source2,
                   R"(,"step":"portal_redirect","outcome":"started",)",
                   R"("occurred_at":"2026-11-02T09:00:00Z"})"),
      absl::StrCat(R"({"event_id":"ev-5",)", c2, ",", source2,
                   R"(,"step":"STEP_PORTAL_REDIRECT","outcome":"SUCCEEDED",)",
                   R"("occurred_at":"2026-11-02T09:00:01Z"})"),
      absl::StrCat(R"({"event_id":"ev-6",)", c2, ",", source2,
                   R"(,"step":"SIGN_IN","outcome":"SUCCEEDED",)",
                   R"("occurred_at":"2026-11-02T09:01:00Z"})"),
      absl::StrCat(R"({"event_id":"ev-7",)", c2, ",", source2,
                   R"(,"step":"STEP_CONSENT","outcome":"SUCCEEDED",)",
                   R"("occurred_at":"2026-11-02T09:02:00Z"})"),
      absl::StrCat(R"({"event_id":"ev-8",)", c2, ",", source2,
                   R"(,"step":"OAUTH_CALLBACK","outcome":"SUCCEEDED",)",
                   R"("occurred_at":"2026-11-02T09:02:02Z"})"),
      absl::StrCat(
          R"({"event_id":"ev-9",)", c2, ",", source2,
          R"(,"step":"TOKEN_EXCHANGE","outcome":"SUCCEEDED",)",
          R"("http_status":200,"occurred_at":"2026-11-02T09:02:03Z"})"),
  };
  return absl::StrJoin(lines, "\n") + "\n";
}

// A later failed refresh of conn-2 (no session, as refresh schedulers send).
std::string RefreshFailureLine() {
  return R"({"event_id":"ev-10","patient_id":"pat-1","connection_id":"conn-2",)"
         R"("source":{"id":"src-epic","name":"Epic MyChart","kind":"EHR"},)"
         R"("step":"TOKEN_REFRESH","outcome":"FAILED","error_code":"invalid_grant",)"
         R"("http_status":400,"occurred_at":"2026-11-03T09:00:00Z"})"
         "\n";
}

// ---- 1. emit and connections ----------------------------------------------

TEST_F(CliTest, EmitReadsEnumsWithAndWithoutPrefixAndIsIdempotent) {
  const std::string file = Path("events.jsonl");
  WriteFile(file, EmitInput());

  CliResult first = Cli({"emit", file});
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  EXPECT_EQ(KeyValue(first.out, "events"), "9") << first.out;
  EXPECT_EQ(KeyValue(first.out, "appended"), "9") << first.out;
  EXPECT_EQ(KeyValue(first.out, "duplicates"), "0") << first.out;
  EXPECT_EQ(first.err, "");
  v1::Stats stats = GetStats(server_);
  EXPECT_EQ(stats.head_position(), 9u);
  EXPECT_EQ(stats.event_count(), 9u);

  // Every spelling of an enum value was read as the same value.
  const std::vector<v1::RecordedEvent> log = ReadAll(server_);
  ASSERT_EQ(log.size(), 9u);
  const v1::Step steps[] = {v1::STEP_PORTAL_REDIRECT, v1::STEP_SIGN_IN,
                            v1::STEP_CONSENT,         v1::STEP_PORTAL_REDIRECT,
                            v1::STEP_PORTAL_REDIRECT, v1::STEP_SIGN_IN,
                            v1::STEP_CONSENT,         v1::STEP_OAUTH_CALLBACK,
                            v1::STEP_TOKEN_EXCHANGE};
  for (size_t i = 0; i < log.size(); ++i) {
    const v1::AuthEvent& e = log[i].event();
    EXPECT_EQ(log[i].position(), i + 1);
    EXPECT_EQ(e.event_id(), absl::StrCat("ev-", i + 1));
    EXPECT_EQ(e.step(), steps[i]) << e.event_id();
    EXPECT_EQ(e.outcome(), i == 2   ? v1::OUTCOME_DENIED
                           : i == 3 ? v1::OUTCOME_STARTED
                                    : v1::OUTCOME_SUCCEEDED)
        << e.event_id();
    EXPECT_EQ(e.source().kind(),
              i < 3 ? v1::SOURCE_KIND_PAYER : v1::SOURCE_KIND_EHR)
        << e.event_id();
  }
  EXPECT_EQ(log[2].event().error_code(), "access_denied");
  EXPECT_EQ(log[8].event().http_status(), 200);

  // connections, global --json after the command: one JSON object a line.
  CliResult connections = Cli({"connections", "pat-1", "--json"});
  ASSERT_EQ(connections.exit_code, 0) << connections.Describe();
  std::map<std::string, Json> by_id;
  for (const std::string& line : Lines(connections.out)) {
    Json json = ParseJson(line);
    ASSERT_TRUE(json.is_object()) << line;
    by_id[json.value("connection_id", "")] = json;
  }
  ASSERT_EQ(by_id.size(), 2u) << connections.out;
  ASSERT_TRUE(by_id.count("conn-1")) << connections.out;
  ASSERT_TRUE(by_id.count("conn-2")) << connections.out;
  const Json& denied = by_id["conn-1"];
  EXPECT_EQ(denied.value("state", ""), "CONNECTION_STATE_DENIED") << denied;
  EXPECT_EQ(denied.value("patient_id", ""), "pat-1");
  EXPECT_EQ(denied["source"].value("kind", ""), "SOURCE_KIND_PAYER");
  EXPECT_EQ(denied["source"].value("id", ""), "src-aetna");
  EXPECT_EQ(denied["last_failure"].value("error_code", ""), "access_denied")
      << denied;
  EXPECT_EQ(by_id["conn-2"].value("state", ""), "CONNECTION_STATE_ACTIVE")
      << by_id["conn-2"];
  EXPECT_EQ(by_id["conn-2"]["source"].value("kind", ""), "SOURCE_KIND_EHR");

  // The table form names both connections and their states.
  CliResult table = Cli({"connections", "pat-1"});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_TRUE(absl::StrContains(table.out, "DENIED")) << table.out;
  EXPECT_TRUE(absl::StrContains(table.out, "ACTIVE")) << table.out;

  // The same file again: all duplicates, nothing written.
  const std::string hash = stats.head_hash();
  CliResult again = Cli({"--json", "emit", file});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  Json counts = ParseJson(again.out);
  EXPECT_EQ(U64(counts["events"]), 9u) << again.out;
  EXPECT_EQ(U64(counts["appended"]), 0u) << again.out;
  EXPECT_EQ(U64(counts["duplicates"]), 9u) << again.out;
  EXPECT_EQ(U64(counts["batches"]), 1u) << again.out;
  stats = GetStats(server_);
  EXPECT_EQ(stats.head_position(), 9u);
  EXPECT_EQ(stats.head_hash(), hash);

  // From standard input, in batches of 4: still all duplicates.
  CliResult piped = Cli({"--json", "emit", "-", "--batch", "4"}, EmitInput());
  ASSERT_EQ(piped.exit_code, 0) << piped.Describe();
  counts = ParseJson(piped.out);
  EXPECT_EQ(U64(counts["duplicates"]), 9u) << piped.out;
  EXPECT_EQ(U64(counts["batches"]), 3u) << piped.out;
  EXPECT_EQ(GetStats(server_).head_position(), 9u);
}

// ---- 2. emit: bad input and refused events --------------------------------

TEST_F(CliTest, EmitBadLineExitsThreeAndNamesTheLine) {
  const std::vector<std::string> good = Lines(EmitInput());
  struct Case {
    const char* what;
    std::string line3;
  } cases[] = {
      {"broken JSON", R"({"event_id":"ev-3","step":)"},
      {"unknown enum value",
       R"({"event_id":"ev-3","step":"NOT_A_STEP","outcome":"FAILED"})"},
      {"not an object", R"(["ev-3"])"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string file = Path("bad.jsonl");
    WriteFile(file, absl::StrCat(good[0], "\n", good[1], "\n", c.line3, "\n",
                                 good[3], "\n"));
    CliResult result = Cli({"emit", file});
    EXPECT_EQ(result.exit_code, 3) << result.Describe();
    EXPECT_TRUE(absl::StrContains(result.err, "line 3")) << result.err;
    EXPECT_TRUE(absl::StrContains(result.err, "input error")) << result.err;
    EXPECT_EQ(Lines(result.err).size(), 1u) << "one line: " << result.err;
    // The batch holding lines 1-2 was never sent.
    EXPECT_EQ(GetStats(server_).head_position(), 0u);
  }

  CliResult missing = Cli({"emit", Path("no-such-file.jsonl")});
  EXPECT_EQ(missing.exit_code, 3) << missing.Describe();
  EXPECT_TRUE(absl::StrContains(missing.err, "no-such-file.jsonl"))
      << missing.err;
}

// A step, outcome or source kind that is not a value is refused before
// sending, with the values it could have been.
TEST_F(CliTest, EmitUnknownStepListsTheSteps) {
  const std::string file = Path("step.jsonl");
  WriteFile(file, R"({"event_id":"ev-s","patient_id":"pat-1","step":"LOGIN",)"
                  R"("outcome":"STARTED","occurred_at":"2026-11-01T10:00:00Z"})"
                  "\n");
  CliResult result = Cli({"emit", file});
  EXPECT_EQ(result.exit_code, 3) << result.Describe();
  EXPECT_TRUE(absl::StrContains(result.err, "step: \"LOGIN\" is not one of"))
      << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "SIGN_IN")) << result.err;
  EXPECT_FALSE(absl::StrContains(result.err, "STEP_LOGIN")) << result.err;
  EXPECT_EQ(GetStats(server_).head_position(), 0u);
}

// An event the server refuses is bad input data (exit 3, as the README's
// exit codes say); a server that cannot be reached is exit 1.
TEST_F(CliTest, EmitRefusedEventIsBadInputAndNamesTheField) {
  const std::vector<std::string> good = Lines(EmitInput());
  const std::string file = Path("refused.jsonl");
  // Line 2 FAILED without an error code.
  WriteFile(file, absl::StrCat(good[0], "\n",
                               R"({"event_id":"ev-x","patient_id":"pat-1",)"
                               R"("step":"TOKEN_EXCHANGE","outcome":"FAILED",)"
                               R"("occurred_at":"2026-11-01T10:00:00Z"})",
                               "\n", good[2], "\n"));
  CliResult result = Cli({"emit", file});
  EXPECT_EQ(result.exit_code, 3) << result.Describe();
  EXPECT_TRUE(absl::StrContains(result.err, "input error")) << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "events[1].error_code"))
      << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "lines 1-3 not sent"))
      << result.err;
  EXPECT_TRUE(absl::StrContains(result.err, "the server refused line 2"))
      << result.err;
  EXPECT_EQ(Lines(result.err).size(), 1u) << result.err;
  EXPECT_EQ(result.out, "");
  // The batch is all-or-nothing.
  EXPECT_EQ(GetStats(server_).head_position(), 0u);

  // One event a batch: line 1 is written before line 2 is refused.
  CliResult batched = Cli({"emit", file, "--batch", "1"});
  EXPECT_EQ(batched.exit_code, 3) << batched.Describe();
  EXPECT_TRUE(
      absl::StrContains(batched.err, "line 2 not sent: the server refused it"))
      << batched.err;
  EXPECT_TRUE(absl::StrContains(batched.err, "1 events sent before"))
      << batched.err;
  EXPECT_TRUE(absl::StrContains(batched.err, "error_code")) << batched.err;
  EXPECT_EQ(GetStats(server_).head_position(), 1u);

  // An event id reused with other content (ALREADY_EXISTS): bad input too.
  std::string changed = good[0];
  changed.replace(changed.find("10:00:00Z"), 9, "10:00:30Z");
  const std::string conflict_file = Path("conflict.jsonl");
  WriteFile(conflict_file, changed + "\n");
  CliResult conflict = Cli({"emit", conflict_file});
  EXPECT_EQ(conflict.exit_code, 3) << conflict.Describe();
  EXPECT_TRUE(absl::StrContains(conflict.err, "ev-1")) << conflict.err;
  EXPECT_TRUE(absl::StrContains(conflict.err, "different content"))
      << conflict.err;
  EXPECT_EQ(GetStats(server_).head_position(), 1u);

  // No server: the RPC failed, exit 1 with the gRPC code.
  const std::string ok_file = Path("ok.jsonl");
  WriteFile(ok_file, good[0] + "\n");
  CliResult down =
      RunCli({"--server", "127.0.0.1:1", "--timeout", "2", "emit", ok_file});
  EXPECT_EQ(down.exit_code, 1) << down.Describe();
  EXPECT_TRUE(absl::StrContains(down.err, "UNAVAILABLE")) << down.err;
  EXPECT_TRUE(absl::StrContains(down.err, "line 1 not sent")) << down.err;
}

// ---- 3. diagnose and usage errors -----------------------------------------

TEST_F(CliTest, DiagnoseAnswersTheFiveQuestions) {
  const std::string file = Path("events.jsonl");
  WriteFile(file, EmitInput() + RefreshFailureLine());
  CliResult emitted = Cli({"emit", file});
  ASSERT_EQ(emitted.exit_code, 0) << emitted.Describe();
  ASSERT_EQ(GetStats(server_).head_position(), 10u);

  const auto answers = [](const Json& d) {
    std::vector<std::string> out;
    for (const char* question :
         {"reached_portal", "signed_in", "approved_access", "token_exchanged",
          "refresh_failed_later"}) {
      out.push_back(d.contains(question) ? d[question].value("answer", "")
                                         : "(absent)");
    }
    return out;
  };
  const auto evidence = [](const Json& d, const char* question) -> uint64_t {
    if (!d.contains(question) || !d[question].contains("evidence")) return 0;
    return U64(d[question]["evidence"].value("position", Json("0")));
  };

  // All the way to tokens; a refresh failed a day later.
  CliResult ok = Cli({"diagnose", "sess-ok", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.Describe();
  Json d = ParseJson(ok.out);
  EXPECT_EQ(answers(d),
            (std::vector<std::string>{"ANSWER_YES", "ANSWER_YES", "ANSWER_YES",
                                      "ANSWER_YES", "ANSWER_YES"}))
      << d.dump(2);
  EXPECT_EQ(evidence(d, "reached_portal"), 5u);
  EXPECT_EQ(evidence(d, "signed_in"), 6u);
  EXPECT_EQ(evidence(d, "approved_access"), 7u);
  EXPECT_EQ(evidence(d, "token_exchanged"), 9u);
  EXPECT_EQ(evidence(d, "refresh_failed_later"), 10u);
  EXPECT_EQ(d.value("session_id", ""), "sess-ok");
  EXPECT_EQ(d.value("connection_id", ""), "conn-2");
  EXPECT_EQ(d.value("furthest_step", ""), "STEP_TOKEN_EXCHANGE");
  EXPECT_EQ(U64(d["event_count"]), 6u);
  EXPECT_FALSE(d.contains("root_cause")) << d.dump(2);

  // Declined at consent.
  CliResult denied = Cli({"--json", "diagnose", "sess-denied"});
  ASSERT_EQ(denied.exit_code, 0) << denied.Describe();
  d = ParseJson(denied.out);
  EXPECT_EQ(answers(d),
            (std::vector<std::string>{"ANSWER_YES", "ANSWER_YES", "ANSWER_NO",
                                      "ANSWER_NO", "ANSWER_UNKNOWN"}))
      << d.dump(2);
  EXPECT_EQ(evidence(d, "reached_portal"), 1u);
  EXPECT_EQ(evidence(d, "signed_in"), 2u);
  EXPECT_EQ(evidence(d, "approved_access"), 3u);
  EXPECT_EQ(d["root_cause"].value("error_code", ""), "access_denied")
      << d.dump(2);
  EXPECT_EQ(d.value("furthest_step", ""), "STEP_CONSENT");

  // The table form: the five questions and the root cause.
  CliResult table = Cli({"diagnose", "sess-denied"});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  for (const char* text :
       {"1. reached the portal?", "3. approved access?",
        "5. a refresh failed later?", "access_denied", "UNKNOWN"}) {
    EXPECT_TRUE(absl::StrContains(table.out, text)) << text << "\n"
                                                    << table.out;
  }
}

TEST_F(CliTest, ErrorsAndUsageExitCodes) {
  CliResult unknown = Cli({"diagnose", "unknown-session"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND")) << unknown.err;
  EXPECT_TRUE(absl::StrContains(unknown.err, "unknown-session")) << unknown.err;
  EXPECT_EQ(unknown.out, "");

  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"diagnose", "sess-1", "--no-such-flag"},
           {"diagnose"},
           {"no-such-command"},
           {},
           {"events", "--step", "NOT_A_STEP"},
           {"events", "--since", "yesterday-ish"},
           {"timeline", "--since", "now-1d"},
           {"verify", "--anchor", "not-an-anchor"},
           {"verify", "--anchor", "3747:00"},
           {"simulate", "--patients", "0"},
       }) {
    CliResult result = Cli(args);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(args, " ") << "\n"
                                   << result.Describe();
    EXPECT_TRUE(absl::StrContains(result.err, "usage error"))
        << absl::StrJoin(args, " ") << "\n"
        << result.err;
  }

  CliResult named = Cli({"diagnose"});
  EXPECT_TRUE(absl::StrContains(named.err, "authtrail diagnose: usage error"))
      << named.err;

  // --help is not an error.
  CliResult help = Cli({"emit", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.Describe();
  EXPECT_TRUE(absl::StrContains(help.out, "--batch")) << help.out;

  // No server listening: exit 1, naming the RPC.
  CliResult down =
      RunCli({"--server", "127.0.0.1:1", "--timeout", "2", "stats"});
  EXPECT_EQ(down.exit_code, 1) << down.Describe();
  EXPECT_TRUE(absl::StrContains(down.err, "GetStats")) << down.err;
}

// ---- 4. simulate ------------------------------------------------------------

TEST_F(CliTest, SimulateReportMatchesTheLogAndRepeatsAsDuplicates) {
  const std::vector<std::string> args = {"simulate", "--patients", "30",
                                         "--seed",   "5",          "--start",
                                         kSimStart,  "--json"};
  const absl::Time before_first = absl::Now();
  CliResult first = Cli(args);
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  Json r1 = ParseJson(first.out);
  ASSERT_TRUE(r1.is_object()) << first.out;
  const uint64_t events = U64(r1["events"]);
  const uint64_t sent = U64(r1["events_sent"]);
  const uint64_t repeats = U64(r1["repeated_deliveries"]);
  EXPECT_EQ(U64(r1["patients"]), 30u);
  EXPECT_FALSE(r1.value("dry_run", true));
  EXPECT_GT(events, 100u);
  EXPECT_EQ(sent, events + repeats);
  // Only the second deliveries were duplicates.
  EXPECT_EQ(U64(r1["duplicates_reported"]), repeats) << first.out;

  v1::Stats stats = GetStats(server_);
  EXPECT_EQ(stats.head_position(), events);
  EXPECT_EQ(stats.event_count(), events);

  // Clock-ahead events are dated 30-32 minutes after the run started (and
  // get ids of their own each run); every other event lies in the simulated
  // period, long past.
  const auto clock_ahead = [](const std::vector<v1::RecordedEvent>& log,
                              absl::Time run_started) {
    std::set<std::string> ids;
    for (const v1::RecordedEvent& e : log) {
      const absl::Time t = TimeOf(e.event().occurred_at());
      if (t >= run_started + absl::Minutes(30)) {
        EXPECT_TRUE(e.future_dated()) << e.ShortDebugString();
        EXPECT_LT(t, absl::Now() + absl::Minutes(33));
        ids.insert(e.event().event_id());
      } else {
        EXPECT_FALSE(e.future_dated()) << e.ShortDebugString();
        EXPECT_LT(t, T(kSimStart) + absl::Hours(24 * 11));
      }
    }
    return ids;
  };
  const std::vector<v1::RecordedEvent> log1 = ReadAll(server_);
  ASSERT_EQ(log1.size(), events);
  const std::set<std::string> ahead1 = clock_ahead(log1, before_first);
  // With these options the generator draws exactly one clock-ahead event
  // (a pure function of seed, start, days and patients), so the rerun below
  // exercises that case.
  EXPECT_EQ(ahead1.size(), 1u);
  std::set<std::string> ids;
  for (const auto& e : log1) ids.insert(e.event().event_id());
  EXPECT_EQ(ids.size(), events) << "event ids are unique";

  // Same options again: the same events, all duplicates, except that each
  // clock-ahead event is sent with a new date and so a new id.
  const absl::Time before_second = absl::Now();
  CliResult second = Cli(args);
  ASSERT_EQ(second.exit_code, 0) << second.Describe();
  Json r2 = ParseJson(second.out);
  EXPECT_EQ(U64(r2["events"]), events);
  EXPECT_EQ(U64(r2["events_sent"]), sent);
  EXPECT_EQ(U64(r2["repeated_deliveries"]), repeats);
  EXPECT_EQ(r2["samples"], r1["samples"]);
  EXPECT_EQ(U64(r2["duplicates_reported"]), sent - ahead1.size()) << second.out;
  stats = GetStats(server_);
  EXPECT_EQ(stats.head_position(), events + ahead1.size());

  const std::vector<v1::RecordedEvent> log2 = ReadAll(server_);
  ASSERT_EQ(log2.size(), events + ahead1.size());
  for (size_t i = 0; i < log1.size(); ++i) {
    EXPECT_EQ(Bytes(log2[i]), Bytes(log1[i])) << "position " << i + 1;
  }
  const std::vector<v1::RecordedEvent> appended(log2.begin() + log1.size(),
                                                log2.end());
  const std::set<std::string> ahead2 = clock_ahead(appended, before_second);
  EXPECT_EQ(ahead2.size(), ahead1.size());
  for (const std::string& id : ahead2) EXPECT_EQ(ahead1.count(id), 0u) << id;

  // Neither --concurrency nor --batch changes the traffic.
  std::vector<std::string> other_args = args;
  other_args.insert(other_args.end(), {"--concurrency", "2", "--batch", "13"});
  CliResult third = Cli(other_args);
  ASSERT_EQ(third.exit_code, 0) << third.Describe();
  Json r3 = ParseJson(third.out);
  EXPECT_EQ(U64(r3["events_sent"]), sent);
  EXPECT_EQ(U64(r3["duplicates_reported"]), sent - ahead1.size()) << third.out;
  EXPECT_EQ(GetStats(server_).head_position(), events + 2 * ahead1.size());

  // The sample session the report names diagnoses as declined.
  const std::string declined =
      r1["samples"].value("declined_session", std::string());
  if (!declined.empty()) {
    CliResult diagnosis = Cli({"diagnose", declined, "--json"});
    ASSERT_EQ(diagnosis.exit_code, 0) << diagnosis.Describe();
    Json d = ParseJson(diagnosis.out);
    EXPECT_EQ(d["approved_access"].value("answer", ""), "ANSWER_NO")
        << d.dump(2);
  }
}

// The suggested commands, pasted as printed, reach the same server and show
// what they promise: a FAILED connection, a declined attempt. Seeds whose
// first failed connection has an event dated by a skewed clock or delivered
// late (the server reads that one differently), each on a server of its
// own (their patients share ids).
TEST_F(CliTest, SimulateSuggestionsShowWhatTheySay) {
  for (const char* seed : {"25", "26", "42", "46"}) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    TestServer server;
    CliResult run = CliAt(server, {"simulate", "--patients", "50", "--seed",
                                   seed, "--start", kSimStart});
    ASSERT_EQ(run.exit_code, 0) << run.Describe();
    std::map<std::string, std::vector<std::string>> suggested;
    for (const std::string& line : Lines(run.out)) {
      std::vector<std::string> words =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.empty() || words[0] != "authtrail") continue;
      // authtrail --server ADDRESS COMMAND ID # WHY
      ASSERT_GE(words.size(), 5u) << line;
      ASSERT_EQ(words[1], "--server") << line;
      ASSERT_EQ(words[2], server.address()) << line;
      const size_t why = line.find("# ");
      if (why == std::string::npos) continue;
      suggested[line.substr(why + 2)] = {words[3], words[4]};
    }
    ASSERT_TRUE(suggested.count("has a FAILED connection")) << run.out;
    const std::vector<std::string>& failed =
        suggested["has a FAILED connection"];
    CliResult connections = CliAt(server, {failed[0], failed[1], "--json"});
    ASSERT_EQ(connections.exit_code, 0) << connections.Describe();
    EXPECT_TRUE(absl::StrContains(connections.out,
                                  "\"state\":\"CONNECTION_STATE_FAILED\""))
        << run.out << connections.out;
    if (suggested.count("the patient declined")) {
      const std::vector<std::string>& declined =
          suggested["the patient declined"];
      CliResult diagnosis = CliAt(server, {declined[0], declined[1], "--json"});
      ASSERT_EQ(diagnosis.exit_code, 0) << diagnosis.Describe();
      EXPECT_EQ(ParseJson(diagnosis.out)["approved_access"].value("answer", ""),
                "ANSWER_NO")
          << diagnosis.out;
    }
  }
}

TEST_F(CliTest, SimulateDryRunFeedsEmit) {
  // The dry run prints what a real run sends; emitting it sends the same
  // events, so a real run afterwards finds them all (but the clock-ahead
  // ones, dated from each run's own clock) already there.
  CliResult dry = Cli({"simulate", "--patients", "8", "--seed", "3", "--start",
                       kSimStart, "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.Describe();
  Json report = ParseJson(dry.err);
  ASSERT_TRUE(report.is_object()) << dry.err;
  EXPECT_TRUE(report.value("dry_run", false));
  EXPECT_FALSE(report.contains("duplicates_reported"));
  const uint64_t sent = U64(report["events_sent"]);
  EXPECT_EQ(Lines(dry.out).size(), sent);
  EXPECT_EQ(GetStats(server_).head_position(), 0u);

  CliResult emitted = Cli({"--json", "emit"}, dry.out);
  ASSERT_EQ(emitted.exit_code, 0) << emitted.Describe();
  Json counts = ParseJson(emitted.out);
  EXPECT_EQ(U64(counts["events"]), sent);
  EXPECT_EQ(U64(counts["appended"]), U64(report["events"]));
  EXPECT_EQ(U64(counts["duplicates"]), U64(report["repeated_deliveries"]));
}

// ---- 5. export and import -------------------------------------------------

TEST_F(CliTest, ExportImportCopiesTheLogExactlyAndIsIdempotent) {
  CliResult simulated = Cli({"simulate", "--patients", "12", "--seed", "11",
                             "--start", kSimStart, "--json"});
  ASSERT_EQ(simulated.exit_code, 0) << simulated.Describe();
  // An event with a field this version does not know.
  v1::AuthEvent future_field = Event("ev-unknown-field")
                                   .Patient("pat-u")
                                   .Connection("conn-u")
                                   .Session("sess-u")
                                   .Source("src-u", "Unknown Fields Inc.")
                                   .At(T("2026-11-01T10:00:00Z"))
                                   .Step(v1::STEP_PORTAL_REDIRECT)
                                   .Succeeded();
  future_field.GetReflection()
      ->MutableUnknownFields(&future_field)
      ->AddVarint(900, 7);
  ASSERT_NO_FATAL_FAILURE(AppendOk(server_, {future_field}));
  const uint64_t head = GetStats(server_).head_position();
  ASSERT_GT(head, 100u);

  const std::string file = Path("trail.jsonl");
  CliResult exported = Cli({"export", file});
  ASSERT_EQ(exported.exit_code, 0) << exported.Describe();
  EXPECT_EQ(exported.out, "");
  EXPECT_TRUE(absl::StrContains(
      exported.err, absl::StrCat("exported ", head, " events, positions 1..",
                                 head, "; resume with --from ", head + 1)))
      << exported.err;
  const std::vector<std::string> lines = Lines(ReadFile(file));
  ASSERT_EQ(lines.size(), head);
  for (size_t i = 0; i < lines.size(); ++i) {
    Json json = ParseJson(lines[i]);
    ASSERT_EQ(U64(json["position"]), i + 1);
    ASSERT_TRUE(json.contains("event_bytes")) << lines[i];
  }

  TestServer other;
  CliResult imported = CliAt(other, {"import", file});
  ASSERT_EQ(imported.exit_code, 0) << imported.Describe();
  EXPECT_EQ(imported.out, absl::StrCat("imported ", head,
                                       " new events, 0 already present\n"));
  CliResult again = CliAt(other, {"import", file, "--json"});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  Json counts = ParseJson(again.out);
  EXPECT_EQ(U64(counts["appended"]), 0u) << again.out;
  EXPECT_EQ(U64(counts["duplicates"]), head) << again.out;

  EXPECT_EQ(GetStats(other).head_position(), head);
  const std::vector<v1::RecordedEvent> source_log = ReadAll(server_);
  const std::vector<v1::RecordedEvent> copy_log = ReadAll(other);
  ASSERT_EQ(source_log.size(), head);
  ASSERT_EQ(copy_log.size(), head);
  for (size_t i = 0; i < head; ++i) {
    ASSERT_EQ(copy_log[i].position(), i + 1);
    EXPECT_EQ(Bytes(copy_log[i].event()), Bytes(source_log[i].event()))
        << "position " << i + 1 << "\n"
        << source_log[i].ShortDebugString() << "\n"
        << copy_log[i].ShortDebugString();
  }

  // The unknown field made it through (its value and number intact).
  const v1::AuthEvent& copied = copy_log.back().event();
  EXPECT_EQ(copied.event_id(), "ev-unknown-field");
  const google::protobuf::UnknownFieldSet& unknown =
      copied.GetReflection()->GetUnknownFields(copied);
  ASSERT_EQ(unknown.field_count(), 1);
  EXPECT_EQ(unknown.field(0).number(), 900);
  EXPECT_EQ(unknown.field(0).varint(), 7u);
  EXPECT_EQ(copied.SerializeAsString(), future_field.SerializeAsString());

  // And the copy answers like the original.
  CliResult verify = CliAt(other, {"verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.Describe();
}

// ---- 6. export ranges -------------------------------------------------------

TEST_F(CliTest, ExportRangeAndResume) {
  std::vector<v1::AuthEvent> events;
  for (int i = 0; i < 4; ++i) {
    auto attempt = SuccessfulAttempt(
        absl::StrCat("a", i), "pat-r", absl::StrCat("conn-r", i),
        absl::StrCat("sess-r", i), T("2026-11-01T10:00:00Z") + absl::Hours(i));
    events.insert(events.end(), attempt.begin(), attempt.end());
  }
  ASSERT_NO_FATAL_FAILURE(AppendOk(server_, events));
  const uint64_t head = GetStats(server_).head_position();
  ASSERT_EQ(head, 28u);

  const auto positions = [](const std::string& path) {
    std::vector<uint64_t> out;
    for (const std::string& line : Lines(ReadFile(path))) {
      out.push_back(U64(ParseJson(line)["position"]));
    }
    return out;
  };
  const auto range = [](uint64_t from, uint64_t to) {
    std::vector<uint64_t> out;
    for (uint64_t p = from; p <= to; ++p) out.push_back(p);
    return out;
  };

  const std::string part1 = Path("part1.jsonl");
  CliResult first = Cli({"export", part1, "--from", "5", "--to", "12"});
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  EXPECT_EQ(positions(part1), range(5, 12));
  EXPECT_TRUE(absl::StrContains(
      first.err, "exported 8 events, positions 5..12; resume with --from 13"))
      << first.err;

  // Resuming where it stopped gives the rest, to the head.
  const std::string part2 = Path("part2.jsonl");
  CliResult rest = Cli({"export", part2, "--from", "13"});
  ASSERT_EQ(rest.exit_code, 0) << rest.Describe();
  EXPECT_EQ(positions(part2), range(13, head));
  EXPECT_TRUE(absl::StrContains(rest.err, "resume with --from 29")) << rest.err;

  // Resuming into the same file with --append adds to it; without, the
  // file is replaced.
  const std::string whole = Path("whole.jsonl");
  CliResult head_part = Cli({"export", whole, "--to", "4"});
  ASSERT_EQ(head_part.exit_code, 0) << head_part.Describe();
  EXPECT_EQ(positions(whole), range(1, 4));
  EXPECT_TRUE(absl::StrContains(head_part.err, "resume with --from 5"))
      << head_part.err;
  CliResult appended = Cli({"export", whole, "--from", "5", "--append"});
  ASSERT_EQ(appended.exit_code, 0) << appended.Describe();
  EXPECT_EQ(positions(whole), range(1, head));
  CliResult replaced = Cli({"export", whole, "--from", "27"});
  ASSERT_EQ(replaced.exit_code, 0) << replaced.Describe();
  EXPECT_EQ(positions(whole), range(27, head));

  // To standard output; one position; a range past the head.
  CliResult one = Cli({"export", "--from", "7", "--to", "7"});
  ASSERT_EQ(one.exit_code, 0) << one.Describe();
  ASSERT_EQ(Lines(one.out).size(), 1u) << one.out;
  EXPECT_EQ(U64(ParseJson(Lines(one.out)[0])["position"]), 7u);
  Json event7 = ParseJson(Lines(one.out)[0])["event"];
  EXPECT_EQ(event7.value("event_id", ""), events[6].event_id());

  const std::string tail = Path("tail.jsonl");
  CliResult past = Cli({"export", tail, "--from", "25", "--to", "100"});
  ASSERT_EQ(past.exit_code, 0) << past.Describe();
  EXPECT_EQ(positions(tail), range(25, head));

  const std::string none = Path("none.jsonl");
  CliResult empty = Cli({"export", none, "--from", "29"});
  ASSERT_EQ(empty.exit_code, 0) << empty.Describe();
  EXPECT_TRUE(positions(none).empty());
  EXPECT_TRUE(absl::StrContains(empty.err, "(none)")) << empty.err;
  EXPECT_TRUE(absl::StrContains(empty.err, "resume with --from 29"))
      << empty.err;

  // The two parts, imported elsewhere in order, make positions 1..24 of a
  // fresh log hold events 5..28.
  TestServer other;
  for (const std::string& part : {part1, part2}) {
    CliResult imported = CliAt(other, {"import", part});
    ASSERT_EQ(imported.exit_code, 0) << imported.Describe();
  }
  const std::vector<v1::RecordedEvent> copy = ReadAll(other);
  ASSERT_EQ(copy.size(), head - 4);
  for (size_t i = 0; i < copy.size(); ++i) {
    EXPECT_EQ(Bytes(copy[i].event()), Bytes(events[i + 4])) << i;
  }
}

// ---- 7. verify, rebuild, backup -------------------------------------------

TEST_F(CliTest, VerifyRebuildAndBackup) {
  const std::string file = Path("events.jsonl");
  WriteFile(file, EmitInput() + RefreshFailureLine());
  ASSERT_EQ(Cli({"emit", file}).exit_code, 0);
  const v1::Stats stats = GetStats(server_);
  ASSERT_EQ(stats.head_position(), 10u);

  CliResult verify = Cli({"verify"});
  ASSERT_EQ(verify.exit_code, 0) << verify.Describe();
  EXPECT_EQ(KeyValue(verify.out, "result"), "OK") << verify.out;
  EXPECT_EQ(KeyValue(verify.out, "events checked"), "10") << verify.out;
  EXPECT_EQ(KeyValue(verify.out, "head hash"), stats.head_hash()) << verify.out;
  // A short run reads in whole milliseconds or microseconds.
  const std::string took_text = KeyValue(verify.out, "took");
  absl::string_view took = took_text;
  EXPECT_TRUE(absl::ConsumeSuffix(&took, "ms") ||
              absl::ConsumeSuffix(&took, "us") ||
              absl::ConsumeSuffix(&took, "s"))
      << verify.out;
  int64_t whole = 0;
  EXPECT_TRUE(absl::SimpleAtoi(took, &whole)) << verify.out;

  // Anchored at what stats showed; then at a wrong hash.
  CliResult anchored =
      Cli({"verify", "--anchor",
           absl::StrCat(stats.head_position(), ":", stats.head_hash())});
  EXPECT_EQ(anchored.exit_code, 0) << anchored.Describe();
  std::string wrong = stats.head_hash();
  ASSERT_FALSE(wrong.empty());
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  CliResult tampered = Cli(
      {"verify", "--anchor", absl::StrCat(stats.head_position(), ":", wrong)});
  EXPECT_EQ(tampered.exit_code, 1) << tampered.Describe();
  EXPECT_EQ(KeyValue(tampered.out, "result"), "PROBLEM") << tampered.out;
  EXPECT_TRUE(absl::StrContains(tampered.err, "verify found a problem"))
      << tampered.err;

  CliResult verify_json = Cli({"verify", "--log-only", "--json"});
  ASSERT_EQ(verify_json.exit_code, 0) << verify_json.Describe();
  Json op = ParseJson(verify_json.out);
  EXPECT_EQ(op.value("state", ""), "OPERATION_STATE_SUCCEEDED") << op;
  EXPECT_TRUE(op["verify"].value("ok", false)) << op;

  CliResult rebuild = Cli({"rebuild"});
  ASSERT_EQ(rebuild.exit_code, 0) << rebuild.Describe();
  EXPECT_EQ(KeyValue(rebuild.out, "rebuilt events"), "10") << rebuild.out;
  EXPECT_EQ(KeyValue(rebuild.out, "generation"), "1") << rebuild.out;
  EXPECT_EQ(GetStats(server_).projection_generation(), 1u);
  // The rebuilt projections still answer the same.
  CliResult connections = Cli({"connections", "pat-1", "--json"});
  ASSERT_EQ(connections.exit_code, 0) << connections.Describe();
  EXPECT_TRUE(absl::StrContains(connections.out, "CONNECTION_STATE_DENIED"))
      << connections.out;

  const std::string backup_dir = Path("backup");
  CliResult backup = Cli({"backup", backup_dir});
  ASSERT_EQ(backup.exit_code, 0) << backup.Describe();
  EXPECT_TRUE(std::filesystem::is_directory(backup_dir));
  EXPECT_EQ(KeyValue(backup.out, "backup folder"), backup_dir) << backup.out;
  {
    // The backup is a data folder a server starts on, holding the log.
    TestServer restored(backup_dir);
    EXPECT_EQ(GetStats(restored).head_position(), 10u);
    EXPECT_EQ(GetStats(restored).head_hash(), stats.head_hash());
  }

  CliResult relative = Cli({"backup", "relative/dir"});
  EXPECT_EQ(relative.exit_code, 1) << relative.Describe();
  EXPECT_TRUE(absl::StrContains(relative.err, "INVALID_ARGUMENT"))
      << relative.err;
  EXPECT_FALSE(std::filesystem::exists("relative/dir"));

  // A folder that exists already is refused too.
  CliResult existing = Cli({"backup", backup_dir});
  EXPECT_EQ(existing.exit_code, 1) << existing.Describe();
}

// ---- 8. stats ---------------------------------------------------------------

TEST_F(CliTest, StatsJsonMatchesTheServer) {
  CliResult empty = Cli({"stats", "--json"});
  ASSERT_EQ(empty.exit_code, 0) << empty.Describe();
  Json json = ParseJson(empty.out);
  ASSERT_TRUE(json.is_object()) << empty.out;
  EXPECT_EQ(U64(json.value("head_position", Json("0"))), 0u);

  const std::string file = Path("events.jsonl");
  WriteFile(file, EmitInput());
  ASSERT_EQ(Cli({"emit", file}).exit_code, 0);

  CliResult stats_cli = Cli({"--json", "stats"});
  ASSERT_EQ(stats_cli.exit_code, 0) << stats_cli.Describe();
  json = ParseJson(stats_cli.out);
  ASSERT_TRUE(json.is_object()) << stats_cli.out;
  const v1::Stats stats = GetStats(server_);
  EXPECT_EQ(stats.head_position(), 9u);
  EXPECT_EQ(U64(json["head_position"]), stats.head_position());
  EXPECT_EQ(U64(json["event_count"]), stats.event_count());
  EXPECT_EQ(json.value("head_hash", ""), stats.head_hash());
  EXPECT_EQ(U64(json["connection_count"]), 2u);
  EXPECT_EQ(U64(json["session_count"]), 2u);

  CliResult table = Cli({"stats"});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_EQ(KeyValue(table.out, "head position"), "9") << table.out;
  EXPECT_EQ(KeyValue(table.out, "head hash"), stats.head_hash()) << table.out;
}

}  // namespace
}  // namespace authtrail::testing
