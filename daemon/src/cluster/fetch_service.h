// FetchService: moves blocks between workers. Serving: a peer's kvb.fetch
// names blocks by (block shape, salted key) and where in its pool to put
// them; the holder leases them (err(not_found: <hash>) if one was evicted
// meanwhile, before writing anything), writes them with RMA put or AM
// rendezvous (the per-transport rule of transport/), and answers
// `<id>:ok` only after every byte is complete at the requester. Requesting:
// fresh G2 blocks are allocated, each holder gets one request for its
// blocks, and the blocks become complete (registered, when fetched blocks
// are cached) only after every holder answered ok. Blocks of a request that
// got no answer (timeout, lost peer) stay out of use until the holder can
// no longer write into them. Same host (the cluster's transports include
// shared memory and the holder's pool memfd mapped here): the requester
// asks the holder to pin the blocks (kvb.pin: leased until kvb.unpin or
// the pin's expiry), copies them out of the mapping with memcpy on copy
// threads, checks the pin was still valid when the copy ended, and releases
// it. Event-loop thread only (the copy threads touch only the bytes).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "block_service.h"
#include "cluster/cluster_wire.h"
#include "cluster/members.h"
#include "cluster/remote_index.h"
#include "kvb/transport/am_manager.h"
#include "kvb/transport/block_transfer.h"
#include "remote_tier.h"

namespace kvb::daemon::cluster {

/// This worker's G2 pools as peers see them (registered with UCX once).
class LocalPools {
 public:
  struct Entry {
    LayoutPool* pool = nullptr;
    std::unique_ptr<transport::MemoryRegistration> registration;
    PoolInfo info;
  };
  /// Registers `pool`'s region with UCX and exposes it to bulk AM writes.
  [[nodiscard]] Result<const Entry*> add(transport::Context& context, transport::ActiveMessageManager& am,
                                         LayoutPool& pool);
  /// Withdraws one pool (reclaimed): unexposed, its UCX registration released.
  /// Returns whether it was registered.
  bool remove(std::uint64_t layout_key, transport::ActiveMessageManager& am);
  void remove_all(transport::ActiveMessageManager& am);
  [[nodiscard]] const Entry* find(std::uint64_t layout_key) const;
  [[nodiscard]] std::vector<PoolInfo> infos() const;

 private:
  std::map<std::uint64_t, Entry> entries_;
};

/// The block-shape key a pool is known by between workers (alignment aside).
[[nodiscard]] std::uint64_t block_shape_key(const LayoutSpec& spec) noexcept;

struct FetchStats {
  std::uint64_t requests = 0;   // fetches started (engine onboards that needed remote blocks)
  std::uint64_t blocks_in = 0;  // blocks fetched
  std::uint64_t failures = 0;
  std::uint64_t served = 0;                // peer requests answered ok
  std::uint64_t blocks_out = 0;            // blocks written to peers
  std::uint64_t not_found = 0;             // peer requests for blocks evicted meanwhile
  std::uint64_t quarantined = 0;           // blocks held back: no answer, or the holder was dropped alive
  std::uint64_t mapped_requests = 0;       // fetches (per holder) copied from a same-host mapping
  std::uint64_t mapped_blocks = 0;         // blocks copied that way
  std::uint64_t pins_served = 0;           // peers' pin requests answered
  std::uint64_t pins_expired = 0;          // pins released by their expiry, not by the peer
  std::uint64_t pins_refused = 0;          // pin requests over the per-peer bound (busy: it fetches by UCX)
  std::uint64_t pins_on_disk = 0;          // pin requests for blocks held on disk only (busy: it fetches by UCX)
  std::uint64_t disk_blocks_out = 0;       // blocks served from disk (G3 read into G2, then written to the peer)
  std::uint64_t sums_checked = 0;          // fetched blocks checked against their holder's sum (it keeps them)
  std::uint64_t sum_mismatches = 0;        // ... that did not match: dropped, the onboard ended not_found
  std::uint64_t direct_requests = 0;       // onboards (per holder) copied from a mapping straight into the engine
  std::uint64_t direct_blocks = 0;         // blocks copied that way (not in blocks_in: they never enter G2)
  std::uint64_t into_engine_requests = 0;  // fetches (per holder) written straight into an engine's memory
  std::uint64_t into_engine_blocks = 0;    // blocks fetched that way (not in blocks_in: they never enter G2)
  std::uint64_t late_writes_detached = 0;  // engine blocks detached from their landing window: a write may land late
};

class FetchService {
 public:
  /// Which fetched blocks stay registered here: from other hosts
  /// (`fetched`), and from same-host holders whose pool is mapped here
  /// (`fetched` and `same_host`; otherwise read in place when the engine's
  /// memory allows, see RemoteTier::can_borrow).
  struct Caching {
    bool fetched = true;
    bool same_host = false;
    bool into_engine = true;  // not `fetched`: straight into the engine's memory where it can be (fetch_into)
  };
  FetchService(boost::asio::io_context& io, transport::ActiveMessageManager& am, Members& members,
               const RemoteIndex& index, LocalPools& pools, transport::BulkProtocol protocol, Caching caching,
               std::size_t serve_concurrency, bool map_same_host);
  ~FetchService();
  FetchService(const FetchService&) = delete;
  FetchService& operator=(const FetchService&) = delete;
  /// kvb.fetch (a coroutine handler, at most serve_concurrency at once),
  /// kvb.pin and kvb.unpin.
  [[nodiscard]] Status register_handler();
  /// Releases every pin member `worker` holds here (it is gone).
  void drop_pins(WorkerIndex worker);

  /// RemoteTier::fetch.
  void fetch(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
             RemoteTier::FetchDone done, bool by_transport = false);
  /// RemoteTier::can_borrow and borrow.
  [[nodiscard]] bool can_borrow(const LayoutPool& pool, std::span<const SequenceHash> keys) const;
  void borrow(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
              RemoteTier::BorrowDone done);
  /// RemoteTier::can_fetch_into and fetch_into.
  [[nodiscard]] bool can_fetch_into(const LayoutPool& pool) const;
  [[nodiscard]] std::function<void()> fetch_into(LayoutPool& pool, std::vector<SequenceHash> keys,
                                                 std::vector<std::byte*> destinations,
                                                 std::chrono::steady_clock::time_point deadline,
                                                 RemoteTier::Detach detach, RemoteTier::IntoDone done);
  [[nodiscard]] const FetchStats& stats() const noexcept { return stats_; }

 private:
  struct Request;
  struct Borrow;
  struct Into;
  /// Blocks a same-host holder pinned for us: where each lies in its pool
  /// file, and until when the pin holds them (counted from before the ask).
  struct Pinned {
    PeerId peer{0};
    std::uint64_t pin_id = 0;
    std::vector<std::uint64_t> offsets;
    std::chrono::steady_clock::time_point valid_until;
    std::vector<BlockSum> sums;  // the holder's, when it keeps them (else empty)
  };
  /// Holders for `keys` (by index), staying with the previous block's
  /// holder while it has the next one; `mapped_only`: only holders whose
  /// pool of this shape is mapped here with our block stride.
  [[nodiscard]] Result<std::map<WorkerIndex, std::vector<std::size_t>>> pick_holders(std::uint64_t layout_key,
                                                                                     std::span<const SequenceHash> keys,
                                                                                     bool mapped_only) const;
  /// What a fetch and a borrow both start with: this worker's pool of the
  /// shape registered, the holders (pick_holders), time left.
  [[nodiscard]] Result<std::map<WorkerIndex, std::vector<std::size_t>>> start_groups(
      std::uint64_t layout_key, std::span<const SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
      bool mapped_only) const;
  [[nodiscard]] bool mappable(WorkerIndex holder, std::uint64_t layout_key) const;
  /// Asks `holder` to pin `keys` (kvb.pin) and checks its answer against
  /// `mapping`; the errors of the ask (busy: its pin table for us is full).
  boost::asio::awaitable<Result<Pinned>> pin_at(WorkerIndex holder, std::uint64_t layout_key,
                                                std::vector<std::uint64_t> keys,
                                                std::chrono::steady_clock::time_point deadline,
                                                const PeerPoolMapping& mapping, std::uint64_t block_bytes);
  void unpin_at(PeerId peer, std::uint64_t pin_id);
  boost::asio::awaitable<void> borrow_from(std::shared_ptr<Borrow> borrow, WorkerIndex holder,
                                           std::vector<std::size_t> items);
  void borrow_done(Borrow& borrow);
  boost::asio::awaitable<Result<transport::Bytes>> serve(transport::IncomingMessage message);
  boost::asio::awaitable<std::vector<Result<BlockLease>>> promote(BlockManager& manager, BlockLeases g3);
  /// The sum the holder took of a leased G2 block stored as `key`; unknown
  /// when it took none, unless `fresh` (just read from disk and checked
  /// there): then summed now.
  [[nodiscard]] static BlockSum sum_of(const LayoutPool& pool, const BlockLease& lease, std::uint64_t key, bool fresh);
  /// Where fetched block `j` (an index into its request's keys) lies now.
  using BytesOf = std::function<std::span<const std::byte>(std::size_t j)>;
  /// Checks the fetched blocks `items` (indices into `keys`) against the
  /// holder's sums (none: nothing to check), each read at bytes_of(j);
  /// not_found naming the first that differs.
  [[nodiscard]] Status check_sums(WorkerIndex holder, std::span<const SequenceHash> keys,
                                  std::span<const std::size_t> items, std::span<const BlockSum> sums,
                                  const BytesOf& bytes_of);
  /// check_sums with the sums of a kvb.fetch's ok answer (every byte is
  /// in: the holder answers only then); ok for an error or empty answer.
  [[nodiscard]] Status check_reply(WorkerIndex holder, const Result<transport::Bytes>& reply,
                                   std::span<const SequenceHash> keys, std::span<const std::size_t> items,
                                   const BytesOf& bytes_of);
  /// G2 blocks of `request`, for check_sums.
  [[nodiscard]] static BytesOf g2_bytes(const Request& request);
  /// Sends `message` to `holder` (which has an endpoint) as a kvb.fetch
  /// receiving writes, its timeout_ms the time left to `deadline`; the
  /// answer. `how` ends the debug line that says it was sent.
  boost::asio::awaitable<Result<transport::Bytes>> send_fetch(WorkerIndex holder, FetchRequest message,
                                                              std::chrono::steady_clock::time_point deadline,
                                                              const char* how);
  /// One block's bytes against its holder's sum (unknown: ok), wherever
  /// they are read: G2 after a fetch or mapped copy, or the mapping itself.
  [[nodiscard]] Status check_sum(WorkerIndex holder, SequenceHash key, std::span<const std::byte> bytes,
                                 const BlockSum& sum);
  boost::asio::awaitable<void> ask(std::shared_ptr<Request> request, WorkerIndex holder,
                                   std::vector<std::size_t> items);
  boost::asio::awaitable<void> ask_mapped(std::shared_ptr<Request> request, WorkerIndex holder,
                                          std::vector<std::size_t> items,
                                          std::shared_ptr<const PeerPoolMapping> mapping);
  Result<transport::Bytes> pin(transport::IncomingMessage& message);
  Result<transport::Bytes> unpin(transport::IncomingMessage& message);
  boost::asio::awaitable<void> ask_into(std::shared_ptr<Into> into, WorkerIndex holder, std::vector<std::size_t> items,
                                        std::shared_ptr<transport::ExposedRanges> exposure);
  /// Stops writes into `exposure` (every one of `into`'s when null): it is
  /// withdrawn, and what may still land in it is detached. Returns whether
  /// something was.
  bool settle(Into& into, const transport::ExposedRanges* exposure);
  /// One holder's part of `request` ended (error or not).
  void holder_done(Request& request, Result<transport::Bytes> reply);
  void finish(Request& request);
  void quarantine(BlockLeases leases, std::chrono::steady_clock::time_point until);

  boost::asio::io_context& io_;
  transport::ActiveMessageManager& am_;
  Members& members_;
  const RemoteIndex& index_;
  LocalPools& pools_;
  transport::BulkProtocol protocol_;
  Caching caching_;
  std::size_t serve_concurrency_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, BlockLeases>> quarantine_;
  boost::asio::steady_timer quarantine_timer_;
  bool map_same_host_;
  std::chrono::milliseconds inject_copy_delay_{0};   // KVB_INJECT_MAPPED_COPY_DELAY_MS (tests)
  std::chrono::milliseconds inject_serve_delay_{0};  // KVB_INJECT_SERVE_DELAY_MS (tests): before a serve writes
  struct Pin {
    BlockLeases leases;
    std::shared_ptr<boost::asio::steady_timer> expiry;
  };
  std::map<WorkerIndex, std::map<std::uint64_t, Pin>> pins_;  // served: by peer, by pin id
  std::uint64_t next_pin_ = 1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  FetchStats stats_;
  boost::asio::thread_pool copy_threads_{2};  // last: joined first
};

}  // namespace kvb::daemon::cluster
