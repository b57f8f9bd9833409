// CudaCopyEngine: runs TransferPlans that touch device memory on one CUDA
// stream, in one of three modes:
//  - kernel: one gather/scatter kernel launch per plan (descriptors copied
//    to device memory); device <-> device, and device <-> mapped pinned host;
//  - batch:  one cudaMemcpyBatchAsync per plan (CUDA >= 12.8; DMA engines);
//  - memcpy: one cudaMemcpyAsync per chunk (the baseline).
//
// Complete: after the plan's work an event is recorded on the stream; ONE
// completion thread per engine waits for the events in order
// (cudaEventSynchronize with cudaEventBlockingSync: it sleeps, no spin) and
// then calls done, so done(ok) means every destination byte is written and
// visible to the host and to any later stream operation. Launch and API
// errors call done(error) inline inside submit(); asynchronous errors arrive
// through the event. `done` may submit() again but must not destroy the
// engine (the destructor joins the thread running it). No thread per copy.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "cuda_handles.h"
#include "kvb/blockmgr/copy_engine.h"
#include "kvb/kernels/copy_engines.h"

namespace kvb::detail {

class CudaCopyEngine final : public CopyEngine {
 public:
  /// Creates the stream and the completion thread on `device`. Throws
  /// CudaFailure (caught by make_cuda_copy_engine).
  CudaCopyEngine(CopyEngineKind mode, const CudaDeviceInfo& device);
  /// Waits for every submitted plan (each `done` runs), then joins.
  ~CudaCopyEngine() override;

  [[nodiscard]] std::string_view name() const noexcept override { return to_string(mode_); }
  /// At least one side device memory, the other device or pinned host memory.
  [[nodiscard]] bool supports(MemoryKind src, MemoryKind dst) const noexcept override;
  /// See the header comment. Safe from any thread.
  void submit(TransferPlan plan, CopyDone done) override;

 private:
  struct InFlight;

  [[nodiscard]] Status enqueue(InFlight& job);
  void completion_loop();

  CopyEngineKind mode_;
  CudaDeviceInfo device_;
  std::mutex submit_mutex_;  // keeps API calls of one plan together on the stream
  CudaStream stream_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<InFlight>> in_flight_;  // guarded by mutex_
  bool stopping_ = false;                            // guarded by mutex_
  std::thread completion_;
};

}  // namespace kvb::detail
