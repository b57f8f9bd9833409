// CudaCopyEngine: runs TransferPlans that touch device memory on one CUDA
// stream, in one of four modes:
//  - kernel: one gather/scatter kernel launch per plan; device <-> device,
//    and device <-> pinned host through the host memory's mapping;
//  - staged: device <-> pinned host as DMA of large contiguous pieces
//    between the host and a device staging buffer plus the kernel between
//    the staging buffer and the chunks' places (device <-> device: kernel);
//    device <-> pageable host (a pool whose pinning failed) the same way,
//    the DMA going through a pinned bounce buffer that a host function on
//    the DMA stream copies to / from the pageable memory
//    (cuda_staged_copy.cpp);
//  - batch:  one cudaMemcpyBatchAsync per plan (CUDA >= 12.8; DMA engines);
//  - memcpy: one cudaMemcpyAsync per chunk (the baseline).
//
// Complete: after the plan's work an event is recorded on the stream; ONE
// completion thread per engine waits for the events in order (polling a
// finished copy's event for up to CudaEngineOptions::completion_spin_us,
// then cudaEventSynchronize with cudaEventBlockingSync: it sleeps) and then
// calls done, so done(ok) means every destination byte is written and
// visible to the host and to any later stream operation. Launch and API
// errors call done(error) inline inside submit(); asynchronous errors arrive
// through the event. `done` may submit() again but must not destroy the
// engine (the destructor joins the thread running it). No thread per copy.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "cuda_handles.h"
#include "kvb/blockmgr/copy_engine.h"
#include "kvb/kernels/copy_descriptor.h"
#include "kvb/kernels/copy_engines.h"

namespace kvb::detail {

class CudaCopyEngine final : public CopyEngine {
 public:
  /// Creates the stream(s) and the completion thread on `device` (staged
  /// mode allocates its staging buffer at its first host <-> device plan).
  /// Throws CudaFailure (caught by make_cuda_copy_engine).
  CudaCopyEngine(CopyEngineKind mode, const CudaDeviceInfo& device, const CudaEngineOptions& options);
  /// Waits for every submitted plan (each `done` runs), then joins.
  ~CudaCopyEngine() override;

  [[nodiscard]] std::string_view name() const noexcept override { return to_string(mode_); }
  /// At least one side device memory, the other device or pinned host memory.
  [[nodiscard]] bool supports(MemoryKind src, MemoryKind dst) const noexcept override;
  /// See the header comment. Safe from any thread.
  void submit(TransferPlan plan, CopyDone done) override;

 private:
  /// Mapped pinned host memory holding a launch's descriptors, reused.
  struct PinnedBuffer {
    void* data = nullptr;
    std::size_t bytes = 0;
  };
  /// Host-side copies of one slab between the bounce buffer and pageable
  /// memory, run by a host function in DMA-stream order (no CUDA calls).
  struct HostLegs {
    std::vector<CopyDescriptor> legs;  // host addresses
  };
  /// One submitted plan, until its completion ran.
  struct InFlight {
    TransferPlan plan;
    CopyDone done;
    std::vector<CopyDescriptor> descriptors;  // kernel legs, host copy
    PinnedBuffer table;                       // descriptors for launches too large to carry them inline
    CudaEvent event;
    bool event_on_copy_stream = false;                 // staged offload: the last operation is a DMA
    bool pageable = false;                             // the host side is pageable: DMA legs go through bounce_
    std::vector<std::unique_ptr<HostLegs>> host_legs;  // read by host functions until the event

    InFlight(TransferPlan p, CopyDone d, CudaEvent e) : plan(std::move(p)), done(std::move(d)), event(std::move(e)) {}
  };

  [[nodiscard]] Status enqueue(InFlight& job);
  [[nodiscard]] Status enqueue_kernel(InFlight& job);
  /// cuda-staged: staged when it pays (or the host side is pageable), else the kernel.
  [[nodiscard]] Status enqueue_staged_mode(InFlight& job);
  /// The staging buffer, allocated at the first host <-> device plan; false
  /// when it cannot be had (logged once).
  [[nodiscard]] bool ensure_staging();
  /// The pinned bounce buffer for pageable host memory (2 x slab_bytes_).
  [[nodiscard]] Status ensure_bounce();
  [[nodiscard]] Status enqueue_staged(InFlight& job, StagedPlan staged);
  [[nodiscard]] Status enqueue_staged_chunks(InFlight& job, const ChunkPlan& chunks, const std::vector<PairIds>& pairs,
                                             const StagedChunkPlan& staged);
  /// The staged engines' slab loop: slab k's producer (offload: `kernel(k)`
  /// on stream_; onboard: `dma(k)` on the DMA stream) and consumer, handing
  /// staging half k % 2 between the streams with the filled / drained events.
  [[nodiscard]] Status hand_over_slabs(std::size_t slabs, bool to_host,
                                       const std::function<Status(std::size_t)>& kernel,
                                       const std::function<Status(std::size_t)>& dma);
  /// cudaMemcpyAsync of each leg on the DMA stream; for pageable host
  /// memory one DMA between the slab's staging half and its bounce half
  /// plus a host function copying the legs' host side.
  [[nodiscard]] Status copy_legs(InFlight& job, std::span<const CopyDescriptor> legs, bool to_host);
  [[nodiscard]] Status bounce_legs(InFlight& job, std::span<const CopyDescriptor> legs, bool to_host);
  /// Launches of more than kInlineDescriptors read theirs from device
  /// memory: the job's descriptors go to a pinned buffer and from there, by
  /// one DMA on stream_, to device_table_.
  [[nodiscard]] Status prepare_table(InFlight& job, std::uint32_t largest_launch);
  /// `bytes` of `data` -> a pooled pinned buffer (held by the job) -> one
  /// DMA on stream_ into device_table_ (grown as needed).
  [[nodiscard]] Status upload(InFlight& job, const void* data, std::size_t bytes);
  [[nodiscard]] Status launch(InFlight& job, std::uint32_t first, std::uint32_t count, std::uint64_t bytes);
  [[nodiscard]] Result<PinnedBuffer> acquire_pinned(std::size_t bytes);
  void release_pinned(PinnedBuffer buffer) noexcept;
  void completion_loop();

  CopyEngineKind mode_;
  CudaDeviceInfo device_;
  CudaEngineOptions options_;
  std::mutex submit_mutex_;  // keeps API calls of one plan together on the streams
  CudaStream stream_;        // kernels, descriptor uploads, every non-staged copy
  // Guarded by submit_mutex_: device descriptors, reused in stream_ order.
  void* device_table_ = nullptr;
  std::size_t device_table_bytes_ = 0;
  // Staged mode: two halves of options_.staging_bytes of device memory, the
  // DMA stream, and per half "filled" / "drained" events that order the
  // streams (a re-recorded event is waited for at its latest record).
  void* staging_ = nullptr;
  bool staging_unavailable_ = false;   // its allocation failed once: mapped kernel instead
  void* bounce_ = nullptr;             // pinned host, 2 x slab_bytes_, for pageable host memory
  std::optional<Error> bounce_error_;  // its allocation failed (kept: answered the same way)
  std::uint64_t slab_bytes_ = 0;
  std::unique_ptr<CudaStream> copy_stream_;
  std::unique_ptr<CudaEvent> filled_[2];
  std::unique_ptr<CudaEvent> drained_[2];
  std::mutex pool_mutex_;
  std::vector<PinnedBuffer> pinned_free_;  // guarded by pool_mutex_
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<InFlight>> in_flight_;  // guarded by mutex_
  bool stopping_ = false;                            // guarded by mutex_
  std::thread completion_;
};

}  // namespace kvb::detail
