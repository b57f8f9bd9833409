// CudaCopyEngine's staged mode (cuda-staged): slabs through a device
// staging buffer whose two halves the kernel stream and the DMA stream hand
// to each other, and, for pageable host memory, a pinned bounce buffer.
#include <algorithm>
#include <cstring>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "cuda_copy_engine.h"
#include "gather_kernel.h"
#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

Status CudaCopyEngine::enqueue_staged_mode(InFlight& job) {
  const TransferPlan& plan = job.plan;
  const bool src_dev = plan.src().kind() == MemoryKind::device;
  const bool dst_dev = plan.dst().kind() == MemoryKind::device;
  if (src_dev == dst_dev) return enqueue_kernel(job);  // device <-> device
  const bool pageable = (src_dev ? plan.dst().kind() : plan.src().kind()) == MemoryKind::host;
  if (!ensure_staging()) {
    // Pinned memory goes through the mapped kernel instead (0.92-0.95x
    // instead of 0.98x): slower, never failed. The kernel cannot reach
    // pageable memory.
    if (!pageable) return enqueue_kernel(job);
    return fail(Errc::unavailable,
                "cuda-staged: pageable host memory needs the staging buffer, which could not be "
                "allocated (see the warning above)");
  }
  if (pageable) {
    if (auto st = ensure_bounce(); !st) return st;
    job.pageable = true;
  }
  const auto staging = reinterpret_cast<std::uintptr_t>(staging_);
  // Staging pays off when the DMA legs are long; many short host-side
  // pieces of pinned memory go faster through the mapping.
  const auto pays = [&](std::size_t legs) {
    return legs != 0 && (pageable || plan.total_bytes() / legs >= options_.staged_min_run_bytes);
  };
  if (options_.direct_chunks && fits_chunk_plan(plan) && plan.src().layout.chunk_bytes() <= slab_bytes_) {
    ChunkPlan chunks = make_chunk_plan(plan);
    std::vector<PairIds> pairs = pair_ids(plan);
    StagedChunkPlan staged = make_staged_chunk_plan(chunks, pairs, src_dev, staging, slab_bytes_, 2);
    if (pays(staged.dma.size())) return enqueue_staged_chunks(job, chunks, pairs, staged);
  } else {
    StagedPlan staged = make_staged_plan(plan, src_dev, staging, slab_bytes_, kMaxDescriptorBytes, 2);
    if (pays(staged.dma.size())) return enqueue_staged(job, std::move(staged));
  }
  return enqueue_kernel(job);
}

bool CudaCopyEngine::ensure_staging() {
  if (staging_ != nullptr) return true;
  if (staging_unavailable_) return false;
  if (auto err = cudaMalloc(&staging_, options_.staging_bytes); err != cudaSuccess) {
    staging_ = nullptr;
    staging_unavailable_ = true;
    cudaGetLastError();
    spdlog::warn("cuda-staged: no staging buffer ({}); pinned memory is copied through the mapped kernel instead",
                 cuda_error(err, fmt::format("cudaMalloc({} bytes)", options_.staging_bytes)).message);
    return false;
  }
  return true;
}

Status CudaCopyEngine::ensure_bounce() {
  if (bounce_ != nullptr) return ok();
  if (bounce_error_) return tl::unexpected(*bounce_error_);
  if (auto err = cudaHostAlloc(&bounce_, 2 * slab_bytes_, cudaHostAllocPortable); err != cudaSuccess) {
    bounce_ = nullptr;
    cudaGetLastError();
    bounce_error_ = cuda_error(err, fmt::format("cuda-staged: bounce buffer for pageable host memory: cudaHostAlloc({} "
                                                "bytes)",
                                                2 * slab_bytes_));
    spdlog::warn("{}", bounce_error_->message);
    return tl::unexpected(*bounce_error_);
  }
  spdlog::info("cuda-staged: copying pageable host memory through a {} MiB pinned bounce buffer",
               (2 * slab_bytes_) >> 20);
  return ok();
}

namespace {

// A host function on the DMA stream: copies between the bounce buffer and
// pageable memory. Makes no CUDA call (host functions must not).
void CUDART_CB run_host_legs(void* data) {
  for (const CopyDescriptor& leg : *static_cast<const std::vector<CopyDescriptor>*>(data))
    std::memcpy(reinterpret_cast<void*>(leg.dst), reinterpret_cast<const void*>(leg.src), leg.bytes);
}

}  // namespace

Status CudaCopyEngine::bounce_legs(InFlight& job, std::span<const CopyDescriptor> legs, bool to_host) {
  if (legs.empty()) return ok();
  // The slab's staging bytes [lo, hi) lie in one half; the bounce buffer
  // mirrors the staging buffer byte for byte (same offsets).
  const auto base = reinterpret_cast<std::uintptr_t>(staging_);
  const auto bounce = reinterpret_cast<std::uintptr_t>(bounce_);
  std::uint64_t lo = UINT64_MAX, hi = 0;
  auto host = std::make_unique<HostLegs>();
  host->legs.reserve(legs.size());
  for (const CopyDescriptor& leg : legs) {
    const std::uint64_t at = to_host ? leg.src : leg.dst;  // the staging side
    lo = std::min(lo, at);
    hi = std::max(hi, at + leg.bytes);
    host->legs.push_back(to_host ? CopyDescriptor{bounce + (at - base), leg.dst, leg.bytes}
                                 : CopyDescriptor{leg.src, bounce + (at - base), leg.bytes});
  }
  const cudaStream_t copies = copy_stream_->get();
  auto* staged = reinterpret_cast<void*>(lo);
  auto* mirrored = reinterpret_cast<void*>(bounce + (lo - base));
  void* legs_data = &host->legs;
  job.host_legs.push_back(std::move(host));
  if (to_host) {
    if (auto st = cuda_check(cudaMemcpyAsync(mirrored, staged, hi - lo, cudaMemcpyDeviceToHost, copies),
                             "cudaMemcpyAsync(staging -> bounce)");
        !st)
      return st;
    return cuda_check(cudaLaunchHostFunc(copies, run_host_legs, legs_data), "cudaLaunchHostFunc(bounce -> host)");
  }
  if (auto st = cuda_check(cudaLaunchHostFunc(copies, run_host_legs, legs_data), "cudaLaunchHostFunc(host -> bounce)");
      !st)
    return st;
  return cuda_check(cudaMemcpyAsync(staged, mirrored, hi - lo, cudaMemcpyHostToDevice, copies),
                    "cudaMemcpyAsync(bounce -> staging)");
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

Status CudaCopyEngine::copy_legs(InFlight& job, std::span<const CopyDescriptor> legs, bool to_host) {
  if (job.pageable) return bounce_legs(job, legs, to_host);
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
        return copy_legs(job, dma.subspan(slab.first_dma, slab.dma_count), staged.to_host);
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
        return copy_legs(job, dma.subspan(slab.first_dma, slab.dma_count), staged.to_host);
      });
  job.event_on_copy_stream = staged.to_host;
  return st;
}

}  // namespace kvb::detail
