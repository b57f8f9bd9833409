// Small real pools over real HostRegions for the blockmgr tests.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "kvb/blockmgr/host_region.h"
#include "kvb/blockmgr/pool.h"
#include "kvb/blockmgr/sequence_hash.h"

namespace kvb::test {

/// 2 layers x K,V x 4 tokens x 8 bytes: 128-byte blocks.
inline LayoutSpec small_spec() {
  LayoutSpec spec;
  spec.num_layers = 2;
  spec.outer_dim = 2;
  spec.page_size = 4;
  spec.inner_dim = 8;
  spec.dtype = DType::u8;
  spec.alignment = 64;
  return spec;
}

/// A pool of `blocks` blocks over a fresh HostRegion. Fails the test on error.
inline std::unique_ptr<Pool> make_host_pool(std::uint32_t id, std::uint32_t blocks) {
  auto layout = Layout::make(small_spec(), LayoutKind::fully_contiguous, blocks);
  EXPECT_TRUE(layout.has_value()) << layout.error().to_string();
  auto region = HostRegion::create(layout->region_bytes());
  EXPECT_TRUE(region.has_value()) << region.error().to_string();
  auto pool = Pool::make(PoolId{id}, *layout, std::move(*region));
  EXPECT_TRUE(pool.has_value()) << pool.error().to_string();
  return std::move(*pool);
}

/// Hashes h(1), h(2), ... distinct and easy to read in failures.
inline SequenceHash h(std::uint64_t v) { return SequenceHash{v}; }

inline std::vector<SequenceHash> hashes(std::initializer_list<std::uint64_t> values) {
  std::vector<SequenceHash> out;
  for (auto v : values) out.push_back(SequenceHash{v});
  return out;
}

}  // namespace kvb::test
