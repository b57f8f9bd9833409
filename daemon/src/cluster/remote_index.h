// RemoteIndex: which other worker holds which block (G4 as this worker
// sees it), fed by the peers' index events. Keys are (block shape, salted
// registry key), so tenants and layouts stay apart exactly as in the local
// registries. Event-loop thread only.
//
// Every index event of every peer lands here, so add() and remove() are on
// the path whose cost issue 14 bounds (docs/cluster.md, "index"): one open-
// addressing table (linear probing, backward-shift deletion, load <= 1/2)
// holding each block's first two holders inline, no allocation per event
// (node-based maps took three: ~480 ns per event against ~60 now). A block
// held by three or more workers keeps its holders in a side list.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvb::daemon::cluster {

/// A peer worker, by its index in the cluster's member list.
using WorkerIndex = std::uint32_t;

struct BlockKey {
  std::uint64_t layout = 0;
  std::uint64_t key = 0;
  friend bool operator==(const BlockKey&, const BlockKey&) = default;
};

class RemoteIndex {
 public:
  RemoteIndex();

  void add(WorkerIndex worker, BlockKey key);
  void remove(WorkerIndex worker, BlockKey key);
  /// Forgets everything `worker` held (it left, or a snapshot replaces it).
  /// O(blocks indexed).
  void clear(WorkerIndex worker);

  /// The workers holding `key` (empty when none), in the order they told us.
  /// Valid until the next add, remove or clear.
  [[nodiscard]] std::span<const WorkerIndex> holders(BlockKey key) const;
  /// How many of `keys` (layout `layout`), from the first, some worker holds
  /// (each block may come from a different worker).
  [[nodiscard]] std::uint32_t continuation(std::uint64_t layout, std::span<const std::uint64_t> keys) const;
  /// How many of `keys`, from the first, `worker` holds.
  [[nodiscard]] std::uint32_t prefix_of(WorkerIndex worker, std::uint64_t layout,
                                        std::span<const std::uint64_t> keys) const;
  /// Blocks `worker` holds.
  [[nodiscard]] std::size_t size_of(WorkerIndex worker) const;
  /// Distinct blocks held by any worker.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  static constexpr std::uint32_t kNoList = 0xFFFFFFFFU;
  struct Slot {
    BlockKey key;
    WorkerIndex inline_holders[2] = {0, 0};  // holders [0, count) when list == kNoList
    std::uint32_t list = kNoList;            // lists_[list] holds them all (count >= 3)
    std::uint32_t count = 0;                 // 0: an empty slot
  };
  [[nodiscard]] std::size_t home(BlockKey key) const noexcept;
  /// The slot of `key`, or of the empty slot where it would go.
  [[nodiscard]] std::size_t probe(BlockKey key) const noexcept;
  [[nodiscard]] std::span<const WorkerIndex> holders_of(const Slot& s) const noexcept;
  /// Adds `worker` to the holders of the occupied slot `s` (not one yet).
  void push_holder(Slot& s, WorkerIndex worker);
  /// Removes `worker` from the holders of slot `i`; empties the slot (and
  /// shifts its followers back) when it was the last. False when it was not
  /// a holder.
  bool drop_holder(std::size_t i, WorkerIndex worker);
  void erase_slot(std::size_t i);
  void grow();
  void count(WorkerIndex worker, int delta);

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
  std::vector<std::vector<WorkerIndex>> lists_;  // holders of blocks held three times or more
  std::vector<std::uint32_t> free_lists_;        // indexes of empty lists_
  std::vector<std::size_t> per_worker_;          // blocks held, by worker
};

}  // namespace kvb::daemon::cluster
