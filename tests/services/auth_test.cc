#include "services/auth.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/metrics.h"
#include "tests/testing/test_server.h"

namespace authtrail::services {
namespace {

using ::testing::HasSubstr;

// Tokens whose SHA-256 digests the policy below holds.
const std::string kReaderToken = "reader-token";
const std::string kAdminToken = "admin-token";

std::string PolicyJson() {
  return R"({
    "identities": {
      "spiffe://authtrail/emitter": {
        "roles": ["emitter"],
        "append_rate": {"events_per_second": 10, "burst": 20}
      },
      "dashboard": {"roles": ["reader"]},
      "ops": {"roles": ["reader", "admin"]}
    },
    "tokens": [
      {"identity": "dashboard", "sha256": ")" +
         Sha256Hex(kReaderToken) + R"("},
      {"identity": "ops", "sha256": ")" +
         Sha256Hex(kAdminToken) + R"("}
    ],
    "default_append_rate": {"events_per_second": 100, "burst": 100}
  })";
}

Policy MustParse(const std::string& json) {
  absl::StatusOr<Policy> policy = Policy::Parse(json);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return std::move(policy).value();
}

TEST(Sha256HexTest, MatchesTheKnownDigest) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PolicyTest, ParsesIdentitiesTokensAndRates) {
  Policy policy = MustParse(PolicyJson());
  EXPECT_EQ(policy.identity_count(), 3u);
  EXPECT_EQ(policy.token_count(), 2u);
  const Policy::Identity* emitter = policy.Find("spiffe://authtrail/emitter");
  ASSERT_NE(emitter, nullptr);
  EXPECT_EQ(emitter->roles, static_cast<uint8_t>(Role::kEmitter));
  ASSERT_TRUE(emitter->append_rate.has_value());
  EXPECT_EQ(emitter->append_rate->burst, 20);
  EXPECT_EQ(policy.Find("nobody"), nullptr);
  ASSERT_NE(policy.FindByToken(kAdminToken), nullptr);
  EXPECT_EQ(policy.FindByToken(kAdminToken)->name, "ops");
  EXPECT_EQ(policy.FindByToken(kReaderToken)->name, "dashboard");
  EXPECT_EQ(policy.FindByToken("reader-tokeN"), nullptr);
  EXPECT_EQ(policy.FindByToken(""), nullptr);
}

TEST(PolicyTest, RefusesUnknownKeysNamingThem) {
  auto top = Policy::Parse(R"({"identities": {}, "token": []})");
  ASSERT_FALSE(top.ok());
  EXPECT_THAT(top.status().message(), HasSubstr("unknown key \"token\""));

  auto inner = Policy::Parse(
      R"({"identities": {"a": {"roles": ["reader"], "role": "admin"}}})");
  ASSERT_FALSE(inner.ok());
  EXPECT_THAT(inner.status().message(), HasSubstr("identities[\"a\"]"));
  EXPECT_THAT(inner.status().message(), HasSubstr("\"role\""));
}

TEST(PolicyTest, RefusesBadEntriesNamingTheField) {
  struct Case {
    const char* json;
    const char* names;
  };
  const Case cases[] = {
      {"not json", "not valid JSON"},
      {R"({})", "\"identities\" is required"},
      {R"({"identities": {"a": {"roles": ["root"]}}})", "unknown role"},
      {R"({"identities": {"a": {}}})", "needs \"roles\""},
      {R"({"identities": {"a": {"roles": []}},
           "tokens": [{"identity": "b", "sha256": "00"}]})",
       "tokens[0].identity"},
      {R"({"identities": {"a": {"roles": []}},
           "tokens": [{"identity": "a", "sha256": "abc"}]})",
       "tokens[0].sha256"},
      {R"({"identities": {"a": {"roles": [],
           "append_rate": {"events_per_second": -1, "burst": 1}}}})",
       "append_rate.events_per_second"},
      {R"({"identities": {"a": {"roles": [],
           "append_rate": {"events_per_second": 5, "burst": 0}}}})",
       "append_rate.burst"},
      {R"({"identities": {"a b": {"roles": []}}})", "not a valid name"},
  };
  for (const Case& c : cases) {
    auto policy = Policy::Parse(c.json);
    ASSERT_FALSE(policy.ok()) << c.json;
    EXPECT_THAT(policy.status().message(), HasSubstr(c.names)) << c.json;
  }
}

TEST(PolicyTest, LoadNamesTheFile) {
  auto policy = Policy::Load("/nonexistent/policy.json");
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(policy.status().message(), HasSubstr("/nonexistent/policy.json"));
}

TEST(RateLimiterTest, AdmitsTheBurstThenRefillsAtTheRate) {
  RateLimiter limiter;
  RateLimit limit{.events_per_second = 10, .burst = 20};
  absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(limiter.Acquire("a", limit, 15, t0).has_value());
  std::optional<absl::Duration> wait = limiter.Acquire("a", limit, 10, t0);
  ASSERT_TRUE(wait.has_value());
  // 5 left, 10 needed, 10 per second: half a second.
  EXPECT_EQ(*wait, absl::Milliseconds(500));
  EXPECT_FALSE(limiter.Acquire("a", limit, 10, t0 + *wait).has_value());
  // Another key has its own bucket.
  EXPECT_FALSE(limiter.Acquire("b", limit, 20, t0).has_value());
}

TEST(RateLimiterTest, ABatchAboveTheBurstPassesWhenFullAndLeavesDebt) {
  RateLimiter limiter;
  RateLimit limit{.events_per_second = 10, .burst = 20};
  absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(limiter.Acquire("a", limit, 50, t0).has_value());
  // The bucket is at -30: 3 s back to 0, then 1 s more for 10 events.
  std::optional<absl::Duration> wait = limiter.Acquire("a", limit, 10, t0);
  ASSERT_TRUE(wait.has_value());
  EXPECT_EQ(*wait, absl::Seconds(4));
}

TEST(RateLimiterTest, ZeroRateIsUnlimited) {
  RateLimiter limiter;
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(
        limiter.Acquire("a", RateLimit{}, 1e6, absl::UnixEpoch()).has_value());
  }
}

Credentials Cert(std::vector<std::string> names) {
  Credentials c;
  c.certificate_names = std::move(names);
  c.has_certificate = true;
  return c;
}

Credentials Token(std::string token) {
  Credentials c;
  c.bearer_token = std::move(token);
  return c;
}

Credentials Malformed() {
  Credentials c;
  c.malformed_authorization = true;
  return c;
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  Metrics metrics_;
  Authenticator auth_{MustParse(PolicyJson()), RateLimit{}, &metrics_};
  absl::Time now_ = absl::FromUnixSeconds(5000);
};

TEST_F(AuthenticatorTest, CertificateNamesMapToRoles) {
  Decision d = auth_.Decide(
      Cert({"localhost", "spiffe://authtrail/emitter", "emitter-cn"}),
      Role::kEmitter, 0, now_);
  EXPECT_EQ(d.code, grpc::StatusCode::OK) << d.message;
  EXPECT_EQ(d.identity, "spiffe://authtrail/emitter");

  Decision no_role = auth_.Decide(Cert({"spiffe://authtrail/emitter"}),
                                  Role::kReader, 0, now_);
  EXPECT_EQ(no_role.code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(no_role.message, HasSubstr("reader role"));

  // The common name counts when no alternative name matches.
  EXPECT_EQ(
      auth_.Decide(Cert({"other.example", "ops"}), Role::kAdmin, 0, now_).code,
      grpc::StatusCode::OK);
}

TEST_F(AuthenticatorTest, UnknownCertificateIsPermissionDenied) {
  Decision d = auth_.Decide(Cert({"stranger"}), Role::kReader, 0, now_);
  EXPECT_EQ(d.code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(d.identity, "unknown-certificate");
  EXPECT_THAT(d.message, ::testing::Not(HasSubstr("stranger")));
}

TEST_F(AuthenticatorTest, TokensAuthenticateAndWrongOnesDoNot) {
  EXPECT_EQ(auth_.Decide(Token(kReaderToken), Role::kReader, 0, now_).code,
            grpc::StatusCode::OK);
  Decision admin_needed =
      auth_.Decide(Token(kReaderToken), Role::kAdmin, 0, now_);
  EXPECT_EQ(admin_needed.code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(admin_needed.message, HasSubstr("admin role"));
  Decision wrong = auth_.Decide(Token("guess"), Role::kReader, 0, now_);
  EXPECT_EQ(wrong.code, grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.message, ::testing::Not(HasSubstr("guess")));
  EXPECT_EQ(auth_.Decide(Credentials{}, Role::kReader, 0, now_).code,
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(auth_.Decide(Malformed(), Role::kReader, 0, now_).code,
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthenticatorTest, RateLimitUsesTheIdentityLimitThenThePolicyDefault) {
  Credentials emitter = Cert({"spiffe://authtrail/emitter"});
  EXPECT_EQ(auth_.Decide(emitter, Role::kEmitter, 20, now_).code,
            grpc::StatusCode::OK);
  Decision limited = auth_.Decide(emitter, Role::kEmitter, 1, now_);
  EXPECT_EQ(limited.code, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(limited.message, HasSubstr("10 events per second"));
  EXPECT_THAT(limited.message, HasSubstr("burst 20"));
  ASSERT_TRUE(limited.retry_after.has_value());
  EXPECT_EQ(*limited.retry_after, absl::Milliseconds(100));

  // "ops" has no limit of its own: the policy default of 100.
  Authenticator open(MustParse(
                         R"({"identities": {"ops": {"roles": ["emitter"]}},
                   "default_append_rate":
                     {"events_per_second": 100, "burst": 100}})"),
                     RateLimit{}, &metrics_);
  EXPECT_EQ(open.Decide(Cert({"ops"}), Role::kEmitter, 100, now_).code,
            grpc::StatusCode::OK);
  EXPECT_EQ(open.Decide(Cert({"ops"}), Role::kEmitter, 1, now_).code,
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(AuthenticatorNoPolicyTest, EveryCallerHasEveryRole) {
  Metrics metrics;
  Authenticator auth(std::nullopt, RateLimit{}, &metrics);
  EXPECT_FALSE(auth.has_policy());
  for (Role role : {Role::kEmitter, Role::kReader, Role::kAdmin}) {
    Decision d = auth.Decide(Credentials{}, role, 10, absl::Now());
    EXPECT_EQ(d.code, grpc::StatusCode::OK);
    EXPECT_EQ(d.identity, "anonymous");
  }
}

TEST(AuthenticatorReloadTest, ABadFileKeepsTheOldPolicy) {
  testing::TempDir temp;
  std::string path = temp.path() + "/policy.json";
  std::ofstream(path) << PolicyJson();
  Metrics metrics;
  Authenticator auth(std::nullopt, RateLimit{}, &metrics);
  ASSERT_TRUE(auth.Reload(path).ok());
  Credentials reader = Token(kReaderToken);
  EXPECT_EQ(auth.Decide(reader, Role::kReader, 0, absl::Now()).code,
            grpc::StatusCode::OK);

  std::ofstream(path) << R"({"identities": {}, "typo": 1})";
  absl::Status bad = auth.Reload(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("typo"));
  EXPECT_EQ(auth.Decide(reader, Role::kReader, 0, absl::Now()).code,
            grpc::StatusCode::OK);

  std::ofstream(path) << R"({"identities": {"dashboard": {"roles": []}}})";
  ASSERT_TRUE(auth.Reload(path).ok());
  EXPECT_EQ(auth.Decide(reader, Role::kReader, 0, absl::Now()).code,
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace authtrail::services
