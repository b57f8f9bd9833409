#include "cuda_copy_engine.h"

#include <algorithm>
#include <exception>
#include <vector>

#include <spdlog/spdlog.h>

#include "gather_kernel.h"
#include "kvb/kernels/copy_descriptor.h"

namespace kvb::detail {

struct CudaCopyEngine::InFlight {
  TransferPlan plan;
  CopyDone done;
  std::vector<CopyDescriptor> descriptors;  // kernel mode: host copy, alive until complete
  CudaEvent event;

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

}  // namespace

CudaCopyEngine::CudaCopyEngine(CopyEngineKind mode, const CudaDeviceInfo& device)
    : mode_(mode), device_(device), stream_((cudaSetDevice(device.ordinal), CudaStream())) {
  completion_ = std::thread([this] { completion_loop(); });
}

CudaCopyEngine::~CudaCopyEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  completion_.join();
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

Status CudaCopyEngine::enqueue(InFlight& job) {
  if (auto st = cuda_check(cudaSetDevice(device_.ordinal), "cudaSetDevice"); !st) return st;
  const cudaStream_t stream = stream_.get();
  const TransferPlan& plan = job.plan;
  switch (mode_) {
    case CopyEngineKind::cuda_kernel: {
      job.descriptors = make_descriptors(plan);
      const std::size_t bytes = job.descriptors.size() * sizeof(CopyDescriptor);
      void* on_device = nullptr;
      if (auto st = cuda_check(cudaMallocAsync(&on_device, bytes, stream), "cudaMallocAsync(descriptors)"); !st)
        return st;
      auto st = cuda_check(cudaMemcpyAsync(on_device, job.descriptors.data(), bytes, cudaMemcpyHostToDevice, stream),
                           "cudaMemcpyAsync(descriptors)");
      if (st) {
        const auto count = static_cast<std::uint32_t>(job.descriptors.size());
        const unsigned grid = std::min<unsigned>(count, static_cast<unsigned>(device_.sm_count) * 8U);
        st = cuda_check(launch_gather(static_cast<const CopyDescriptor*>(on_device), count, grid, stream),
                        "gather kernel launch");
      }
      // Stream-ordered: freed after the kernel has run.
      const auto freed = cudaFreeAsync(on_device, stream);
      if (!st) return st;
      if (auto f = cuda_check(freed, "cudaFreeAsync(descriptors)"); !f) return f;
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
  return cuda_check(cudaEventRecord(job.event.get(), stream), "cudaEventRecord");
}

void CudaCopyEngine::completion_loop() {
  cudaSetDevice(device_.ordinal);
  for (;;) {
    std::unique_ptr<InFlight> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !in_flight_.empty(); });
      if (in_flight_.empty()) return;  // stopping and drained
      job = std::move(in_flight_.front());
      in_flight_.pop_front();
    }
    // Events complete in stream order, so waiting for the oldest first
    // never delays a later one. Sleeps in the driver (blocking sync).
    const auto err = cudaEventSynchronize(job->event.get());
    finish(job->done, cuda_check(err, fmt::format("{} copy of {} bytes", name(), job->plan.total_bytes())));
  }
}

}  // namespace kvb::detail
