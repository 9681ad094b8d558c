// Tests of the failure catalog: the RFC 6749 defaults, the order of
// evidence (decline, attribution, HTTP status, code) and the reconnect
// reasons of refresh failures.
#include "storage/failure_catalog.h"

#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace authtrail::storage {
namespace {

using v1::FailureCategory;

constexpr v1::Step kAllSteps[] = {
    v1::STEP_UNSPECIFIED,   v1::STEP_PORTAL_REDIRECT, v1::STEP_SIGN_IN,
    v1::STEP_CONSENT,       v1::STEP_OAUTH_CALLBACK,  v1::STEP_TOKEN_EXCHANGE,
    v1::STEP_TOKEN_REFRESH, v1::STEP_DISCONNECT,
};

FailureContext Failed(v1::Step step, int http_status = 0) {
  FailureContext context;
  context.step = step;
  context.outcome = v1::OUTCOME_FAILED;
  context.http_status = http_status;
  return context;
}

struct CodeCategory {
  std::string_view code;
  FailureCategory category;
};

// RFC 6749 section 4.1.2.1 (authorization endpoint) and section 5.2
// (token endpoint).
constexpr CodeCategory kRfcCodes[] = {
    {"access_denied", v1::FAILURE_CATEGORY_PATIENT_DECLINED},
    {"invalid_request", v1::FAILURE_CATEGORY_CONFIGURATION},
    {"unauthorized_client", v1::FAILURE_CATEGORY_CONFIGURATION},
    {"unsupported_response_type", v1::FAILURE_CATEGORY_CONFIGURATION},
    {"invalid_scope", v1::FAILURE_CATEGORY_CONFIGURATION},
    {"server_error", v1::FAILURE_CATEGORY_TRANSIENT},
    {"temporarily_unavailable", v1::FAILURE_CATEGORY_TRANSIENT},
    {"invalid_client", v1::FAILURE_CATEGORY_CONFIGURATION},
    {"invalid_grant", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
    {"unsupported_grant_type", v1::FAILURE_CATEGORY_CONFIGURATION},
};

TEST(FailureCatalogTest, RfcCodesMapToTheirCategoryAtEveryStep) {
  for (const CodeCategory& c : kRfcCodes) {
    for (v1::Step step : kAllSteps) {
      EXPECT_EQ(Classify(c.code, Failed(step)), c.category)
          << c.code << " at " << v1::Step_Name(step);
    }
  }
}

TEST(FailureCatalogTest, RfcCodesMapToTheirCategoryWithNonTransientHttp) {
  for (const CodeCategory& c : kRfcCodes) {
    for (int http : {400, 401, 403}) {
      EXPECT_EQ(Classify(c.code, Failed(v1::STEP_TOKEN_EXCHANGE, http)),
                c.category)
          << c.code << " with HTTP " << http;
    }
  }
}

TEST(FailureCatalogTest, InvalidGrantOnRefreshAndExchangeNeedsReauth) {
  EXPECT_EQ(Classify("invalid_grant", Failed(v1::STEP_TOKEN_REFRESH, 400)),
            v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
  EXPECT_EQ(Classify("invalid_grant", Failed(v1::STEP_TOKEN_EXCHANGE, 400)),
            v1::FAILURE_CATEGORY_REAUTH_REQUIRED);
}

TEST(FailureCatalogTest, DeniedOutcomeIsPatientDeclinedWhateverTheCode) {
  for (std::string_view code :
       {"access_denied", "server_error", "invalid_client", "invalid_grant",
        "no_such_code", ""}) {
    for (int http : {0, 400, 503}) {
      FailureContext context = Failed(v1::STEP_CONSENT, http);
      context.outcome = v1::OUTCOME_DENIED;
      EXPECT_EQ(Classify(code, context), v1::FAILURE_CATEGORY_PATIENT_DECLINED)
          << code << " with HTTP " << http;
    }
  }
}

TEST(FailureCatalogTest, UnattributedFailureIsUnattributed) {
  for (std::string_view code :
       {"state_mismatch", "invalid_scope", "invalid_grant", "no_such_code"}) {
    FailureContext context = Failed(v1::STEP_OAUTH_CALLBACK);
    context.attributed = false;
    EXPECT_EQ(Classify(code, context), v1::FAILURE_CATEGORY_UNATTRIBUTED)
        << code;
  }
}

TEST(FailureCatalogTest, UnattributedComesBeforeHttpStatus) {
  FailureContext context = Failed(v1::STEP_OAUTH_CALLBACK, 503);
  context.attributed = false;
  EXPECT_EQ(Classify("server_error", context),
            v1::FAILURE_CATEGORY_UNATTRIBUTED);
}

TEST(FailureCatalogTest, DeniedComesBeforeUnattributed) {
  FailureContext context = Failed(v1::STEP_CONSENT);
  context.outcome = v1::OUTCOME_DENIED;
  context.attributed = false;
  EXPECT_EQ(Classify("access_denied", context),
            v1::FAILURE_CATEGORY_PATIENT_DECLINED);
}

TEST(FailureCatalogTest, TransientHttpStatusWinsOverTheCode) {
  for (int http : {500, 502, 503, 504, 429, 408}) {
    for (std::string_view code :
         {"invalid_grant", "invalid_client", "invalid_scope", "token_revoked",
          "no_such_code", ""}) {
      for (v1::Step step : {v1::STEP_TOKEN_REFRESH, v1::STEP_TOKEN_EXCHANGE}) {
        EXPECT_EQ(Classify(code, Failed(step, http)),
                  v1::FAILURE_CATEGORY_TRANSIENT)
            << code << " with HTTP " << http << " at " << v1::Step_Name(step);
      }
    }
  }
}

TEST(FailureCatalogTest, NonTransientHttpStatusDefersToTheCode) {
  for (int http : {0, 200, 400, 401, 403, 404, 409, 499}) {
    EXPECT_EQ(Classify("invalid_grant", Failed(v1::STEP_TOKEN_REFRESH, http)),
              v1::FAILURE_CATEGORY_REAUTH_REQUIRED)
        << http;
    EXPECT_EQ(Classify("no_such_code", Failed(v1::STEP_TOKEN_REFRESH, http)),
              v1::FAILURE_CATEGORY_UNCLASSIFIED)
        << http;
  }
}

TEST(FailureCatalogTest, UnknownCodeIsUnclassified) {
  for (std::string_view code : {"no_such_code", "", "INVALID_GRANT",
                                "invalid_grant ", "access_denied_x"}) {
    for (v1::Step step : kAllSteps) {
      EXPECT_EQ(Classify(code, Failed(step)), v1::FAILURE_CATEGORY_UNCLASSIFIED)
          << "'" << code << "' at " << v1::Step_Name(step);
    }
  }
}

TEST(FailureCatalogTest, PlatformCodesHaveTheDocumentedCategories) {
  const CodeCategory platform[] = {
      {"login_required", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"consent_required", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"interaction_required", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"state_expired", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"state_mismatch", v1::FAILURE_CATEGORY_CONFIGURATION},
      {"invalid_state", v1::FAILURE_CATEGORY_CONFIGURATION},
      {"login_failed", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"token_revoked", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"access_revoked", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"refresh_token_expired", v1::FAILURE_CATEGORY_REAUTH_REQUIRED},
      {"timeout", v1::FAILURE_CATEGORY_TRANSIENT},
      {"upstream_timeout", v1::FAILURE_CATEGORY_TRANSIENT},
      {"connection_error", v1::FAILURE_CATEGORY_TRANSIENT},
      {"redirect_uri_mismatch", v1::FAILURE_CATEGORY_CONFIGURATION},
  };
  for (const CodeCategory& c : platform) {
    EXPECT_EQ(Classify(c.code, Failed(v1::STEP_OAUTH_CALLBACK)), c.category)
        << c.code;
  }
}

TEST(FailureCatalogTest, RulesAreMostSpecificFirst) {
  const auto& rules = DefaultCatalog();
  ASSERT_FALSE(rules.empty());
  for (size_t i = 0; i < rules.size(); ++i) {
    EXPECT_FALSE(rules[i].error_code.empty()) << i;
    EXPECT_FALSE(rules[i].meaning.empty()) << rules[i].error_code;
    EXPECT_NE(rules[i].category, v1::FAILURE_CATEGORY_UNSPECIFIED)
        << rules[i].error_code;
    if (rules[i].step == v1::STEP_UNSPECIFIED) continue;
    // No step-less rule for the same code may shadow a step rule.
    for (size_t j = 0; j < i; ++j) {
      EXPECT_FALSE(rules[j].error_code == rules[i].error_code &&
                   rules[j].step == v1::STEP_UNSPECIFIED)
          << rules[i].error_code << " rule " << i << " shadowed by " << j;
    }
  }
}

TEST(FailureCatalogTest, EveryRfcCodeIsInTheCatalog) {
  for (const CodeCategory& c : kRfcCodes) {
    bool found = false;
    for (const CatalogRule& rule : DefaultCatalog()) {
      found = found || rule.error_code == c.code;
    }
    EXPECT_TRUE(found) << c.code;
    EXPECT_FALSE(DescribeErrorCode(c.code).empty()) << c.code;
  }
}

TEST(FailureCatalogTest, DescribeErrorCodeIsEmptyForUnknownCodes) {
  EXPECT_TRUE(DescribeErrorCode("no_such_code").empty());
  EXPECT_TRUE(DescribeErrorCode("").empty());
}

TEST(FailureCatalogTest, ReconnectReasonTellsRevokedFromExpired) {
  EXPECT_EQ(ReconnectReasonFor("token_revoked"), v1::RECONNECT_REASON_REVOKED);
  EXPECT_EQ(ReconnectReasonFor("access_revoked"), v1::RECONNECT_REASON_REVOKED);
  EXPECT_EQ(ReconnectReasonFor("refresh_token_expired"),
            v1::RECONNECT_REASON_EXPIRED);
}

TEST(FailureCatalogTest, ReconnectReasonDoesNotGuessForInvalidGrant) {
  EXPECT_EQ(ReconnectReasonFor("invalid_grant"),
            v1::RECONNECT_REASON_EXPIRED_OR_REVOKED);
  EXPECT_EQ(ReconnectReasonFor("no_such_code"),
            v1::RECONNECT_REASON_EXPIRED_OR_REVOKED);
  EXPECT_EQ(ReconnectReasonFor(""), v1::RECONNECT_REASON_EXPIRED_OR_REVOKED);
}

}  // namespace
}  // namespace authtrail::storage
