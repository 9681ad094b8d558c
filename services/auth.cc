#include "services/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/duration.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/grpc_security_constants.h"
#include "nlohmann/json.hpp"
#include "services/log.h"
#include "services/metrics.h"
#include "services/status_util.h"

namespace authtrail::services {
namespace {

using nlohmann::json;

constexpr size_t kMaxIdentityBytes = 256;
constexpr size_t kMaxTokenBytes = 4096;
constexpr double kMaxEventsPerSecond = 1e7;

std::array<uint8_t, 32> Sha256(std::string_view data) {
  std::array<uint8_t, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest.data());
  return digest;
}

absl::Status Refuse(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("policy: ", where, " ", what));
}

// Every key of `object` must be one of `allowed`.
absl::Status OnlyKeys(const json& object, const std::string& where,
                      std::initializer_list<const char*> allowed) {
  if (!object.is_object()) return Refuse(where, "must be a JSON object");
  for (const auto& [key, value] : object.items()) {
    bool known = std::any_of(allowed.begin(), allowed.end(),
                             [&](const char* a) { return key == a; });
    if (!known) {
      std::string names;
      for (const char* a : allowed) {
        absl::StrAppend(&names, names.empty() ? "" : ", ", a);
      }
      return Refuse(where, absl::StrCat("has unknown key \"", key,
                                        "\"; known keys: ", names));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RateLimit> ParseRate(const json& value,
                                    const std::string& where) {
  if (absl::Status s = OnlyKeys(value, where, {"events_per_second", "burst"});
      !s.ok()) {
    return s;
  }
  RateLimit rate;
  for (auto [key, field] :
       {std::pair{"events_per_second", &rate.events_per_second},
        std::pair{"burst", &rate.burst}}) {
    auto it = value.find(key);
    if (it == value.end()) {
      return Refuse(where, absl::StrCat("needs \"", key, "\""));
    }
    if (!it->is_number() || it->get<double>() < 0 ||
        it->get<double>() > kMaxEventsPerSecond) {
      return Refuse(
          absl::StrCat(where, ".", key),
          absl::StrCat("must be a number from 0 to ", kMaxEventsPerSecond));
    }
    *field = it->get<double>();
  }
  if (!rate.unlimited() && rate.burst < 1) {
    return Refuse(absl::StrCat(where, ".burst"),
                  "must be at least 1 when events_per_second is set");
  }
  return rate;
}

absl::StatusOr<uint8_t> ParseRoles(const json& value,
                                   const std::string& where) {
  if (!value.is_array()) {
    return Refuse(where,
                  "must be an array of \"emitter\", \"reader\", "
                  "\"admin\"");
  }
  uint8_t roles = 0;
  for (const json& r : value) {
    std::string name = r.is_string() ? r.get<std::string>() : "";
    if (name == "emitter") {
      roles |= static_cast<uint8_t>(Role::kEmitter);
    } else if (name == "reader") {
      roles |= static_cast<uint8_t>(Role::kReader);
    } else if (name == "admin") {
      roles |= static_cast<uint8_t>(Role::kAdmin);
    } else {
      return Refuse(where, absl::StrCat("has unknown role ", r.dump(),
                                        "; roles are emitter, reader, admin"));
    }
  }
  return roles;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxIdentityBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kEmitter:
      return "emitter";
    case Role::kReader:
      return "reader";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::string Sha256Hex(std::string_view data) {
  std::array<uint8_t, 32> digest = Sha256(data);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

absl::StatusOr<Policy> Policy::Parse(std::string_view text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy: not valid JSON: ", e.what()));
  }
  if (absl::Status s = OnlyKeys(
          root, "top level", {"identities", "tokens", "default_append_rate"});
      !s.ok()) {
    return s;
  }
  Policy policy;
  auto identities = root.find("identities");
  if (identities == root.end() || !identities->is_object()) {
    return Refuse("\"identities\"",
                  "is required: an object of identity "
                  "name to {\"roles\": [...]}");
  }
  for (const auto& [name, entry] : identities->items()) {
    std::string where = absl::StrCat("identities[\"", name, "\"]");
    if (!ValidName(name)) {
      return Refuse(
          where, absl::StrCat("is not a valid name: 1 to ", kMaxIdentityBytes,
                              " printable ASCII characters"));
    }
    if (absl::Status s = OnlyKeys(entry, where, {"roles", "append_rate"});
        !s.ok()) {
      return s;
    }
    Identity identity;
    identity.name = name;
    auto roles = entry.find("roles");
    if (roles == entry.end()) return Refuse(where, "needs \"roles\"");
    absl::StatusOr<uint8_t> bits = ParseRoles(*roles, where + ".roles");
    if (!bits.ok()) return bits.status();
    identity.roles = *bits;
    if (auto rate = entry.find("append_rate"); rate != entry.end()) {
      auto parsed = ParseRate(*rate, where + ".append_rate");
      if (!parsed.ok()) return parsed.status();
      identity.append_rate = *parsed;
    }
    policy.identities_.emplace(name, std::move(identity));
  }
  if (auto tokens = root.find("tokens"); tokens != root.end()) {
    if (!tokens->is_array()) return Refuse("\"tokens\"", "must be an array");
    for (size_t i = 0; i < tokens->size(); ++i) {
      const json& entry = (*tokens)[i];
      std::string where = absl::StrCat("tokens[", i, "]");
      if (absl::Status s = OnlyKeys(entry, where, {"identity", "sha256"});
          !s.ok()) {
        return s;
      }
      auto identity = entry.find("identity");
      auto sha = entry.find("sha256");
      if (identity == entry.end() || !identity->is_string() ||
          policy.Find(identity->get<std::string>()) == nullptr) {
        return Refuse(where + ".identity",
                      "must name an identity listed under \"identities\"");
      }
      std::string hex = sha != entry.end() && sha->is_string()
                            ? absl::AsciiStrToLower(sha->get<std::string>())
                            : "";
      bool is_hex = hex.size() == 64 &&
                    std::all_of(hex.begin(), hex.end(), absl::ascii_isxdigit);
      if (!is_hex) {
        return Refuse(where + ".sha256",
                      "must be the 64 hex digits of the token's SHA-256 "
                      "(authtraild --hash_token)");
      }
      Token token;
      std::string bytes = absl::HexStringToBytes(hex);
      std::copy(bytes.begin(), bytes.end(), token.digest.begin());
      token.identity = identity->get<std::string>();
      policy.tokens_.push_back(std::move(token));
    }
  }
  if (auto rate = root.find("default_append_rate"); rate != root.end()) {
    auto parsed = ParseRate(*rate, "default_append_rate");
    if (!parsed.ok()) return parsed.status();
    policy.default_append_rate_ = *parsed;
  }
  return policy;
}

absl::StatusOr<Policy> Policy::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the policy"));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<Policy> policy = Parse(text.str());
  if (!policy.ok()) {
    return absl::Status(policy.status().code(),
                        absl::StrCat(path, ": ", policy.status().message()));
  }
  return policy;
}

const Policy::Identity* Policy::Find(std::string_view name) const {
  auto it = identities_.find(name);
  return it == identities_.end() ? nullptr : &it->second;
}

const Policy::Identity* Policy::FindByToken(std::string_view token) const {
  if (token.empty() || token.size() > kMaxTokenBytes) return nullptr;
  std::array<uint8_t, 32> digest = Sha256(token);
  const Token* match = nullptr;
  // No early exit: every entry is compared, each in constant time.
  for (const Token& t : tokens_) {
    bool equal = CRYPTO_memcmp(t.digest.data(), digest.data(), 32) == 0;
    if (equal) match = &t;
  }
  return match == nullptr ? nullptr : Find(match->identity);
}

std::optional<absl::Duration> RateLimiter::Acquire(const std::string& key,
                                                   const RateLimit& limit,
                                                   double events,
                                                   absl::Time now) {
  if (limit.unlimited()) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = buckets_.try_emplace(key, Bucket{limit.burst, now});
  Bucket& bucket = it->second;
  double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - bucket.updated));
  bucket.tokens =
      std::min(limit.burst, bucket.tokens + elapsed * limit.events_per_second);
  bucket.updated = now;
  double needed = std::min(events, limit.burst);
  if (bucket.tokens >= needed) {
    bucket.tokens -= events;
    return std::nullopt;
  }
  double wait = (needed - bucket.tokens) / limit.events_per_second;
  return absl::Milliseconds(std::ceil(wait * 1000));
}

void RateLimiter::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  buckets_.clear();
}

Authenticator::Authenticator(std::optional<Policy> policy,
                             RateLimit default_append_rate, Metrics* metrics)
    : default_append_rate_(default_append_rate), metrics_(metrics) {
  if (policy.has_value()) {
    policy_ = std::make_shared<const Policy>(std::move(*policy));
  }
}

void Authenticator::SetPolicy(Policy policy) {
  auto fresh = std::make_shared<const Policy>(std::move(policy));
  {
    std::lock_guard<std::mutex> lock(mu_);
    policy_ = std::move(fresh);
  }
  limiter_.Reset();
}

absl::Status Authenticator::Reload(const std::string& path) {
  absl::StatusOr<Policy> policy = Policy::Load(path);
  if (!policy.ok()) {
    LogEvent(spdlog::level::err, "policy_reload_failed",
             {{"path", path},
              {"error", std::string(policy.status().message())},
              {"kept", "the previous policy"}});
    return policy.status();
  }
  size_t identities = policy->identity_count();
  size_t tokens = policy->token_count();
  SetPolicy(std::move(*policy));
  LogEvent(spdlog::level::info, "policy_loaded",
           {{"path", path}, {"identities", identities}, {"tokens", tokens}});
  return absl::OkStatus();
}

bool Authenticator::has_policy() const { return policy() != nullptr; }

std::shared_ptr<const Policy> Authenticator::policy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return policy_;
}

Decision Authenticator::Decide(const Credentials& credentials, Role role,
                               size_t events, absl::Time now) {
  std::shared_ptr<const Policy> policy = this->policy();
  Decision d;
  const Policy::Identity* identity = nullptr;
  if (policy == nullptr) {
    d.identity = "anonymous";
  } else if (credentials.has_certificate) {
    // A verified certificate decides; a token beside it is not consulted.
    for (const std::string& name : credentials.certificate_names) {
      identity = policy->Find(name);
      if (identity != nullptr) break;
    }
    if (identity == nullptr) {
      d.identity = "unknown-certificate";
      d.code = grpc::StatusCode::PERMISSION_DENIED;
      d.message = absl::StrCat(
          "the client certificate names no identity of the policy; this "
          "call needs the ",
          RoleName(role), " role");
      return d;
    }
  } else if (credentials.bearer_token.has_value()) {
    identity = policy->FindByToken(*credentials.bearer_token);
    if (identity == nullptr) {
      d.identity = "none";
      d.code = grpc::StatusCode::UNAUTHENTICATED;
      d.message = "the bearer token is not valid";
      return d;
    }
  } else {
    d.identity = "none";
    d.code = grpc::StatusCode::UNAUTHENTICATED;
    d.message = credentials.malformed_authorization
                    ? "the authorization metadata must be \"Bearer <token>\""
                    : "credentials required: a client certificate or an "
                      "\"authorization: Bearer <token>\" metadata entry";
    return d;
  }
  if (identity != nullptr) {
    d.identity = identity->name;
    if ((identity->roles & static_cast<uint8_t>(role)) == 0) {
      d.code = grpc::StatusCode::PERMISSION_DENIED;
      d.message = absl::StrCat("this call needs the ", RoleName(role),
                               " role, which the caller does not have");
      return d;
    }
  }
  if (events == 0) return d;
  RateLimit rate = default_append_rate_;
  if (policy != nullptr && policy->default_append_rate().has_value()) {
    rate = *policy->default_append_rate();
  }
  if (identity != nullptr && identity->append_rate.has_value()) {
    rate = *identity->append_rate;
  }
  std::optional<absl::Duration> wait =
      limiter_.Acquire(d.identity, rate, static_cast<double>(events), now);
  if (wait.has_value()) {
    d.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
    d.retry_after = *wait;
    d.message = absl::StrCat(
        "append rate limit of ", rate.events_per_second,
        " events per second (burst ", rate.burst,
        ") reached for this caller; nothing was written; retry in ",
        absl::ToInt64Milliseconds(*wait), " ms");
  }
  return d;
}

Credentials CredentialsOf(const grpc::ServerContextBase& context) {
  Credentials c;
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr) {
    for (const char* property :
         {GRPC_X509_SAN_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME}) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
        c.certificate_names.emplace_back(v.data(), v.size());
      }
    }
    c.has_certificate =
        !c.certificate_names.empty() ||
        !auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME).empty();
  }
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (value.size() > kBearer.size() &&
        absl::StartsWithIgnoreCase(
            absl::string_view(value.data(), kBearer.size()),
            absl::string_view(kBearer.data(), kBearer.size()))) {
      c.bearer_token = std::string(value.substr(kBearer.size()));
    } else {
      c.malformed_authorization = true;
    }
  }
  return c;
}

grpc::Status Authenticator::Admit(grpc::CallbackServerContext* context,
                                  Role role, const char* rpc, size_t events) {
  Decision d = Decide(CredentialsOf(*context), role, events, absl::Now());
  if (d.code == grpc::StatusCode::OK) return grpc::Status::OK;
  std::string code = CodeName(d.code);
  metrics_->CountRefusal(rpc, code);
  // Names chosen by the server or the policy only: no token, no request
  // content, no certificate text from an unknown caller.
  LogEvent(d.code == grpc::StatusCode::PERMISSION_DENIED ? spdlog::level::warn
                                                         : spdlog::level::info,
           "call_refused",
           {{"rpc", rpc},
            {"code", code},
            {"identity", d.identity},
            {"role", RoleName(role)},
            {"peer", context->peer()}});
  if (!d.retry_after.has_value()) return grpc::Status(d.code, d.message);

  int64_t millis = absl::ToInt64Milliseconds(*d.retry_after);
  // Initial metadata as asked; a call failing without a response is sent
  // as trailers only, so the trailers carry it too.
  context->AddInitialMetadata("retry-after-ms", absl::StrCat(millis));
  context->AddTrailingMetadata("retry-after-ms", absl::StrCat(millis));
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(millis / 1000);
  retry.mutable_retry_delay()->set_nanos(
      static_cast<int32_t>((millis % 1000) * 1'000'000));
  google::rpc::Status rich;
  rich.set_code(d.code);
  rich.set_message(d.message);
  rich.add_details()->PackFrom(retry);
  return grpc::Status(d.code, d.message, rich.SerializeAsString());
}

}  // namespace authtrail::services
