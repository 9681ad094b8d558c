#include "services/validation.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace authtrail::services {
namespace {

using authtrail::v1::AuthEvent;

// Stop collecting after this many; the caller has enough to fix.
constexpr size_t kMaxViolations = 20;

class Checker {
 public:
  explicit Checker(std::vector<Violation>* out) : out_(out) {}

  void Add(std::string field, std::string description) {
    if (out_->size() < kMaxViolations) {
      out_->push_back({std::move(field), std::move(description)});
    }
  }

  void Length(const std::string& field, const std::string& value,
              size_t limit) {
    if (value.size() > limit) {
      Add(field, absl::StrCat("is ", value.size(), " bytes; the limit is ",
                              limit, " bytes"));
    }
  }

  // Ids and codes: no control characters, no surrounding spaces.
  void Token(const std::string& field, const std::string& value, size_t limit) {
    Length(field, value, limit);
    if (std::any_of(value.begin(), value.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })) {
      Add(field, "contains a control character");
    } else if (!value.empty() && (absl::ascii_isspace(value.front()) ||
                                  absl::ascii_isspace(value.back()))) {
      Add(field, "has leading or trailing whitespace");
    }
  }

  void Required(const std::string& field, const std::string& value) {
    if (value.empty()) Add(field, "is required");
  }

 private:
  std::vector<Violation>* out_;
};

bool IsFailureOutcome(int outcome) {
  return outcome == authtrail::v1::OUTCOME_FAILED ||
         outcome == authtrail::v1::OUTCOME_DENIED;
}

void CheckTime(Checker& check, const std::string& field, const AuthEvent& event,
               absl::Time now) {
  if (!event.has_occurred_at()) {
    check.Add(field, "is required");
    return;
  }
  const auto& ts = event.occurred_at();
  if (ts.nanos() < 0 || ts.nanos() > 999'999'999) {
    check.Add(field, "has nanos outside 0..999999999");
    return;
  }
  if (ts.seconds() < Limits::kEarliestUnixSeconds) {
    check.Add(field,
              "is before 2000-01-01T00:00:00Z, the earliest accepted "
              "time; the emitter's clock is wrong");
    return;
  }
  absl::Time when =
      absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  if (when > now + Limits::kMaxAhead) {
    check.Add(field, absl::StrCat("is ", absl::FormatDuration(when - now),
                                  " ahead of the server's clock; the limit is ",
                                  absl::FormatDuration(Limits::kMaxAhead)));
  }
}

void CheckAttributes(Checker& check, const std::string& prefix,
                     const AuthEvent& event) {
  const auto& attributes = event.attributes();
  if (attributes.size() > Limits::kMaxAttributes) {
    check.Add(prefix + "attributes",
              absl::StrCat("has ", attributes.size(), " entries; the limit is ",
                           Limits::kMaxAttributes));
  }
  size_t bytes = 0;
  for (const auto& [key, value] : attributes) {
    std::string field =
        absl::StrCat(prefix, "attributes[\"", key.substr(0, 64), "\"]");
    if (key.empty()) check.Add(prefix + "attributes", "has an empty key");
    check.Token(field + " (key)", key, Limits::kMaxAttributeKeyBytes);
    check.Length(field, value, Limits::kMaxAttributeValueBytes);
    bytes += key.size() + value.size();
  }
  if (bytes > Limits::kMaxAttributesBytes) {
    check.Add(prefix + "attributes",
              absl::StrCat("hold ", bytes, " bytes; the limit is ",
                           Limits::kMaxAttributesBytes, " bytes"));
  }
}

void CheckEvent(Checker& check, size_t index, const AuthEvent& e,
                absl::Time now) {
  std::string p = absl::StrCat("events[", index, "].");
  check.Required(p + "event_id", e.event_id());
  check.Token(p + "event_id", e.event_id(), Limits::kMaxIdBytes);
  check.Token(p + "patient_id", e.patient_id(), Limits::kMaxIdBytes);
  check.Token(p + "connection_id", e.connection_id(), Limits::kMaxIdBytes);
  check.Token(p + "session_id", e.session_id(), Limits::kMaxIdBytes);
  check.Token(p + "request_id", e.request_id(), Limits::kMaxIdBytes);
  check.Token(p + "source.id", e.source().id(), Limits::kMaxIdBytes);
  check.Length(p + "source.name", e.source().name(),
               Limits::kMaxSourceNameBytes);
  check.Token(p + "emitter", e.emitter(), Limits::kMaxEmitterBytes);
  check.Token(p + "error_code", e.error_code(), Limits::kMaxErrorCodeBytes);
  check.Length(p + "error_description", e.error_description(),
               Limits::kMaxErrorDescriptionBytes);
  if (absl::AsciiStrToLower(e.error_description()) == "null") {
    check.Add(p + "error_description",
              "is the text \"null\"; send an empty string when there is no "
              "description");
  }
  if (e.step() == authtrail::v1::STEP_UNSPECIFIED) {
    check.Add(p + "step", "is required (STEP_UNSPECIFIED is not a step)");
  }
  if (e.outcome() == authtrail::v1::OUTCOME_UNSPECIFIED) {
    check.Add(p + "outcome",
              "is required (OUTCOME_UNSPECIFIED is not an outcome)");
  }
  if (IsFailureOutcome(e.outcome()) && e.error_code().empty()) {
    check.Add(p + "error_code",
              "is required when the outcome is FAILED or "
              "DENIED");
  }
  if (e.http_status() != 0 &&
      (e.http_status() < 100 || e.http_status() > 599)) {
    check.Add(p + "http_status",
              absl::StrCat("is ", e.http_status(),
                           "; use 0 (no HTTP call) or 100..599"));
  }
  CheckTime(check, p + "occurred_at", e, now);
  CheckAttributes(check, p, e);
}

}  // namespace

std::vector<Violation> ValidateAppend(
    const authtrail::v1::AppendEventsRequest& request, absl::Time now) {
  std::vector<Violation> out;
  Checker check(&out);
  if (request.events().empty()) {
    check.Add("events", "is empty; send 1 to 1000 events");
    return out;
  }
  if (static_cast<size_t>(request.events_size()) > Limits::kMaxEventsPerBatch) {
    check.Add("events", absl::StrCat("has ", request.events_size(),
                                     " events; the limit is ",
                                     Limits::kMaxEventsPerBatch));
    return out;
  }
  size_t bytes = request.ByteSizeLong();
  if (bytes > Limits::kMaxBatchBytes) {
    check.Add("events", absl::StrCat("are ", bytes, " bytes; the limit is ",
                                     Limits::kMaxBatchBytes, " bytes"));
    return out;
  }
  for (int i = 0; i < request.events_size(); ++i) {
    CheckEvent(check, i, request.events(i), now);
  }
  return out;
}

std::vector<Violation> ValidateId(const std::string& field,
                                  const std::string& value, bool required) {
  std::vector<Violation> out;
  Checker check(&out);
  if (required) check.Required(field, value);
  check.Length(field, value, Limits::kMaxIdBytes);
  return out;
}

std::vector<Violation> ValidateListEvents(
    const authtrail::v1::ListEventsRequest& request) {
  std::vector<Violation> out;
  Checker check(&out);
  const auto& f = request.filter();
  for (const auto& [name, value] :
       {std::pair{"filter.patient_id", &f.patient_id()},
        {"filter.connection_id", &f.connection_id()},
        {"filter.session_id", &f.session_id()},
        {"filter.request_id", &f.request_id()},
        {"filter.source_id", &f.source_id()}}) {
    check.Length(name, *value, Limits::kMaxIdBytes);
  }
  check.Length("filter.error_code", f.error_code(), Limits::kMaxErrorCodeBytes);
  if (request.page_size() < 0) {
    check.Add("page_size", "is negative; use 0 (default) to 1000");
  }
  check.Length("page_token", request.page_token(), Limits::kMaxPageTokenBytes);
  if (request.has_start_time() && request.has_end_time()) {
    const auto& s = request.start_time();
    const auto& e = request.end_time();
    if (std::pair(e.seconds(), e.nanos()) < std::pair(s.seconds(), s.nanos())) {
      check.Add("end_time", "is before start_time");
    }
  }
  return out;
}

}  // namespace authtrail::services
