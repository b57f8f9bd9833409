#include "cuda_copy_engine.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <exception>
#include <span>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "../finish_copy.h"
#include "gather_kernel.h"
#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

CudaCopyEngine::CudaCopyEngine(CopyEngineKind mode, const CudaDeviceInfo& device, const CudaEngineOptions& options)
    : mode_(mode), device_(device), options_(options), stream_((cudaSetDevice(device.ordinal), CudaStream())) {
  if (mode_ == CopyEngineKind::cuda_staged) {
    if (options_.staging_bytes < 4096)
      throw CudaFailure(Error{Errc::invalid_argument, fmt::format("cuda-staged: staging_bytes must be >= 4096 (got {})",
                                                                  options_.staging_bytes)});
    // The staging buffer itself is allocated by the first staged plan: a
    // process that never stages (the daemon today) takes no device memory.
    slab_bytes_ = options_.staging_bytes / 2 / 256 * 256;
    copy_stream_ = std::make_unique<CudaStream>();
    for (int h = 0; h < 2; ++h) {
      filled_[h] = std::make_unique<CudaEvent>();
      drained_[h] = std::make_unique<CudaEvent>();
    }
  }
  completion_ = std::thread([this] { completion_loop(); });
}

CudaCopyEngine::~CudaCopyEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  completion_.join();
  cudaSetDevice(device_.ordinal);
  if (staging_ != nullptr) cudaFree(staging_);
  if (bounce_ != nullptr) cudaFreeHost(bounce_);
  if (device_table_ != nullptr) cudaFree(device_table_);
  for (const auto& b : pinned_free_) cudaFreeHost(b.data);
}

bool CudaCopyEngine::supports(MemoryKind src, MemoryKind dst) const noexcept {
  // Pageable host memory only through the staged engine's pinned bounce buffer.
  const auto reachable = [this](MemoryKind k) {
    return k == MemoryKind::device || k == MemoryKind::host_pinned ||
           (k == MemoryKind::host && mode_ == CopyEngineKind::cuda_staged);
  };
  return (src == MemoryKind::device || dst == MemoryKind::device) && reachable(src) && reachable(dst);
}

void CudaCopyEngine::submit(TransferPlan plan, CopyDone done) {
  if (!supports(plan.src().kind(), plan.dst().kind())) {
    finish_copy(name(), done,
                fail(Errc::unsupported, "{} engine cannot copy {} -> {} memory", name(), to_string(plan.src().kind()),
                     to_string(plan.dst().kind())));
    return;
  }
  if (plan.total_bytes() == 0) {
    finish_copy(name(), done, ok());
    return;
  }
  std::unique_ptr<InFlight> job;
  try {
    if (auto st = cuda_check(cudaSetDevice(device_.ordinal), "cudaSetDevice"); !st) {
      finish_copy(name(), done, std::move(st));
      return;
    }
    CudaEvent event;
    job = std::make_unique<InFlight>(std::move(plan), std::move(done), std::move(event));
  } catch (const CudaFailure& e) {
    finish_copy(name(), done, tl::unexpected(e.error));
    return;
  }
  {
    std::lock_guard submit_lock(submit_mutex_);
    if (auto st = enqueue(*job); !st) {
      // Nothing of this job may still be read by the device: wait for the
      // streams before the descriptors' memory goes back to the pool.
      cudaStreamSynchronize(stream_.get());
      if (copy_stream_) cudaStreamSynchronize(copy_stream_->get());
      release_pinned(std::exchange(job->table, {}));
      finish_copy(name(), job->done, std::move(st));
      return;
    }
  }
  {
    std::lock_guard lock(mutex_);
    in_flight_.push_back(std::move(job));
  }
  wake_.notify_one();
}

Result<CudaCopyEngine::PinnedBuffer> CudaCopyEngine::acquire_pinned(std::size_t bytes) {
  {
    std::lock_guard lock(pool_mutex_);
    auto best = pinned_free_.end();
    for (auto it = pinned_free_.begin(); it != pinned_free_.end(); ++it)
      if (it->bytes >= bytes && (best == pinned_free_.end() || it->bytes < best->bytes)) best = it;
    if (best != pinned_free_.end()) {
      PinnedBuffer b = *best;
      pinned_free_.erase(best);
      return b;
    }
  }
  PinnedBuffer b;
  b.bytes = std::bit_ceil(std::max<std::size_t>(bytes, 64 << 10));
  if (auto err = cudaHostAlloc(&b.data, b.bytes, cudaHostAllocMapped | cudaHostAllocPortable); err != cudaSuccess)
    return tl::unexpected(cuda_error(err, fmt::format("cudaHostAlloc({} bytes of descriptors)", b.bytes)));
  return b;
}

void CudaCopyEngine::release_pinned(PinnedBuffer buffer) noexcept {
  if (buffer.data == nullptr) return;
  std::lock_guard lock(pool_mutex_);
  pinned_free_.push_back(buffer);
}

Status CudaCopyEngine::prepare_table(InFlight& job, std::uint32_t largest_launch) {
  if (largest_launch <= kInlineDescriptors) return ok();  // every launch carries its descriptors
  return upload(job, job.descriptors.data(), job.descriptors.size() * sizeof(CopyDescriptor));
}

Status CudaCopyEngine::upload(InFlight& job, const void* data, std::size_t bytes) {
  auto buffer = acquire_pinned(bytes);
  if (!buffer) return tl::unexpected(buffer.error());
  job.table = *buffer;
  std::memcpy(job.table.data, data, bytes);
  const cudaStream_t stream = stream_.get();
  if (device_table_bytes_ < bytes) {
    // Stream-ordered: the old table is freed after the launches reading it.
    if (device_table_ != nullptr) cudaFreeAsync(device_table_, stream);
    device_table_ = nullptr;
    device_table_bytes_ = 0;
    const std::size_t grown = std::bit_ceil(std::max<std::size_t>(bytes, 64 << 10));
    if (auto st = cuda_check(cudaMallocAsync(&device_table_, grown, stream), "cudaMallocAsync(descriptors)"); !st)
      return st;
    device_table_bytes_ = grown;
  }
  return cuda_check(cudaMemcpyAsync(device_table_, job.table.data, bytes, cudaMemcpyHostToDevice, stream),
                    "cudaMemcpyAsync(descriptors)");
}

Status CudaCopyEngine::launch(InFlight& job, std::uint32_t first, std::uint32_t count, std::uint64_t bytes) {
  std::uint64_t largest = 0;
  for (std::uint32_t i = first; i < first + count; ++i) largest = std::max(largest, job.descriptors[i].bytes);
  const LaunchShape shape = launch_shape(count, largest, bytes, static_cast<std::uint32_t>(device_.sm_count));
  const CopyDescriptor* table = count <= kInlineDescriptors ? job.descriptors.data() + first
                                                            : static_cast<const CopyDescriptor*>(device_table_) + first;
  return cuda_check(launch_gather(table, count, shape, stream_.get()), "gather kernel launch");
}

Status CudaCopyEngine::enqueue_kernel(InFlight& job) {
  const TransferPlan& plan = job.plan;
  const auto sms = static_cast<std::uint32_t>(device_.sm_count);
  if (options_.direct_chunks && fits_chunk_plan(plan)) {
    // Direct form: the kernel computes each chunk's addresses from the pairs
    // and the layouts; nothing per chunk is built on the host.
    const ChunkPlan chunks = make_chunk_plan(plan);
    const std::vector<PairIds> pairs = pair_ids(plan);
    const auto count = static_cast<std::uint32_t>(pairs.size());
    const PairIds* table = pairs.data();
    if (count > kInlinePairs) {
      if (auto st = upload(job, pairs.data(), pairs.size() * sizeof(PairIds)); !st) return st;
      table = static_cast<const PairIds*>(device_table_);
    }
    const LaunchShape shape = launch_shape(chunks.chunks, chunks.chunk_bytes, plan.total_bytes(), sms);
    return cuda_check(launch_chunks(chunks, table, count, shape, stream_.get()), "gather kernel launch (chunks)");
  }
  job.descriptors = make_descriptors(plan);
  const auto count = static_cast<std::uint32_t>(job.descriptors.size());
  if (auto st = prepare_table(job, count); !st) return st;
  return launch(job, 0, count, plan.total_bytes());
}

Status CudaCopyEngine::enqueue(InFlight& job) {
  if (auto st = cuda_check(cudaSetDevice(device_.ordinal), "cudaSetDevice"); !st) return st;
  const cudaStream_t stream = stream_.get();
  const TransferPlan& plan = job.plan;
  switch (mode_) {
    case CopyEngineKind::cuda_kernel: {
      if (auto st = enqueue_kernel(job); !st) return st;
      break;
    }
    case CopyEngineKind::cuda_staged: {
      if (auto st = enqueue_staged_mode(job); !st) return st;
      break;
    }
    case CopyEngineKind::cuda_batch: {
#if CUDART_VERSION >= 12080
      const auto runs = plan.runs();
      std::vector<void*> dsts(runs.size());
      std::vector<const void*> srcs(runs.size());
      std::vector<std::size_t> sizes(runs.size());
      for (std::size_t i = 0; i < runs.size(); ++i) {
        dsts[i] = plan.dst_address(runs[i]);
        srcs[i] = plan.src_address(runs[i]);
        sizes[i] = runs[i].bytes;
      }
      cudaMemcpyAttributes attr{};
      attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
      std::size_t attr_index = 0;
#if CUDART_VERSION >= 13000
      // CUDA 13 dropped the failIdx out-parameter.
      const auto err =
          cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), runs.size(), &attr, &attr_index, 1, stream);
      if (auto st = cuda_check(err, "cudaMemcpyBatchAsync"); !st) return st;
#else
      std::size_t fail_index = SIZE_MAX;
      const auto err = cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), runs.size(), &attr, &attr_index, 1,
                                            &fail_index, stream);
      if (err != cudaSuccess)
        return tl::unexpected(cuda_error(err, fmt::format("cudaMemcpyBatchAsync (copy {})", fail_index)));
#endif
      break;
#else
      return fail(Errc::unavailable, "cuda-batch needs CUDA >= 12.8 (built with {})", CUDART_VERSION);
#endif
    }
    case CopyEngineKind::cuda_memcpy: {
      // The baseline: one call per chunk, as a plain per-layer loop does.
      // Runs are whole chunks merged, so they split back exactly.
      const std::uint64_t chunk = plan.src().layout.chunk_bytes();
      for (const auto& run : plan.runs()) {
        for (std::uint64_t off = 0; off < run.bytes; off += chunk) {
          const auto err = cudaMemcpyAsync(plan.dst_address(run) + off, plan.src_address(run) + off,
                                           std::min(chunk, run.bytes - off), cudaMemcpyDefault, stream);
          if (auto st = cuda_check(err, "cudaMemcpyAsync"); !st) return st;
        }
      }
      break;
    }
    case CopyEngineKind::host: return fail(Errc::internal, "cuda copy engine built in host mode");
  }
  return cuda_check(cudaEventRecord(job.event.get(), job.event_on_copy_stream ? copy_stream_->get() : stream),
                    "cudaEventRecord");
}

void CudaCopyEngine::completion_loop() {
  cudaSetDevice(device_.ordinal);
  const auto spin = std::chrono::microseconds(options_.completion_spin_us);
  const auto poll = std::chrono::microseconds(options_.completion_poll_us);
#if defined(__linux__)
  // Sleeps of a few microseconds: without this the kernel may add 50 us of
  // timer slack to each.
  if (poll.count() > 0) prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
#endif
  for (;;) {
    std::unique_ptr<InFlight> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !in_flight_.empty(); });
      if (in_flight_.empty()) return;  // stopping and drained
      job = std::move(in_flight_.front());
      in_flight_.pop_front();
    }
    // Waiting for the oldest first: events on one stream complete in order
    // (a staged offload's event on the DMA stream may finish before an
    // older one, and then waits for it). A busy poll first (a copy of a few
    // blocks is done in microseconds), then polls with short sleeps, then
    // (or with polling off) the driver's blocking wait, which also reports
    // the copy's error if it failed.
    if (spin.count() > 0) {
      const auto until = std::chrono::steady_clock::now() + spin;
      while (cudaEventQuery(job->event.get()) == cudaErrorNotReady && std::chrono::steady_clock::now() < until)
        for (int i = 0; i < 16; ++i) cpu_relax();
    }
    if (poll.count() > 0)
      while (cudaEventQuery(job->event.get()) == cudaErrorNotReady) std::this_thread::sleep_for(poll);
    const auto err = cudaEventSynchronize(job->event.get());
    release_pinned(std::exchange(job->table, {}));
    finish_copy(name(), job->done,
                cuda_check(err, fmt::format("{} copy of {} bytes", name(), job->plan.total_bytes())));
  }
}

}  // namespace kvb::detail
