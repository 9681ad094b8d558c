// The Prometheus endpoint of a real server: what appends and queries do
// shows up in the exposition.
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/server.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

namespace authtrail::testing {
namespace {

// The value of the sample line that starts with `series` (name and labels
// exactly as exposed); -1 when absent.
double Sample(const std::string& exposition, const std::string& series) {
  size_t at = exposition.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + series.size() + 2));
}

TEST(MetricsTest, AppendsRefusalsAndQueriesAreCounted) {
  TempDir temp;
  int metrics_port = FreePort();
  services::ServerOptions options;
  options.plaintext = true;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = absl::StrCat("127.0.0.1:", metrics_port);
  options.store.data_dir = temp.path() + "/data";
  auto server = services::AuthTrailServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                          grpc::InsecureChannelCredentials());
  auto ingest = v1::AuthEventIngest::NewStub(channel);
  auto history = v1::AuthHistory::NewStub(channel);

  auto events =
      SuccessfulAttempt("m", "p-1", "c-1", "s-1", absl::Now() - absl::Hours(1));
  v1::AppendEventsResponse response;
  ASSERT_TRUE(
      ingest->AppendEvents(Context().get(), Batch(events), &response).ok());
  ASSERT_TRUE(
      ingest->AppendEvents(Context().get(), Batch({events[0]}), &response)
          .ok());
  v1::AuthEvent bad = events[1];
  bad.set_event_id("");
  EXPECT_FALSE(
      ingest->AppendEvents(Context().get(), Batch({bad, bad}), &response).ok());
  v1::GetConnectionRequest get;
  get.set_connection_id("c-1");
  v1::Connection connection;
  ASSERT_TRUE(history->GetConnection(Context().get(), get, &connection).ok());
  get.set_connection_id("nope");
  EXPECT_FALSE(history->GetConnection(Context().get(), get, &connection).ok());

  std::string body = HttpGet(metrics_port, "/metrics");
  ASSERT_FALSE(body.empty());
  EXPECT_EQ(Sample(body, "authtrail_append_events_total{result=\"accepted\"}"),
            7);
  EXPECT_EQ(Sample(body, "authtrail_append_events_total{result=\"duplicate\"}"),
            1);
  EXPECT_EQ(Sample(body,
                   "authtrail_append_events_total{result=\"refused\","
                   "reason=\"INVALID_ARGUMENT\"}"),
            2);
  EXPECT_EQ(Sample(body, "authtrail_append_latency_seconds_count"), 2);
  EXPECT_GE(Sample(body, "authtrail_group_commit_events_count"), 1);
  EXPECT_EQ(Sample(body,
                   "authtrail_query_calls_total{rpc=\"GetConnection\","
                   "code=\"OK\"}"),
            1);
  EXPECT_EQ(Sample(body,
                   "authtrail_query_calls_total{rpc=\"GetConnection\","
                   "code=\"NOT_FOUND\"}"),
            1);
  EXPECT_EQ(Sample(body, "authtrail_head_position"), 7);
  EXPECT_EQ(Sample(body, "authtrail_build_info{version=\"0.1.0\"}"), 1);
  EXPECT_GE(Sample(body, "authtrail_rocksdb_memtable_bytes"), 0);
  // No patient or session id ever becomes a label.
  EXPECT_EQ(body.find("p-1"), std::string::npos);
  EXPECT_EQ(body.find("s-1"), std::string::npos);
  EXPECT_TRUE(HttpGet(metrics_port, "/nothing-here").find("authtrail_") ==
              std::string::npos);
}

// Bucket bounds print as the decimals they were written as, and the
// rebuild gauge keeps the last rebuild's progress after other operations.
TEST(MetricsTest, BoundsAreShortAndRebuildProgressOutlivesABackup) {
  TempDir temp;
  int metrics_port = FreePort();
  TestServerOptions options;
  options.metrics_listen = absl::StrCat("127.0.0.1:", metrics_port);
  TestServer server(options);
  auto events =
      SuccessfulAttempt("m", "p-1", "c-1", "s-1", absl::Now() - absl::Hours(1));
  v1::AppendEventsResponse response;
  ASSERT_TRUE(server.ingest()
                  .AppendEvents(Context().get(), Batch(events), &response)
                  .ok());

  v1::Operation op;
  ASSERT_TRUE(server.admin().StartRebuild(Context().get(), {}, &op).ok());
  ASSERT_EQ(AwaitOperation(server.admin(), op).state(),
            v1::OPERATION_STATE_SUCCEEDED);
  v1::StartBackupRequest backup;
  backup.set_dir(temp.path() + "/backup");
  ASSERT_TRUE(server.admin().StartBackup(Context().get(), backup, &op).ok());
  ASSERT_EQ(AwaitOperation(server.admin(), op).state(),
            v1::OPERATION_STATE_SUCCEEDED);

  std::string body = HttpGet(metrics_port, "/metrics");
  EXPECT_EQ(Sample(body, "authtrail_rebuild_events{stage=\"done\"}"), 7);
  EXPECT_EQ(Sample(body, "authtrail_rebuild_events{stage=\"total\"}"), 7);
  EXPECT_NE(body.find("le=\"5e-05\""), std::string::npos);
  EXPECT_NE(body.find("le=\"0.00025\""), std::string::npos);
  for (size_t at = body.find("le=\""); at != std::string::npos;
       at = body.find("le=\"", at + 1)) {
    size_t end = body.find('"', at + 4);
    EXPECT_LE(end - (at + 4), 7u) << body.substr(at, end - at + 1);
  }
}

TEST(MetricsTest, APortInUseIsAnErrorAtStart) {
  TempDir temp;
  TestServer first;
  services::ServerOptions options;
  options.plaintext = true;
  options.listen = first.address();
  options.store.data_dir = temp.path() + "/data";
  auto second = services::AuthTrailServer::Start(options);
  EXPECT_FALSE(second.ok());
}

}  // namespace
}  // namespace authtrail::testing

namespace authtrail::testing {
namespace {

TEST(ConventionsTest, RequestIdIsEchoedAndLogLevelChangesAtRunTime) {
  TestServer server;
  grpc::ClientContext context;
  context.AddMetadata("x-request-id", "req-abc-123");
  v1::Stats stats;
  ASSERT_TRUE(server.admin().GetStats(&context, {}, &stats).ok());
  auto echoed = context.GetServerInitialMetadata().find("x-request-id");
  ASSERT_NE(echoed, context.GetServerInitialMetadata().end());
  EXPECT_EQ(std::string(echoed->second.data(), echoed->second.size()),
            "req-abc-123");

  v1::SetLogLevelRequest request;
  request.set_level("debug");
  v1::SetLogLevelResponse response;
  ASSERT_TRUE(
      server.admin().SetLogLevel(Context().get(), request, &response).ok());
  EXPECT_EQ(response.level(), "debug");
  request.set_level(response.previous_level());
  ASSERT_TRUE(
      server.admin().SetLogLevel(Context().get(), request, &response).ok());
  EXPECT_EQ(response.previous_level(), "debug");
  request.set_level("loud");
  EXPECT_EQ(server.admin()
                .SetLogLevel(Context().get(), request, &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace authtrail::testing
