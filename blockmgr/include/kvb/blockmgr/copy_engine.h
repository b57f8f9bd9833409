// CopyEngine: runs TransferPlans. blockmgr declares it; kernels/ implements
// it on hardware (HostCopyEngine, CUDA engines).
//
// Contract of submit(): the engine takes the plan and calls `done` exactly
// once. done(ok) means *complete*: every destination byte is written and
// visible to the next reader on any thread (and, for device memory, to any
// later stream operation). done(error) means the destination holds no
// trustworthy data; it must not be registered or served. `done` may run on
// an engine thread or inline inside submit(); it must be cheap and must not
// call submit() on the same engine re-entrantly in a way that can deadlock.
#pragma once

#include <functional>
#include <string_view>

#include "kvb/blockmgr/memory_region.h"
#include "kvb/blockmgr/transfer_plan.h"
#include "kvb/common/error.h"

namespace kvb {

using CopyDone = std::function<void(Status)>;

class CopyEngine {
 public:
  CopyEngine() = default;
  CopyEngine(const CopyEngine&) = delete;
  CopyEngine& operator=(const CopyEngine&) = delete;
  virtual ~CopyEngine() = default;

  /// Short stable name: "host", "sync-host", "cuda-kernel", ...
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Whether plans from `src` memory to `dst` memory can run here.
  [[nodiscard]] virtual bool supports(MemoryKind src, MemoryKind dst) const noexcept = 0;
  /// Starts the plan; see the contract above. Safe from any thread.
  virtual void submit(TransferPlan plan, CopyDone done) = 0;
};

/// Runs every plan inline with memcpy on the calling thread and calls `done`
/// before returning. Host memory only. For tests and bookkeeping; the
/// daemon uses kernels/'s HostCopyEngine.
class SyncHostCopyEngine final : public CopyEngine {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "sync-host"; }
  [[nodiscard]] bool supports(MemoryKind src, MemoryKind dst) const noexcept override {
    return src != MemoryKind::device && dst != MemoryKind::device;
  }
  void submit(TransferPlan plan, CopyDone done) override;
};

}  // namespace kvb
