#include "services/operations.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "services/log.h"
#include "storage/proto_time.h"
#include "storage/store_internal.h"

namespace authtrail::services {
namespace {

using authtrail::v1::Operation;

std::string KindName(authtrail::v1::OperationKind kind) {
  switch (kind) {
    case authtrail::v1::OPERATION_KIND_REBUILD:
      return "rebuild";
    case authtrail::v1::OPERATION_KIND_VERIFY:
      return "verify";
    case authtrail::v1::OPERATION_KIND_BACKUP:
      return "backup";
    default:
      return "operation";
  }
}

}  // namespace

Operations::~Operations() {
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<Operation> Operations::Start(authtrail::v1::OperationKind kind,
                                            Body body) {
  std::lock_guard<std::mutex> lock(mu_);
  if (running_) {
    return absl::AbortedError(
        absl::StrCat("operation ", last_id_,
                     " is still running; poll it with "
                     "GetOperation and start again when it ends"));
  }
  if (thread_.joinable()) thread_.join();
  Operation op;
  op.set_id(absl::StrCat(KindName(kind), "-", next_id_++));
  op.set_kind(kind);
  op.set_state(authtrail::v1::OPERATION_STATE_RUNNING);
  op.set_total(store_->HeadPosition());
  *op.mutable_started_at() = storage::ToProtoTime(absl::Now());
  operations_[op.id()] = op;
  last_id_ = op.id();
  last_of_kind_[kind] = op.id();
  running_ = true;
  LogEvent(spdlog::level::info, KindName(kind) + "_started",
           {{"operation", op.id()}, {"head_position", op.total()}});

  thread_ = std::thread([this, id = op.id(), kind, body = std::move(body)] {
    Operation result;
    absl::Status status =
        body([this, &id](uint64_t done,
                         uint64_t total) { Progress(id, done, total); },
             &result);
    std::lock_guard<std::mutex> lock(mu_);
    Operation& op = operations_[id];
    absl::Time started = storage::FromProtoTime(op.started_at());
    absl::Time now = absl::Now();
    *op.mutable_finished_at() = storage::ToProtoTime(now);
    if (result.has_verify()) *op.mutable_verify() = result.verify();
    if (result.has_rebuild()) *op.mutable_rebuild() = result.rebuild();
    if (!result.backup_dir().empty()) op.set_backup_dir(result.backup_dir());
    if (result.done() > 0) op.set_done(result.done());
    if (op.total() < op.done()) op.set_total(op.done());
    double seconds = absl::ToDoubleSeconds(now - started);
    if (seconds > 0) op.set_events_per_second(op.done() / seconds);
    op.set_state(status.ok() ? authtrail::v1::OPERATION_STATE_SUCCEEDED
                             : authtrail::v1::OPERATION_STATE_FAILED);
    op.set_error(status.ok() ? "" : status.ToString());
    running_ = false;
    LogEvent(status.ok() ? spdlog::level::info : spdlog::level::err,
             KindName(kind) + "_finished",
             {{"operation", id},
              {"completed", status.ok()},
              {"problem_found", op.has_verify() && !op.verify().ok()},
              {"events", op.done()},
              {"seconds", seconds},
              {"error", op.error()}});
  });
  return op;
}

void Operations::Progress(const std::string& id, uint64_t done,
                          uint64_t total) {
  std::lock_guard<std::mutex> lock(mu_);
  Operation& op = operations_[id];
  op.set_done(done);
  if (total > 0) op.set_total(total);
  double seconds = absl::ToDoubleSeconds(
      absl::Now() - storage::FromProtoTime(op.started_at()));
  if (seconds > 0) op.set_events_per_second(done / seconds);
}

absl::StatusOr<Operation> Operations::StartRebuild() {
  return Start(authtrail::v1::OPERATION_KIND_REBUILD,
               [this](const storage::ProgressFn& progress, Operation* op) {
                 auto result = store_->Rebuild(progress);
                 if (!result.ok()) return result.status();
                 op->set_done(result->events);
                 op->mutable_rebuild()->set_events(result->events);
                 op->mutable_rebuild()->set_generation(result->generation);
                 return absl::OkStatus();
               });
}

absl::StatusOr<Operation> Operations::StartVerify(
    const authtrail::v1::StartVerifyRequest& request) {
  storage::VerifyOptions options;
  options.check_projections = !request.log_only();
  if (request.anchor_position() != 0) {
    const std::string& hex = request.anchor_hash();
    if (!storage::IsChainHashHex(hex)) {
      return absl::InvalidArgumentError(
          "anchor_hash must be 64 hex digits (a chain hash from stats)");
    }
    options.anchor_position = request.anchor_position();
    options.anchor_hash = absl::HexStringToBytes(hex);
  }
  return Start(
      authtrail::v1::OPERATION_KIND_VERIFY,
      [this, options](const storage::ProgressFn& progress, Operation* op) {
        auto report = store_->Verify(options, progress);
        if (!report.ok()) return report.status();
        auto* v = op->mutable_verify();
        v->set_ok(report->ok);
        v->set_events(report->events);
        v->set_head_hash(absl::BytesToHexString(report->head_hash));
        // A projection key holds ids (patient, connection, session) in
        // its bytes: the remote reply withholds it. The offline verify on
        // the server's host, which already has the data, prints it.
        std::string problem = report->problem;
        if (!report->key.empty()) {
          problem = absl::StrReplaceAll(problem,
                                        {{report->key,
                                          "(withheld: it holds ids; run "
                                          "authtraild --offline_verify on the "
                                          "host to see it)"}});
        }
        v->set_problem(problem);
        v->set_position(report->position);
        v->set_family(report->family);
        op->set_done(report->events);
        return absl::OkStatus();
      });
}

absl::StatusOr<Operation> Operations::StartBackup(const std::string& dir) {
  if (dir.empty() || dir.front() != '/') {
    return absl::InvalidArgumentError(
        "dir must be an absolute path on the server's machine");
  }
  return Start(authtrail::v1::OPERATION_KIND_BACKUP,
               [this, dir](const storage::ProgressFn&, Operation* op) {
                 uint64_t head = store_->HeadPosition();
                 absl::Status s = store_->Backup(dir);
                 if (s.ok()) {
                   op->set_backup_dir(dir);
                   op->set_done(head);
                 }
                 return s;
               });
}

absl::StatusOr<Operation> Operations::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = operations_.find(id);
  if (it == operations_.end()) {
    return absl::NotFoundError(absl::StrCat("no operation \"", id, "\""));
  }
  return it->second;
}

std::optional<Operation> Operations::Last() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (last_id_.empty()) return std::nullopt;
  return operations_.at(last_id_);
}

std::optional<Operation> Operations::LastOf(
    authtrail::v1::OperationKind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = last_of_kind_.find(kind);
  if (it == last_of_kind_.end()) return std::nullopt;
  return operations_.at(it->second);
}

}  // namespace authtrail::services
