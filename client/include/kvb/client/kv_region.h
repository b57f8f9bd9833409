// KvRegion: the engine's KV cache as the client hands it to kvblockd.
//
// On machines without a GPU an engine's "device" KV cache is stood in for by
// host memory that the daemon can map: one memfd per layout region
// (memfd_create with MFD_ALLOW_SEALING + ftruncate + F_SEAL_SHRINK + mmap),
// whose fds travel to the daemon with SCM_RIGHTS on the register_kv frame.
// The daemon refuses a region that could shrink under its mapping. Shapes,
// layout kinds and the index math are common's (block_shape.h,
// layout_math.h): the same definitions the daemon and its kernels use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvb/common/error.h"
#include "kvb/common/layout_math.h"
#include "kvb/common/protocol_messages.h"

namespace kvb::client {

/// register_kv's layout_kind (docs/protocol.md): common's LayoutKind.
using WireLayoutKind = LayoutKind;

/// The model's block shape as hello sends it.
using BlockShape = proto::WireLayout;

/// Bytes of one (block, layer, outer) chunk: page_size x inner_dim x dtype size.
[[nodiscard]] std::uint64_t chunk_bytes(const BlockShape& shape) noexcept;
/// Bytes of one block's payload: num_layers x outer_dim chunks.
[[nodiscard]] std::uint64_t block_bytes(const BlockShape& shape) noexcept;

/// num_blocks blocks of one shape arranged one way, backed by memfd regions.
/// Move-only; unmaps and closes its fds in the destructor.
class KvRegion {
 public:
  /// Creates the memfd regions (one for fully_contiguous, num_layers for the
  /// layer separate kinds), sized and mapped read/write. Errors name the bad
  /// field or the failing syscall and errno.
  [[nodiscard]] static Result<KvRegion> create(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks);
  /// Adopts memfds made elsewhere, one per layout region in region order (for
  /// memory an engine already uses, moved onto memfds in place): seals each
  /// against shrinking unless it is already (invalid_argument when it cannot
  /// be: made without MFD_ALLOW_SEALING), checks that each holds at least
  /// region_bytes for this shape, kind and num_blocks, maps it read/write and
  /// owns it from then on (closed on error too).
  [[nodiscard]] static Result<KvRegion> adopt_memfds(const BlockShape& shape, WireLayoutKind kind,
                                                     std::uint32_t num_blocks, std::vector<int> fds);
  /// Bytes of each region for this shape, kind and num_blocks (what create
  /// allocates and adopt_memfds requires), or an error naming the bad field.
  [[nodiscard]] static Result<std::uint64_t> region_bytes_for(const BlockShape& shape, WireLayoutKind kind,
                                                              std::uint32_t num_blocks);

  KvRegion(KvRegion&& other) noexcept;
  KvRegion& operator=(KvRegion&& other) noexcept;
  KvRegion(const KvRegion&) = delete;
  KvRegion& operator=(const KvRegion&) = delete;
  ~KvRegion();

  [[nodiscard]] const BlockShape& shape() const noexcept { return shape_; }
  [[nodiscard]] WireLayoutKind kind() const noexcept { return geometry_.kind; }
  /// The layout's geometry (common's layout_math.h): strides, chunk bytes.
  [[nodiscard]] const LayoutGeometry& geometry() const noexcept { return geometry_; }
  [[nodiscard]] std::uint32_t num_blocks() const noexcept { return geometry_.num_blocks; }
  [[nodiscard]] std::uint32_t num_regions() const noexcept { return static_cast<std::uint32_t>(maps_.size()); }
  /// Bytes of each region (all regions have the same size).
  [[nodiscard]] std::uint64_t region_bytes() const noexcept { return kvb::region_bytes(geometry_); }
  /// The memfd of each region, owned by this object (sent with SCM_RIGHTS).
  [[nodiscard]] std::span<const int> fds() const noexcept { return fds_; }
  /// Closes the fds and keeps the mappings: for a process holding very many
  /// regions, once register_kv was called (it sends its own copies). Idempotent.
  void close_fds() noexcept;
  /// Base address of region r (r < num_regions()).
  [[nodiscard]] std::byte* region_data(std::uint32_t r) const noexcept { return maps_[r]; }

  /// Location of chunk (block, layer, outer); arguments must be in range.
  [[nodiscard]] ChunkLocation place(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) const noexcept;
  /// The bytes of chunk (block, layer, outer); arguments must be in range.
  [[nodiscard]] std::span<std::byte> chunk(std::uint32_t block, std::uint32_t layer,
                                           std::uint32_t outer) const noexcept;

 private:
  KvRegion() = default;
  void reset() noexcept;

  BlockShape shape_{};
  LayoutGeometry geometry_{};
  std::vector<int> fds_;
  std::vector<std::byte*> maps_;
};

}  // namespace kvb::client
