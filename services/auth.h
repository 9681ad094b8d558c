// Who may call what: caller identities (from a verified client certificate
// or a bearer token), their roles, and a per-identity append rate limit.
//
// The policy is a JSON file:
//
//   {
//     "identities": {
//       "spiffe://authtrail/portal-redirector": {
//         "roles": ["emitter"],
//         "append_rate": {"events_per_second": 500, "burst": 2000}
//       },
//       "dashboard.internal": {"roles": ["reader"]},
//       "ops-oncall": {"roles": ["reader", "admin"]}
//     },
//     "tokens": [
//       {"identity": "dashboard.internal", "sha256": "<64 hex digits>"}
//     ],
//     "default_append_rate": {"events_per_second": 1000, "burst": 5000}
//   }
//
// An identity is matched against a client certificate's subject
// alternative names (URI or DNS), then its common name. A token entry names
// an identity and holds the SHA-256 of the token, never the token itself.
// Unknown keys anywhere are refused, so a misspelt key is not silently a
// wider policy.
#ifndef AUTHTRAIL_SERVICES_AUTH_H_
#define AUTHTRAIL_SERVICES_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace authtrail::services {

class Metrics;

enum class Role : uint8_t { kEmitter = 1, kReader = 2, kAdmin = 4 };

// "emitter", "reader", "admin".
const char* RoleName(Role role);

// A token bucket: `events_per_second` refill, up to `burst` saved up.
// events_per_second == 0 means no limit.
struct RateLimit {
  double events_per_second = 0;
  double burst = 0;
  bool unlimited() const { return events_per_second <= 0; }
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

class Policy {
 public:
  struct Identity {
    std::string name;
    uint8_t roles = 0;                     // Role bits
    std::optional<RateLimit> append_rate;  // else the default
  };

  // Parses the JSON text above. Errors name the key or entry at fault.
  static absl::StatusOr<Policy> Parse(std::string_view json);
  // Reads and parses `path`; errors start with the path.
  static absl::StatusOr<Policy> Load(const std::string& path);

  // The identity called `name`, or nullptr.
  const Identity* Find(std::string_view name) const;
  // The identity whose token hashes to the same digest as `token`, or
  // nullptr. Compares against every entry in constant time each, so the
  // time taken does not tell which entry (or how much of one) matched.
  const Identity* FindByToken(std::string_view token) const;
  const std::optional<RateLimit>& default_append_rate() const {
    return default_append_rate_;
  }
  size_t identity_count() const { return identities_.size(); }
  size_t token_count() const { return tokens_.size(); }

 private:
  struct Token {
    std::array<uint8_t, 32> digest;
    std::string identity;
  };
  std::map<std::string, Identity, std::less<>> identities_;
  std::vector<Token> tokens_;
  std::optional<RateLimit> default_append_rate_;
};

// Token buckets keyed by identity name. Thread-safe.
// TODO(rate-limit): buckets live in this process only: a restart refills
// them, and once the log is partitioned across nodes each node limits on
// its own, so an identity's total rate is the limit times the nodes.
class RateLimiter {
 public:
  // Takes `events` from `key`'s bucket. A batch larger than the burst is
  // let through when the bucket is full, and the bucket goes into debt, so
  // the long-run rate holds and no batch size is refused forever.
  // Returns nullopt when admitted, else how long until it would be.
  std::optional<absl::Duration> Acquire(const std::string& key,
                                        const RateLimit& limit, double events,
                                        absl::Time now);
  // Forgets every bucket (after a policy change).
  void Reset();

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
  };
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;  // guarded by mu_
};

// What a caller presented, taken from its call.
struct Credentials {
  // Verified client certificate names: subject alternative names (in
  // certificate order), then the common name. Empty without a certificate.
  std::vector<std::string> certificate_names;
  bool has_certificate = false;
  // The value after "Bearer " in the `authorization` metadata.
  std::optional<std::string> bearer_token;
  bool malformed_authorization = false;  // present but not "Bearer <token>"
};

// The outcome of one check.
struct Decision {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // for the caller: names a role or limit, no data
  // For logs and metrics: a policy identity name, or "anonymous" (no
  // policy), "unknown-certificate", "none".
  std::string identity;
  std::optional<absl::Duration> retry_after;
};

// Decides, for each call, whether its caller may do it. Holds the current
// policy (replaceable while serving) and the append rate limiter.
// Thread-safe.
class Authenticator {
 public:
  // `policy` nullopt: every caller has every role ("anonymous").
  // `default_append_rate` applies to identities without their own limit
  // (the policy's default_append_rate wins over it).
  Authenticator(std::optional<Policy> policy, RateLimit default_append_rate,
                Metrics* metrics);

  // Replaces the policy. Rate buckets start afresh.
  void SetPolicy(Policy policy);
  // Loads `path` and, if it parses, makes it the policy; otherwise keeps
  // the current one and returns the error.
  absl::Status Reload(const std::string& path);
  bool has_policy() const;

  // Pure decision for a caller needing `role`; `events` > 0 also takes
  // that many from the caller's append rate bucket.
  Decision Decide(const Credentials& credentials, Role role, size_t events,
                  absl::Time now);

  // The hook at the top of every handler: reads the call's credentials,
  // decides, and on refusal counts it under `rpc`, logs it without secrets
  // and returns the status to finish the call with (with a RetryInfo detail
  // and `retry-after-ms` initial metadata for the rate limit).
  grpc::Status Admit(grpc::CallbackServerContext* context, Role role,
                     const char* rpc, size_t events = 0);

 private:
  std::shared_ptr<const Policy> policy() const;

  mutable std::mutex mu_;
  std::shared_ptr<const Policy> policy_;  // guarded by mu_; null: open
  RateLimit default_append_rate_;
  RateLimiter limiter_;
  Metrics* metrics_;
};

// Reads what the caller of `context` presented.
Credentials CredentialsOf(const grpc::ServerContextBase& context);

// What a service hands to ServeUnary: the role its RPCs need.
struct CallGuard {
  Authenticator* auth;
  Metrics* metrics;
  Role role;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_AUTH_H_
