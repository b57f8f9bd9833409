// BlockLease: a move-only hold on one block of a BlockManager tier. While any
// lease on a block lives, the block is never evicted or reused. The lease
// ends in its destructor (or release()):
//   - on a registered block: when the last lease ends the block becomes
//     inactive and is handed to the tier's eviction policy (still matchable);
//   - on a partial or complete (unregistered) block, i.e. a write lease from
//     allocate(): the block is discarded back to free. A block whose copy
//     failed is therefore never registered and never served.
//
// BlockLeases: the leases of one sequence in prefix order. It ends them tail
// first, so that with "lru" a sequence's tail is evicted before its head.
//
// Leases must all end before their BlockManager is destroyed (the manager
// aborts with a message otherwise). Like the manager they are used from the
// manager's thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "kvb/blockmgr/pool.h"
#include "kvb/common/ids.h"

namespace kvb {

class BlockManager;

/// G1: device memory (engine KV caches or daemon device pools). G2: host.
/// G3: local disk (a BlockStore's slots).
enum class Tier : std::uint8_t { g1 = 0, g2 = 1, g3 = 2 };
inline constexpr std::size_t kNumTiers = 3;

[[nodiscard]] std::string_view to_string(Tier tier) noexcept;

class BlockLease {
 public:
  /// An empty lease (holds nothing).
  BlockLease() noexcept = default;
  BlockLease(BlockLease&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)), tier_(other.tier_), ref_(other.ref_) {}
  BlockLease& operator=(BlockLease&& other) noexcept {
    if (this != &other) {
      release();
      owner_ = std::exchange(other.owner_, nullptr);
      tier_ = other.tier_;
      ref_ = other.ref_;
    }
    return *this;
  }
  BlockLease(const BlockLease&) = delete;
  BlockLease& operator=(const BlockLease&) = delete;
  ~BlockLease() { release(); }

  /// Ends the lease now (see the header comment). Idempotent.
  void release() noexcept;

  /// Whether this lease holds a block.
  [[nodiscard]] explicit operator bool() const noexcept { return owner_ != nullptr; }
  [[nodiscard]] Tier tier() const noexcept { return tier_; }
  [[nodiscard]] BlockRef ref() const noexcept { return ref_; }
  [[nodiscard]] BlockId block() const noexcept { return ref_.block; }
  [[nodiscard]] PoolId pool() const noexcept { return ref_.pool; }
  /// The manager this lease belongs to (nullptr when empty).
  [[nodiscard]] const BlockManager* owner() const noexcept { return owner_; }

 private:
  friend class BlockManager;
  BlockLease(BlockManager* owner, Tier tier, BlockRef ref) noexcept : owner_(owner), tier_(tier), ref_(ref) {}

  BlockManager* owner_ = nullptr;
  Tier tier_ = Tier::g1;
  BlockRef ref_{};
};

/// Leases of one sequence in prefix order; ends them last to first.
class BlockLeases {
 public:
  BlockLeases() = default;
  BlockLeases(BlockLeases&&) noexcept = default;
  BlockLeases& operator=(BlockLeases&& other) noexcept {
    if (this != &other) {
      release();
      leases_ = std::move(other.leases_);
    }
    return *this;
  }
  ~BlockLeases() { release(); }

  /// Ends every lease, tail first. Idempotent.
  void release() noexcept {
    while (!leases_.empty()) leases_.pop_back();
  }
  void push_back(BlockLease lease) { leases_.push_back(std::move(lease)); }
  /// Moves all of `other`'s leases to the end of this one.
  void append(BlockLeases&& other);
  void reserve(std::size_t n) { leases_.reserve(n); }

  [[nodiscard]] std::size_t size() const noexcept { return leases_.size(); }
  [[nodiscard]] bool empty() const noexcept { return leases_.empty(); }
  [[nodiscard]] BlockLease& operator[](std::size_t i) noexcept { return leases_[i]; }
  [[nodiscard]] const BlockLease& operator[](std::size_t i) const noexcept { return leases_[i]; }
  [[nodiscard]] std::span<BlockLease> view() noexcept { return leases_; }
  [[nodiscard]] std::span<const BlockLease> view() const noexcept { return leases_; }
  [[nodiscard]] auto begin() noexcept { return leases_.begin(); }
  [[nodiscard]] auto end() noexcept { return leases_.end(); }
  [[nodiscard]] auto begin() const noexcept { return leases_.begin(); }
  [[nodiscard]] auto end() const noexcept { return leases_.end(); }

 private:
  std::vector<BlockLease> leases_;
};

}  // namespace kvb
