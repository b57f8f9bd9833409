#include "kvb/kernels/copy_engines.h"

#include <spdlog/spdlog.h>

#include "cuda_backend.h"

namespace kvb {

std::string_view to_string(CopyEngineKind kind) noexcept {
  switch (kind) {
    case CopyEngineKind::host: return "host";
    case CopyEngineKind::cuda_kernel: return "cuda-kernel";
    case CopyEngineKind::cuda_batch: return "cuda-batch";
    case CopyEngineKind::cuda_memcpy: return "cuda-memcpy";
    case CopyEngineKind::cuda_staged: return "cuda-staged";
  }
  return "unknown";
}

Result<CopyEngineKind> parse_copy_engine_kind(std::string_view name) {
  for (auto kind : {CopyEngineKind::host, CopyEngineKind::cuda_kernel, CopyEngineKind::cuda_batch,
                    CopyEngineKind::cuda_memcpy, CopyEngineKind::cuda_staged}) {
    if (name == to_string(kind)) return kind;
  }
  return fail(Errc::invalid_argument,
              "unknown copy engine '{}' (expected host, cuda-kernel, cuda-batch, cuda-memcpy or cuda-staged)", name);
}

CopyEngine* CopyEngines::get(CopyEngineKind kind) const noexcept {
  switch (kind) {
    case CopyEngineKind::host: return host.get();
    case CopyEngineKind::cuda_kernel: return cuda_kernel.get();
    case CopyEngineKind::cuda_batch: return cuda_batch.get();
    case CopyEngineKind::cuda_memcpy: return cuda_memcpy.get();
    case CopyEngineKind::cuda_staged: return cuda_staged.get();
  }
  return nullptr;
}

CopyEngines make_copy_engines(const CopyEngineOptions& options) {
  CopyEngines engines;
  engines.host = std::make_unique<HostCopyEngine>(options.host);
  if (!options.use_cuda) {
    engines.cuda_unavailable = "CUDA disabled by configuration";
    return engines;
  }
  auto device = probe_cuda_device(options.cuda_device);
  if (!device) {
    engines.cuda_unavailable = device.error().message;
    spdlog::warn("copy engines: no usable CUDA device ({}); using the host copy engine only", engines.cuda_unavailable);
    return engines;
  }
  auto memcpy_engine = detail::make_cuda_copy_engine(CopyEngineKind::cuda_memcpy, *device, options.cuda);
  auto kernel_engine = detail::make_cuda_copy_engine(CopyEngineKind::cuda_kernel, *device, options.cuda);
  if (!memcpy_engine || !kernel_engine) {
    engines.cuda_unavailable = (!memcpy_engine ? memcpy_engine : kernel_engine).error().message;
    spdlog::warn("copy engines: CUDA device {} ({}) is not usable ({}); using the host copy engine only",
                 device->ordinal, device->name, engines.cuda_unavailable);
    return engines;
  }
  engines.cuda_memcpy = std::move(*memcpy_engine);
  engines.cuda_kernel = std::move(*kernel_engine);
  auto batch_engine = detail::make_cuda_copy_engine(CopyEngineKind::cuda_batch, *device, options.cuda);
  if (batch_engine) engines.cuda_batch = std::move(*batch_engine);
  auto staged_engine = detail::make_cuda_copy_engine(CopyEngineKind::cuda_staged, *device, options.cuda);
  if (staged_engine) engines.cuda_staged = std::move(*staged_engine);
  engines.device = *device;
  spdlog::info("copy engines: host ({} workers) and CUDA on device {} ({}, {} SMs){}{}", engines.host->workers(),
               device->ordinal, device->name, device->sm_count,
               batch_engine ? "" : fmt::format("; no batch DMA: {}", batch_engine.error().message),
               staged_engine ? "" : fmt::format("; no staged engine: {}", staged_engine.error().message));
  return engines;
}

Result<CopyEngine*> select_engine(const CopyEngines& engines, MemoryKind src, MemoryKind dst) {
  const bool src_dev = src == MemoryKind::device;
  const bool dst_dev = dst == MemoryKind::device;
  if (!src_dev && !dst_dev) return engines.host.get();
  if (!engines.has_cuda())
    return fail(Errc::unavailable, "copy {} -> {} needs a CUDA engine: {}", to_string(src), to_string(dst),
                engines.cuda_unavailable);
  if ((!src_dev && src != MemoryKind::host_pinned) || (!dst_dev && dst != MemoryKind::host_pinned))
    return fail(Errc::unsupported, "copy {} -> {}: register the host memory as pinned first", to_string(src),
                to_string(dst));
  if (src_dev && dst_dev) return engines.cuda_kernel.get();
  if (engines.cuda_staged) return engines.cuda_staged.get();
  return engines.cuda_batch ? engines.cuda_batch.get() : engines.cuda_kernel.get();
}

}  // namespace kvb
