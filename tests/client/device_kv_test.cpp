// The client's device KV export on every machine: planning the register_kv
// request from the allocations the driver reports (dedupe, offsets, one
// device, one handle kind, regions inside their allocations), and a clear
// `unavailable` where no CUDA driver is loaded.
#include <gtest/gtest.h>

#include "kvb/client/device_kv.h"

namespace kvb::client {
namespace {

DeviceKvSpec spec_of(WireLayoutKind kind, std::vector<std::uint64_t> ptrs) {
  DeviceKvSpec s;
  s.shape = BlockShape{2, 2, 16, 64, 2, 256};  // 2 KiB chunks, 8 KiB blocks
  s.kind = kind;
  s.num_blocks = 4;
  s.region_ptrs = std::move(ptrs);
  return s;
}

DeviceAllocation allocation(std::uint64_t base, std::uint64_t bytes, bool vmm = false, std::uint8_t gpu = 1) {
  return DeviceAllocation{base, bytes, vmm, std::vector<std::byte>(16, std::byte{gpu})};
}

TEST(DeviceKvPlan, RegionsInOneAllocationShareItWithTheirOffsets) {
  // Two layers packed in one 1 MiB cudaMalloc allocation at 0x10000.
  const auto spec = spec_of(WireLayoutKind::layer_separate_block_outer, {0x10000 + 4096, 0x10000 + 65536});
  const std::vector<DeviceAllocation> found{allocation(0x10000, 1 << 20), allocation(0x10000, 1 << 20)};
  proto::RegisterKvRequest r;
  std::vector<std::uint64_t> bases;
  ASSERT_TRUE(plan_device_request(spec, found, r, bases));
  EXPECT_EQ(r.memory, proto::MemoryHandle::cuda_ipc);
  EXPECT_EQ(r.layout_kind, WireLayoutKind::layer_separate_block_outer);
  EXPECT_EQ(r.num_blocks, 4U);
  EXPECT_EQ(r.region_bytes, *KvRegion::region_bytes_for(spec.shape, spec.kind, 4));
  EXPECT_EQ(r.region_bytes, 4U * 2 * 2048);
  EXPECT_EQ(bases, std::vector<std::uint64_t>{0x10000});
  EXPECT_EQ(r.allocation_bytes, std::vector<std::uint64_t>{1 << 20});
  ASSERT_EQ(r.regions.size(), 2U);
  EXPECT_EQ(r.regions[0], (proto::DeviceRegionRef{0, 4096}));
  EXPECT_EQ(r.regions[1], (proto::DeviceRegionRef{0, 65536}));
  EXPECT_EQ(r.device_uuid, std::vector<std::byte>(16, std::byte{1}));
}

TEST(DeviceKvPlan, OneAllocationPerRegionAndVmm) {
  const auto spec = spec_of(WireLayoutKind::layer_separate_outer_block, {0x200000, 0x400000});
  const std::vector<DeviceAllocation> found{allocation(0x200000, 2 << 20, true), allocation(0x400000, 2 << 20, true)};
  proto::RegisterKvRequest r;
  std::vector<std::uint64_t> bases;
  ASSERT_TRUE(plan_device_request(spec, found, r, bases));
  EXPECT_EQ(r.memory, proto::MemoryHandle::cuda_vmm);
  EXPECT_EQ(bases, (std::vector<std::uint64_t>{0x200000, 0x400000}));
  EXPECT_EQ(r.regions[1], (proto::DeviceRegionRef{1, 0}));
}

TEST(DeviceKvPlan, RefusesWhatTheDaemonCouldNotMap) {
  proto::RegisterKvRequest r;
  std::vector<std::uint64_t> bases;
  const auto error = [&](const DeviceKvSpec& s, const std::vector<DeviceAllocation>& f) {
    auto st = plan_device_request(s, f, r, bases);
    EXPECT_FALSE(st);
    return st ? std::string("ok") : st.error().message;
  };
  const auto two = spec_of(WireLayoutKind::layer_separate_block_outer, {0x10000, 0x90000});
  // On two GPUs.
  EXPECT_NE(error(two, {allocation(0x10000, 1 << 20), allocation(0x90000, 1 << 20, false, 2)}).find("another GPU"),
            std::string::npos);
  // cudaMalloc and cuMemCreate mixed.
  EXPECT_NE(error(two, {allocation(0x10000, 1 << 20), allocation(0x90000, 1 << 20, true)})
                .find("one registration uses one kind"),
            std::string::npos);
  // A region running past its allocation.
  EXPECT_NE(error(two, {allocation(0x10000, 1 << 20), allocation(0x90000, 4096)}).find("ends past its allocation"),
            std::string::npos);
  // The wrong number of pointers.
  EXPECT_NE(error(spec_of(WireLayoutKind::layer_separate_block_outer, {0x10000}), {allocation(0x10000, 1 << 20)})
                .find("needs 2 region pointers"),
            std::string::npos);
  // A forced handle kind the allocations cannot give.
  auto ipc = two;
  ipc.handles = DeviceHandles::cuda_ipc;
  EXPECT_NE(error(ipc, {allocation(0x10000, 1 << 20, true), allocation(0x90000, 1 << 20, true)}).find("use cuda_vmm"),
            std::string::npos);
  auto vmm = two;
  vmm.handles = DeviceHandles::cuda_vmm;
  EXPECT_NE(error(vmm, {allocation(0x10000, 1 << 20), allocation(0x90000, 1 << 20)}).find("use cuda_ipc"),
            std::string::npos);
  // region_bytes below the layout's need.
  auto small = two;
  small.region_bytes = 100;
  EXPECT_NE(error(small, {allocation(0x10000, 1 << 20), allocation(0x90000, 1 << 20)}).find("is under the"),
            std::string::npos);
}

TEST(DeviceKvExport, WithoutACudaDriverItSaysSo) {
  auto spec = spec_of(WireLayoutKind::layer_separate_block_outer, {0x10000, 0x90000});
  auto kv = DeviceKv::export_regions(spec);
  if (kv) GTEST_SKIP() << "a CUDA driver and this memory exist here";
  // Either no driver (unavailable, with dlopen's reason), or a driver that
  // says these addresses are not device memory (invalid_argument).
  if (kv.error().code == Errc::unavailable) {
    EXPECT_NE(kv.error().message.find("CUDA driver"), std::string::npos) << kv.error().message;
  } else {
    EXPECT_EQ(kv.error().code, Errc::invalid_argument) << kv.error().message;
    EXPECT_NE(kv.error().message.find("is not CUDA device memory"), std::string::npos) << kv.error().message;
  }
}

}  // namespace
}  // namespace kvb::client
