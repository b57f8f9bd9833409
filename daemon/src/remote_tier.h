// RemoteTier: blocks other workers hold (G4), as the BlockService sees
// them. The cluster implements it (daemon/src/cluster/); a daemon without
// a cluster has none. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kvb/blockmgr/block_lease.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/blockmgr/transfer_plan.h"
#include "kvb/common/error.h"
#include "kvb/common/protocol_messages.h"

namespace kvb::daemon {

struct LayoutPool;

/// Remote blocks read in place instead of fetched (RemoteTier::borrow): a
/// same-host holder's pool, mapped here read-only, with the blocks pinned
/// there. A copy out of a source reads the block as it was pinned if it
/// ended before `valid_until`; the pins end with this object (or end()).
struct BorrowedBlocks {
  struct Source {
    BlockSpace space;                // the holder's pool over the mapping (host memory; read only)
    std::vector<std::size_t> items;  // which of the borrowed keys (indices into them)
    std::vector<BlockId> blocks;     // where each lies in `space`
  };
  std::vector<Source> sources;
  std::chrono::steady_clock::time_point valid_until;
  std::function<void()> release;  // ends the pins (and keeps the mappings until then)

  BorrowedBlocks() = default;
  BorrowedBlocks(const BorrowedBlocks&) = delete;
  BorrowedBlocks& operator=(const BorrowedBlocks&) = delete;
  ~BorrowedBlocks() { end(); }
  /// Releases the pins: nothing may read the sources after it.
  void end() {
    if (auto r = std::exchange(release, nullptr)) r();
  }
};

class RemoteTier {
 public:
  using FetchDone = std::function<void(Result<BlockLeases>)>;
  using BorrowDone = std::function<void(Result<std::unique_ptr<BorrowedBlocks>>)>;

  /// How many of `keys` (salted, in order, from the first) other workers
  /// hold, block by block (different blocks may live on different workers).
  [[nodiscard]] virtual std::uint32_t remote_prefix(const LayoutPool& pool,
                                                    std::span<const SequenceHash> keys) const = 0;
  /// Brings `keys` from the workers that hold them into fresh G2 blocks of
  /// `pool`, before `deadline`. `done` runs once, on the loop: one lease
  /// per key, in order, each block complete (and registered when fetched
  /// blocks are cached), or the error (not_found: <hash> when a holder
  /// evicted a block meanwhile; peer_lost: "peer lost: <worker>"; timeout).
  /// A failed fetch registers nothing. `by_transport`: never from a
  /// same-host mapping (a borrow of these keys was just refused busy).
  virtual void fetch(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
                     FetchDone done, bool by_transport = false) = 0;
  /// Whether `keys` can be borrowed (read in place by the copy into the
  /// engine) instead of fetched: blocks from same-host holders are not kept
  /// here (cluster.cache_same_host false, the default, or
  /// cluster.cache_fetched false) and every key has a holder on this host
  /// whose pool is mapped here with the same block stride.
  [[nodiscard]] virtual bool can_borrow(const LayoutPool& pool, std::span<const SequenceHash> keys) const = 0;
  /// Pins `keys` at their same-host holders. `done` runs once, on the loop:
  /// the sources (every key in exactly one), or the error (busy: a holder
  /// refused more pins, fetch instead; not_found, peer_lost, timeout as
  /// fetch). A failed borrow holds no pin.
  virtual void borrow(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
                      BorrowDone done) = 0;
  /// Straight into the engine (fetch_into): a destination a holder's write
  /// may still land in after the fetch stopped waiting. The caller keeps
  /// writes there out of the engine's memory while `landing()` is true.
  using Detach = std::function<void(std::byte* at, std::uint64_t bytes, std::function<bool()> landing)>;
  using IntoDone = std::function<void(Status)>;
  /// Whether `pool`'s blocks can be fetched straight into engine host
  /// memory (fetch_into): they are not kept here (cluster.cache_fetched
  /// false), cluster.fetch_into_engine, and bulk writes land here only
  /// where this worker exposed (the am_rendezvous protocol).
  [[nodiscard]] virtual bool can_fetch_into(const LayoutPool& pool) const = 0;
  /// fetch() without this worker's pool: the holders write each key's block
  /// (block_bytes, the pool's shape) straight to its destination, which
  /// takes bulk writes only while the fetch waits for that holder. `done`
  /// runs once, on the loop: ok once every byte is in (and matched the
  /// holder's sums), or the error as fetch()'s (unsupported: a holder that
  /// writes only by rma_put; fetch() instead). Destinations a write may
  /// still land in when a holder's part ends go to `detach` first. The
  /// returned abort stops every write now (the same way) and may run
  /// until `done` ran; `done` still runs.
  [[nodiscard]] virtual std::function<void()> fetch_into(LayoutPool& pool, std::vector<SequenceHash> keys,
                                                         std::vector<std::byte*> destinations,
                                                         std::chrono::steady_clock::time_point deadline, Detach detach,
                                                         IntoDone done) = 0;
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
