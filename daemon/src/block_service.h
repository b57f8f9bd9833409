// BlockService: the daemon's block operations over blockmgr's BlockManager
// and the copy engines: one host (G2) pool per distinct block layout (pinned
// for CUDA when the daemon has a GPU), engine KV caches mapped from memfds or
// imported from device memory (device_kv.h), lookup / offload / onboard
// (whole, or layer by layer with progress).
//
// Event-loop thread only (BlockManager's one locking rule). Every plan runs
// on the engine the selection rule picks for its memory (select_engine:
// host, or a CUDA engine of the engine KV's device, started on first use);
// every completion comes back the same way, through async_copy's post to
// the loop, so the loop never blocks on a copy. Tenants: every client hash
// is mixed with the session's tenant salt before it reaches the registry, so
// tenants only match each other's blocks when they share a salt.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "disk_tier.h"
#include "engine_prefault.h"
#include "engine_region.h"
#include "host_pool_region.h"
#include "kvb/blockmgr/block_manager.h"
#include "kvb/blockmgr/host_region.h"
#include "kvb/blockmgr/layout.h"
#include "kvb/common/protocol.h"
#include "kvb/common/unique_fd.h"
#include "kvb/kernels/copy_engines.h"
#include "landing_window.h"
#include "pool_jobs.h"
#include "pool_prefault.h"
#include "remote_tier.h"

namespace kvb::daemon {

/// The registry key of a client hash for a session whose tenant key
/// (TenantKeys::session_key) is `tenant_key`. The `salt` parameters of
/// BlockService below are that tenant key.
[[nodiscard]] SequenceHash salted_key(std::uint64_t client_hash, std::uint64_t tenant_key) noexcept;

/// One distinct block layout: its host pool's BlockManager, and its disk
/// tier's store when G3 is on (declared first: it outlives the manager).
struct LayoutPool {
  LayoutSpec spec;
  /// The pool's number (G2 PoolId; never reused after a reclaim).
  std::uint32_t number = 0;
  /// Sessions attached to this shape: from their hello to their end
  /// (BlockService::attach_layout / detach_layout).
  std::uint32_t sessions = 0;
  /// Since when no session is attached (its creation, or the last detach):
  /// a reclaim takes the pool idle longest.
  std::chrono::steady_clock::time_point idle_since{};
  std::unique_ptr<storage::SlotStore> store;
  std::unique_ptr<BlockManager> manager;
  /// With integrity.check_host_blocks: per G2 block, the XXH3-64 of its
  /// bytes and the hash it was registered under when they were summed.
  struct HostSum {
    SequenceHash hash{};
    std::uint64_t sum = 0;
    bool set = false;
  };
  std::vector<HostSum> host_sums;
  /// Populates the host pool's pages in the background (option prefault);
  /// null when off. Declared last: stopped before the pool memory goes.
  std::unique_ptr<PoolPrefault> prefault;
};

/// The host pools' prefault over every pool (the "g2_prefault" stats object).
struct PrefaultTotals {
  bool enabled = false;
  std::uint64_t pool_bytes = 0;       // bytes of every host pool
  std::uint64_t populated_bytes = 0;  // of those, populated by the prefault so far
  std::uint32_t pools_ready = 0;      // pools whose prefault finished every byte
  /// Engines' memfd regions (EnginePrefault): bytes registered, walked so
  /// far, and of those resident (written by the engine) and mapped.
  std::uint64_t engine_bytes = 0;
  std::uint64_t engine_done_bytes = 0;
  std::uint64_t engine_mapped_bytes = 0;
};

/// The G2 -> engine integrity check (integrity.check_host_blocks). Monotonic.
struct HostIntegrity {
  bool enabled = false;
  std::uint64_t checked = 0;    // host blocks verified before a copy to an engine
  std::uint64_t unchecked = 0;  // host blocks copied without a sum to check (none recorded)
  std::uint64_t failures = 0;   // host blocks whose bytes no longer matched: dropped
  std::uint64_t summed = 0;     // host blocks summed as they entered G2
};
/// The "integrity" object of the stats reply.
[[nodiscard]] nlohmann::ordered_json integrity_json(const HostIntegrity& integrity);

/// An engine's KV cache, mapped into the daemon: memfd regions (host
/// memory), or windows of device allocations imported from the engine
/// (device_kv.h). Shared by the copies that use it, so an unregister or a
/// session end never unmaps memory under a running copy.
struct EngineKv {
  Layout layout;
  std::vector<std::unique_ptr<MemoryRegion>> regions;  // one per layout region
  int device = -1;                                     // CUDA ordinal of device memory, else -1
  /// The host region seen again, for fetches straight into it (made at the
  /// first; destroyed before the regions).
  std::unique_ptr<LandingWindow> window;
  [[nodiscard]] BlockSpace space() const;
};

/// Cancellation flag of one request, shared with its copy.
struct OpControl {
  bool cancelled = false;   // the request ended (answered, timed out, session gone)
  std::uint64_t token = 0;  // the session's token of the request
  /// Run once when the request ends before its work did, before anything
  /// is sent to the engine (a fetch straight into the engine's memory
  /// stops every write into it there).
  std::function<void()> on_cancel;
  void cancel() {
    cancelled = true;
    if (auto f = std::exchange(on_cancel, nullptr)) f();
  }
};

struct LookupResult {
  std::uint32_t matched = 0;
  std::uint32_t g1_blocks = 0;
  std::uint32_t g2_blocks = 0;
  std::uint32_t g3_blocks = 0;
  BlockLeases leases;  // one per matched block, prefix order
  /// Blocks after the local prefix that other workers hold (G4; not leased).
  std::uint32_t g4_blocks = 0;
  /// Blocks after the first G4 block that this worker holds (the prefix
  /// alternates between workers; not leased, not counted as used yet: the
  /// onboard leases and counts them).
  std::uint32_t local_after_remote = 0;
  /// The whole prefix: local, then remote and local blocks in any order.
  [[nodiscard]] std::uint32_t prefix() const noexcept { return matched + g4_blocks + local_after_remote; }
};

/// Bytes moved, for metrics. Monotonic.
struct MovedBytes {
  std::uint64_t offload = 0;  // engine -> G2
  std::uint64_t onboard = 0;  // G2 -> engine
};

struct BlockServiceOptions {
  std::uint64_t host_pool_bytes = 256ULL << 20;  // per distinct block layout
  std::uint32_t max_layouts = 4;
  /// Blocks (and their metadata) one host pool may have; a block shape that
  /// needs more is refused.
  std::uint64_t max_pool_blocks = std::uint64_t{1} << 20;
  /// Pins each new host pool (empty: pools stay pageable, e.g. no GPU). A
  /// failure is logged once; that pool stays pageable.
  HostPinning pin;
  /// Picks the engine of a plan; empty: select_engine() over the
  /// CopyEngines (tests put a fault-injecting engine here).
  std::function<Result<CopyEngine*>(MemoryKind src, MemoryKind dst, int device)> select;
  /// The disk tier (G3); an empty path: none.
  DiskSettings disk;
  /// integrity.check_host_blocks: sum host blocks as they enter G2 and check
  /// them before every copy to an engine.
  bool check_host_blocks = false;
  /// The host pools' eviction policy (make_eviction_policy name).
  std::string eviction_policy = "prefix";
  /// Populate each new host pool's pages in the background (PoolPrefault).
  bool prefault = true;
  /// Map each registered memfd engine region's resident pages in the
  /// background (EnginePrefault).
  bool prefault_engine_regions = true;
};

/// Per-layer progress of an onboard: `announce` runs on the loop for each
/// group of `layers_per_group` layers, in layer order, once every engine
/// block holds those layers. layers_per_group 0: one group, no announce.
struct OnboardProgress {
  std::uint32_t layers_per_group = 0;
  std::function<void(LayerRange)> announce;
};

class BlockService {
 public:
  using Done = std::function<void(Status)>;
  /// What happens to the pools, for the cluster (docs/cluster.md).
  struct Observer {
    std::function<void(LayoutPool&)> pool_created;
    /// The pool is about to be reclaimed (its blocks still registered).
    std::function<void(LayoutPool&)> pool_retiring;
    /// A hash became registered in (stored) or left a tier of the pool.
    std::function<void(const LayoutPool&, Tier, SequenceHash, bool stored)> registry_changed;
  };

  BlockService(boost::asio::io_context& io, CopyEngines& engines, BlockServiceOptions options);
  /// Stops the pools' prefault threads, then waits (running the loop) for
  /// disk write-backs and reads in flight.
  ~BlockService();

  /// At start, when disk.path is set: checks the directory and reopens the
  /// slot file of every block shape found there (their pools exist from now
  /// on, holding the recovered blocks in G3). Errors: the directory is
  /// unusable and disk.required, or a slot file cannot be reopened.
  [[nodiscard]] Status start_disk();

  /// Attaches a session to the pool of `layout`'s block shape, created on
  /// first use (a host_pool_bytes memfd). When max_layouts pools exist, the
  /// pool idle longest among the reclaimable ones (reclaimable()) is
  /// reclaimed first: its blocks leave the registry, its prefault stops, its
  /// memory is unpinned and unmapped, its disk slot file is closed (its
  /// blocks stay on disk for a later pool of that shape). Each success must
  /// be matched by one detach_layout. Errors: invalid layout (names the
  /// field), a shape whose pool would have more than max_pool_blocks blocks
  /// (invalid_argument: the per-block metadata must stay bounded),
  /// out_of_capacity (max_layouts shapes and none reclaimable: the message
  /// says how many are attached by sessions, how many are busy), io_error
  /// (memfd).
  [[nodiscard]] Result<LayoutPool*> attach_layout(const proto::WireLayout& layout);
  using Attached = std::function<void(Result<LayoutPool*>)>;
  /// attach_layout for sessions: a pool that must be created is built on
  /// the pool thread, so the loop never waits for it (a pool of 1 M blocks
  /// takes tens of ms); `done` runs on the loop, at once when the shape has
  /// a pool. Hellos of a shape whose pool is being built wait for that
  /// build. Same errors; each success must be matched by one detach_layout.
  void attach_layout_async(const proto::WireLayout& layout, Attached done);
  /// A session attached by attach_layout ended. The pool stays (its blocks
  /// serve the next session of its shape) until a new shape needs its slot.
  void detach_layout(LayoutPool& pool) noexcept;
  /// Whether `pool` may be reclaimed now: no session attached, no lease of
  /// any of its blocks (pins, copies, onboards, fetches), no block being
  /// written, no disk transfer in flight, and no cluster (peers hold its
  /// UCX registration and index its blocks: not reclaimed while a cluster
  /// is on).
  [[nodiscard]] bool reclaimable(const LayoutPool& pool) const;
  /// Pools reclaimed since start (stats "layouts_reclaimed").
  [[nodiscard]] std::uint64_t layouts_reclaimed() const noexcept { return layouts_reclaimed_; }
  /// Reclaimed pools whose memory is still being returned (stats "layouts_retiring").
  [[nodiscard]] std::uint32_t layouts_retiring() const noexcept { return reaper_.pending(); }

  /// Maps the engine's memfd regions, or imports its device allocations
  /// (device_kv.h). Errors: fd count or sizes do not match the layout
  /// (invalid_argument naming the field), mmap (io_error), device memory
  /// without a GPU or on a device this daemon does not serve (unavailable).
  [[nodiscard]] Result<std::shared_ptr<EngineKv>> register_kv(const LayoutPool& pool,
                                                              const proto::RegisterKvRequest& request,
                                                              std::vector<UniqueFd> fds);

  /// Longest registered prefix of the salted hashes; leases every matched block.
  [[nodiscard]] LookupResult lookup(LayoutPool& pool, std::uint64_t salt, std::span<const std::uint64_t> hashes);
  /// For a router: the longest prefix of the salted hashes this daemon holds
  /// (any local tier; first entry, named by its cluster worker name, "" when
  /// it is not in a cluster), then each joined member's, from the cluster
  /// index. Leases and counts nothing.
  [[nodiscard]] std::vector<proto::WorkerPrefix> locate(const LayoutPool& pool, std::uint64_t salt,
                                                        std::span<const std::uint64_t> hashes) const;

  /// Checks an offload/onboard's block ids and hashes before it is accepted
  /// (invalid_argument naming the bad item).
  [[nodiscard]] Status check_items(const EngineKv& kv, std::span<const proto::OffloadItem> items) const;
  [[nodiscard]] Status check_items(const EngineKv& kv, std::span<const proto::OnboardItem> items) const;
  /// Admission check of an offload: out_of_capacity, in the reply, when
  /// its new blocks (hashes the pool does not hold yet) can never fit the
  /// host pool, or, when the offload would start now (`starts_now`: a copy
  /// slot is free, so it allocates at once), when they exceed the free and
  /// evictable blocks (the start would fail the same way, later, in its
  /// notification). An offload that waits for a slot is checked against the
  /// pool's size only: blocks leased meanwhile may come back before it runs.
  [[nodiscard]] Status check_fits(const LayoutPool& pool, std::uint64_t salt, std::span<const proto::OffloadItem> items,
                                  bool starts_now) const;

  /// Starts an offload now: copies the engine blocks into fresh G2 blocks,
  /// then commits each under its salted hash, with the item before it as its
  /// parent (already present hashes are skipped) and `first_parent` (a
  /// client hash: the block before items[0] in its sequence, when the
  /// session knows it) as the first one's. `done` runs once on the loop. When `control` is cancelled by
  /// then, nothing is registered and the written blocks are discarded.
  void start_offload(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                     const std::vector<proto::OffloadItem>& items, std::shared_ptr<OpControl> control, Done done,
                     std::optional<std::uint64_t> first_parent = std::nullopt);
  /// Starts an onboard now: leases the blocks of the salted hashes
  /// (not_found names a missing hash), reads those found only on disk into
  /// G2 first (a block that fails its checksum is dropped: not_found), and
  /// copies them into the engine blocks, one plan per layer group of
  /// `progress` (announced in layer order). `done` runs once every plan has
  /// ended; the leases end then. `looked_up[i]` != 0: the session's lookup
  /// already counted item i's hit (LookupUse::same_request); empty = none.
  void start_onboard(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                     std::vector<proto::OnboardItem> items, OnboardProgress progress,
                     std::shared_ptr<OpControl> control, Done done, std::vector<std::uint8_t> looked_up = {});

  /// The cluster's hooks (empty: none). Pools created later report too.
  void set_observer(Observer observer) { observer_ = std::move(observer); }
  /// Blocks other workers hold (nullptr: this daemon runs alone). lookup
  /// reports them as G4 after the local prefix; onboard fetches the hashes
  /// it does not hold from them, within `fetch_timeout`, in parts of about
  /// `fetch_part_bytes` (0: all at once), each part copied into the engine
  /// while the next one is fetched.
  void set_remote(RemoteTier* remote, std::chrono::milliseconds fetch_timeout = std::chrono::milliseconds(30000),
                  std::uint64_t fetch_part_bytes = 0) {
    remote_ = remote;
    fetch_timeout_ = fetch_timeout;
    fetch_part_bytes_ = fetch_part_bytes;
  }

  /// Every layout's pool, for stats and metrics.
  [[nodiscard]] const std::vector<std::unique_ptr<LayoutPool>>& pools() const noexcept { return pools_; }
  /// Sum of the G2 tier counters over every pool.
  [[nodiscard]] TierCounters g2_counters() const;
  /// The disk tier over every pool (enabled = false without one).
  [[nodiscard]] DiskTotals disk_totals() const;
  [[nodiscard]] const MovedBytes& moved() const noexcept { return moved_; }
  [[nodiscard]] const HostIntegrity& host_integrity() const noexcept { return integrity_; }
  [[nodiscard]] std::uint32_t copies_in_flight() const noexcept { return copies_in_flight_; }
  [[nodiscard]] CopyEngines& engines() const noexcept { return engines_; }
  /// Host pools pinned for CUDA / left pageable because pinning failed.
  [[nodiscard]] std::uint32_t pinned_pools() const noexcept { return pinned_pools_; }
  [[nodiscard]] std::uint32_t pin_failures() const noexcept { return pin_failures_; }
  /// The host pools' prefault progress (pool_bytes counts every pool).
  [[nodiscard]] PrefaultTotals prefault_totals() const;

 private:
  /// Runs `plan` on the engine the selection rule picks for its memory
  /// (`device`: the device memory side's ordinal); `on_loop` runs once on
  /// the loop with the result (a selection error too).
  void submit(TransferPlan plan, int device, std::function<void(Status)> on_loop);
  /// A pool being made: prepare_pool (loop) -> build_pool (any thread) ->
  /// install_pool (loop).
  /// The host block shape of a wanted layout (4 KiB aligned with a disk
  /// tier) and how many blocks its pool has.
  struct PoolShape {
    LayoutSpec spec;
    std::uint64_t blocks = 0;
  };
  struct PoolBuild {
    LayoutSpec spec;  // the host block shape (pool_shape)
    std::uint64_t blocks = 0;
    std::uint32_t number = 0;
    std::unique_ptr<LayoutPool> entry;
    BlockManagerConfig config;
    std::byte* base = nullptr;
    std::uint64_t region_bytes = 0;
    std::string pin_error;  // options_.pin failed: why
  };
  struct Building {
    LayoutSpec spec;
    std::vector<Attached> waiters;
  };
  /// The served pool of `spec`'s block shape, with one more session; null
  /// when there is none.
  LayoutPool* join_pool(const LayoutSpec& spec);
  [[nodiscard]] Result<LayoutPool*> add_pool(const LayoutSpec& wanted, const PoolShape& shape);
  [[nodiscard]] Result<PoolBuild> prepare_pool(const LayoutSpec& wanted, const PoolShape& shape);
  [[nodiscard]] Status build_pool(PoolBuild& build);
  LayoutPool* install_pool(PoolBuild build);
  void finish_build(PoolBuild build, Status built);
  /// Refuses a shape that can never get a pool; reclaims a slot when
  /// max_layouts pools exist or are being built. Returns the pool's shape.
  [[nodiscard]] Result<PoolShape> make_room(const LayoutSpec& spec);
  /// `wanted`'s PoolShape; errors as attach_layout's.
  [[nodiscard]] Result<PoolShape> pool_shape(const LayoutSpec& wanted) const;
  /// Frees the slot of the reclaimable pool idle longest; out_of_capacity
  /// when none is.
  [[nodiscard]] Status reclaim_idle_pool();
  /// Keeps the event counters of a pool about to be reclaimed in the sums.
  void retire_counters(const LayoutPool& pool);
  // integrity.check_host_blocks: sum a block that entered G2 / verify one
  // about to be copied to an engine (false: it failed and was dropped).
  void sum_host_block(LayoutPool& pool, const BlockLease& lease);
  [[nodiscard]] bool verify_host_block(LayoutPool& pool, const BlockLease& lease);
  void drain_disk_transfers();
  /// Remote blocks of an onboard read in place (RemoteTier::borrow): the
  /// borrow and, per source, its (source block, engine block) pairs.
  struct Borrowed {
    std::unique_ptr<BorrowedBlocks> blocks;
    std::vector<std::vector<BlockPair>> pairs;
  };
  /// An onboard some of whose blocks other workers hold, waiting for them.
  struct RemoteOnboard;
  void fetch_then_copy(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op, bool by_transport = false);
  /// Fetches the missing items [first, first + part) and, unless it is the
  /// last part, starts the next part's fetch and copies this one into the
  /// engine meanwhile (its leases end when that copy ends).
  void fetch_part(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op, std::size_t first);
  void copy_part(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op, std::size_t first, std::size_t last);
  /// Every part fetched (or one failed) and no part's copy in flight: the
  /// rest (the last part, local and disk items) is copied, or the error
  /// ends the onboard.
  void parts_settled(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op);
  void borrow_then_copy(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op);
  /// Not kept here: the holders write the missing blocks straight into the
  /// engine's host memory (RemoteTier::fetch_into, through the engine's
  /// landing window), then the rest is copied as usual. False (nothing
  /// started) where that cannot be: device memory, another layout than
  /// the pool's block shape in whole pages, a detached destination, ...
  bool fetch_into_engine(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op);
  /// An onboard whose blocks are all local (fetched ones included) or
  /// borrowed (`held` has an empty lease where `borrowed` has the block):
  /// reads the G3-only ones (`on_disk`, indices into items) into G2, then
  /// copies.
  void read_disk_then_copy(LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::shared_ptr<BlockLeases> held,
                           std::vector<BlockPair> pairs, std::vector<proto::OnboardItem> items,
                           std::vector<std::size_t> on_disk, OnboardProgress progress,
                           std::shared_ptr<OpControl> control, Done done, std::shared_ptr<Borrowed> borrowed = nullptr);
  void copy_to_engine(LayoutPool& pool, const std::shared_ptr<EngineKv>& kv, std::shared_ptr<BlockLeases> held,
                      std::vector<BlockPair> pairs, OnboardProgress progress, std::shared_ptr<OpControl> control,
                      Done done, std::shared_ptr<Borrowed> borrowed = nullptr);

  boost::asio::io_context& io_;
  CopyEngines& engines_;
  BlockServiceOptions options_;
  DiskTier disk_;
  std::vector<std::unique_ptr<LayoutPool>> pools_;
  /// Pools being built for attach_layout_async (each with its sessions).
  std::vector<Building> building_;
  /// Builds pools off the loop, and tears reclaimed ones down; each joined
  /// (every job run) when the service goes, before pools_.
  PoolJobs builder_;
  PoolJobs reaper_;
  /// Expires with the service: a build finished after it is dropped.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::uint32_t next_pool_number_ = 1;
  std::uint64_t layouts_reclaimed_ = 0;
  /// The G2 event counters (hits, evictions) of reclaimed pools, so that
  /// g2_counters() stays monotonic.
  TierCounters reclaimed_g2_;
  DiskTotals reclaimed_disk_;  // likewise for the disk tier (its gauges are not kept)
  MovedBytes moved_;
  HostIntegrity integrity_;
  std::uint32_t copies_in_flight_ = 0;
  std::uint32_t pinned_pools_ = 0;
  std::uint32_t pin_failures_ = 0;
  bool huge_pages_logged_ = false;
  /// Maps registered engine regions' resident pages (prefault_engine_regions);
  /// made at the first memfd register_kv, stopped first in the destructor.
  std::unique_ptr<EnginePrefault> engine_prefault_;
  Observer observer_;
  RemoteTier* remote_ = nullptr;
  std::chrono::milliseconds fetch_timeout_{30000};
  std::uint64_t fetch_part_bytes_ = 0;
};

}  // namespace kvb::daemon
