#include "services/metrics.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "services/log.h"

namespace authtrail::services {
namespace {

const std::vector<double>& LatencyBounds() {
  static const auto* const kBounds = new std::vector<double>{
      50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
      50e-3, 100e-3, 250e-3, 500e-3, 1,    2.5,    5,    10};
  return *kBounds;
}

std::vector<double> PowersOfTwo(int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(std::ldexp(1.0, i));
  return out;
}

// The shortest decimal text that reads back as exactly `value`, so that a
// bucket bound of 0.00005 prints as "5e-05", not as its binary neighbour.
std::string Number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char text[32];
  std::to_chars_result written = std::to_chars(text, text + sizeof text, value);
  return std::string(text, written.ptr);
}

void Header(const std::string& name, const std::string& type,
            const std::string& help, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type,
                  "\n");
}

std::string Braced(const std::string& labels) {
  return labels.empty() ? "" : absl::StrCat("{", labels, "}");
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value,
                                     std::memory_order_relaxed)) {
  }
}

void Histogram::Render(const std::string& name, const std::string& labels,
                       std::string* out) const {
  std::string prefix = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    double le = i < bounds_.size() ? bounds_[i] : INFINITY;
    absl::StrAppend(out, name, "_bucket{", prefix, "le=\"", Number(le), "\"} ",
                    cumulative, "\n");
  }
  absl::StrAppend(out, name, "_sum", Braced(labels), " ", Number(sum_.load()),
                  "\n", name, "_count", Braced(labels), " ", count_.load(),
                  "\n");
}

Metrics::Metrics()
    : append_latency_(LatencyBounds()),
      group_events_(PowersOfTwo(13)),
      group_write_seconds_(LatencyBounds()) {}

std::atomic<uint64_t>* Metrics::Counter(Labeled& family,
                                        const std::string& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family.counters[labels];
  if (slot == nullptr) slot = std::make_unique<std::atomic<uint64_t>>(0);
  return slot.get();
}

Histogram* Metrics::HistogramFor(Labeled& family, const std::string& labels,
                                 const std::vector<double>& bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family.histograms[labels];
  if (slot == nullptr) slot = std::make_unique<Histogram>(bounds);
  return slot.get();
}

void Metrics::CountAppended(const std::string& result,
                            const std::string& reason, uint64_t events) {
  std::string labels = absl::StrCat("result=\"", result, "\"");
  if (!reason.empty()) absl::StrAppend(&labels, ",reason=\"", reason, "\"");
  Counter(appended_, labels)->fetch_add(events, std::memory_order_relaxed);
}

void Metrics::ObserveAppendLatency(absl::Duration latency) {
  append_latency_.Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::ObserveGroupCommit(size_t events, absl::Duration write_time) {
  group_events_.Observe(static_cast<double>(events));
  group_write_seconds_.Observe(absl::ToDoubleSeconds(write_time));
}

void Metrics::ObserveQuery(const std::string& rpc, const std::string& code,
                           absl::Duration latency) {
  std::string rpc_label = absl::StrCat("rpc=\"", rpc, "\"");
  Counter(query_calls_, absl::StrCat(rpc_label, ",code=\"", code, "\""))
      ->fetch_add(1, std::memory_order_relaxed);
  HistogramFor(query_latency_, rpc_label, LatencyBounds())
      ->Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::CountRefusal(const std::string& rpc, const std::string& code) {
  Counter(refused_, absl::StrCat("rpc=\"", rpc, "\",code=\"", code, "\""))
      ->fetch_add(1, std::memory_order_relaxed);
}

void Metrics::AddGauge(std::string name, std::string help,
                       std::function<double()> value) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.push_back({std::move(name), std::move(help), std::move(value)});
}

std::string Metrics::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  auto counters = [&](const Labeled& family, const std::string& name,
                      const std::string& help) {
    Header(name, "counter", help, &out);
    for (const auto& [labels, value] : family.counters) {
      absl::StrAppend(&out, name, Braced(labels), " ", value->load(), "\n");
    }
  };
  counters(appended_, "authtrail_append_events_total",
           "Events offered to AppendEvents, by result and refusal reason.");
  Header("authtrail_append_latency_seconds", "histogram",
         "AppendEvents latency, from receipt to durable reply.", &out);
  append_latency_.Render("authtrail_append_latency_seconds", "", &out);
  Header("authtrail_group_commit_events", "histogram",
         "Events per group commit (one synced write).", &out);
  group_events_.Render("authtrail_group_commit_events", "", &out);
  Header("authtrail_group_commit_write_seconds", "histogram",
         "Time of the synced write of one group commit.", &out);
  group_write_seconds_.Render("authtrail_group_commit_write_seconds", "", &out);
  counters(query_calls_, "authtrail_query_calls_total",
           "Read and admin calls, by RPC and status code.");
  Header("authtrail_query_latency_seconds", "histogram",
         "Latency of read and admin calls, by RPC.", &out);
  for (const auto& [labels, histogram] : query_latency_.histograms) {
    histogram->Render("authtrail_query_latency_seconds", labels, &out);
  }
  counters(refused_, "authtrail_refused_calls_total",
           "Calls refused before any work: missing or wrong credentials, a "
           "missing role, or the append rate limit; by RPC and code.");
  Header("authtrail_tls_handshake_failures_total", "counter",
         "TLS handshakes refused before any call: a client certificate that "
         "does not verify, or plaintext to the TLS port.",
         &out);
  absl::StrAppend(&out, "authtrail_tls_handshake_failures_total ",
                  TlsHandshakeFailures(), "\n");
  for (const Gauge& gauge : gauges_) {
    std::string name = gauge.name;
    std::string labels;
    if (size_t brace = name.find('{'); brace != std::string::npos) {
      labels = name.substr(brace);
      name = name.substr(0, brace);
    }
    if (out.find("# TYPE " + name + " ") == std::string::npos) {
      Header(name, "gauge", gauge.help, &out);
    }
    absl::StrAppend(&out, name, labels, " ", Number(gauge.value()), "\n");
  }
  return out;
}

namespace {

int ServeMetrics(struct mg_connection* connection, void* data) {
  const auto* metrics = static_cast<const Metrics*>(data);
  std::string body = metrics->Render();
  mg_printf(connection,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            body.size());
  mg_write(connection, body.data(), body.size());
  return 200;
}

}  // namespace

std::unique_ptr<MetricsServer> MetricsServer::Start(const std::string& listen,
                                                    const Metrics* metrics) {
  // civetweb wants "HOST:PORT" as "IP:PORT"; "localhost" is not resolved.
  std::string ports = listen;
  if (ports.rfind("localhost:", 0) == 0) {
    ports = "127.0.0.1" + ports.substr(std::string("localhost").size());
  }
  const char* options[] = {"listening_ports", ports.c_str(), "num_threads", "2",
                           nullptr};
  mg_init_library(0);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->metrics_ = metrics;
  mg_callbacks callbacks{};
  server->context_ = mg_start(&callbacks, nullptr, options);
  if (server->context_ == nullptr) {
    LogEvent(spdlog::level::err, "metrics_listen_failed", {{"listen", listen}});
    return nullptr;
  }
  mg_set_request_handler(server->context_, "/metrics", &ServeMetrics,
                         const_cast<Metrics*>(metrics));
  LogEvent(spdlog::level::info, "metrics_ready", {{"listen", listen}});
  return server;
}

MetricsServer::~MetricsServer() {
  if (context_ != nullptr) mg_stop(context_);
}

}  // namespace authtrail::services
