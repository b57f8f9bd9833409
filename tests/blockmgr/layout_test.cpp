#include <gtest/gtest.h>

#include "kvb/blockmgr/layout.h"

namespace kvb {
namespace {

LayoutSpec llama8b() {
  return {.num_layers = 32, .outer_dim = 2, .page_size = 16, .inner_dim = 1024, .dtype = DType::bf16};
}

TEST(LayoutSpec, Llama3_8BBlockIs2MiB) {
  const auto spec = llama8b();
  ASSERT_TRUE(spec.validate());
  EXPECT_EQ(spec.chunk_bytes(), 32U * 1024);
  EXPECT_EQ(spec.block_bytes(), 2U << 20);
}

struct BadField {
  const char* field;
  LayoutSpec spec;
};

class LayoutSpecInvalid : public ::testing::TestWithParam<BadField> {};

TEST_P(LayoutSpecInvalid, NamesTheBadField) {
  auto r = GetParam().spec.validate();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().message.find(GetParam().field), std::string::npos) << r.error().message;
}

LayoutSpec with(auto mutate) {
  auto s = llama8b();
  mutate(s);
  return s;
}

INSTANTIATE_TEST_SUITE_P(Fields, LayoutSpecInvalid,
                         ::testing::Values(BadField{"num_layers", with([](LayoutSpec& s) { s.num_layers = 0; })},
                                           BadField{"outer_dim", with([](LayoutSpec& s) { s.outer_dim = 3; })},
                                           BadField{"page_size", with([](LayoutSpec& s) { s.page_size = 0; })},
                                           BadField{"inner_dim", with([](LayoutSpec& s) { s.inner_dim = 0; })},
                                           BadField{"alignment", with([](LayoutSpec& s) { s.alignment = 48; })},
                                           BadField{"dtype",
                                                    with([](LayoutSpec& s) { s.dtype = static_cast<DType>(77); })}),
                         [](const ::testing::TestParamInfo<BadField>& info) { return std::string(info.param.field); });

TEST(Layout, FullyContiguousOffsets) {
  auto layout = Layout::make(llama8b(), LayoutKind::fully_contiguous, 4);
  ASSERT_TRUE(layout);
  EXPECT_EQ(layout->num_regions(), 1U);
  EXPECT_EQ(layout->region_bytes(), 4U * (2U << 20));
  const auto loc = layout->chunk(BlockId{2}, 3, 1);
  EXPECT_EQ(loc.region, 0U);
  EXPECT_EQ(loc.offset, 2U * (2U << 20) + (3U * 2 + 1) * 32768);
}

TEST(Layout, FullyContiguousPadsBlocksToAlignment) {
  LayoutSpec spec{
      .num_layers = 3, .outer_dim = 1, .page_size = 5, .inner_dim = 7, .dtype = DType::f16, .alignment = 64};
  auto layout = Layout::make(spec, LayoutKind::fully_contiguous, 3);
  ASSERT_TRUE(layout);
  EXPECT_EQ(spec.block_bytes(), 210U);
  EXPECT_EQ(layout->geometry().block_stride, 256U);
  EXPECT_EQ(layout->chunk(BlockId{1}, 2, 0).offset, 256U + 2 * 70);
}

TEST(Layout, LayerSeparateOrders) {
  auto bo = Layout::make(llama8b(), LayoutKind::layer_separate_block_outer, 10);
  auto ob = Layout::make(llama8b(), LayoutKind::layer_separate_outer_block, 10);
  ASSERT_TRUE(bo && ob);
  EXPECT_EQ(bo->num_regions(), 32U);
  EXPECT_EQ(bo->region_bytes(), 10U * 2 * 32768);
  EXPECT_EQ(bo->chunk(BlockId{4}, 7, 1).region, 7U);
  EXPECT_EQ(bo->chunk(BlockId{4}, 7, 1).offset, (4U * 2 + 1) * 32768);
  EXPECT_EQ(ob->chunk(BlockId{4}, 7, 1).offset, (1U * 10 + 4) * 32768);
}

TEST(Layout, RejectsZeroBlocksAndHugeTotals) {
  EXPECT_FALSE(Layout::make(llama8b(), LayoutKind::fully_contiguous, 0));
  auto huge = Layout::make(llama8b(), LayoutKind::fully_contiguous, 0xFFFFFFFFU);
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().message.find("64 TiB"), std::string::npos);
}

TEST(LayoutSpec, RejectsBlocksWhoseSizeOverflows64Bits) {
  LayoutSpec spec{
      .num_layers = 4096, .outer_dim = 2, .page_size = 0x80000000U, .inner_dim = 0x80000000U, .dtype = DType::f32};
  auto r = spec.validate();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("64 TiB"), std::string::npos) << r.error().message;
}

TEST(Layout, ParsesNames) {
  EXPECT_EQ(*parse_dtype("bf16"), DType::bf16);
  EXPECT_EQ(*parse_dtype("fp16"), DType::f16);
  EXPECT_FALSE(parse_dtype("int3"));
  EXPECT_EQ(*parse_layout_kind("layer_separate_outer_block"), LayoutKind::layer_separate_outer_block);
  EXPECT_FALSE(parse_layout_kind("diagonal"));
}

}  // namespace
}  // namespace kvb
