// Tests of request validation: every limit passes at the limit and fails one
// byte over, naming the field (with the event's index) and the limit.
#include "services/validation.h"

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testing/events.h"

namespace authtrail::services {
namespace {

using authtrail::testing::Batch;
using authtrail::testing::Event;
using authtrail::testing::Ts;
using authtrail::v1::AppendEventsRequest;
using authtrail::v1::AuthEvent;
using authtrail::v1::ListEventsRequest;

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

std::string Describe(const std::vector<Violation>& violations) {
  std::string out;
  for (const Violation& v : violations) {
    absl::StrAppend(&out, "\n  ", v.field, ": ", v.description);
  }
  return out.empty() ? " none" : out;
}

AuthEvent ValidEvent(const std::string& id = "evt-1") {
  return Event(id)
      .Patient("p-1")
      .Connection("c-1")
      .Session("s-1")
      .Request("req-1")
      .At(kNow - absl::Minutes(1))
      .Step(v1::STEP_CONSENT)
      .Succeeded();
}

std::vector<Violation> Validate(const AuthEvent& event) {
  return ValidateAppend(Batch({event}), kNow);
}

// Validates the batch {valid event, `event`}, so that the index shows.
std::vector<Violation> ValidateSecond(const AuthEvent& event) {
  return ValidateAppend(Batch({ValidEvent("evt-0"), event}), kNow);
}

// Expects exactly one violation, on `field`, whose description has every
// one of `words`.
void ExpectOnly(const std::vector<Violation>& violations,
                const std::string& field, std::vector<std::string> words = {}) {
  ASSERT_EQ(violations.size(), 1u) << Describe(violations);
  EXPECT_EQ(violations[0].field, field) << Describe(violations);
  for (const std::string& word : words) {
    EXPECT_NE(violations[0].description.find(word), std::string::npos)
        << "'" << word << "' not in: " << violations[0].description;
  }
}

struct StringField {
  std::string name;
  size_t limit;
  std::function<void(AuthEvent*, const std::string&)> set;
};

std::vector<StringField> StringFields() {
  return {
      {"event_id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) { e->set_event_id(v); }},
      {"patient_id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) { e->set_patient_id(v); }},
      {"connection_id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) { e->set_connection_id(v); }},
      {"session_id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) { e->set_session_id(v); }},
      {"request_id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) { e->set_request_id(v); }},
      {"source.id", Limits::kMaxIdBytes,
       [](AuthEvent* e, const std::string& v) {
         e->mutable_source()->set_id(v);
       }},
      {"source.name", Limits::kMaxSourceNameBytes,
       [](AuthEvent* e, const std::string& v) {
         e->mutable_source()->set_name(v);
       }},
      {"error_code", Limits::kMaxErrorCodeBytes,
       [](AuthEvent* e, const std::string& v) { e->set_error_code(v); }},
      {"error_description", Limits::kMaxErrorDescriptionBytes,
       [](AuthEvent* e, const std::string& v) { e->set_error_description(v); }},
      {"emitter", Limits::kMaxEmitterBytes,
       [](AuthEvent* e, const std::string& v) { e->set_emitter(v); }},
  };
}

// The fields that are ids or codes: no control characters, no surrounding
// spaces.
std::vector<StringField> TokenFields() {
  std::vector<StringField> out;
  for (StringField& f : StringFields()) {
    if (f.name != "source.name" && f.name != "error_description") {
      out.push_back(std::move(f));
    }
  }
  return out;
}

TEST(ValidateAppendTest, AcceptsAValidEvent) {
  EXPECT_TRUE(Validate(ValidEvent()).empty())
      << Describe(Validate(ValidEvent()));
}

TEST(ValidateAppendTest, EveryStringFieldPassesAtItsLimit) {
  for (const StringField& f : StringFields()) {
    AuthEvent event = ValidEvent();
    f.set(&event, std::string(f.limit, 'a'));
    std::vector<Violation> violations = ValidateSecond(event);
    EXPECT_TRUE(violations.empty()) << f.name << Describe(violations);
  }
}

TEST(ValidateAppendTest, EveryStringFieldFailsOneByteOverNamingTheLimit) {
  for (const StringField& f : StringFields()) {
    SCOPED_TRACE(f.name);
    AuthEvent event = ValidEvent();
    f.set(&event, std::string(f.limit + 1, 'a'));
    ExpectOnly(ValidateSecond(event), absl::StrCat("events[1].", f.name),
               {absl::StrCat(f.limit), absl::StrCat(f.limit + 1)});
  }
}

TEST(ValidateAppendTest, LimitsCountBytesNotCharacters) {
  // 43 three-byte characters are 129 bytes: one over the id limit.
  std::string id;
  for (int i = 0; i < 43; ++i) id += "\xe2\x80\x93";
  ASSERT_EQ(id.size(), Limits::kMaxIdBytes + 1);
  AuthEvent event = ValidEvent();
  event.set_patient_id(id);
  ExpectOnly(Validate(event), "events[0].patient_id", {"128"});
}

TEST(ValidateAppendTest, SourceNameIsKeptExactly) {
  AuthEvent event = ValidEvent();
  event.mutable_source()->set_name(" Epic \xe2\x80\x93 Smith & Sons ");
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));
}

TEST(ValidateAppendTest, EventIdIsRequired) {
  AuthEvent event = ValidEvent();
  event.clear_event_id();
  ExpectOnly(ValidateSecond(event), "events[1].event_id", {"required"});
}

TEST(ValidateAppendTest, UnattributedEventIsAccepted) {
  AuthEvent event = ValidEvent();
  event.clear_patient_id();
  event.clear_connection_id();
  event.clear_session_id();
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));
}

TEST(ValidateAppendTest, NullDescriptionIsRefused) {
  for (std::string text : {"null", "NULL", "Null"}) {
    AuthEvent event = Event("evt-1")
                          .Patient("p-1")
                          .Connection("c-1")
                          .At(kNow)
                          .Step(v1::STEP_TOKEN_REFRESH)
                          .Failed("server_error", 503, text);
    ExpectOnly(Validate(event), "events[0].error_description", {"null"});
  }
}

TEST(ValidateAppendTest, DescriptionsThatMerelyContainNullAreAccepted) {
  for (std::string text : {"", "nullable", "null pointer", "not null"}) {
    AuthEvent event = ValidEvent();
    event.set_error_description(text);
    EXPECT_TRUE(Validate(event).empty()) << text;
  }
}

TEST(ValidateAppendTest, ErrorCodeIsRequiredForFailedAndDenied) {
  for (v1::Outcome outcome : {v1::OUTCOME_FAILED, v1::OUTCOME_DENIED}) {
    AuthEvent event = ValidEvent();
    event.set_outcome(outcome);
    event.clear_error_code();
    ExpectOnly(ValidateSecond(event), "events[1].error_code", {"required"});
    event.set_error_code("access_denied");
    EXPECT_TRUE(ValidateSecond(event).empty());
  }
}

TEST(ValidateAppendTest, ErrorCodeIsOptionalForStartedAndSucceeded) {
  for (v1::Outcome outcome : {v1::OUTCOME_STARTED, v1::OUTCOME_SUCCEEDED}) {
    AuthEvent event = ValidEvent();
    event.set_outcome(outcome);
    event.clear_error_code();
    EXPECT_TRUE(Validate(event).empty());
  }
}

TEST(ValidateAppendTest, UnspecifiedStepIsRefused) {
  AuthEvent event = ValidEvent();
  event.set_step(v1::STEP_UNSPECIFIED);
  ExpectOnly(ValidateSecond(event), "events[1].step", {"required"});
}

TEST(ValidateAppendTest, UnspecifiedOutcomeIsRefused) {
  AuthEvent event = ValidEvent();
  event.set_outcome(v1::OUTCOME_UNSPECIFIED);
  ExpectOnly(ValidateSecond(event), "events[1].outcome", {"required"});
}

TEST(ValidateAppendTest, UnknownStepAndOutcomeNumbersAreAccepted) {
  AuthEvent event = ValidEvent();
  event.set_step(static_cast<v1::Step>(42));
  event.set_outcome(static_cast<v1::Outcome>(9));
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));
}

TEST(ValidateAppendTest, HttpStatusIsZeroOrAValidStatus) {
  for (int status : {0, 100, 200, 429, 503, 599}) {
    AuthEvent event = ValidEvent();
    event.set_http_status(status);
    EXPECT_TRUE(Validate(event).empty()) << status;
  }
  for (int status : {-1, 1, 99, 600, 1000}) {
    AuthEvent event = ValidEvent();
    event.set_http_status(status);
    ExpectOnly(ValidateSecond(event), "events[1].http_status",
               {absl::StrCat(status), "100..599"});
  }
}

TEST(ValidateAppendTest, AttributeCountLimit) {
  AuthEvent event = ValidEvent();
  for (size_t i = 0; i < Limits::kMaxAttributes; ++i) {
    (*event.mutable_attributes())[absl::StrCat("k", i)] = "v";
  }
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));
  (*event.mutable_attributes())["one_more"] = "v";
  ExpectOnly(ValidateSecond(event), "events[1].attributes", {"33", "32"});
}

TEST(ValidateAppendTest, AttributeKeyLimit) {
  AuthEvent event = ValidEvent();
  (*event.mutable_attributes())[std::string(64, 'k')] = "v";
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));

  AuthEvent over = ValidEvent();
  (*over.mutable_attributes())[std::string(65, 'k')] = "v";
  std::vector<Violation> violations = ValidateSecond(over);
  ASSERT_EQ(violations.size(), 1u) << Describe(violations);
  EXPECT_TRUE(absl::StartsWith(violations[0].field, "events[1].attributes"))
      << violations[0].field;
  EXPECT_NE(violations[0].description.find("64"), std::string::npos)
      << violations[0].description;
}

TEST(ValidateAppendTest, AttributeValueLimit) {
  AuthEvent event = ValidEvent();
  (*event.mutable_attributes())["scope"] = std::string(512, 'v');
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));

  (*event.mutable_attributes())["scope"] = std::string(513, 'v');
  std::vector<Violation> violations = ValidateSecond(event);
  ASSERT_EQ(violations.size(), 1u) << Describe(violations);
  EXPECT_EQ(violations[0].field, "events[1].attributes[\"scope\"]");
  EXPECT_NE(violations[0].description.find("512"), std::string::npos)
      << violations[0].description;
}

TEST(ValidateAppendTest, AttributesTotalBytesLimit) {
  // 8 entries of 2 key bytes and 510 value bytes: 4096 bytes in all.
  AuthEvent event = ValidEvent();
  for (int i = 0; i < 8; ++i) {
    (*event.mutable_attributes())[absl::StrCat("k", i)] = std::string(510, 'v');
  }
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));

  (*event.mutable_attributes())["k0"] = std::string(511, 'v');
  ExpectOnly(ValidateSecond(event), "events[1].attributes", {"4097", "4096"});
}

TEST(ValidateAppendTest, EmptyAttributeKeyIsRefused) {
  AuthEvent event = ValidEvent();
  (*event.mutable_attributes())[""] = "v";
  ExpectOnly(ValidateSecond(event), "events[1].attributes", {"empty"});
}

TEST(ValidateAppendTest, ControlCharactersInIdsAndCodesAreRefused) {
  for (const StringField& f : TokenFields()) {
    for (std::string bad :
         {std::string("a\nb"), std::string("a\tb"), std::string("a\0b", 3),
          std::string("\x1f"), std::string("a\x7f")}) {
      SCOPED_TRACE(absl::StrCat(f.name, " ", absl::CEscape(bad)));
      AuthEvent event = ValidEvent();
      f.set(&event, bad);
      ExpectOnly(ValidateSecond(event), absl::StrCat("events[1].", f.name),
                 {"control character"});
    }
  }
}

TEST(ValidateAppendTest, SurroundingSpacesInIdsAndCodesAreRefused) {
  for (const StringField& f : TokenFields()) {
    for (std::string bad : {" a", "a ", " "}) {
      SCOPED_TRACE(absl::StrCat(f.name, " '", bad, "'"));
      AuthEvent event = ValidEvent();
      f.set(&event, bad);
      ExpectOnly(ValidateSecond(event), absl::StrCat("events[1].", f.name),
                 {"whitespace"});
    }
  }
}

TEST(ValidateAppendTest, ControlCharacterInAttributeKeyIsRefused) {
  AuthEvent event = ValidEvent();
  (*event.mutable_attributes())["a\nb"] = "v";
  std::vector<Violation> violations = ValidateSecond(event);
  ASSERT_EQ(violations.size(), 1u) << Describe(violations);
  EXPECT_TRUE(absl::StartsWith(violations[0].field, "events[1].attributes"));
  EXPECT_NE(violations[0].description.find("control"), std::string::npos);
}

TEST(ValidateAppendTest, OccurredAtIsRequired) {
  AuthEvent event = ValidEvent();
  event.clear_occurred_at();
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"required"});
}

TEST(ValidateAppendTest, OccurredAtBefore2000IsRefused) {
  AuthEvent event = ValidEvent();
  event.mutable_occurred_at()->set_seconds(Limits::kEarliestUnixSeconds - 1);
  event.mutable_occurred_at()->set_nanos(999999999);
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"2000-01-01"});

  event.mutable_occurred_at()->set_seconds(0);
  event.mutable_occurred_at()->set_nanos(0);
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"2000-01-01"});

  event.mutable_occurred_at()->set_seconds(-86400);
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"2000-01-01"});
}

TEST(ValidateAppendTest, OccurredAtExactlyAt2000IsAccepted) {
  AuthEvent event = ValidEvent();
  event.mutable_occurred_at()->set_seconds(Limits::kEarliestUnixSeconds);
  event.mutable_occurred_at()->set_nanos(0);
  EXPECT_TRUE(Validate(event).empty()) << Describe(Validate(event));
}

TEST(ValidateAppendTest, OccurredAtMoreThanADayAheadIsRefused) {
  AuthEvent event = ValidEvent();
  *event.mutable_occurred_at() =
      Ts(kNow + absl::Hours(24) + absl::Nanoseconds(1));
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"24h"});

  *event.mutable_occurred_at() = Ts(kNow + absl::Hours(24 * 365));
  ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"24h"});
}

TEST(ValidateAppendTest, OccurredAtUpToADayAheadIsAccepted) {
  for (absl::Duration ahead : {absl::ZeroDuration(), absl::Minutes(6),
                               absl::Hours(23), absl::Hours(24)}) {
    AuthEvent event = ValidEvent();
    *event.mutable_occurred_at() = Ts(kNow + ahead);
    EXPECT_TRUE(Validate(event).empty())
        << absl::FormatDuration(ahead) << Describe(Validate(event));
  }
}

TEST(ValidateAppendTest, OccurredAtWithInvalidNanosIsRefused) {
  for (int nanos : {-1, 1000000000}) {
    AuthEvent event = ValidEvent();
    event.mutable_occurred_at()->set_nanos(nanos);
    ExpectOnly(ValidateSecond(event), "events[1].occurred_at", {"nanos"});
  }
}

TEST(ValidateAppendTest, EmptyBatchIsRefused) {
  ExpectOnly(ValidateAppend(AppendEventsRequest(), kNow), "events",
             {"empty", "1000"});
}

TEST(ValidateAppendTest, ThousandEventsPassAndOneMoreFails) {
  AppendEventsRequest request;
  for (int i = 0; i < 1000; ++i) {
    *request.add_events() = ValidEvent(absl::StrCat("evt-", i));
  }
  EXPECT_TRUE(ValidateAppend(request, kNow).empty());
  *request.add_events() = ValidEvent("evt-1000");
  ExpectOnly(ValidateAppend(request, kNow), "events", {"1001", "1000"});
}

// A batch of valid events whose serialized size is exactly `bytes`.
AppendEventsRequest BatchOfSize(size_t bytes) {
  AuthEvent big = ValidEvent();
  big.set_error_description(std::string(2048, 'd'));
  for (int i = 0; i < 8; ++i) {
    (*big.mutable_attributes())[absl::StrCat("k", i)] = std::string(510, 'v');
  }
  AppendEventsRequest request;
  while (request.ByteSizeLong() <= bytes) {
    AuthEvent* e = request.add_events();
    *e = big;
    e->set_event_id(absl::StrCat("evt-", request.events_size()));
  }
  // Each byte off a description between 200 and 2048 bytes long takes
  // exactly one byte off the batch.
  for (int i = 0; request.ByteSizeLong() > bytes; ++i) {
    AuthEvent* e = request.mutable_events(i);
    size_t excess = request.ByteSizeLong() - bytes;
    size_t cut = std::min<size_t>(excess, 2048 - 200);
    e->set_error_description(std::string(2048 - cut, 'd'));
  }
  return request;
}

TEST(ValidateAppendTest, BatchOfExactlyFourMebibytesPasses) {
  AppendEventsRequest request = BatchOfSize(Limits::kMaxBatchBytes);
  ASSERT_EQ(request.ByteSizeLong(), Limits::kMaxBatchBytes);
  ASSERT_LE(request.events_size(), 1000);
  std::vector<Violation> violations = ValidateAppend(request, kNow);
  EXPECT_TRUE(violations.empty()) << Describe(violations);
}

TEST(ValidateAppendTest, BatchOneByteOverFourMebibytesFails) {
  AppendEventsRequest request = BatchOfSize(Limits::kMaxBatchBytes + 1);
  ASSERT_EQ(request.ByteSizeLong(), Limits::kMaxBatchBytes + 1);
  ASSERT_LE(request.events_size(), 1000);
  ExpectOnly(ValidateAppend(request, kNow), "events", {"4194305", "4194304"});
}

TEST(ValidateAppendTest, ViolationsOfSeveralEventsAreAllNamed) {
  AuthEvent bad_step = ValidEvent("evt-a");
  bad_step.set_step(v1::STEP_UNSPECIFIED);
  AuthEvent bad_http = ValidEvent("evt-c");
  bad_http.set_http_status(700);
  std::vector<Violation> violations =
      ValidateAppend(Batch({bad_step, ValidEvent("evt-b"), bad_http}), kNow);
  ASSERT_EQ(violations.size(), 2u) << Describe(violations);
  EXPECT_EQ(violations[0].field, "events[0].step");
  EXPECT_EQ(violations[1].field, "events[2].http_status");
}

TEST(ValidateIdTest, RequiredAndLimited) {
  EXPECT_TRUE(ValidateId("patient_id", "p-1", true).empty());
  EXPECT_TRUE(ValidateId("patient_id", "", false).empty());
  ExpectOnly(ValidateId("patient_id", "", true), "patient_id", {"required"});
  EXPECT_TRUE(ValidateId("patient_id", std::string(128, 'p'), true).empty());
  ExpectOnly(ValidateId("patient_id", std::string(129, 'p'), true),
             "patient_id", {"128"});
}

TEST(ValidateListEventsTest, AcceptsADefaultRequest) {
  EXPECT_TRUE(ValidateListEvents(ListEventsRequest()).empty());
}

TEST(ValidateListEventsTest, NegativePageSizeIsRefused) {
  ListEventsRequest request;
  request.set_page_size(-1);
  ExpectOnly(ValidateListEvents(request), "page_size", {"negative"});
  for (int size : {0, 1, 1000, 5000}) {
    request.set_page_size(size);
    EXPECT_TRUE(ValidateListEvents(request).empty()) << size;
  }
}

TEST(ValidateListEventsTest, EndBeforeStartIsRefused) {
  ListEventsRequest request;
  *request.mutable_start_time() = Ts(kNow);
  *request.mutable_end_time() = Ts(kNow - absl::Nanoseconds(1));
  ExpectOnly(ValidateListEvents(request), "end_time", {"start_time"});
}

TEST(ValidateListEventsTest, EmptyOrOpenRangesAreAccepted) {
  ListEventsRequest request;
  *request.mutable_start_time() = Ts(kNow);
  *request.mutable_end_time() = Ts(kNow);
  EXPECT_TRUE(ValidateListEvents(request).empty());
  request.clear_end_time();
  EXPECT_TRUE(ValidateListEvents(request).empty());
  *request.mutable_end_time() = Ts(kNow + absl::Nanoseconds(1));
  EXPECT_TRUE(ValidateListEvents(request).empty());
}

TEST(ValidateListEventsTest, FilterIdsAndTokenAreLimited) {
  struct Case {
    std::string field;
    size_t limit;
    std::function<void(ListEventsRequest*, const std::string&)> set;
  };
  const std::vector<Case> cases = {
      {"filter.patient_id", 128,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_patient_id(v);
       }},
      {"filter.connection_id", 128,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_connection_id(v);
       }},
      {"filter.session_id", 128,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_session_id(v);
       }},
      {"filter.request_id", 128,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_request_id(v);
       }},
      {"filter.source_id", 128,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_source_id(v);
       }},
      {"filter.error_code", 64,
       [](ListEventsRequest* r, const std::string& v) {
         r->mutable_filter()->set_error_code(v);
       }},
      {"page_token", 256,
       [](ListEventsRequest* r, const std::string& v) {
         r->set_page_token(v);
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    ListEventsRequest request;
    c.set(&request, std::string(c.limit, 'x'));
    EXPECT_TRUE(ValidateListEvents(request).empty());
    c.set(&request, std::string(c.limit + 1, 'x'));
    ExpectOnly(ValidateListEvents(request), c.field, {absl::StrCat(c.limit)});
  }
}

}  // namespace
}  // namespace authtrail::services
