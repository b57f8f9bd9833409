// RemoteIndex: which other worker holds which block (G4 as this worker
// sees it), fed by the peers' index events. Keys are (block shape, salted
// registry key), so tenants and layouts stay apart exactly as in the local
// registries. Event-loop thread only.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvb::daemon::cluster {

/// A peer worker, by its index in the cluster's member list.
using WorkerIndex = std::uint32_t;

struct BlockKey {
  std::uint64_t layout = 0;
  std::uint64_t key = 0;
  friend bool operator==(const BlockKey&, const BlockKey&) = default;
};

struct BlockKeyHash {
  std::size_t operator()(const BlockKey& k) const noexcept {
    return static_cast<std::size_t>(k.key ^ (k.layout * 0x9E3779B97F4A7C15ULL));
  }
};

class RemoteIndex {
 public:
  void add(WorkerIndex worker, BlockKey key);
  void remove(WorkerIndex worker, BlockKey key);
  /// Forgets everything `worker` held (it left, or a snapshot replaces it).
  void clear(WorkerIndex worker);

  /// The workers holding `key` (empty when none), in the order they told us.
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
  [[nodiscard]] std::size_t size() const noexcept { return holders_.size(); }

 private:
  std::unordered_map<BlockKey, std::vector<WorkerIndex>, BlockKeyHash> holders_;
  std::unordered_map<WorkerIndex, std::unordered_set<BlockKey, BlockKeyHash>> by_worker_;
};

}  // namespace kvb::daemon::cluster
