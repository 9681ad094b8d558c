#include "fuzz/recipe.h"

#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/failure_catalog.h"
#include "storage/proto_time.h"

namespace authtrail::fuzz {
namespace {

using authtrail::v1::AuthEvent;

// Reads bytes front to back; past the end every byte is 0.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Next() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Index 15 of each table is the rare odd value.
constexpr int kSteps[16] = {1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 5, 1, 0};
constexpr int kOddSteps[4] = {0, 8, 99, -1};
constexpr int kOutcomes[16] = {1, 2, 3, 4, 1, 2, 3, 4, 2, 2, 3, 1, 2, 3, 2, 0};
constexpr int kOddOutcomes[4] = {0, 5, 42, -2};
// 600 and 99 are refused by validation.
constexpr int kHttpStatuses[32] = {
    0, 0, 0,   200, 302, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504, 599,
    0, 0, 400, 401, 500, 503, 429, 408, 0,   0,   0,   0,   100, 499, 600, 99};
constexpr int64_t kUnits[4] = {1, 60, 600, 7200};
constexpr int32_t kNanos[4] = {0, 1, 500'000'000, 999'999'999};
// How far the server clock moves at a flush: around the future tolerance
// (5 min), the stall window (30 min) and validation's 24 h bound.
constexpr int64_t kClockSteps[8] = {0, 1, 240, 360, 1740, 1860, 7200, 90000};

// Codes with fixed indexes first (fuzz/gen_seeds.py relies on them), then
// every code of the catalog in catalog order, without repeats.
const std::vector<std::string>& ErrorCodes() {
  static const auto* const kCodes = [] {
    auto* codes = new std::vector<std::string>{"", "code_already_used",
                                               "Invalid_Grant", "network_down"};
    for (const auto& rule : storage::DefaultCatalog()) {
      std::string code(rule.error_code);
      bool seen = false;
      for (const auto& c : *codes) seen = seen || c == code;
      if (!seen) codes->push_back(std::move(code));
    }
    return codes;
  }();
  return *kCodes;
}

std::string Pick(const char* prefix, int index) {
  return index == 0 ? std::string() : absl::StrCat(prefix, index - 1);
}

// A field that validation must refuse, chosen by `which`.
void Break(AuthEvent* e, int which) {
  switch (which % 6) {
    case 0:
      e->set_error_description("NULL");
      break;
    case 1:
      e->set_patient_id(" p-0");
      break;
    case 2:
      e->set_request_id(std::string(129, 'r'));
      break;
    case 3:
      e->mutable_occurred_at()->set_nanos(1'000'000'000);
      break;
    case 4:
      e->set_event_id("");
      break;
    default:
      e->set_emitter("tab\there");
      break;
  }
}

class RecipeDecoder {
 public:
  explicit RecipeDecoder(Reader in) : in_(in) {
    open_.now = absl::FromUnixSeconds(kNowUnixSeconds);
  }

  std::vector<Batch> Run() {
    while (!in_.done() && events_.size() < kMaxRecipeEvents) {
      uint8_t op = in_.Next();
      switch (op % 8) {
        case 5:
          if (!events_.empty()) {
            Add(events_[in_.Next() % events_.size()]);
          }
          break;
        case 6:
          if (!events_.empty()) {
            AuthEvent changed = events_[in_.Next() % events_.size()];
            changed.set_request_id(absl::StrCat(changed.request_id(), "-x"));
            Add(changed);
          }
          break;
        case 7:
          Flush(kClockSteps[in_.Next() % 8]);
          break;
        default:
          NewEvent();
          break;
      }
    }
    Flush(0);
    return std::move(out_);
  }

 private:
  void Add(const AuthEvent& event) {
    *open_.request.add_events() = event;
    events_.push_back(event);
  }

  void Flush(int64_t clock_step) {
    absl::Time next = open_.now + absl::Seconds(clock_step);
    if (open_.request.events_size() > 0) out_.push_back(std::move(open_));
    open_ = Batch();
    open_.now = next;
  }

  void NewEvent() {
    uint8_t step = in_.Next();
    uint8_t outcome = in_.Next();
    uint8_t ids = in_.Next();
    uint8_t code = in_.Next();
    uint8_t http = in_.Next();
    auto delta = static_cast<int8_t>(in_.Next());
    uint8_t flags = in_.Next();

    AuthEvent e;
    e.set_event_id(absl::StrCat("e-", next_id_++));
    int s = kSteps[step % 16];
    if (step % 16 == 15) s = kOddSteps[(step >> 4) % 4];
    e.set_step(static_cast<authtrail::v1::Step>(s));
    int o = kOutcomes[outcome % 16];
    if (outcome % 16 == 15) o = kOddOutcomes[(outcome >> 4) % 4];
    e.set_outcome(static_cast<authtrail::v1::Outcome>(o));
    e.set_connection_id(Pick("c-", ids & 3));
    e.set_session_id(Pick("s-", (ids >> 2) & 7));
    static constexpr const char* kPatients[4] = {"", "p-0", "p-1", "p-0"};
    e.set_patient_id(kPatients[(ids >> 5) & 3]);
    if (ids & 0x80) {
      auto* source = e.mutable_source();
      source->set_id(absl::StrCat("src-", ids & 1));
      source->set_name("Northwind Health – Patient Portal & Co");
      source->set_kind(authtrail::v1::SOURCE_KIND_EHR);
    }
    const auto& codes = ErrorCodes();
    e.set_error_code(codes[code % codes.size()]);
    e.set_http_status(kHttpStatuses[http % 32]);
    e.set_request_id(Pick("r-", (http >> 5) & 3));

    absl::Time base = (http & 0x80) ? last_time_ : open_.now;
    absl::Time when = base + absl::Seconds(delta * kUnits[flags & 3]);
    google::protobuf::Timestamp ts = storage::ToProtoTime(when);
    ts.set_nanos(kNanos[(flags >> 2) & 3]);
    *e.mutable_occurred_at() = ts;
    last_time_ = storage::FromProtoTime(ts);
    if (flags & 0x10) (*e.mutable_attributes())["scope"] = "patient/*.read";
    if (flags & 0x20) e.set_emitter("token-service");
    if (flags == 0xff) Break(&e, code);
    Add(e);
  }

  Reader in_;
  Batch open_;
  std::vector<Batch> out_;
  std::vector<AuthEvent> events_;
  int next_id_ = 0;
  absl::Time last_time_ = absl::FromUnixSeconds(kNowUnixSeconds);
};

}  // namespace

std::vector<Batch> Decode(const uint8_t* data, size_t size) {
  std::vector<Batch> out;
  if (size == 0) return out;
  if (data[0] % 2 == 0) {
    Batch batch;
    batch.now = absl::FromUnixSeconds(kNowUnixSeconds);
    if (batch.request.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
      out.push_back(std::move(batch));
    }
    return out;
  }
  return RecipeDecoder(Reader(data + 1, size - 1)).Run();
}

}  // namespace authtrail::fuzz
