// The messages workers exchange as active messages (docs/cluster.md),
// encoded with common's bounded WireWriter / WireReader: one struct per
// message, encode() and decode(); a decode that does not consume its
// payload exactly is a protocol_error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvb/common/error.h"

namespace kvb::daemon::cluster {

using Bytes = std::vector<std::byte>;

// Message type names (the handlers registered by name).
inline constexpr const char* kJoinType = "kvb.join";           // request: JoinMessage -> JoinMessage
inline constexpr const char* kPoolType = "kvb.pool";           // fire-and-forget: PoolInfo
inline constexpr const char* kPoolGoneType = "kvb.pool_gone";  // fire-and-forget: PoolGone
inline constexpr const char* kIndexType = "kvb.index";         // fire-and-forget: IndexBatch
inline constexpr const char* kResyncType = "kvb.resync";       // fire-and-forget: empty (send me a snapshot)
inline constexpr const char* kFetchType = "kvb.fetch";         // request (receiving writes): FetchRequest -> empty
inline constexpr const char* kPingType = "kvb.ping";           // request: empty -> empty (round-trip time)
inline constexpr const char* kPinType = "kvb.pin";             // request: PinRequest -> PinReply (same host)
inline constexpr const char* kUnpinType = "kvb.unpin";         // fire-and-forget: PinRelease

inline constexpr std::uint16_t kClusterWireVersion = 3;

/// A worker's G2 pool of one block shape, as its peers write into it.
struct PoolInfo {
  std::uint64_t layout_key = 0;  // block_shape_key() of the pool's layout
  std::uint64_t base = 0;        // address of block 0
  std::uint64_t bytes = 0;       // of the registered region
  std::uint64_t stride = 0;      // bytes from one block to the next
  std::uint64_t block_bytes = 0;
  Bytes rkey;  // packed UCX remote key of the region
  // Same-host mapping (cluster/same_host_map.h): the pool's memfd as fd
  // map_fd of process map_pid (-1: not mappable), its st_dev/st_ino, where
  // block 0 lies in it, and the host's boot id.
  std::uint32_t map_pid = 0;
  std::int32_t map_fd = -1;
  std::uint64_t map_dev = 0;
  std::uint64_t map_ino = 0;
  std::uint64_t map_offset = 0;
  std::string boot_id;
};

/// "My pool of this block shape is gone" (reclaimed for another shape):
/// forget its address and remote key. Its blocks leave the index through
/// ordinary removed events, sent before this.
struct PoolGone {
  std::uint64_t layout_key = 0;
};

struct JoinMessage {
  std::string cluster;
  std::string worker;
  std::string bootstrap;  // HOST:PORT of its bootstrap listener
  std::vector<PoolInfo> pools;
};

enum class IndexOp : std::uint8_t { stored = 1, removed = 2 };

struct IndexEntry {
  IndexOp op = IndexOp::stored;
  std::uint8_t tier = 2;  // the holder's tier (2 = G2, 3 = G3)
  std::uint64_t layout_key = 0;
  std::uint64_t key = 0;  // the salted registry key (tenant included)
};

/// Stored/removed events, numbered per sender -> receiver stream. A
/// snapshot batch replaces everything the receiver knew of the sender; a
/// snapshot may span several batches (first: kSnapshotStart, last:
/// kSnapshotEnd).
struct IndexBatch {
  static constexpr std::uint8_t kSnapshotStart = 1;
  static constexpr std::uint8_t kSnapshotEnd = 2;
  std::uint64_t seq = 0;
  std::uint8_t flags = 0;
  std::vector<IndexEntry> entries;
};

/// "Lease these blocks and write them to these addresses in my pool."
struct FetchRequest {
  std::uint64_t layout_key = 0;
  std::uint32_t timeout_ms = 0;  // the holder gives up writing after this
  /// The addresses are memory the requester exposed for this fetch (an
  /// engine's, fetched straight into it), not blocks of its pool: written
  /// by AM rendezvous only (the requester refuses writes elsewhere).
  bool into_exposed = false;
  struct Item {
    std::uint64_t key = 0;
    std::uint64_t address = 0;  // in the requester's pool of layout_key (or exposed: into_exposed)
  };
  std::vector<Item> items;
};

/// "Lease these blocks for me and tell me where they are in your pool's
/// memfd" (same host): the holder keeps the leases until kvb.unpin or
/// ttl_ms after it got the request, whichever comes first.
struct PinRequest {
  std::uint64_t layout_key = 0;
  std::uint32_t timeout_ms = 0;  // the requester's time left; the pin lives at most this long
  std::vector<std::uint64_t> keys;
};

/// A block's XXH3-64 as its holder took it when the block entered its G2
/// (integrity.check_host_blocks), or not known.
struct BlockSum {
  bool known = false;
  std::uint64_t sum = 0;
};

/// kvb.fetch's answer: empty when the holder keeps no sums; else one per
/// item, in request order, for the requester to check the bytes it got.
struct FetchReply {
  std::vector<BlockSum> sums;
};

struct PinReply {
  std::uint64_t pin_id = 0;
  std::uint32_t ttl_ms = 0;            // the leases are kept at least this long after the request arrived
  std::uint64_t map_ino = 0;           // the pool file the offsets are in
  std::vector<std::uint64_t> offsets;  // of each key's block in the pool file, in request order
  std::vector<BlockSum> sums;          // empty, or one per key (as FetchReply)
};

struct PinRelease {
  std::uint64_t pin_id = 0;
};

[[nodiscard]] Result<Bytes> encode(const PoolInfo& message);
[[nodiscard]] Result<Bytes> encode(const PinRequest& message);
[[nodiscard]] Result<Bytes> encode(const PinReply& message);
[[nodiscard]] Result<Bytes> encode(const PinRelease& message);
[[nodiscard]] Result<Bytes> encode(const PoolGone& message);
[[nodiscard]] Result<Bytes> encode(const JoinMessage& message);
[[nodiscard]] Result<Bytes> encode(const IndexBatch& message);
[[nodiscard]] Result<Bytes> encode(const FetchRequest& message);
[[nodiscard]] Result<Bytes> encode(const FetchReply& message);

template <class M>
[[nodiscard]] Result<M> decode(std::span<const std::byte> payload);

}  // namespace kvb::daemon::cluster
