#include "cuda_copy_engine.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "gather_kernel.h"
#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

struct CudaCopyEngine::InFlight {
  TransferPlan plan;
  CopyDone done;
  std::vector<CopyDescriptor> descriptors;  // kernel legs, host copy
  PinnedBuffer table;                       // descriptors for launches too large to carry them inline
  CudaEvent event;
  bool event_on_copy_stream = false;  // staged offload: the last operation is a DMA

  InFlight(TransferPlan p, CopyDone d, CudaEvent e) : plan(std::move(p)), done(std::move(d)), event(std::move(e)) {}
};

namespace {

void finish(CopyDone& done, Status status) noexcept {
  try {
    done(std::move(status));
  } catch (const std::exception& e) {
    spdlog::error("cuda copy engine: completion callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("cuda copy engine: completion callback threw a non-exception");
  }
}

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
  if (device_table_ != nullptr) cudaFree(device_table_);
  for (const auto& b : pinned_free_) cudaFreeHost(b.data);
}

bool CudaCopyEngine::supports(MemoryKind src, MemoryKind dst) const noexcept {
  const auto reachable = [](MemoryKind k) { return k == MemoryKind::device || k == MemoryKind::host_pinned; };
  return (src == MemoryKind::device || dst == MemoryKind::device) && reachable(src) && reachable(dst);
}

void CudaCopyEngine::submit(TransferPlan plan, CopyDone done) {
  if (!supports(plan.src().kind(), plan.dst().kind())) {
    finish(done, fail(Errc::unsupported, "{} engine cannot copy {} -> {} memory", name(), to_string(plan.src().kind()),
                      to_string(plan.dst().kind())));
    return;
  }
  if (plan.total_bytes() == 0) {
    finish(done, ok());
    return;
  }
  std::unique_ptr<InFlight> job;
  try {
    if (auto st = cuda_check(cudaSetDevice(device_.ordinal), "cudaSetDevice"); !st) {
      finish(done, std::move(st));
      return;
    }
    CudaEvent event;
    job = std::make_unique<InFlight>(std::move(plan), std::move(done), std::move(event));
  } catch (const CudaFailure& e) {
    finish(done, tl::unexpected(e.error));
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
      finish(job->done, std::move(st));
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

Status CudaCopyEngine::hand_over_slabs(std::size_t slabs, bool to_host,
                                       const std::function<Status(std::size_t)>& kernel,
                                       const std::function<Status(std::size_t)>& dma) {
  const cudaStream_t kernels = stream_.get();
  const cudaStream_t copies = copy_stream_->get();
  // Slab k uses staging half h = k % 2. Its producer (offload: the gather
  // kernel; onboard: the DMA) first waits until the consumer of slab k - 2
  // has drained half h (for k < 2 that is the previous staged job's use of
  // it); the consumer waits until the producer has filled it. So the DMA of
  // one half overlaps the kernel of the other.
  const cudaStream_t producer = to_host ? kernels : copies;
  const cudaStream_t consumer = to_host ? copies : kernels;
  const auto& produce = to_host ? kernel : dma;
  const auto& consume = to_host ? dma : kernel;
  for (std::size_t k = 0; k < slabs; ++k) {
    const std::size_t h = k % 2;
    if (auto st = cuda_check(cudaStreamWaitEvent(producer, drained_[h]->get(), 0), "cudaStreamWaitEvent(drained)"); !st)
      return st;
    if (auto st = produce(k); !st) return st;
    if (auto st = cuda_check(cudaEventRecord(filled_[h]->get(), producer), "cudaEventRecord(filled)"); !st) return st;
    if (auto st = cuda_check(cudaStreamWaitEvent(consumer, filled_[h]->get(), 0), "cudaStreamWaitEvent(filled)"); !st)
      return st;
    if (auto st = consume(k); !st) return st;
    if (auto st = cuda_check(cudaEventRecord(drained_[h]->get(), consumer), "cudaEventRecord(drained)"); !st) return st;
  }
  return ok();
}

Status CudaCopyEngine::copy_legs(std::span<const CopyDescriptor> legs, bool to_host) {
  for (const CopyDescriptor& leg : legs) {
    const auto err =
        cudaMemcpyAsync(reinterpret_cast<void*>(leg.dst), reinterpret_cast<const void*>(leg.src), leg.bytes,
                        to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, copy_stream_->get());
    if (auto st = cuda_check(err, "cudaMemcpyAsync(staged)"); !st) return st;
  }
  return ok();
}

Status CudaCopyEngine::enqueue_staged_chunks(InFlight& job, const ChunkPlan& chunks, const std::vector<PairIds>& pairs,
                                             const StagedChunkPlan& staged) {
  const auto count = static_cast<std::uint32_t>(pairs.size());
  const PairIds* table = pairs.data();
  if (count > kInlinePairs) {
    if (auto st = upload(job, pairs.data(), pairs.size() * sizeof(PairIds)); !st) return st;
    table = static_cast<const PairIds*>(device_table_);
  }
  const auto sms = static_cast<std::uint32_t>(device_.sm_count);
  const std::span<const CopyDescriptor> dma(staged.dma);
  auto st = hand_over_slabs(
      staged.slabs.size(), staged.to_host,
      [&](std::size_t k) {
        const StagedChunkSlab& slab = staged.slabs[k];
        const LaunchShape shape =
            launch_shape(slab.chunk_count, chunks.chunk_bytes, slab.chunk_count * chunks.chunk_bytes, sms);
        return cuda_check(launch_staged_chunks(chunks, table, count, slab, staged.to_host, shape, stream_.get()),
                          "gather kernel launch (staged chunks)");
      },
      [&](std::size_t k) {
        const StagedChunkSlab& slab = staged.slabs[k];
        return copy_legs(dma.subspan(slab.first_dma, slab.dma_count), staged.to_host);
      });
  // The last consumer runs after everything before it: offload ends on the
  // DMA stream, onboard on the kernel stream.
  job.event_on_copy_stream = staged.to_host;
  return st;
}

Status CudaCopyEngine::enqueue_staged(InFlight& job, StagedPlan staged) {
  job.descriptors = std::move(staged.descriptors);
  std::uint32_t largest = 0;
  for (const auto& slab : staged.slabs) largest = std::max(largest, slab.descriptor_count);
  if (auto st = prepare_table(job, largest); !st) return st;
  const std::span<const CopyDescriptor> dma(staged.dma);
  auto st = hand_over_slabs(
      staged.slabs.size(), staged.to_host,
      [&](std::size_t k) {
        const StagedSlab& slab = staged.slabs[k];
        std::uint64_t bytes = 0;
        for (const auto& leg : dma.subspan(slab.first_dma, slab.dma_count)) bytes += leg.bytes;
        return launch(job, slab.first_descriptor, slab.descriptor_count, bytes);
      },
      [&](std::size_t k) {
        const StagedSlab& slab = staged.slabs[k];
        return copy_legs(dma.subspan(slab.first_dma, slab.dma_count), staged.to_host);
      });
  job.event_on_copy_stream = staged.to_host;
  return st;
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
      const bool src_dev = plan.src().kind() == MemoryKind::device;
      const bool dst_dev = plan.dst().kind() == MemoryKind::device;
      if (src_dev != dst_dev && staging_ == nullptr && !staging_unavailable_) {
        if (auto err = cudaMalloc(&staging_, options_.staging_bytes); err != cudaSuccess) {
          // Without a staging buffer every plan goes through the mapped
          // kernel (0.92-0.95x instead of 0.98x): slower, never failed.
          staging_ = nullptr;
          staging_unavailable_ = true;
          cudaGetLastError();
          spdlog::warn("cuda-staged: no staging buffer ({}); copying through the mapped kernel instead",
                       cuda_error(err, fmt::format("cudaMalloc({} bytes)", options_.staging_bytes)).message);
        }
      }
      if (staging_ == nullptr) {
        if (auto st = enqueue_kernel(job); !st) return st;
        break;
      }
      if (src_dev != dst_dev && options_.direct_chunks && fits_chunk_plan(plan) &&
          plan.src().layout.chunk_bytes() <= slab_bytes_) {
        ChunkPlan chunks = make_chunk_plan(plan);
        std::vector<PairIds> pairs = pair_ids(plan);
        StagedChunkPlan staged =
            make_staged_chunk_plan(chunks, pairs, src_dev, reinterpret_cast<std::uintptr_t>(staging_), slab_bytes_, 2);
        if (!staged.dma.empty() && plan.total_bytes() / staged.dma.size() >= options_.staged_min_run_bytes) {
          if (auto st = enqueue_staged_chunks(job, chunks, pairs, staged); !st) return st;
          break;
        }
      } else if (src_dev != dst_dev) {
        StagedPlan staged = make_staged_plan(plan, src_dev, reinterpret_cast<std::uintptr_t>(staging_), slab_bytes_,
                                             kMaxDescriptorBytes, 2);
        // Staging pays off when the DMA legs are long; many short host-side
        // pieces go faster through the mapping.
        if (!staged.dma.empty() && plan.total_bytes() / staged.dma.size() >= options_.staged_min_run_bytes) {
          if (auto st = enqueue_staged(job, std::move(staged)); !st) return st;
          break;
        }
      }
      if (auto st = enqueue_kernel(job); !st) return st;
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
    finish(job->done, cuda_check(err, fmt::format("{} copy of {} bytes", name(), job->plan.total_bytes())));
  }
}

}  // namespace kvb::detail
