#include "kvb/blockmgr/sequence_hash.h"

#include <gtest/gtest.h>

#include <random>
#include <type_traits>
#include <unordered_set>

namespace kvb {
namespace {

static_assert(!std::is_convertible_v<std::uint64_t, SequenceHash>, "SequenceHash is a strong type");
static_assert(!std::is_convertible_v<SequenceHash, std::uint64_t>, "SequenceHash is a strong type");

std::vector<std::uint32_t> tokens(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint32_t> t(n);
  for (auto& x : t) x = rng() % 128000;
  return t;
}

TEST(SequenceHash, IsAChainOverFullBlocks) {
  const auto t = tokens(4 * 16 + 5, 1);
  auto hs = hash_token_blocks(t, 16, 0);
  ASSERT_TRUE(hs.has_value());
  ASSERT_EQ(hs->size(), 4U) << "the trailing partial block has no hash";
  SequenceHash parent = kSequenceRoot;
  for (std::size_t i = 0; i < 4; ++i) {
    parent = chain_hash(parent, std::span(t).subspan(i * 16, 16), 0);
    EXPECT_EQ((*hs)[i], parent) << "block " << i;
  }
  EXPECT_EQ(*hash_token_blocks(t, 16, 0), *hs) << "deterministic";
}

TEST(SequenceHash, AChangedTokenChangesItsBlockAndEveryLaterOne) {
  const auto a = tokens(64, 2);
  auto b = a;
  b[2 * 16 + 3] ^= 1;  // block 2
  const auto ha = *hash_token_blocks(a, 16, 0);
  const auto hb = *hash_token_blocks(b, 16, 0);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
  EXPECT_NE(ha[2], hb[2]);
  EXPECT_NE(ha[3], hb[3]) << "the chain carries the change forward";
}

TEST(SequenceHash, DifferentSaltsNeverMatch) {
  std::unordered_set<SequenceHash> salt1;
  std::vector<SequenceHash> salt2;
  for (std::uint32_t s = 0; s < 200; ++s) {
    const auto t = tokens(std::size_t{8} * 16, s);
    const auto h1 = *hash_token_blocks(t, 16, 1);
    const auto h2 = *hash_token_blocks(t, 16, 2);
    salt1.insert(h1.begin(), h1.end());
    salt2.insert(salt2.end(), h2.begin(), h2.end());
  }
  ASSERT_EQ(salt1.size(), 1600U);
  for (auto x : salt2) EXPECT_FALSE(salt1.contains(x)) << fmt::format("{}", x);
  // Salt 0 against salt 1 as well: the default tenant is not special.
  const auto t = tokens(16, 7);
  EXPECT_NE(chain_hash(kSequenceRoot, t, 0), chain_hash(kSequenceRoot, t, 1));
}

TEST(SequenceHash, ZeroPageSizeIsAnError) {
  const auto t = tokens(16, 3);
  auto r = hash_token_blocks(t, 0, 0);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_NE(r.error().message.find("page_size"), std::string::npos);
  EXPECT_TRUE(hash_token_blocks({}, 16, 0)->empty());
}

}  // namespace
}  // namespace kvb
