// End-to-end tests of GetFailureTimeline: counts per error code per bucket
// against counts computed here from the events sent, bursts, the three
// scopes, ragged (not minute-aligned) ranges, bounds and argument checks.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/history_fixture.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::GetFailureTimelineRequest;
using authtrail::v1::GetFailureTimelineResponse;
using authtrail::v1::TimelineScope;

bool IsFailure(const AuthEvent& e) {
  return e.outcome() == v1::OUTCOME_FAILED || e.outcome() == v1::OUTCOME_DENIED;
}

class TimelineTest : public HistoryFixture {
 protected:
  // A refresh of `patient` on `connection` at `source`.
  int Add(const std::string& patient, const std::string& connection,
          const std::string& source, absl::Time t, const std::string& code) {
    Event e(absl::StrCat("t", events_.size()));
    e.Patient(patient)
        .Connection(connection)
        .Source(source, source + " name")
        .At(t)
        .Step(v1::STEP_TOKEN_REFRESH);
    if (code.empty()) {
      e.Succeeded();
    } else if (code == "access_denied") {
      e.Step(v1::STEP_CONSENT).Denied(code);
    } else {
      e.Failed(code, code == "server_error" ? 503 : 400);
    }
    events_.push_back(e);
    return static_cast<int>(events_.size()) - 1;
  }

  GetFailureTimelineResponse Timeline(const GetFailureTimelineRequest& r) {
    GetFailureTimelineResponse response;
    grpc::Status status =
        server_.history().GetFailureTimeline(Context().get(), r, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status TimelineStatus(const GetFailureTimelineRequest& r) {
    GetFailureTimelineResponse response;
    return server_.history().GetFailureTimeline(Context().get(), r, &response);
  }

  GetFailureTimelineRequest Request(const TimelineScope& scope,
                                    absl::Time start, absl::Time end) {
    GetFailureTimelineRequest request;
    *request.mutable_scope() = scope;
    *request.mutable_start_time() = Ts(start);
    *request.mutable_end_time() = Ts(end);
    request.mutable_bucket()->set_seconds(3600);
    return request;
  }

  // The response the failures of `sent_` give for `request`, computed
  // here: buckets, counts, totals, bursts, and the newest event ids.
  struct Reference {
    // bucket start seconds -> (count, code) sorted as the API sorts
    std::map<int64_t, std::vector<std::pair<uint64_t, std::string>>> buckets;
    uint64_t total = 0;
    std::vector<std::string> newest;  // newest first
  };

  Reference Compute(const GetFailureTimelineRequest& request) const {
    const TimelineScope& scope = request.scope();
    int64_t width = request.has_bucket() ? request.bucket().seconds() : 3600;
    absl::Time start = TimeOf(request.start_time());
    absl::Time end = TimeOf(request.end_time());
    std::map<int64_t, std::map<std::string, uint64_t>> counts;
    std::vector<Sent> matching;
    Reference ref;
    for (const Sent& s : sent_) {
      const AuthEvent& e = s.event;
      bool in_scope =
          (scope.has_patient_id() && e.patient_id() == scope.patient_id()) ||
          (scope.has_connection_id() &&
           e.connection_id() == scope.connection_id()) ||
          (scope.has_source_id() && e.source().id() == scope.source_id());
      absl::Time t = TimeOf(e.occurred_at());
      if (!in_scope || !IsFailure(e) || t < start || t >= end) continue;
      int64_t seconds = e.occurred_at().seconds();
      int64_t bucket = (seconds / width) * width;  // all times are positive
      ++counts[bucket][e.error_code()];
      ++ref.total;
      matching.push_back(s);
    }
    for (const auto& [bucket, codes] : counts) {
      auto& sorted = ref.buckets[bucket];
      for (const auto& [code, n] : codes) sorted.push_back({n, code});
      std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
      });
    }
    std::sort(matching.begin(), matching.end(), EarlierThan);
    std::reverse(matching.begin(), matching.end());
    for (const Sent& s : matching) ref.newest.push_back(s.event.event_id());
    return ref;
  }

  void ExpectMatches(const GetFailureTimelineRequest& request,
                     const GetFailureTimelineResponse& got) {
    Reference want = Compute(request);
    EXPECT_EQ(got.total(), want.total);
    EXPECT_EQ(got.burst_threshold(), 5u);
    ASSERT_EQ(static_cast<size_t>(got.buckets_size()), want.buckets.size());
    auto expected = want.buckets.begin();
    for (const auto& bucket : got.buckets()) {
      SCOPED_TRACE(absl::StrCat("bucket ", bucket.start_time().seconds()));
      EXPECT_EQ(bucket.start_time().seconds(), expected->first);
      EXPECT_EQ(bucket.start_time().nanos(), 0);
      std::vector<std::pair<uint64_t, std::string>> counts;
      uint64_t total = 0;
      for (const auto& c : bucket.counts()) {
        counts.push_back({c.count(), c.error_code()});
        total += c.count();
      }
      EXPECT_EQ(counts, expected->second);
      EXPECT_EQ(bucket.total(), total);
      std::string burst = expected->second.front().first >= 5
                              ? expected->second.front().second
                              : "";
      EXPECT_EQ(bucket.burst_error_code(), burst);
      ++expected;
    }
    size_t limit = request.max_events() == 0 ? 100 : request.max_events();
    std::vector<std::string> newest = want.newest;
    bool truncated = newest.size() > limit;
    if (truncated) newest.resize(limit);
    std::vector<std::string> ids;
    for (const auto& e : got.events()) ids.push_back(e.event().event_id());
    EXPECT_EQ(ids, newest);
    EXPECT_EQ(got.events_truncated(), truncated);
  }

  static TimelineScope Source(const std::string& id) {
    TimelineScope s;
    s.set_source_id(id);
    return s;
  }
  static TimelineScope Patient(const std::string& id) {
    TimelineScope s;
    s.set_patient_id(id);
    return s;
  }
  static TimelineScope Connection(const std::string& id) {
    TimelineScope s;
    s.set_connection_id(id);
    return s;
  }

  std::vector<AuthEvent> events_;
  // An hour boundary since the epoch, well in the past.
  absl::Time hour_ = absl::FromUnixSeconds(
      (absl::ToUnixSeconds(absl::Now() - absl::Hours(10)) / 3600) * 3600);
};

TEST_F(TimelineTest, CountsPerCodePerBucketMatchTheEventsSent) {
  const absl::Time h = hour_;
  const absl::Time start = h + absl::Seconds(17) + absl::Milliseconds(250);
  const absl::Time end =
      h + absl::Hours(3) - absl::Seconds(23) - absl::Milliseconds(250);
  auto conn = [](int i) { return i % 2 ? "c-tl-1" : "c-tl-2"; };

  // Hour 0: a burst of six server_error, two timeouts, edges of the range.
  for (int k = 0; k < 6; ++k) {
    Add("p-tl", conn(k), "src-tl",
        h + absl::Minutes(5) + absl::Seconds(17) + absl::Milliseconds(300) +
            k * (absl::Minutes(3) + absl::Seconds(11)),
        "server_error");
  }
  Add("p-tl", conn(0), "src-tl", h + absl::Minutes(40) + absl::Seconds(0.5),
      "timeout");
  Add("p-tl", conn(1), "src-tl", h + absl::Minutes(41), "timeout");
  Add("p-tl", conn(0), "src-tl", h + absl::Seconds(10), "server_error");
  Add("p-tl", conn(1), "src-tl", start - absl::Nanoseconds(1), "timeout");
  Add("p-tl", conn(0), "src-tl", start, "server_error");
  Add("p-tl", conn(1), "src-tl", start + absl::Seconds(20), "timeout");
  Add("p-tl", conn(0), "src-tl", h + absl::Minutes(7), "");
  // Hour 1: below the burst threshold; a decline counts as a failure.
  for (int k = 0; k < 3; ++k) {
    Add("p-tl", conn(k), "src-tl",
        h + absl::Hours(1) + absl::Minutes(12 * k) + absl::Seconds(59.999),
        "server_error");
  }
  Add("p-tl", conn(0), "src-tl", h + absl::Hours(1) + absl::Minutes(30),
      "invalid_grant");
  Add("p-tl", conn(1), "src-tl", h + absl::Hours(1) + absl::Minutes(31),
      "access_denied");
  Add("p-tl", conn(1), "src-tl", h + absl::Hours(1) + absl::Minutes(32), "");
  // Hour 2: the ragged end.
  Add("p-tl", conn(0), "src-tl", h + absl::Hours(2) + absl::Seconds(1),
      "server_error");
  Add("p-tl", conn(1), "src-tl", h + absl::Hours(2) + absl::Minutes(30),
      "server_error");
  Add("p-tl", conn(0), "src-tl",
      h + absl::Hours(2) + absl::Minutes(59) + absl::Seconds(10), "timeout");
  Add("p-tl", conn(1), "src-tl", end - absl::Nanoseconds(1), "timeout");
  Add("p-tl", conn(0), "src-tl", end, "server_error");
  Add("p-tl", conn(1), "src-tl", end + absl::Seconds(1), "server_error");
  // Other scopes at the same times: another source of the same patient,
  // another patient of the same source, and ids that share a prefix.
  for (int k = 0; k < 6; ++k) {
    absl::Time t = h + absl::Minutes(6 + k) + absl::Seconds(k);
    Add("p-tl", "c-tl-3", "src-other", t, "server_error");
    Add("p-tl0", "c-tl-10", "src-tl", t, "invalid_client");
    Add("p-tl0", "c-tl-10", "src-tl0", t, "server_error");
  }
  // Out of time order, in two batches.
  std::reverse(events_.begin(), events_.end());
  size_t half = events_.size() / 2;
  AppendOk({events_.begin(), events_.begin() + half});
  AppendOk({events_.begin() + half, events_.end()});

  GetFailureTimelineRequest request = Request(Source("src-tl"), start, end);
  GetFailureTimelineResponse source = Timeline(request);
  ExpectMatches(request, source);
  ASSERT_EQ(source.buckets_size(), 3);
  EXPECT_EQ(source.buckets(0).burst_error_code(), "server_error");
  EXPECT_EQ(source.buckets(0).counts(0).error_code(), "server_error");
  EXPECT_EQ(source.buckets(1).burst_error_code(), "");

  for (const TimelineScope& scope :
       {Patient("p-tl"), Connection("c-tl-1"), Connection("c-tl-2"),
        Patient("p-tl0"), Source("src-other"), Connection("c-tl-3")}) {
    SCOPED_TRACE(scope.ShortDebugString());
    request = Request(scope, start, end);
    ExpectMatches(request, Timeline(request));
  }

  // Other bucket widths and ranges, aligned and not.
  request = Request(Source("src-tl"), start, end);
  request.mutable_bucket()->set_seconds(600);
  ExpectMatches(request, Timeline(request));
  request.mutable_bucket()->set_seconds(60);
  ExpectMatches(request, Timeline(request));
  request = Request(Source("src-tl"), h, h + absl::Hours(4));
  ExpectMatches(request, Timeline(request));
  request = Request(Patient("p-tl"), start, start + absl::Seconds(30));
  ExpectMatches(request, Timeline(request));  // inside one minute
  request = Request(Source("src-tl"), start, end);
  request.set_max_events(3);
  ExpectMatches(request, Timeline(request));
  request.clear_bucket();  // one hour
  ExpectMatches(request, Timeline(request));
}

TEST_F(TimelineTest, InvalidRequestsNameTheField) {
  GetFailureTimelineRequest request =
      Request(Source("src-tl"), hour_, hour_ + absl::Hours(3));
  request.mutable_bucket()->set_seconds(90);
  grpc::Status status = TimelineStatus(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "bucket");

  request.mutable_bucket()->set_seconds(60);
  request.mutable_bucket()->set_nanos(1);
  EXPECT_EQ(ViolatedField(TimelineStatus(request)), "bucket");
  request.mutable_bucket()->set_nanos(0);
  *request.mutable_end_time() = Ts(hour_ + absl::Hours(24 * 8));
  status = TimelineStatus(request);  // 11520 one-minute buckets
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "bucket");

  request = Request(Source("src-tl"), hour_, hour_ + absl::Hours(3));
  request.clear_scope();
  status = TimelineStatus(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "scope");
  request.mutable_scope()->set_patient_id("");
  EXPECT_EQ(TimelineStatus(request).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  request = Request(Source("src-tl"), hour_, hour_ + absl::Hours(3));
  request.clear_start_time();
  EXPECT_EQ(ViolatedField(TimelineStatus(request)), "start_time");
  request = Request(Source("src-tl"), hour_, hour_);
  EXPECT_EQ(ViolatedField(TimelineStatus(request)), "end_time");
  request = Request(Source("src-tl"), hour_, hour_ + absl::Hours(3));
  request.set_max_events(-1);
  EXPECT_EQ(ViolatedField(TimelineStatus(request)), "max_events");
}

TEST_F(TimelineTest, EventsAreBoundedInBytesNotRefused) {
  // 700 failures of about 6.5 KB: more than a default client accepts in
  // one message, even though max_events allows 1000.
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<AuthEvent> events;
    for (int i = 0; i < 350; ++i) {
      Event e(absl::StrCat("big-", batch, "-", i));
      e.Patient("p-big")
          .Connection("c-big")
          .Source("src-big", std::string(256, 'n'))
          .At(hour_ + absl::Seconds(batch * 350 + i))
          .Step(v1::STEP_TOKEN_REFRESH)
          .Failed("server_error", 503, std::string(2048, 'd'));
      for (int k = 0; k < 8; ++k) {
        e.Attribute(absl::StrCat("k", k), std::string(510, 'v'));
      }
      events.push_back(e);
    }
    AppendOk(events);
  }
  GetFailureTimelineRequest request =
      Request(Source("src-big"), hour_, hour_ + absl::Hours(1));
  request.set_max_events(1000);
  GetFailureTimelineResponse response;
  grpc::Status status =
      server_.history().GetFailureTimeline(Context().get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();
  EXPECT_EQ(response.total(), 700u);
  EXPECT_GT(response.events_size(), 0);
  EXPECT_LT(response.events_size(), 700);
  EXPECT_TRUE(response.events_truncated());
  EXPECT_LE(response.ByteSizeLong(), size_t{4} << 20);
  EXPECT_EQ(response.events(0).event().event_id(), "big-1-349");  // newest
}

}  // namespace
}  // namespace authtrail::testing
