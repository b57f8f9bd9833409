#include "kvb/kernels/copy_engines.h"

#include <algorithm>

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

namespace {

std::string device_list(const std::vector<CudaDeviceInfo>& devices) {
  std::string out;
  for (const auto& d : devices) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} ({}, {} SMs, {} GiB)", d.ordinal, d.name, d.sm_count, d.total_memory >> 30);
  }
  return out;
}

}  // namespace

CopyEngines::CopyEngines(const CopyEngineOptions& options)
    : options_(options), host_(std::make_unique<HostCopyEngine>(options.host)) {
  if (!options_.use_cuda) {
    cuda_unavailable_ = "CUDA disabled by configuration";
    return;
  }
  auto listed = list_cuda_devices();
  if (!listed) {
    cuda_unavailable_ = listed.error().message;
    spdlog::warn("copy engines: no usable CUDA device ({}); using the host copy engine only", cuda_unavailable_);
    return;
  }
  for (auto& d : *listed) {
    if (options_.devices.empty() ||
        std::find(options_.devices.begin(), options_.devices.end(), d.ordinal) != options_.devices.end())
      devices_.push_back(std::move(d));
  }
  if (devices_.empty()) {
    cuda_unavailable_ = fmt::format("none of the {} CUDA devices is in `devices`", listed->size());
    spdlog::warn("copy engines: no usable CUDA device ({}); using the host copy engine only", cuda_unavailable_);
    return;
  }
  spdlog::info("copy engines: host ({} workers); CUDA devices {}; CUDA engines start when a copy needs them",
               host_->workers(), device_list(devices_));
}

CopyEngines::~CopyEngines() {
  std::lock_guard lock(mutex_);
  cuda_.clear();
}

const CudaDeviceInfo* CopyEngines::device(int ordinal) const noexcept {
  for (const auto& d : devices_)
    if (d.ordinal == ordinal) return &d;
  return nullptr;
}

const CudaDeviceInfo* CopyEngines::device_by_uuid(std::span<const std::uint8_t, 16> uuid) const noexcept {
  for (const auto& d : devices_)
    if (std::equal(uuid.begin(), uuid.end(), d.uuid.begin())) return &d;
  return nullptr;
}

Result<CopyEngine*> CopyEngines::get(CopyEngineKind kind, int device) {
  if (kind == CopyEngineKind::host) return host_.get();
  if (device < 0) device = options_.cuda_device;
  if (!has_cuda()) return fail(Errc::unavailable, "{} engine: {}", to_string(kind), cuda_unavailable_);
  const CudaDeviceInfo* info = this->device(device);
  if (info == nullptr)
    return fail(Errc::unavailable, "{} engine: CUDA device {} is not usable here (devices: {})", to_string(kind),
                device, device_list(devices_));
  std::lock_guard lock(mutex_);
  auto it = cuda_.find({device, kind});
  if (it == cuda_.end()) {
    // The first engine on a device creates its context (probe); a failure
    // is kept, so it is logged once and answered the same way afterwards.
    auto probed = probe_cuda_device(device);
    Result<std::unique_ptr<CopyEngine>> made =
        probed ? detail::make_cuda_copy_engine(kind, *probed, options_.cuda) : tl::unexpected(probed.error());
    if (made) {
      spdlog::info("copy engines: started {} on CUDA device {} ({})", to_string(kind), device, info->name);
    } else {
      spdlog::warn("copy engines: {} on CUDA device {} is not available: {}", to_string(kind), device,
                   made.error().message);
    }
    it = cuda_.emplace(std::pair{device, kind}, std::move(made)).first;
  }
  if (!it->second) return tl::unexpected(it->second.error());
  return it->second->get();
}

std::vector<std::string> CopyEngines::built() const {
  std::vector<std::string> out{"host"};
  std::lock_guard lock(mutex_);
  for (const auto& [key, engine] : cuda_)
    if (engine) out.push_back(fmt::format("{}@{}", to_string(key.second), key.first));
  return out;
}

std::span<const CopyEngineKind> engine_preference(MemoryKind src, MemoryKind dst) noexcept {
  static constexpr CopyEngineKind kHost[] = {CopyEngineKind::host};
  static constexpr CopyEngineKind kDeviceDevice[] = {CopyEngineKind::cuda_kernel};
  static constexpr CopyEngineKind kPinned[] = {CopyEngineKind::cuda_staged, CopyEngineKind::cuda_batch,
                                               CopyEngineKind::cuda_kernel};
  static constexpr CopyEngineKind kPageable[] = {CopyEngineKind::cuda_staged};
  const bool src_dev = src == MemoryKind::device;
  const bool dst_dev = dst == MemoryKind::device;
  if (!src_dev && !dst_dev) return kHost;
  if (src_dev && dst_dev) return kDeviceDevice;
  const MemoryKind host = src_dev ? dst : src;
  if (host == MemoryKind::host_pinned) return kPinned;
  return kPageable;
}

Result<CopyEngine*> select_engine(CopyEngines& engines, MemoryKind src, MemoryKind dst, int device) {
  const auto kinds = engine_preference(src, dst);
  if (kinds.front() == CopyEngineKind::host) return &engines.host();
  if (!engines.has_cuda())
    return fail(Errc::unavailable, "copy {} -> {} needs a CUDA engine: {}", to_string(src), to_string(dst),
                engines.cuda_unavailable());
  Error last{Errc::unavailable, "no engine"};
  for (const auto kind : kinds) {
    auto engine = engines.get(kind, device);
    if (engine) return engine;
    last = engine.error();
  }
  return fail(last.code, "copy {} -> {}: {}", to_string(src), to_string(dst), last.message);
}

}  // namespace kvb
