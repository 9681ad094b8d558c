// Rebuild, verify (including tampered logs), backup and compatibility of
// the event store, on real RocksDB folders.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/event_store.h"
#include "storage/keys.h"
#include "storage/store_internal.h"
#include "tests/testing/events.h"
#include "tests/testing/raw_db.h"
#include "tests/testing/test_server.h"

namespace authtrail::storage {
namespace {

using authtrail::testing::Event;
using authtrail::testing::RawDb;
using authtrail::testing::SuccessfulAttempt;
using authtrail::testing::TempDir;
using authtrail::v1::AuthEvent;

class MaintenanceTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventStore> OpenStore(size_t replay_run_bytes = 0) {
    StoreOptions options;
    options.data_dir = dir_;
    if (replay_run_bytes > 0) options.replay_run_bytes = replay_run_bytes;
    auto store = EventStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Appends `n` attempts of seven events each (some failing), up to 100
  // attempts per append.
  void Fill(EventStore& store, int attempts, int offset = 0) {
    absl::Time t0 = absl::Now() - absl::Hours(3);
    std::vector<AuthEvent> batch;
    for (int i = offset; i < offset + attempts; ++i) {
      auto events =
          SuccessfulAttempt(absl::StrCat("a", i), absl::StrCat("p-", i % 13),
                            absl::StrCat("c-", i % 17), absl::StrCat("s-", i),
                            t0 + absl::Seconds(i));
      if (i % 3 == 0) {
        events.back() = Event(absl::StrCat("a", i, "-7"))
                            .Patient(absl::StrCat("p-", i % 13))
                            .Connection(absl::StrCat("c-", i % 17))
                            .Session(absl::StrCat("s-", i))
                            .At(t0 + absl::Seconds(i) + absl::Minutes(6))
                            .Step(v1::STEP_TOKEN_EXCHANGE)
                            .Failed("invalid_grant", 400);
      }
      batch.insert(batch.end(), events.begin(), events.end());
      if (batch.size() >= 700 || i + 1 == offset + attempts) {
        ASSERT_TRUE(store.AppendAndWait(batch).ok());
        batch.clear();
      }
    }
  }

  VerifyReport MustVerify(EventStore& store, VerifyOptions options = {}) {
    auto report = store.Verify(options);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : VerifyReport{};
  }

  TempDir temp_;
  std::string dir_ = temp_.path() + "/data";
};

TEST_F(MaintenanceTest, VerifyPassesOnEmptyAndFilledLogs) {
  auto store = OpenStore();
  VerifyReport empty = MustVerify(*store);
  EXPECT_TRUE(empty.ok) << empty.problem;
  EXPECT_EQ(empty.events, 0u);
  Fill(*store, 30);
  VerifyReport filled = MustVerify(*store);
  EXPECT_TRUE(filled.ok) << filled.problem;
  EXPECT_EQ(filled.events, 210u);
  EXPECT_EQ(filled.head_hash, store->HeadHash());
}

TEST_F(MaintenanceTest, RebuildOnEmptyLogIsSafe) {
  auto store = OpenStore();
  auto result = store->Rebuild();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->events, 0u);
  EXPECT_EQ(result->generation, 1u);
  EXPECT_TRUE(MustVerify(*store).ok);
}

TEST_F(MaintenanceTest, RebuildTwiceGivesTheSameAnswersAndVerifies) {
  auto store = OpenStore();
  Fill(*store, 40);
  auto before = store->ListConnections("p-3", 100);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(store->Rebuild().ok());
  ASSERT_TRUE(store->Rebuild().ok());
  EXPECT_EQ(store->Generation(), 2u);
  auto after = store->ListConnections("p-3", 100);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(before->size(), after->size());
  for (size_t i = 0; i < before->size(); ++i) {
    EXPECT_EQ(SerializeStable((*before)[i]), SerializeStable((*after)[i]));
  }
  EXPECT_TRUE(MustVerify(*store).ok);

  // The new generation survives a restart; leftovers are gone.
  store.reset();
  store = OpenStore();
  EXPECT_EQ(store->Generation(), 2u);
  EXPECT_TRUE(MustVerify(*store).ok);
}

// With runs of 16 KiB, a replay hands over a run with each chunk of 2,000
// events: 10,500 events (over the rebuild's catch-up stretch, so most go
// through the bulk replay) are ingested as six overlapping table files; the
// rebuilt families must equal the ones appends built, key for key (verify
// replays again, the same way, and compares), and answer the same pages.
TEST_F(MaintenanceTest, RebuildFromManySmallRunsEqualsTheAppendedIndexes) {
  auto store = OpenStore(/*replay_run_bytes=*/16 << 10);
  Fill(*store, 1500);
  EventQuery query;
  query.filter.set_connection_id("c-4");
  query.limit = 1000;
  query.max_bytes = size_t{64} << 20;
  auto before = store->ListEvents(query);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_GT(before->events.size(), 600u);
  VerifyReport appended = MustVerify(*store);
  EXPECT_TRUE(appended.ok) << appended.problem;

  auto result = store->Rebuild();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->events, 10500u);
  auto after = store->ListEvents(query);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(before->events, after->events);
  VerifyReport rebuilt = MustVerify(*store);
  EXPECT_TRUE(rebuilt.ok) << rebuilt.problem;
  EXPECT_FALSE(std::filesystem::exists(ReplayRunsDir(dir_)));
}

TEST_F(MaintenanceTest, OpenRemovesTheRunsOfAnUnfinishedReplay) {
  std::filesystem::create_directories(ReplayRunsDir(dir_));
  std::ofstream(ReplayRunsDir(dir_) + "/run-1.sst") << "partial";
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(std::filesystem::exists(ReplayRunsDir(dir_)));
}

TEST_F(MaintenanceTest, RebuildWhileAppendingKeepsEveryEvent) {
  auto store = OpenStore();
  Fill(*store, 1500);  // over the catch-up threshold
  std::atomic<bool> stop = false;
  std::atomic<int> appended = 0;
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      AuthEvent e = Event(absl::StrCat("live-", i))
                        .Patient("p-live")
                        .Connection("c-live")
                        .At(absl::Now() - absl::Minutes(1))
                        .Step(v1::STEP_TOKEN_REFRESH)
                        .Succeeded();
      if (store->AppendAndWait({e}).ok()) ++appended;
    }
  });
  auto result = store->Rebuild();
  stop = true;
  writer.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(appended.load(), 0);
  auto connection = store->GetConnection("c-live");
  ASSERT_TRUE(connection.ok());
  EXPECT_EQ(connection->event_count(), static_cast<uint64_t>(appended));
  VerifyReport report = MustVerify(*store);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.events, 10500u + appended);
}

// Appends from many threads land in groups that are built while the group
// before them is still being written: the carried projection state and the
// in-flight ids must make them equal to a replay, with every id once.
TEST_F(MaintenanceTest, OverlappingGroupsEqualAReplayAndKeepIdsUnique) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::Time t0 = absl::Now() - absl::Hours(1);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  std::vector<std::vector<uint64_t>> positions(kThreads);
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Ids repeat across threads (so duplicates meet their original in
        // a later group), and every thread touches the same few
        // connections and sessions.
        int n = (t % 4) * kPerThread + i;
        Event builder(absl::StrCat("e-", n));
        builder.Patient(absl::StrCat("p-", n % 3))
            .Connection(absl::StrCat("c-", n % 5))
            .Session(absl::StrCat("s-", n % 7))
            .At(t0 + absl::Seconds(n))
            .Step(v1::STEP_SIGN_IN);
        if (n % 11 == 0) builder.Failed("access_denied", 403);
        AuthEvent e = builder;
        auto result = store->AppendAndWait({e});
        ASSERT_TRUE(result.ok()) << result.status();
        positions[t].push_back((*result)[0].position);
        // Same id, other content: refused whichever group holds the first.
        AuthEvent changed = e;
        changed.mutable_occurred_at()->set_seconds(e.occurred_at().seconds() +
                                                   7200);
        auto refused = store->AppendAndWait({changed});
        if (refused.status().code() == absl::StatusCode::kAlreadyExists) {
          ++conflicts;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  // Threads t and t+4 sent the same ids: same positions, one copy stored.
  for (int t = 0; t < 4; ++t) EXPECT_EQ(positions[t], positions[t + 4]);
  EXPECT_EQ(store->HeadPosition(), 4u * kPerThread);
  EXPECT_EQ(conflicts.load(), kThreads * kPerThread);
  VerifyReport report = MustVerify(*store);
  EXPECT_TRUE(report.ok) << report.problem;
}

TEST_F(MaintenanceTest, VerifyCatchesAChangedRecord) {
  {
    auto store = OpenStore();
    Fill(*store, 5);
  }
  {
    RawDb raw(dir_);
    std::string value = raw.Get(kLogColumn, LogKey(12));
    v1::RecordedEvent recorded;
    ASSERT_TRUE(recorded.ParseFromString(value.substr(kChainHashBytes)));
    recorded.mutable_event()->set_error_code("edited");
    raw.Put(kLogColumn, LogKey(12),
            value.substr(0, kChainHashBytes) + SerializeStable(recorded));
  }
  auto store = OpenStore();
  VerifyReport report = MustVerify(*store);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.position, 12u);
  EXPECT_NE(report.problem.find("chain hash"), std::string::npos);
}

TEST_F(MaintenanceTest, VerifyCatchesARemovedRecord) {
  {
    auto store = OpenStore();
    Fill(*store, 5);
  }
  { RawDb(dir_).Delete(kLogColumn, LogKey(9)); }
  auto store = OpenStore();
  VerifyReport report = MustVerify(*store);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.position, 9u);
  EXPECT_NE(report.problem.find("missing"), std::string::npos);
}

TEST_F(MaintenanceTest, VerifyCatchesSwappedRecords) {
  {
    auto store = OpenStore();
    Fill(*store, 5);
  }
  {
    RawDb raw(dir_);
    std::string a = raw.Get(kLogColumn, LogKey(20));
    std::string b = raw.Get(kLogColumn, LogKey(21));
    raw.Put(kLogColumn, LogKey(20), b);
    raw.Put(kLogColumn, LogKey(21), a);
  }
  auto store = OpenStore();
  VerifyReport report = MustVerify(*store);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.position, 20u);
}

TEST_F(MaintenanceTest, VerifyCatchesAnInsertedRecord) {
  {
    auto store = OpenStore();
    Fill(*store, 2);  // positions 1..14
  }
  {
    // A forged record appended past the head with a made-up hash.
    RawDb raw(dir_);
    v1::RecordedEvent forged;
    forged.set_position(15);
    *forged.mutable_event() = Event("forged")
                                  .Patient("p-0")
                                  .Connection("c-0")
                                  .Step(v1::STEP_DISCONNECT)
                                  .Succeeded()
                                  .proto();
    raw.Put(kLogColumn, LogKey(15),
            std::string(kChainHashBytes, 'x') + SerializeStable(forged));
    raw.Put(kEventIdColumn, "forged", LogKey(15));
  }
  auto store = OpenStore();
  VerifyReport report = MustVerify(*store);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.position, 15u);
}

TEST_F(MaintenanceTest, VerifyCatchesARewrittenChainThroughItsAnchor) {
  std::string anchored;
  {
    auto store = OpenStore();
    Fill(*store, 3);
    anchored = store->HeadHash();  // position 21
  }
  {
    // Rewrite record 5 and recompute the whole chain after it: only the
    // anchor kept elsewhere can tell.
    RawDb raw(dir_);
    std::string chain = GenesisHash();
    for (uint64_t p = 1; p <= 21; ++p) {
      std::string value = raw.Get(kLogColumn, LogKey(p));
      v1::RecordedEvent recorded;
      ASSERT_TRUE(recorded.ParseFromString(value.substr(kChainHashBytes)));
      if (p == 5) recorded.mutable_event()->set_request_id("forged");
      std::string record = SerializeStable(recorded);
      chain = ChainHash(chain, p, record);
      raw.Put(kLogColumn, LogKey(p), EncodeLogValue(chain, record));
    }
  }
  auto store = OpenStore();
  VerifyOptions options;
  options.check_projections = false;
  EXPECT_TRUE(MustVerify(*store, options).ok);
  options.anchor_position = 21;
  options.anchor_hash = anchored;
  VerifyReport report = MustVerify(*store, options);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.position, 21u);
}

TEST_F(MaintenanceTest, VerifyNamesTheProjectionThatDiffers) {
  {
    auto store = OpenStore();
    Fill(*store, 4);
  }
  { RawDb(dir_).Put(kSessionColumn, "s-2", "garbage"); }
  auto store = OpenStore();
  VerifyReport report = MustVerify(*store);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.family, kSessionColumn);
  EXPECT_NE(report.key.find("732d32"), std::string::npos);  // "s-2" in hex
  // A rebuild repairs it.
  ASSERT_TRUE(store->Rebuild().ok());
  EXPECT_TRUE(MustVerify(*store).ok);
}

TEST_F(MaintenanceTest, BackupIsAConsistentCopyThatVerifiesAndAnswers) {
  auto store = OpenStore();
  Fill(*store, 10);
  std::string backup = temp_.path() + "/backup";
  ASSERT_TRUE(store->Backup(backup).ok());
  EXPECT_EQ(store->Backup(backup).code(), absl::StatusCode::kAlreadyExists);
  Fill(*store, 2, 100);  // after the backup: not in it

  StoreOptions options;
  options.data_dir = backup;
  auto restored = EventStore::Open(options);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->HeadPosition(), 70u);
  VerifyReport report = MustVerify(**restored);
  EXPECT_TRUE(report.ok) << report.problem;
  auto a = (*restored)->GetConnection("c-4");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->event_count(), 7u);
}

TEST_F(MaintenanceTest, OpensADatabaseWithFamiliesItDoesNotKnow) {
  {
    auto store = OpenStore();
    Fill(*store, 2);
  }
  {
    RawDb raw(dir_);
    rocksdb::ColumnFamilyHandle* extra = nullptr;
    ASSERT_TRUE(
        raw.db()->CreateColumnFamily({}, "future_feature", &extra).ok());
    ASSERT_TRUE(raw.db()->Put({}, extra, "k", "v").ok());
    raw.db()->DestroyColumnFamilyHandle(extra);
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->HeadPosition(), 14u);
  Fill(*store, 1, 50);
  store.reset();
  RawDb raw(dir_);
  EXPECT_EQ(raw.Get("future_feature", "k"), "v");  // left as it was
}

TEST_F(MaintenanceTest, RefusesANewerOnDiskFormat) {
  {
    auto store = OpenStore();
    Fill(*store, 1);
  }
  {
    RawDb(dir_).Put(rocksdb::kDefaultColumnFamilyName, kFormatVersionKey,
                    std::to_string(kFormatVersion + 1));
  }
  StoreOptions options;
  options.data_dir = dir_;
  auto store = EventStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("newer"), std::string::npos);
}

TEST_F(MaintenanceTest, AFolderInUseIsNamedAsSuch) {
  auto first = OpenStore();
  StoreOptions options;
  options.data_dir = dir_;
  auto second = EventStore::Open(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another process"),
            std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find(dir_), std::string::npos);
}

TEST_F(MaintenanceTest, ReadRangePagesThroughTheLog) {
  auto store = OpenStore();
  Fill(*store, 3);
  auto first = store->ReadRange(1, 10);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 10u);
  EXPECT_EQ(first->front().position(), 1u);
  auto rest = store->ReadRange(11, 100);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 11u);
  EXPECT_EQ(rest->back().position(), 21u);
}

}  // namespace
}  // namespace authtrail::storage
