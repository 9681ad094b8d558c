#include "storage/failure_catalog.h"

namespace authtrail::storage {
namespace {

using v1::FailureCategory;
using v1::Step;

constexpr FailureCategory kDeclined = v1::FAILURE_CATEGORY_PATIENT_DECLINED;
constexpr FailureCategory kReauth = v1::FAILURE_CATEGORY_REAUTH_REQUIRED;
constexpr FailureCategory kTransient = v1::FAILURE_CATEGORY_TRANSIENT;
constexpr FailureCategory kConfig = v1::FAILURE_CATEGORY_CONFIGURATION;
constexpr FailureCategory kUnattributed = v1::FAILURE_CATEGORY_UNATTRIBUTED;
constexpr Step kAny = v1::STEP_UNSPECIFIED;

bool IsTransientHttp(int status) {
  return status >= 500 || status == 408 || status == 429;
}

}  // namespace

const std::vector<CatalogRule>& DefaultCatalog() {
  static const auto* const kRules = new std::vector<CatalogRule>{
      // Authorization endpoint errors (RFC 6749 section 4.1.2.1).
      {"access_denied", kAny, kDeclined,
       "the patient or the source refused the authorization request"},
      {"invalid_request", kAny, kConfig,
       "the request was malformed: missing or repeated parameter"},
      {"unauthorized_client", kAny, kConfig,
       "the client may not use this grant type at this source"},
      {"unsupported_response_type", kAny, kConfig,
       "the source does not issue codes with this response type"},
      {"invalid_scope", kAny, kConfig,
       "a requested scope is unknown, malformed or not allowed"},
      {"server_error", kAny, kTransient,
       "the source's authorization server failed"},
      {"temporarily_unavailable", kAny, kTransient,
       "the source is overloaded or in maintenance"},
      // Token endpoint errors (RFC 6749 section 5.2).
      {"invalid_client", kAny, kConfig,
       "client authentication failed: wrong id, secret or key"},
      {"invalid_grant", v1::STEP_TOKEN_REFRESH, kReauth,
       "the refresh token expired or was revoked"},
      {"invalid_grant", v1::STEP_TOKEN_EXCHANGE, kReauth,
       "the code is expired, used, or issued for another redirect URI"},
      {"invalid_grant", kAny, kReauth,
       "the grant is invalid, expired or revoked"},
      {"unsupported_grant_type", kAny, kConfig,
       "the source does not support this grant type"},
      // OpenID Connect and SMART codes seen at the authorize endpoint.
      {"login_required", kAny, kReauth, "the patient must sign in again"},
      {"consent_required", kAny, kReauth, "the patient must consent again"},
      {"interaction_required", kAny, kReauth,
       "the source needs the patient to interact"},
      // Platform-side codes sent by the emitters.
      {"state_expired", kAny, kReauth,
       "the callback came after the attempt's state expired"},
      {"state_mismatch", kAny, kConfig,
       "the callback's state matched no session"},
      {"invalid_state", kAny, kConfig, "the callback's state was malformed"},
      {"login_failed", kAny, kReauth,
       "the patient could not sign in at the portal"},
      {"token_revoked", kAny, kReauth, "the source revoked the grant"},
      {"access_revoked", kAny, kReauth, "the patient revoked access"},
      {"refresh_token_expired", kAny, kReauth,
       "the refresh token reached its end of life"},
      {"timeout", kAny, kTransient, "the source did not answer in time"},
      {"upstream_timeout", kAny, kTransient,
       "the source did not answer in time"},
      {"connection_error", kAny, kTransient, "the source was unreachable"},
      {"redirect_uri_mismatch", kAny, kConfig,
       "the redirect URI is not registered at the source"},
      {"smart_configuration_unavailable", kAny, kConfig,
       "the source's SMART discovery document could not be read"},
  };
  return *kRules;
}

FailureCategory Classify(std::string_view error_code,
                         const FailureContext& context) {
  if (context.outcome == v1::OUTCOME_DENIED) return kDeclined;
  if (!context.attributed) return kUnattributed;
  if (IsTransientHttp(context.http_status)) return kTransient;
  for (const CatalogRule& rule : DefaultCatalog()) {
    if (rule.error_code != error_code) continue;
    if (rule.step != kAny && rule.step != context.step) continue;
    return rule.category;
  }
  return v1::FAILURE_CATEGORY_UNCLASSIFIED;
}

std::string_view DescribeErrorCode(std::string_view error_code) {
  std::string_view found;
  for (const CatalogRule& rule : DefaultCatalog()) {
    if (rule.error_code != error_code) continue;
    if (rule.step == kAny) return rule.meaning;
    if (found.empty()) found = rule.meaning;
  }
  return found;
}

v1::ReconnectReason ReconnectReasonFor(std::string_view error_code) {
  if (error_code == "token_revoked" || error_code == "access_revoked") {
    return v1::RECONNECT_REASON_REVOKED;
  }
  if (error_code == "refresh_token_expired") {
    return v1::RECONNECT_REASON_EXPIRED;
  }
  return v1::RECONNECT_REASON_EXPIRED_OR_REVOKED;
}

}  // namespace authtrail::storage
