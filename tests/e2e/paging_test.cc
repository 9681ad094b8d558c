// End-to-end tests of ListEvents and ListConnections: paging while appends
// continue, page bounds, isolation of ids that share a prefix, every filter
// and their combinations, and half-open time ranges at full precision.
#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/history_fixture.h"

namespace authtrail::testing {
namespace {

using authtrail::v1::AuthEvent;
using authtrail::v1::ListEventsRequest;
using authtrail::v1::ListEventsResponse;
using authtrail::v1::RecordedEvent;

class PagingTest : public HistoryFixture {
 protected:
  // A refresh event of `patient` on connection "c-" + patient.
  static Event Refresh(const std::string& id, const std::string& patient,
                       absl::Time t) {
    Event e(id);
    e.Patient(patient)
        .Connection("c-" + patient)
        .At(t)
        .Step(v1::STEP_TOKEN_REFRESH);
    return e;
  }

  // `n` refreshes of `patient`, 37 s and 1 ns apart from `start`, with ids
  // prefix-0 ... prefix-(n-1).
  static std::vector<AuthEvent> Refreshes(const std::string& prefix,
                                          const std::string& patient,
                                          absl::Time start, int n) {
    std::vector<AuthEvent> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(
          Refresh(absl::StrCat(prefix, "-", i), patient,
                  start + i * (absl::Seconds(37) + absl::Nanoseconds(1)))
              .Succeeded());
    }
    return out;
  }

  static ListEventsRequest ByPatient(const std::string& patient, int page_size,
                                     bool oldest_first) {
    ListEventsRequest request;
    request.mutable_filter()->set_patient_id(patient);
    request.set_page_size(page_size);
    request.set_oldest_first(oldest_first);
    return request;
  }

  // Pages through `request`, appending one newer and one older event of
  // the patient (and one at the time of the last event returned) after
  // every page. Checks what must hold of each page and of the sequence.
  void PageWhileAppending(ListEventsRequest request) {
    const std::string patient = request.filter().patient_id();
    std::vector<std::string> at_start = Expected(request);
    ASSERT_FALSE(at_start.empty());
    std::vector<std::string> extras_behind;  // must all be returned
    std::set<std::string> seen;
    std::optional<Sent> previous;

    for (int page = 0; page < 40; ++page) {
      SCOPED_TRACE(absl::StrCat("page ", page));
      ListEventsResponse response = ListEvents(request);
      EXPECT_LE(response.events_size(), request.page_size());
      EXPECT_GT(response.events_size(), 0) << "empty page";
      for (const RecordedEvent& e : response.events()) {
        const std::string& id = e.event().event_id();
        EXPECT_TRUE(seen.insert(id).second) << id << " returned twice";
        EXPECT_EQ(e.event().patient_id(), patient);
        Sent now{e.event(), e.position()};
        if (previous.has_value()) {
          bool ordered = request.oldest_first() ? EarlierThan(*previous, now)
                                                : EarlierThan(now, *previous);
          EXPECT_TRUE(ordered) << id << " is out of order";
        }
        previous = now;
      }
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());

      absl::Time last =
          TimeOf(response.events().rbegin()->event().occurred_at());
      absl::Time newer = t0_ + absl::Hours(5) + absl::Seconds(page);
      absl::Time older = t0_ - absl::Hours(5) - absl::Seconds(page);
      std::string n = absl::StrCat("new-", page),
                  o = absl::StrCat("old-", page),
                  same = absl::StrCat("same-", page);
      AppendOk({Refresh(n, patient, newer).Succeeded(),
                Refresh(o, patient, older).Succeeded(),
                Refresh(same, patient, last).Succeeded()});
      extras_behind.push_back(request.oldest_first() ? n : o);
    }
    for (const std::string& id : at_start) {
      EXPECT_TRUE(seen.count(id)) << id << " existed at the start but was "
                                  << "skipped";
    }
    for (const std::string& id : extras_behind) {
      EXPECT_TRUE(seen.count(id)) << id << " was appended behind the cursor "
                                  << "but never returned";
    }
  }

  absl::Time t0_ = absl::Now() - absl::Hours(12);
};

// --- 6. Paging
// ------------------------------------------------------------------

TEST_F(PagingTest, NewestFirstPagesStayExactWhileAppendsContinue) {
  AppendOk(Refreshes("a", "p-page", t0_, 30));
  AppendOk(Refreshes("x", "p-other", t0_, 10));
  PageWhileAppending(ByPatient("p-page", 7, /*oldest_first=*/false));
}

TEST_F(PagingTest, OldestFirstPagesStayExactWhileAppendsContinue) {
  AppendOk(Refreshes("a", "p-page", t0_, 30));
  AppendOk(Refreshes("x", "p-other", t0_, 10));
  PageWhileAppending(ByPatient("p-page", 7, /*oldest_first=*/true));
}

// Newest-first scans read windows of time forward and hand them out from
// the end: a second denser than a window holds, gaps from a second to
// decades, equal times, and range bounds inside all of them must give the
// same events in the same order as the plain rule.
TEST_F(PagingTest, NewestFirstIsExactAcrossDenseSecondsAndLongGaps) {
  const absl::Time dense = absl::FromUnixSeconds(absl::ToUnixSeconds(t0_));
  std::vector<AuthEvent> batch;
  auto flush = [&] {
    AppendOk(batch);
    batch.clear();
  };
  for (int i = 0; i < 1500; ++i) {  // one second, a few equal instants
    batch.push_back(Refresh(absl::StrCat("d-", i), "p-win",
                            dense + absl::Nanoseconds(i % 7))
                        .Succeeded());
    if (batch.size() == 500) flush();
  }
  for (int k = 0; k <= 29; ++k) {  // 1 s to 17 years back, then 25 years
    absl::Time at = dense - absl::Seconds(int64_t{1} << k);
    if (k == 29) at = dense - absl::Hours(24 * 365 * 25);
    batch.push_back(
        Refresh(absl::StrCat("g-", k), "p-win", at - absl::Nanoseconds(1))
            .Succeeded());
    batch.push_back(Refresh(absl::StrCat("h-", k), "p-win", at).Succeeded());
  }
  batch.push_back(
      Refresh("later", "p-win", dense + absl::Seconds(3)).Succeeded());
  flush();
  AppendOk(Refreshes("other", "p-win-2", dense - absl::Seconds(5), 20));

  for (bool oldest_first : {false, true}) {
    for (int page_size : {1, 100, 1000}) {
      SCOPED_TRACE(absl::StrCat("oldest_first ", oldest_first, ", pages of ",
                                page_size));
      ListEventsRequest request = ByPatient("p-win", page_size, oldest_first);
      if (page_size > 1) {
        EXPECT_EQ(Ids(ListAll(request, 100)), Expected(request));
      }
      // A range that cuts a gap and (but for single-event pages, each a
      // scan of its own) the dense second.
      request.mutable_start_time()->set_seconds(
          absl::ToUnixSeconds(dense - absl::Seconds(int64_t{1} << 20)));
      request.mutable_end_time()->set_seconds(absl::ToUnixSeconds(dense));
      request.mutable_end_time()->set_nanos(page_size > 1 ? 3 : 0);
      EXPECT_EQ(Ids(ListAll(request, 100)), Expected(request));
    }
  }
}

TEST_F(PagingTest, LastPageHasNoTokenAndExactMultipleHasNoEmptyPage) {
  AppendOk(Refreshes("a", "p-page", t0_, 14));
  for (bool oldest_first : {false, true}) {
    ListEventsRequest request = ByPatient("p-page", 7, oldest_first);
    ListEventsResponse first = ListEvents(request);
    EXPECT_EQ(first.events_size(), 7);
    ASSERT_FALSE(first.next_page_token().empty());
    request.set_page_token(first.next_page_token());
    ListEventsResponse second = ListEvents(request);
    EXPECT_EQ(second.events_size(), 7);
    EXPECT_TRUE(second.next_page_token().empty());
  }
}

TEST_F(PagingTest, TokenIsBoundToItsQuery) {
  AppendOk(Refreshes("a", "p-page", t0_, 20));
  ListEventsRequest request = ByPatient("p-page", 7, false);
  std::string token = ListEvents(request).next_page_token();
  ASSERT_FALSE(token.empty());

  ListEventsResponse response;
  ListEventsRequest other = request;
  other.set_page_token(token);
  other.mutable_filter()->set_patient_id("p-other");
  grpc::Status status = ListEventsStatus(other, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "page_token");

  other = request;
  other.set_page_token(token);
  other.mutable_filter()->set_step(v1::STEP_TOKEN_REFRESH);
  EXPECT_EQ(ListEventsStatus(other, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  other = request;
  other.set_page_token(token);
  other.set_oldest_first(true);
  EXPECT_EQ(ListEventsStatus(other, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  other = request;
  other.set_page_token(token);
  *other.mutable_start_time() = Ts(t0_);
  EXPECT_EQ(ListEventsStatus(other, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  other = request;
  other.set_page_token("not-a-token");
  EXPECT_EQ(ListEventsStatus(other, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Only the page size may change between pages.
  other = request;
  other.set_page_token(token);
  other.set_page_size(100);
  ListEventsResponse rest = ListEvents(other);
  EXPECT_EQ(rest.events_size(), 13);
  EXPECT_TRUE(rest.next_page_token().empty());
}

TEST_F(PagingTest, PageSizeIsClampedNotRefused) {
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<AuthEvent> events = Refreshes(absl::StrCat("b", batch), "p-big",
                                              t0_ + absl::Hours(batch), 550);
    AppendOk(events);
  }
  ListEventsRequest request = ByPatient("p-big", 5000, false);
  ListEventsResponse page = ListEvents(request);
  EXPECT_EQ(page.events_size(), 1000);
  ASSERT_FALSE(page.next_page_token().empty());
  request.set_page_token(page.next_page_token());
  page = ListEvents(request);
  EXPECT_EQ(page.events_size(), 100);
  EXPECT_TRUE(page.next_page_token().empty());

  request = ByPatient("p-big", 0, false);
  EXPECT_EQ(ListEvents(request).events_size(), 100);  // the default
  request.set_page_size(-1);
  ListEventsResponse response;
  grpc::Status status = ListEventsStatus(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "page_size");
}

TEST_F(PagingTest, LargePagesAreCutByBytesNotRefused) {
  // 600 events of about 6.5 KB (newest) and 300 of about 1 KB (oldest):
  // more than the 4 MiB a page may hold and fewer than 1000, so the page
  // is cut by bytes among the small events, close to the limit. A default
  // client accepts at most 4 MiB in one message.
  auto big = [this](int i) {
    Event e = Refresh(absl::StrCat("big-", i), "p-big",
                      t0_ + absl::Hours(1) + absl::Seconds(i));
    e.Failed("server_error", 503, std::string(2048, 'd'));
    e.Source("src-big", std::string(256, 'n'));
    for (int k = 0; k < 8; ++k) {
      e.Attribute(absl::StrCat("k", k), std::string(510, 'v'));
    }
    return AuthEvent(e);
  };
  auto small = [this](int i) {
    Event e =
        Refresh(absl::StrCat("small-", i), "p-big", t0_ + absl::Seconds(i));
    e.Failed("server_error", 503, std::string(900, 'd'));
    return AuthEvent(e);
  };
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<AuthEvent> events;
    for (int i = 0; i < 300; ++i) events.push_back(big(batch * 300 + i));
    AppendOk(events);
  }
  std::vector<AuthEvent> events;
  for (int i = 0; i < 300; ++i) events.push_back(small(i));
  AppendOk(events);

  ListEventsRequest request = ByPatient("p-big", 1000, false);
  ListEventsResponse response;
  grpc::Status status = ListEventsStatus(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();
  EXPECT_GT(response.events_size(), 600);
  EXPECT_LT(response.events_size(), 900);
  EXPECT_FALSE(response.next_page_token().empty());
  EXPECT_LE(response.ByteSizeLong(), size_t{4} << 20);

  std::vector<std::string> ids = Ids(ListAll(request));
  EXPECT_EQ(ids, Expected(request));
}

TEST_F(PagingTest, FilteredPagesEndWithoutAnEmptyPage) {
  // Failures at 2, 7, 12, 17 among 20 refreshes: the patient index holds
  // events older than the oldest failure, so a probe of the index alone
  // would promise a page that has nothing in it.
  std::vector<AuthEvent> events = Refreshes("a", "p-f", t0_, 20);
  for (int i = 2; i < 20; i += 5) {
    Event e(events[i].event_id());
    e.Patient("p-f")
        .Connection("c-p-f")
        .At(TimeOf(events[i].occurred_at()))
        .Step(v1::STEP_TOKEN_REFRESH)
        .Failed("server_error", 503);
    events[i] = e;
  }
  AppendOk(events);
  for (bool oldest_first : {false, true}) {
    SCOPED_TRACE(oldest_first ? "oldest first" : "newest first");
    ListEventsRequest request = ByPatient("p-f", 2, oldest_first);
    request.mutable_filter()->set_outcome(v1::OUTCOME_FAILED);
    ListEventsResponse first = ListEvents(request);
    ASSERT_EQ(first.events_size(), 2);
    ASSERT_FALSE(first.next_page_token().empty());
    request.set_page_token(first.next_page_token());
    ListEventsResponse second = ListEvents(request);
    EXPECT_EQ(second.events_size(), 2);
    EXPECT_TRUE(second.next_page_token().empty())
        << "a token after the last matching event";

    ListEventsRequest whole = ByPatient("p-f", 4, oldest_first);
    whole.mutable_filter()->set_outcome(v1::OUTCOME_FAILED);
    ListEventsResponse all = ListEvents(whole);
    EXPECT_EQ(all.events_size(), 4);
    EXPECT_TRUE(all.next_page_token().empty());
  }
}

// --- 7. Isolation of ids sharing a prefix
// -----------------------------------------

TEST_F(PagingTest, IdsThatShareAPrefixNeverMix) {
  for (const std::string n : {"1", "10", "100"}) {
    auto attempt =
        SuccessfulAttempt("a" + n, "p-" + n, "c-" + n, "s-" + n, t0_);
    for (AuthEvent& e : attempt) {
      e.set_request_id("r-" + n);
      e.mutable_source()->set_id("src-" + n);
    }
    attempt.back().set_outcome(v1::OUTCOME_FAILED);
    attempt.back().set_error_code("e-" + n);
    AppendOk(attempt);
  }

  auto connections = ListConnections("p-1");
  ASSERT_EQ(connections.size(), 1u);
  EXPECT_EQ(connections[0].connection_id(), "c-1");
  EXPECT_EQ(GetConnection("c-1").event_count(), 7u);
  EXPECT_EQ(Diagnose("s-1").event_count(), 7u);
  EXPECT_TRUE(ListConnections("p-").empty());

  for (int field = 0; field < 6; ++field) {
    ListEventsRequest request;
    auto* f = request.mutable_filter();
    switch (field) {
      case 0:
        f->set_patient_id("p-1");
        break;
      case 1:
        f->set_connection_id("c-1");
        break;
      case 2:
        f->set_session_id("s-1");
        break;
      case 3:
        f->set_request_id("r-1");
        break;
      case 4:
        f->set_source_id("src-1");
        break;
      case 5:
        f->set_error_code("e-1");
        break;
    }
    SCOPED_TRACE(f->DebugString());
    std::vector<RecordedEvent> events = ListAll(request);
    EXPECT_EQ(events.size(), field == 5 ? 1u : 7u);
    for (const RecordedEvent& e : events) {
      EXPECT_EQ(e.event().patient_id(), "p-1");
    }
  }
}

TEST_F(PagingTest, ConnectionsAreListedInConnectionIdOrder) {
  std::vector<std::string> ids = {"c-9", "c-10", "c-1", "c-100", "b", "c-2"};
  int i = 0;
  for (const std::string& id : ids) {
    AppendOne(Event(absl::StrCat("e", i++))
                  .Patient("p-1")
                  .Connection(id)
                  .At(t0_)
                  .Step(v1::STEP_TOKEN_REFRESH)
                  .Succeeded());
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> listed;
  for (const auto& c : ListConnections("p-1")) {
    listed.push_back(c.connection_id());
  }
  EXPECT_EQ(listed, ids);
}

// --- 8. Filters and time ranges
// ---------------------------------------------------

class FilterTest : public PagingTest {
 protected:
  void SetUp() override {
    // Two patients, three connections, five sessions, two sources, shared
    // request ids, every step and outcome, several error codes.
    struct Row {
      const char* patient;
      const char* connection;
      const char* session;
      const char* request;
      const char* source;
      v1::Step step;
      v1::Outcome outcome;
      const char* code;
    };
    const Row rows[] = {
        {"p-a", "c-a1", "s-1", "q-1", "src-epic", v1::STEP_PORTAL_REDIRECT,
         v1::OUTCOME_STARTED, ""},
        {"p-a", "c-a1", "s-1", "q-1", "src-epic", v1::STEP_PORTAL_REDIRECT,
         v1::OUTCOME_SUCCEEDED, ""},
        {"p-a", "c-a1", "s-1", "q-2", "src-epic", v1::STEP_SIGN_IN,
         v1::OUTCOME_SUCCEEDED, ""},
        {"p-a", "c-a1", "s-1", "q-3", "src-epic", v1::STEP_CONSENT,
         v1::OUTCOME_DENIED, "access_denied"},
        {"p-a", "c-a1", "s-2", "q-4", "src-epic", v1::STEP_PORTAL_REDIRECT,
         v1::OUTCOME_STARTED, ""},
        {"p-a", "c-a1", "s-2", "q-5", "src-epic", v1::STEP_OAUTH_CALLBACK,
         v1::OUTCOME_SUCCEEDED, ""},
        {"p-a", "c-a1", "s-2", "q-6", "src-epic", v1::STEP_TOKEN_EXCHANGE,
         v1::OUTCOME_FAILED, "timeout"},
        {"p-a", "c-a1", "s-2", "q-6", "src-epic", v1::STEP_TOKEN_EXCHANGE,
         v1::OUTCOME_FAILED, "invalid_grant"},
        {"p-a", "c-a2", "s-3", "q-7", "src-cerner", v1::STEP_OAUTH_CALLBACK,
         v1::OUTCOME_FAILED, "invalid_scope"},
        {"p-a", "c-a2", "s-4", "q-8", "src-cerner", v1::STEP_TOKEN_EXCHANGE,
         v1::OUTCOME_SUCCEEDED, ""},
        {"p-a", "c-a2", "", "q-9", "src-cerner", v1::STEP_TOKEN_REFRESH,
         v1::OUTCOME_FAILED, "server_error"},
        {"p-a", "c-a2", "", "q-10", "src-cerner", v1::STEP_TOKEN_REFRESH,
         v1::OUTCOME_FAILED, "invalid_grant"},
        {"p-b", "c-b1", "s-5", "q-11", "src-epic", v1::STEP_CONSENT,
         v1::OUTCOME_DENIED, "access_denied"},
        {"p-b", "c-b1", "s-5", "q-12", "src-epic", v1::STEP_OAUTH_CALLBACK,
         v1::OUTCOME_FAILED, "server_error"},
        {"p-b", "c-b1", "", "q-13", "src-epic", v1::STEP_TOKEN_REFRESH,
         v1::OUTCOME_SUCCEEDED, ""},
        {"p-b", "c-b1", "", "q-14", "src-epic", v1::STEP_DISCONNECT,
         v1::OUTCOME_SUCCEEDED, ""},
    };
    std::vector<AuthEvent> events;
    int i = 0;
    // Three passes over the rows, interleaved in time, so that each filter
    // has several pages.
    for (int pass = 0; pass < 3; ++pass) {
      for (const Row& r : rows) {
        Event e(absl::StrCat("f", pass, "-", i++));
        e.Patient(r.patient)
            .Connection(r.connection)
            .Session(r.session)
            .Request(r.request)
            .Source(r.source, r.source)
            .At(t0_ + absl::Seconds(7 * i) + absl::Nanoseconds(i))
            .Step(r.step);
        if (r.outcome == v1::OUTCOME_FAILED) {
          e.Failed(r.code, 503);
        } else if (r.outcome == v1::OUTCOME_DENIED) {
          e.Denied(r.code);
        } else {
          e.mutable_proto().set_outcome(r.outcome);
        }
        events.push_back(e);
      }
    }
    AppendOk(events);
  }

  // Lists with `filter` in both orders, in pages of 3 and in one page, and
  // compares with the reference.
  void Check(const v1::EventFilter& filter, size_t at_least) {
    SCOPED_TRACE(filter.ShortDebugString());
    for (bool oldest_first : {false, true}) {
      ListEventsRequest request;
      *request.mutable_filter() = filter;
      request.set_oldest_first(oldest_first);
      request.set_page_size(3);
      std::vector<std::string> want = Expected(request);
      EXPECT_GE(want.size(), at_least);
      EXPECT_EQ(Ids(ListAll(request)), want);
      request.set_page_size(1000);
      EXPECT_EQ(Ids(ListEvents(request)), want);
    }
  }
};

TEST_F(FilterTest, EachFilterAlone) {
  v1::EventFilter f;
  f.set_patient_id("p-a");
  Check(f, 36);
  f.Clear();
  f.set_connection_id("c-a2");
  Check(f, 12);
  f.Clear();
  f.set_session_id("s-2");
  Check(f, 12);
  f.Clear();
  f.set_request_id("q-6");
  Check(f, 6);
  f.Clear();
  f.set_source_id("src-cerner");
  Check(f, 12);
  f.Clear();
  f.set_step(v1::STEP_TOKEN_REFRESH);
  Check(f, 9);
  f.Clear();
  f.set_outcome(v1::OUTCOME_DENIED);
  Check(f, 6);
  f.Clear();
  f.set_error_code("invalid_grant");
  Check(f, 6);
  f.Clear();
  Check(f, 48);  // no filter: everything
}

TEST_F(FilterTest, Combinations) {
  v1::EventFilter f;
  f.set_patient_id("p-a");
  f.set_step(v1::STEP_TOKEN_EXCHANGE);
  Check(f, 9);
  f.Clear();
  f.set_connection_id("c-a1");
  f.set_outcome(v1::OUTCOME_FAILED);
  Check(f, 6);
  f.Clear();
  f.set_session_id("s-1");
  f.set_error_code("access_denied");
  Check(f, 3);
  f.Clear();
  f.set_source_id("src-epic");
  f.set_outcome(v1::OUTCOME_FAILED);
  f.set_error_code("server_error");
  Check(f, 3);
  f.Clear();
  f.set_step(v1::STEP_OAUTH_CALLBACK);
  f.set_outcome(v1::OUTCOME_FAILED);
  Check(f, 6);
  f.Clear();
  f.set_error_code("invalid_grant");
  f.set_patient_id("p-a");
  f.set_step(v1::STEP_TOKEN_REFRESH);
  Check(f, 3);
  f.Clear();
  f.set_request_id("q-6");
  f.set_error_code("timeout");
  Check(f, 3);
  f.Clear();
  f.set_patient_id("p-b");
  f.set_connection_id("c-a1");  // contradictory: nothing
  Check(f, 0);
  f.Clear();
  f.set_patient_id("p-a");
  f.set_outcome(v1::OUTCOME_STARTED);
  f.set_session_id("s-2");
  Check(f, 3);
}

TEST_F(PagingTest, TimeRangeIsHalfOpenAtFullPrecision) {
  absl::Time base = t0_ + absl::Milliseconds(123) + absl::Nanoseconds(456789);
  struct At {
    const char* id;
    absl::Duration offset;
  };
  const At times[] = {
      {"before-start", -absl::Nanoseconds(1)},
      {"at-start", absl::ZeroDuration()},
      {"inside", absl::Seconds(1) + absl::Nanoseconds(1)},
      {"before-end", absl::Seconds(3) - absl::Nanoseconds(1)},
      {"at-end", absl::Seconds(3)},
      {"after-end", absl::Seconds(3) + absl::Nanoseconds(1)},
  };
  std::vector<AuthEvent> events;
  for (const At& a : times) {
    events.push_back(Refresh(a.id, "p-t", base + a.offset).Succeeded());
  }
  // Appended out of time order, so the range cannot follow positions.
  std::reverse(events.begin(), events.end());
  AppendOk(events);

  for (bool oldest_first : {false, true}) {
    ListEventsRequest request = ByPatient("p-t", 2, oldest_first);
    *request.mutable_start_time() = Ts(base);
    *request.mutable_end_time() = Ts(base + absl::Seconds(3));
    std::vector<RecordedEvent> got = ListAll(request);
    std::vector<std::string> want = {"at-start", "inside", "before-end"};
    if (!oldest_first) std::reverse(want.begin(), want.end());
    EXPECT_EQ(Ids(got), want);
    EXPECT_EQ(Ids(got), Expected(request));
    for (const RecordedEvent& e : got) {
      for (const At& a : times) {
        if (e.event().event_id() == a.id) {
          EXPECT_EQ(TimeOf(e.event().occurred_at()), base + a.offset) << a.id;
        }
      }
    }
  }

  // Open on either side, and an empty range.
  ListEventsRequest request = ByPatient("p-t", 10, true);
  *request.mutable_start_time() = Ts(base + absl::Seconds(3));
  EXPECT_EQ(Ids(ListEvents(request)),
            (std::vector<std::string>{"at-end", "after-end"}));
  request.clear_start_time();
  *request.mutable_end_time() = Ts(base);
  EXPECT_EQ(Ids(ListEvents(request)), std::vector<std::string>{"before-start"});
  *request.mutable_start_time() = Ts(base);
  ListEventsResponse empty = ListEvents(request);
  EXPECT_EQ(empty.events_size(), 0);
  EXPECT_TRUE(empty.next_page_token().empty());
  *request.mutable_start_time() = Ts(base + absl::Seconds(1));
  ListEventsResponse response;
  grpc::Status status = ListEventsStatus(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ViolatedField(status), "end_time");
}

}  // namespace
}  // namespace authtrail::testing
