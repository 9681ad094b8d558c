#include "services/log.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpc/support/log.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace authtrail::services {
namespace {

std::atomic<uint64_t> tls_handshake_failures{0};

// gRPC's own messages (transport and handshake errors) as JSON lines of
// event "grpc", so that the log stays one object per line. Its errors are
// mostly about peers (a refused TLS handshake), so they come out as warn.
void GrpcToLog(gpr_log_func_args* args) {
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = spdlog::level::info;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) level = spdlog::level::warn;
  std::string_view file = args->file != nullptr ? args->file : "";
  if (size_t slash = file.rfind('/'); slash != std::string_view::npos) {
    file.remove_prefix(slash + 1);
  }
  std::string_view message = args->message != nullptr ? args->message : "";
  // TODO(handshake-metric): gRPC 1.51 has no hook for a refused TLS
  // handshake, so its error line is what is counted; a gRPC that words it
  // differently leaves the counter at zero.
  if (args->severity == GPR_LOG_SEVERITY_ERROR &&
      file == "ssl_transport_security.cc" &&
      message.rfind("Handshake failed", 0) == 0) {
    tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
  }
  LogEvent(level, "grpc",
           {{"source", absl::StrCat(std::string(file), ":", args->line)},
            {"message", std::string(message)}});
}

}  // namespace

bool InitLogging(std::string_view level) {
  spdlog::level::level_enum parsed =
      spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  auto logger = spdlog::stderr_logger_mt("authtrail");
  // The message is the rest of the JSON object; see LogEvent.
  logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})",
                      spdlog::pattern_time_type::utc);
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  gpr_set_log_function(GrpcToLog);
  return true;
}

bool SetLogLevel(std::string_view level, std::string* previous) {
  spdlog::level::level_enum parsed =
      spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  auto name = spdlog::level::to_string_view(spdlog::get_level());
  previous->assign(name.data(), name.size());
  spdlog::set_level(parsed);
  LogEvent(spdlog::level::info, "log_level_changed",
           {{"from", *previous}, {"to", std::string(level)}});
  return true;
}

void LogEvent(spdlog::level::level_enum level, std::string_view event,
              nlohmann::json fields) {
  if (!spdlog::should_log(level)) return;
  fields["event"] = event;
  std::string body =
      fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // Drop the object's braces: the pattern supplies them.
  spdlog::log(level, "{}", std::string_view(body).substr(1, body.size() - 2));
}

uint64_t TlsHandshakeFailures() {
  return tls_handshake_failures.load(std::memory_order_relaxed);
}

}  // namespace authtrail::services
