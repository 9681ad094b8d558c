// The failure catalog: how a failure's error code, step, outcome and HTTP
// status map to a FailureCategory. The mapping is a table of rules, not
// code spread over the reducers, so that support can read it in one place
// (docs/FAILURES.md lists it) and a release can change it by changing data.
#ifndef AUTHTRAIL_STORAGE_FAILURE_CATALOG_H_
#define AUTHTRAIL_STORAGE_FAILURE_CATALOG_H_

#include <string_view>
#include <vector>

#include "authtrail/v1/event.pb.h"
#include "authtrail/v1/history.pb.h"

namespace authtrail::storage {

// What is known about a failure besides its code.
struct FailureContext {
  v1::Step step = v1::STEP_UNSPECIFIED;
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  int http_status = 0;
  // False when the event carries no patient or no connection id.
  bool attributed = true;
};

// One rule of the catalog. A rule matches when its code matches (empty: any
// code) and its step matches (STEP_UNSPECIFIED: any step).
struct CatalogRule {
  std::string_view error_code;
  v1::Step step;
  v1::FailureCategory category;
  // What the code means, for docs and the CLI.
  std::string_view meaning;
};

// The rules, most specific first: a rule with a step comes before the same
// code without one.
const std::vector<CatalogRule>& DefaultCatalog();

// Decides the category of a failure. The order of evidence:
//  1. outcome DENIED: PATIENT_DECLINED;
//  2. no patient or connection: UNATTRIBUTED;
//  3. HTTP 5xx, 408 or 429 from upstream: TRANSIENT, whatever the code;
//  4. the first catalog rule matching code and step;
//  5. otherwise UNCLASSIFIED.
v1::FailureCategory Classify(std::string_view error_code,
                             const FailureContext& context);

// What the catalog says a code means in general (the rule that names no
// step, where there is one); empty when it does not know the code.
std::string_view DescribeErrorCode(std::string_view error_code);

// Codes that, on a refresh, tell how the grant was lost.
v1::ReconnectReason ReconnectReasonFor(std::string_view error_code);

}  // namespace authtrail::storage

#endif  // AUTHTRAIL_STORAGE_FAILURE_CATALOG_H_
