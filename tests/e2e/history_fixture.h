// A fixture for the end-to-end tests of the read side: a real server on a
// free loopback port, small wrappers that call it through the stubs and
// check the status, and a reference filter to compare answers with.
#ifndef AUTHTRAIL_TESTS_E2E_HISTORY_FIXTURE_H_
#define AUTHTRAIL_TESTS_E2E_HISTORY_FIXTURE_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/events.h"
#include "tests/testing/test_server.h"

namespace authtrail::testing {

// An event as the test sent it, with the position the server gave it.
struct Sent {
  authtrail::v1::AuthEvent event;
  uint64_t position = 0;
};

inline absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// Strict (occurred_at, position) order.
inline bool EarlierThan(const Sent& a, const Sent& b) {
  const auto& x = a.event.occurred_at();
  const auto& y = b.event.occurred_at();
  return std::tuple(x.seconds(), x.nanos(), a.position) <
         std::tuple(y.seconds(), y.nanos(), b.position);
}

// The field named by the first BadRequest violation of `status`, or "".
inline std::string ViolatedField(const grpc::Status& status) {
  google::rpc::Status rich;
  if (!rich.ParseFromString(status.error_details())) return "";
  for (const auto& detail : rich.details()) {
    google::rpc::BadRequest bad;
    if (detail.UnpackTo(&bad) && bad.field_violations_size() > 0) {
      return bad.field_violations(0).field();
    }
  }
  return "";
}

class HistoryFixture : public ::testing::Test {
 protected:
  explicit HistoryFixture(absl::Duration stall_window = absl::Minutes(30))
      : server_("", stall_window) {}

  grpc::Status Append(const std::vector<authtrail::v1::AuthEvent>& events) {
    authtrail::v1::AppendEventsResponse response;
    return server_.ingest().AppendEvents(Context().get(), Batch(events),
                                         &response);
  }

  // Appends and records what was sent with its position in `sent_`.
  authtrail::v1::AppendEventsResponse AppendOk(
      const std::vector<authtrail::v1::AuthEvent>& events) {
    authtrail::v1::AppendEventsResponse response;
    grpc::Status status = server_.ingest().AppendEvents(
        Context().get(), Batch(events), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (status.ok() &&
        response.results_size() == static_cast<int>(events.size())) {
      for (size_t i = 0; i < events.size(); ++i) {
        if (!response.results(i).duplicate()) {
          sent_.push_back({events[i], response.results(i).position()});
        }
      }
    }
    return response;
  }

  uint64_t AppendOne(const authtrail::v1::AuthEvent& event) {
    auto response = AppendOk({event});
    return response.results_size() == 1 ? response.results(0).position() : 0;
  }

  uint64_t Head() {
    authtrail::v1::Stats stats;
    grpc::Status status = server_.admin().GetStats(Context().get(), {}, &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats.head_position();
  }

  authtrail::v1::Connection GetConnection(const std::string& id) {
    authtrail::v1::GetConnectionRequest request;
    request.set_connection_id(id);
    authtrail::v1::Connection connection;
    grpc::Status status =
        server_.history().GetConnection(Context().get(), request, &connection);
    EXPECT_TRUE(status.ok()) << id << ": " << status.error_message();
    return connection;
  }

  std::vector<authtrail::v1::Connection> ListConnections(
      const std::string& patient) {
    authtrail::v1::ListConnectionsRequest request;
    request.set_patient_id(patient);
    authtrail::v1::ListConnectionsResponse response;
    grpc::Status status =
        server_.history().ListConnections(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << patient << ": " << status.error_message();
    return {response.connections().begin(), response.connections().end()};
  }

  authtrail::v1::SessionDiagnosis Diagnose(const std::string& session) {
    authtrail::v1::DiagnoseSessionRequest request;
    request.set_session_id(session);
    authtrail::v1::SessionDiagnosis diagnosis;
    grpc::Status status =
        server_.history().DiagnoseSession(Context().get(), request, &diagnosis);
    EXPECT_TRUE(status.ok()) << session << ": " << status.error_message();
    return diagnosis;
  }

  grpc::Status ListEventsStatus(const authtrail::v1::ListEventsRequest& request,
                                authtrail::v1::ListEventsResponse* response) {
    return server_.history().ListEvents(Context().get(), request, response);
  }

  authtrail::v1::ListEventsResponse ListEvents(
      const authtrail::v1::ListEventsRequest& request) {
    authtrail::v1::ListEventsResponse response;
    grpc::Status status = ListEventsStatus(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Every page of `request`, in order. Fails the test on an empty page
  // after the first (a token was given when nothing more matched), or
  // after `max_pages`.
  std::vector<authtrail::v1::RecordedEvent> ListAll(
      authtrail::v1::ListEventsRequest request, int max_pages = 100) {
    std::vector<authtrail::v1::RecordedEvent> out;
    for (int page = 0; page < max_pages; ++page) {
      authtrail::v1::ListEventsResponse response = ListEvents(request);
      EXPECT_TRUE(page == 0 || response.events_size() > 0)
          << "page " << page << " is empty, but the page before it gave "
          << "a next token";
      out.insert(out.end(), response.events().begin(), response.events().end());
      if (response.next_page_token().empty()) return out;
      request.set_page_token(response.next_page_token());
    }
    ADD_FAILURE() << "more than " << max_pages << " pages";
    return out;
  }

  static std::vector<std::string> Ids(
      const std::vector<authtrail::v1::RecordedEvent>& events) {
    std::vector<std::string> ids;
    for (const auto& e : events) ids.push_back(e.event().event_id());
    return ids;
  }
  static std::vector<std::string> Ids(
      const authtrail::v1::ListEventsResponse& response) {
    return Ids({response.events().begin(), response.events().end()});
  }

  // The events of `sent_` matching `request` (filter and time range), in
  // the order ListEvents must return them.
  std::vector<std::string> Expected(
      const authtrail::v1::ListEventsRequest& request) const {
    const auto& f = request.filter();
    auto same = [](const std::string& want, const std::string& have) {
      return want.empty() || want == have;
    };
    std::vector<Sent> match;
    for (const Sent& s : sent_) {
      const auto& e = s.event;
      absl::Time t = TimeOf(e.occurred_at());
      if (request.has_start_time() && t < TimeOf(request.start_time())) {
        continue;
      }
      if (request.has_end_time() && t >= TimeOf(request.end_time())) continue;
      if (same(f.patient_id(), e.patient_id()) &&
          same(f.connection_id(), e.connection_id()) &&
          same(f.session_id(), e.session_id()) &&
          same(f.request_id(), e.request_id()) &&
          same(f.source_id(), e.source().id()) &&
          same(f.error_code(), e.error_code()) &&
          (f.step() == 0 || f.step() == e.step()) &&
          (f.outcome() == 0 || f.outcome() == e.outcome())) {
        match.push_back(s);
      }
    }
    std::sort(match.begin(), match.end(), EarlierThan);
    if (!request.oldest_first()) std::reverse(match.begin(), match.end());
    std::vector<std::string> ids;
    for (const Sent& s : match) ids.push_back(s.event.event_id());
    return ids;
  }

  TestServer server_;
  std::vector<Sent> sent_;
};

}  // namespace authtrail::testing

#endif  // AUTHTRAIL_TESTS_E2E_HISTORY_FIXTURE_H_
