// RemoteTier: blocks other workers hold (G4), as the BlockService sees
// them. The cluster implements it (daemon/src/cluster/); a daemon without
// a cluster has none. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kvb/blockmgr/block_lease.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/error.h"
#include "kvb/common/protocol_messages.h"

namespace kvb::daemon {

struct LayoutPool;

class RemoteTier {
 public:
  using FetchDone = std::function<void(Result<BlockLeases>)>;

  /// How many of `keys` (salted, in order, from the first) other workers
  /// hold, block by block (different blocks may live on different workers).
  [[nodiscard]] virtual std::uint32_t remote_prefix(const LayoutPool& pool,
                                                    std::span<const SequenceHash> keys) const = 0;
  /// Brings `keys` from the workers that hold them into fresh G2 blocks of
  /// `pool`, before `deadline`. `done` runs once, on the loop: one lease
  /// per key, in order, each block complete (and registered when fetched
  /// blocks are cached), or the error (not_found: <hash> when a holder
  /// evicted a block meanwhile; peer_lost: "peer lost: <worker>"; timeout).
  /// A failed fetch registers nothing.
  virtual void fetch(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
                     FetchDone done) = 0;
  /// This worker's name in its cluster.
  [[nodiscard]] virtual const std::string& worker_name() const noexcept = 0;
  /// For each joined member (not this worker), the longest prefix of
  /// `keys` (salted, in order) its index says it holds (locate).
  [[nodiscard]] virtual std::vector<proto::WorkerPrefix> member_prefixes(const LayoutPool& pool,
                                                                         std::span<const SequenceHash> keys) const = 0;

 protected:
  ~RemoteTier() = default;
};

}  // namespace kvb::daemon
