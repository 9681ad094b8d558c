// End-to-end tests of AuthTrailAdmin: rebuild and verify while serving,
// backup and restore, log export ranges, stats.
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "storage/store_internal.h"
#include "tests/testing/events.h"
#include "tests/testing/raw_db.h"
#include "tests/testing/test_server.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::Operation;

class AdminTest : public ::testing::Test {
 protected:
  void Fill(int attempts) {
    absl::Time t0 = absl::Now() - absl::Hours(5);
    std::vector<v1::AuthEvent> batch;
    for (int i = 0; i < attempts; ++i) {
      auto events =
          SuccessfulAttempt(absl::StrCat("e", i), absl::StrCat("p-", i % 7),
                            absl::StrCat("c-", i % 11), absl::StrCat("s-", i),
                            t0 + absl::Seconds(i));
      batch.insert(batch.end(), events.begin(), events.end());
      if (batch.size() >= 700 || i + 1 == attempts) {
        v1::AppendEventsResponse response;
        ASSERT_TRUE(server_.ingest()
                        .AppendEvents(Context().get(), Batch(batch), &response)
                        .ok());
        batch.clear();
      }
    }
  }

  // Polls an operation until it leaves RUNNING.
  Operation Wait(Operation op) { return AwaitOperation(server_.admin(), op); }

  v1::Stats Stats() {
    v1::Stats stats;
    EXPECT_TRUE(server_.admin().GetStats(Context().get(), {}, &stats).ok());
    return stats;
  }

  TestServer server_;
};

TEST_F(AdminTest, RebuildThenVerifyWhileServing) {
  Fill(100);
  Operation op;
  ASSERT_TRUE(server_.admin().StartRebuild(Context().get(), {}, &op).ok());
  EXPECT_EQ(op.kind(), v1::OPERATION_KIND_REBUILD);
  op = Wait(op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();
  EXPECT_EQ(op.rebuild().events(), 700u);
  EXPECT_EQ(op.rebuild().generation(), 1u);

  v1::GetConnectionRequest get;
  get.set_connection_id("c-3");
  v1::Connection connection;
  ASSERT_TRUE(
      server_.history().GetConnection(Context().get(), get, &connection).ok());
  EXPECT_EQ(connection.state(), v1::CONNECTION_STATE_ACTIVE);

  ASSERT_TRUE(server_.admin().StartVerify(Context().get(), {}, &op).ok());
  op = Wait(op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();
  EXPECT_TRUE(op.verify().ok()) << op.verify().problem();
  EXPECT_EQ(op.verify().events(), 700u);
  v1::Stats stats = Stats();
  EXPECT_EQ(op.verify().head_hash(), stats.head_hash());
  EXPECT_EQ(stats.projection_generation(), 1u);
  EXPECT_EQ(stats.projection_version(), stats.server_projection_version());
  EXPECT_EQ(stats.last_operation().id(), op.id());
}

// Over gRPC, a projection that differs is named by family only: its key
// holds patient, connection or session ids, which the admin role does not
// read.
TEST_F(AdminTest, StatsCountTheMemtablesWithinTheFamilies) {
  Fill(100);
  v1::Stats stats = Stats();
  uint64_t families = 0;
  for (const auto& [name, bytes] : stats.column_family_bytes()) {
    families += bytes;
  }
  // Nothing was flushed yet: the events sit in memtables, which are a part
  // of the per-family figures.
  EXPECT_GT(stats.memtable_bytes(), 0u);
  EXPECT_LE(stats.memtable_bytes(), families);
}

TEST_F(AdminTest, VerifyNamesTheFamilyButWithholdsTheKey) {
  Fill(4);
  server_.Stop();
  { RawDb(server_.data_dir()).Put(storage::kSessionColumn, "s-2", "garbage"); }
  server_.Restart();
  Operation op;
  ASSERT_TRUE(server_.admin().StartVerify(Context().get(), {}, &op).ok());
  op = Wait(op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();
  EXPECT_FALSE(op.verify().ok());
  EXPECT_EQ(op.verify().family(), storage::kSessionColumn);
  EXPECT_EQ(op.verify().key(), "");
  for (const std::string& text : {op.verify().problem(), op.error()}) {
    EXPECT_EQ(text.find("s-2"), std::string::npos) << text;
    EXPECT_EQ(text.find("732d32"), std::string::npos) << text;  // hex
  }
}

TEST_F(AdminTest, VerifyWithAnchorDetectsAForeignHash) {
  Fill(3);
  v1::Stats stats = Stats();
  v1::StartVerifyRequest request;
  request.set_anchor_position(stats.head_position());
  request.set_anchor_hash(stats.head_hash());
  request.set_log_only(true);
  Operation op;
  ASSERT_TRUE(server_.admin().StartVerify(Context().get(), request, &op).ok());
  op = Wait(op);
  EXPECT_TRUE(op.verify().ok()) << op.verify().problem();

  request.set_anchor_hash(std::string(64, 'a'));
  ASSERT_TRUE(server_.admin().StartVerify(Context().get(), request, &op).ok());
  op = Wait(op);
  EXPECT_FALSE(op.verify().ok());
  EXPECT_EQ(op.verify().position(), stats.head_position());

  request.set_anchor_hash("not hex");
  EXPECT_EQ(
      server_.admin().StartVerify(Context().get(), request, &op).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminTest, BackupRestoresToAServerThatAnswersTheSame) {
  Fill(20);
  TempDir backups;
  v1::StartBackupRequest request;
  request.set_dir(backups.path() + "/b1");
  Operation op;
  ASSERT_TRUE(server_.admin().StartBackup(Context().get(), request, &op).ok());
  op = Wait(op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.error();

  request.set_dir("relative/path");
  EXPECT_EQ(
      server_.admin().StartBackup(Context().get(), request, &op).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);

  // Restoring is starting a server on (a copy of) the backup folder.
  TestServer restored(backups.path() + "/b1");
  v1::Stats original = Stats();
  v1::Stats copy;
  ASSERT_TRUE(restored.admin().GetStats(Context().get(), {}, &copy).ok());
  EXPECT_EQ(copy.head_position(), original.head_position());
  EXPECT_EQ(copy.head_hash(), original.head_hash());
  v1::ListConnectionsRequest list;
  list.set_patient_id("p-2");
  v1::ListConnectionsResponse a;
  v1::ListConnectionsResponse b;
  ASSERT_TRUE(
      server_.history().ListConnections(Context().get(), list, &a).ok());
  ASSERT_TRUE(
      restored.history().ListConnections(Context().get(), list, &b).ok());
  ASSERT_EQ(a.connections_size(), b.connections_size());
  for (int i = 0; i < a.connections_size(); ++i) {
    a.mutable_connections(i)->clear_summary();
    b.mutable_connections(i)->clear_summary();
    EXPECT_EQ(a.connections(i).SerializeAsString(),
              b.connections(i).SerializeAsString());
  }
}

TEST_F(AdminTest, ReadLogPagesByPositionToTheHead) {
  Fill(10);  // 70 events
  uint64_t next = 1;
  uint64_t seen = 0;
  for (int calls = 0; calls < 10 && next <= 70; ++calls) {
    v1::ReadLogRequest request;
    request.set_from_position(next);
    request.set_max_events(32);
    v1::ReadLogResponse response;
    ASSERT_TRUE(
        server_.admin().ReadLog(Context().get(), request, &response).ok());
    for (int i = 0; i < response.events_size(); ++i) {
      EXPECT_EQ(response.events(i).position(), next + i);
    }
    seen += response.events_size();
    next = response.next_position();
    EXPECT_EQ(response.head_position(), 70u);
  }
  EXPECT_EQ(seen, 70u);
  EXPECT_EQ(next, 71u);
}

TEST_F(AdminTest, SecondOperationWhileOneRunsIsAborted) {
  Fill(300);
  Operation first;
  ASSERT_TRUE(server_.admin().StartRebuild(Context().get(), {}, &first).ok());
  Operation second;
  grpc::Status status =
      server_.admin().StartVerify(Context().get(), {}, &second);
  if (!status.ok()) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  }  // else the rebuild had already finished: nothing to refuse
  EXPECT_EQ(Wait(first).state(), v1::OPERATION_STATE_SUCCEEDED);
  v1::GetOperationRequest unknown;
  unknown.set_id("rebuild-999");
  EXPECT_EQ(server_.admin()
                .GetOperation(Context().get(), unknown, &second)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace authtrail::testing
