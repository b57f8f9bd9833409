// Pool: N blocks of one fully contiguous Layout over one MemoryRegion, with
// an O(1) free list and the per-block lifecycle state.
//
// Block state machine (docs/architecture.md, "Block state machine"):
//
//   free --allocate--> partial --mark_complete--> complete --mark_registered--> registered
//     ^                   |                          |                             |
//     +-------------------+--------- free -----------+-----------------------------+
//
// allocate() *resets* a block (its old contents are garbage) and hands it out
// as partial. Only a complete block can become registered. free() returns any
// non-free block to the free list; freeing a free block (double free), an id
// of another pool (foreign) or an id past the end is an error.
//
// A Pool knows nothing of hashes, leases or tiers: BlockManager does. Not
// thread-safe (BlockManager's one locking rule applies).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kvb/blockmgr/layout.h"
#include "kvb/blockmgr/memory_region.h"
#include "kvb/blockmgr/transfer_plan.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

enum class BlockState : std::uint8_t {
  free = 0,        // on the free list; contents are garbage
  partial = 1,     // allocated, being written; never matchable
  complete = 2,    // every byte written; not yet findable by hash
  registered = 3,  // complete and findable by its sequence hash
};
inline constexpr std::size_t kNumBlockStates = 4;

[[nodiscard]] std::string_view to_string(BlockState state) noexcept;

/// A block of a given pool: the pool id travels with the block id, so an id
/// from another pool is caught instead of silently naming a wrong block.
struct BlockRef {
  PoolId pool;
  BlockId block;
  friend constexpr bool operator==(BlockRef, BlockRef) noexcept = default;
};

class Pool {
 public:
  /// Checks that `layout` is fully contiguous and that `region` is at least
  /// layout.region_bytes() long with its base aligned to the layout's
  /// alignment. All blocks start free. Errors name the bad field and value.
  [[nodiscard]] static Result<std::unique_ptr<Pool>> make(PoolId id, Layout layout,
                                                          std::unique_ptr<MemoryRegion> region);
  /// A pool whose block bytes live outside memory (the disk tier's slots:
  /// the BlockStore holds them): states and free list only. space(),
  /// region() and block_data() must not be called (has_memory() is false).
  [[nodiscard]] static Result<std::unique_ptr<Pool>> make_without_memory(PoolId id, Layout layout);

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  [[nodiscard]] PoolId id() const noexcept { return id_; }
  [[nodiscard]] const Layout& layout() const noexcept { return layout_; }
  [[nodiscard]] const MemoryRegion& region() const noexcept { return *region_; }
  /// False for a pool made with make_without_memory().
  [[nodiscard]] bool has_memory() const noexcept { return region_ != nullptr; }
  /// The pool as a TransferPlan endpoint (layout + its one region).
  [[nodiscard]] BlockSpace space() const;
  /// Host address of a block's first byte (host memory kinds only).
  [[nodiscard]] std::byte* block_data(BlockId block) const noexcept;

  /// Number of blocks (the layout's num_blocks).
  [[nodiscard]] std::uint32_t capacity() const noexcept { return layout_.num_blocks(); }
  [[nodiscard]] std::uint32_t free_count() const noexcept { return static_cast<std::uint32_t>(free_list_.size()); }
  [[nodiscard]] std::uint32_t used_count() const noexcept { return capacity() - free_count(); }
  /// Blocks currently in `state`.
  [[nodiscard]] std::uint32_t count(BlockState state) const noexcept {
    return counts_[static_cast<std::size_t>(state)];
  }

  /// Takes a free block (free -> partial). O(1). out_of_capacity when none.
  [[nodiscard]] Result<BlockRef> allocate();
  /// Returns a non-free block to the free list. O(1). Errors: foreign pool,
  /// out of range, already free (double free).
  [[nodiscard]] Status free(BlockRef ref);
  /// partial -> complete. wrong_state from any other state.
  [[nodiscard]] Status mark_complete(BlockRef ref);
  /// complete -> registered. wrong_state from any other state (in particular
  /// a partial block can never be registered).
  [[nodiscard]] Status mark_registered(BlockRef ref);
  /// registered -> complete: the block stops being findable (its bytes were
  /// found bad); it is freed when its last user lets go. wrong_state otherwise.
  [[nodiscard]] Status mark_unregistered(BlockRef ref);
  /// Takes these free blocks at once (free -> partial), e.g. the slots a
  /// disk tier found in use at start. O(capacity). Errors: out of range,
  /// not free, listed twice (nothing is taken then).
  [[nodiscard]] Status claim(std::span<const BlockId> blocks);
  /// State of a block; errors for foreign or out-of-range refs.
  [[nodiscard]] Result<BlockState> state(BlockRef ref) const;
  /// ok iff `ref` names a block of this pool (any state).
  [[nodiscard]] Status check(BlockRef ref) const;

  /// Unchecked state of an in-range block of this pool (hot paths).
  [[nodiscard]] BlockState state_of(BlockId block) const noexcept { return states_[block.value()]; }

 private:
  Pool(PoolId id, Layout layout, std::unique_ptr<MemoryRegion> region);
  void set_state(BlockId block, BlockState state) noexcept;

  PoolId id_;
  Layout layout_;
  std::unique_ptr<MemoryRegion> region_;
  std::vector<BlockState> states_;
  std::vector<BlockId> free_list_;  // a stack: LIFO reuse keeps hot blocks in cache
  std::array<std::uint32_t, kNumBlockStates> counts_{};
};

}  // namespace kvb

template <>
struct fmt::formatter<kvb::BlockRef> : fmt::formatter<std::string_view> {
  auto format(kvb::BlockRef r, format_context& ctx) const {
    return fmt::format_to(ctx.out(), "pool {} block {}", r.pool.value(), r.block.value());
  }
};
