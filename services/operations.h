// Runs the store's long operations (rebuild, verify, backup) on a
// background thread, one at a time, and keeps their progress and result
// for polling. Thread-safe.
#ifndef AUTHTRAIL_SERVICES_OPERATIONS_H_
#define AUTHTRAIL_SERVICES_OPERATIONS_H_

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "authtrail/v1/admin.pb.h"
#include "storage/event_store.h"

namespace authtrail::services {

class Operations {
 public:
  // `store` must outlive this object.
  explicit Operations(storage::EventStore* store) : store_(store) {}
  // Waits for the running operation to end.
  ~Operations();

  // Each starts its operation and returns it as RUNNING, or ABORTED when
  // another is running.
  absl::StatusOr<authtrail::v1::Operation> StartRebuild();
  absl::StatusOr<authtrail::v1::Operation> StartVerify(
      const authtrail::v1::StartVerifyRequest& request);
  absl::StatusOr<authtrail::v1::Operation> StartBackup(const std::string& dir);

  // NOT_FOUND for an id this server did not start (since it started).
  absl::StatusOr<authtrail::v1::Operation> Get(const std::string& id) const;
  // The running or most recent operation.
  std::optional<authtrail::v1::Operation> Last() const;
  // The running or most recent operation of `kind`.
  std::optional<authtrail::v1::Operation> LastOf(
      authtrail::v1::OperationKind kind) const;

 private:
  // Body of an operation: fills the result into `op` (under no lock: the
  // runner copies it in at the end) and reports progress through `progress`.
  using Body = std::function<absl::Status(const storage::ProgressFn& progress,
                                          authtrail::v1::Operation* op)>;

  absl::StatusOr<authtrail::v1::Operation> Start(
      authtrail::v1::OperationKind kind, Body body);
  void Progress(const std::string& id, uint64_t done, uint64_t total);

  storage::EventStore* store_;
  mutable std::mutex mu_;
  std::map<std::string, authtrail::v1::Operation> operations_;        // guarded
  std::string last_id_;                                               // guarded
  std::map<authtrail::v1::OperationKind, std::string> last_of_kind_;  // guarded
  bool running_ = false;                                              // guarded
  int next_id_ = 1;                                                   // guarded
  std::thread thread_;
};

}  // namespace authtrail::services

#endif  // AUTHTRAIL_SERVICES_OPERATIONS_H_
