// PrefixTree (blockmgr/src, private): child counts against a plain model
// under random registrations and removals, with parents that come before,
// after or never, self-parents and cycles. A lost orphan list shows up as a
// wrong count when its parent comes back.
#include "prefix_tree.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>

namespace kvb::detail {
namespace {

TEST(PrefixTree, ChildCountsMatchAModelUnderRandomChurn) {
  constexpr std::uint32_t kCapacity = 16;
  constexpr std::uint64_t kHashes = 24;
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    PrefixTree tree(kCapacity);
    std::mt19937_64 rng(seed);
    std::map<std::uint32_t, std::uint64_t> hash_of;   // registered blocks
    std::map<std::uint64_t, std::uint32_t> block_of;  // and back
    std::map<std::uint32_t, std::optional<std::uint64_t>> parent_of;
    for (int step = 0; step < 400; ++step) {
      if (rng() % 2 == 0 && hash_of.size() < kCapacity) {
        std::uint32_t b;
        do b = static_cast<std::uint32_t>(rng() % kCapacity);
        while (hash_of.contains(b));
        const std::uint64_t hash = rng() % kHashes;
        if (block_of.contains(hash)) continue;  // one block per hash, as in a tier
        std::optional<std::uint64_t> parent;
        if (rng() % 3 != 0) parent = rng() % kHashes;
        std::uint32_t parent_block = kNil;
        if (parent && *parent != hash && block_of.contains(*parent)) parent_block = block_of[*parent];
        tree.add(b, SequenceHash{hash}, parent ? std::optional(SequenceHash{*parent}) : std::nullopt, parent_block);
        hash_of[b] = hash;
        block_of[hash] = b;
        parent_of[b] = parent;
      } else if (!hash_of.empty()) {
        auto it = std::next(hash_of.begin(), static_cast<std::ptrdiff_t>(rng() % hash_of.size()));
        const std::uint32_t b = it->first;
        const std::uint32_t parent = tree.remove(b);
        if (parent != kNil) {
          EXPECT_EQ(parent_of[b], hash_of[parent]) << "remove() names b's parent";
        }
        block_of.erase(it->second);
        hash_of.erase(it);
      }
      for (const auto& [b, hash] : hash_of) {
        std::uint32_t want = 0;
        for (const auto& [c, c_hash] : hash_of)
          if (c != b && parent_of[c] == hash) ++want;
        ASSERT_EQ(tree.children(b), want) << "seed " << seed << " step " << step << " block " << b;
      }
    }
  }
}

TEST(PrefixTree, ALateParentAdoptsItsOrphansAndARemovedParentLeavesThemWaiting) {
  PrefixTree tree(8);
  tree.add(0, SequenceHash{11}, SequenceHash{10}, kNil);  // parent 10 not here yet
  tree.add(1, SequenceHash{12}, SequenceHash{10}, kNil);
  tree.add(2, SequenceHash{10}, std::nullopt, kNil);  // adopts both
  EXPECT_EQ(tree.children(2), 2U);
  EXPECT_EQ(tree.remove(0), kNil) << "12 still stands on 10";
  EXPECT_EQ(tree.remove(1), 2U) << "10 just became a leaf";
  tree.add(3, SequenceHash{13}, SequenceHash{10}, 2);
  EXPECT_EQ(tree.remove(2), kNil) << "10 leaves with a child: 13 waits for another 10";
  tree.add(4, SequenceHash{10}, std::nullopt, kNil);
  EXPECT_EQ(tree.children(4), 1U);
  EXPECT_EQ(tree.remove(3), 4U);
}

}  // namespace
}  // namespace kvb::detail
