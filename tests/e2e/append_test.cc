// End-to-end tests of AppendEvents through a real server and stubs.
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::AppendEventsResponse;
using authtrail::v1::AuthEvent;

class AppendTest : public ::testing::Test {
 protected:
  grpc::Status Append(const std::vector<AuthEvent>& events,
                      AppendEventsResponse* response) {
    return server_.ingest().AppendEvents(Context().get(), Batch(events),
                                         response);
  }

  AppendEventsResponse AppendOk(const std::vector<AuthEvent>& events) {
    AppendEventsResponse response;
    grpc::Status status = Append(events, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  uint64_t Head() {
    authtrail::v1::Stats stats;
    EXPECT_TRUE(server_.admin().GetStats(Context().get(), {}, &stats).ok());
    return stats.head_position();
  }

  TestServer server_;
  absl::Time t0_ = absl::Now() - absl::Hours(2);
};

TEST_F(AppendTest, PositionsAreGapFreeFromOne) {
  auto response = AppendOk(SuccessfulAttempt("a", "p-1", "c-1", "s-1", t0_));
  ASSERT_EQ(response.results_size(), 7);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(response.results(i).position(), static_cast<uint64_t>(i + 1));
    EXPECT_FALSE(response.results(i).duplicate());
  }
  response = AppendOk(SuccessfulAttempt("b", "p-2", "c-2", "s-2", t0_));
  EXPECT_EQ(response.results(0).position(), 8u);
  EXPECT_EQ(Head(), 14u);
}

TEST_F(AppendTest, IdenticalRetryReturnsOriginalPositionAsDuplicate) {
  auto events = SuccessfulAttempt("a", "p-1", "c-1", "s-1", t0_);
  AppendOk(events);
  auto retry = AppendOk({events[2], events[4]});
  ASSERT_EQ(retry.results_size(), 2);
  EXPECT_EQ(retry.results(0).position(), 3u);
  EXPECT_TRUE(retry.results(0).duplicate());
  EXPECT_EQ(retry.results(1).position(), 5u);
  EXPECT_TRUE(retry.results(1).duplicate());
  EXPECT_EQ(Head(), 7u);
}

TEST_F(AppendTest, RepeatWithinOneBatchIsDuplicateOfTheFirst) {
  AuthEvent e = Event("x")
                    .Patient("p")
                    .Connection("c")
                    .At(t0_)
                    .Step(v1::STEP_TOKEN_REFRESH)
                    .Succeeded();
  auto response = AppendOk({e, e});
  EXPECT_EQ(response.results(0).position(), 1u);
  EXPECT_FALSE(response.results(0).duplicate());
  EXPECT_EQ(response.results(1).position(), 1u);
  EXPECT_TRUE(response.results(1).duplicate());
  EXPECT_EQ(Head(), 1u);
}

TEST_F(AppendTest, SameIdOtherContentIsRefusedAndBatchNotWritten) {
  auto events = SuccessfulAttempt("a", "p-1", "c-1", "s-1", t0_);
  AppendOk(events);
  AuthEvent changed = events[3];
  changed.set_error_description("something else");
  AuthEvent fresh = Event("new-1")
                        .Patient("p-9")
                        .Connection("c-9")
                        .At(t0_)
                        .Step(v1::STEP_PORTAL_REDIRECT)
                        .Started();
  AppendEventsResponse response;
  grpc::Status status = Append({fresh, changed}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(status.error_message().find("events[1]"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(Head(), 7u);  // `fresh` was not written either
  authtrail::v1::Connection c;
  authtrail::v1::GetConnectionRequest get;
  get.set_connection_id("c-9");
  EXPECT_EQ(
      server_.history().GetConnection(Context().get(), get, &c).error_code(),
      grpc::StatusCode::NOT_FOUND);
}

TEST_F(AppendTest, InvalidEventNamesIndexFieldAndLimitInRichDetails) {
  AuthEvent good = Event("g")
                       .Patient("p")
                       .Connection("c")
                       .At(t0_)
                       .Step(v1::STEP_SIGN_IN)
                       .Succeeded();
  AuthEvent bad = good;
  bad.set_event_id("b");
  bad.set_patient_id(std::string(129, 'x'));
  AppendEventsResponse response;
  grpc::Status status = Append({good, bad}, &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("events[1].patient_id"),
            std::string::npos);
  EXPECT_NE(status.error_message().find("128"), std::string::npos);

  google::rpc::Status rich;
  ASSERT_TRUE(rich.ParseFromString(status.error_details()));
  ASSERT_EQ(rich.details_size(), 1);
  google::rpc::BadRequest bad_request;
  ASSERT_TRUE(rich.details(0).UnpackTo(&bad_request));
  ASSERT_EQ(bad_request.field_violations_size(), 1);
  EXPECT_EQ(bad_request.field_violations(0).field(), "events[1].patient_id");
  EXPECT_EQ(Head(), 0u);
}

TEST_F(AppendTest, AcknowledgedEventsSurviveRestart) {
  auto events = SuccessfulAttempt("a", "p-1", "c-1", "s-1", t0_);
  AppendOk(events);
  server_.Restart();
  EXPECT_EQ(Head(), 7u);
  auto retry = AppendOk({events[0]});
  EXPECT_TRUE(retry.results(0).duplicate());
  EXPECT_EQ(retry.results(0).position(), 1u);
  auto next = AppendOk(SuccessfulAttempt("b", "p-2", "c-2", "s-2", t0_));
  EXPECT_EQ(next.results(0).position(), 8u);

  authtrail::v1::GetConnectionRequest get;
  get.set_connection_id("c-1");
  authtrail::v1::Connection c;
  ASSERT_TRUE(server_.history().GetConnection(Context().get(), get, &c).ok());
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_ACTIVE);
}

TEST_F(AppendTest, ConcurrentAppendsAllGetDistinctPositions) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  std::vector<std::vector<uint64_t>> positions(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        AuthEvent e = Event(absl::StrCat("t", t, "-", i))
                          .Patient(absl::StrCat("p-", t))
                          .Connection(absl::StrCat("c-", t))
                          .At(t0_ + absl::Seconds(i))
                          .Step(v1::STEP_TOKEN_REFRESH)
                          .Succeeded();
        AppendEventsResponse response;
        grpc::Status s = server_.ingest().AppendEvents(Context().get(),
                                                       Batch({e}), &response);
        if (s.ok()) positions[t].push_back(response.results(0).position());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<uint64_t> all;
  for (const auto& p : positions) all.insert(p.begin(), p.end());
  EXPECT_EQ(all.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), uint64_t{kThreads * kPerThread});
}

}  // namespace
}  // namespace authtrail::testing
