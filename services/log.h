// Structured logging: every line is one JSON object with a timestamp, a
// level, an event name and the event's fields. Lifecycle events are logged
// at info; per-call detail only at debug. Patient ids, session ids and
// error descriptions are never logged above debug.
#ifndef AUTHTRAIL_SERVICES_LOG_H_
#define AUTHTRAIL_SERVICES_LOG_H_

#include <cstdint>
#include <string_view>

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace authtrail::services {

// Sets up the process logger on stderr. `level` is one of trace, debug,
// info, warn, error, critical, off; false when it is none of them.
bool InitLogging(std::string_view level);

// Changes the level at run time. False (and nothing changes) for a name
// that is not a level; `previous` gets the level before.
bool SetLogLevel(std::string_view level, std::string* previous);

// Logs `event` with `fields` (a JSON object) at `level`.
void LogEvent(spdlog::level::level_enum level, std::string_view event,
              nlohmann::json fields = nlohmann::json::object());

// TLS handshakes this process refused (a client certificate from another
// CA, expired or missing where required, plaintext to the TLS port), as
// gRPC reported them since InitLogging. They end before any call exists,
// so no per-RPC refusal counter sees them.
uint64_t TlsHandshakeFailures();

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_LOG_H_
