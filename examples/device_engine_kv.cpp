#include "device_engine_kv.h"

#include "kvb/kernels/cuda_regions.h"
#include "kvb/kernels/device_memory.h"

namespace kvb::example {
namespace {

constexpr std::uint64_t kRegionAlign = 4096;

Result<std::unique_ptr<MemoryRegion>> allocate(const DeviceEngineKvOptions& o, std::uint64_t bytes) {
  if (o.handles == client::DeviceHandles::cuda_vmm) {
    auto r = ShareableDeviceRegion::allocate(o.device, bytes);
    if (!r) return tl::unexpected(r.error());
    return std::unique_ptr<MemoryRegion>(std::move(*r));
  }
  auto r = DeviceRegion::allocate(o.device, bytes);
  if (!r) return tl::unexpected(r.error());
  return std::unique_ptr<MemoryRegion>(std::move(*r));
}

}  // namespace

Result<DeviceEngineKv> DeviceEngineKv::create(const client::BlockShape& shape, client::WireLayoutKind kind,
                                              std::uint32_t num_blocks, const DeviceEngineKvOptions& options) {
  auto mirror = client::KvRegion::create(shape, kind, num_blocks);
  if (!mirror) return tl::unexpected(mirror.error());
  DeviceEngineKv kv(std::move(*mirror));
  kv.options_ = options;
  const std::uint32_t regions = kv.mirror_.num_regions();
  const std::uint64_t bytes = kv.mirror_.region_bytes();
  const std::uint64_t stride = (bytes + kRegionAlign - 1) / kRegionAlign * kRegionAlign;
  if (options.one_allocation) {
    auto a = allocate(options, stride * regions);
    if (!a) return tl::unexpected(a.error());
    for (std::uint32_t r = 0; r < regions; ++r) kv.regions_.push_back((*a)->data() + r * stride);
    kv.allocations_.push_back(std::move(*a));
  } else {
    for (std::uint32_t r = 0; r < regions; ++r) {
      auto a = allocate(options, bytes);
      if (!a) return tl::unexpected(a.error());
      kv.regions_.push_back((*a)->data());
      kv.allocations_.push_back(std::move(*a));
    }
  }
  return kv;
}

client::DeviceKvSpec DeviceEngineKv::spec() const {
  client::DeviceKvSpec s;
  s.shape = mirror_.shape();
  s.kind = mirror_.kind();
  s.num_blocks = mirror_.num_blocks();
  s.handles = options_.handles;
  for (auto* p : regions_) s.region_ptrs.push_back(reinterpret_cast<std::uint64_t>(p));
  return s;
}

Status DeviceEngineKv::upload() {
  for (std::uint32_t r = 0; r < regions_.size(); ++r)
    if (auto st = cuda_copy_sync(options_.device, regions_[r], mirror_.region_data(r), mirror_.region_bytes()); !st)
      return st;
  return ok();
}

Status DeviceEngineKv::download() {
  for (std::uint32_t r = 0; r < regions_.size(); ++r)
    if (auto st = cuda_copy_sync(options_.device, mirror_.region_data(r), regions_[r], mirror_.region_bytes()); !st)
      return st;
  return ok();
}

std::uint64_t DeviceEngineKv::device_bytes() const noexcept {
  std::uint64_t total = 0;
  for (const auto& a : allocations_) total += a->size();
  return total;
}

}  // namespace kvb::example
