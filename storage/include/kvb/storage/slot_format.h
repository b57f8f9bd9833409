// The on-disk format of a G3 slot file (docs/disk.md has the picture).
//
//   [file header, 4 KiB][slot header 0, 4 KiB]...[slot header N-1][pad to 1 MiB]
//   [payload 0, stride bytes]...[payload N-1]
//
// stride = block_bytes rounded up to 4 KiB. Every slot header has its own
// 4 KiB page, so a torn header write can never damage a neighbour's. All
// integers are little-endian; every header ends with the XXH3-64 of the
// bytes before it, so a torn or flipped header is detected on its own.
//
// Slot header (first 64 bytes of its page, the rest zero):
//   u32 magic "KVG3", u16 version, u16 state (1 committed, 2 tombstone),
//   u32 slot, u32 reserved, u64 shape_id, u64 hash (tenant-salted sequence
//   hash), u64 generation, u64 payload_bytes, u64 payload_xxh3, u64 header_xxh3
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "kvb/blockmgr/layout.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/error.h"

namespace kvb::storage {

inline constexpr std::uint64_t kPageBytes = 4096;
inline constexpr std::uint64_t kFileMagic = 0x53544f4c53334756ULL;  // "VG3SLOTS"
inline constexpr std::uint32_t kSlotMagic = 0x3347564bU;            // "KVG3"
inline constexpr std::uint16_t kFormatVersion = 1;
inline constexpr std::uint64_t kDataAlignment = 1ULL << 20;  // payloads start on a 1 MiB boundary

/// The identity of a block shape: XXH3-64 of (num_layers, outer_dim,
/// page_size, inner_dim, dtype). Alignment is not part of it.
[[nodiscard]] std::uint64_t shape_id(const LayoutSpec& spec) noexcept;
/// "g3-<shape id as 16 hex digits>.slots"
[[nodiscard]] std::string slot_file_name(std::uint64_t shape_id);

/// XXH3-64 of a payload (the checksum the slot header carries).
[[nodiscard]] std::uint64_t payload_checksum(std::span<const std::byte> payload) noexcept;

/// Page 0 of a slot file.
struct FileHeader {
  LayoutSpec spec;  // alignment is stored as 0 (not part of the shape)
  std::uint64_t shape_id = 0;
  std::uint64_t block_bytes = 0;
  std::uint64_t stride = 0;  // bytes between payloads (block_bytes rounded up to 4 KiB)
  std::uint32_t slot_count = 0;
  std::uint64_t data_offset = 0;  // file offset of payload 0
  std::uint64_t file_bytes = 0;

  /// The geometry of a file of `slot_count` slots for `spec`.
  [[nodiscard]] static FileHeader plan(const LayoutSpec& spec, std::uint32_t slot_count);
  /// Slots of `spec` that fit in `bytes` (headers, padding and payloads).
  [[nodiscard]] static std::uint32_t slots_for_bytes(const LayoutSpec& spec, std::uint64_t bytes);

  [[nodiscard]] std::uint64_t header_offset(std::uint32_t slot) const noexcept { return kPageBytes * (1 + slot); }
  [[nodiscard]] std::uint64_t payload_offset(std::uint32_t slot) const noexcept { return data_offset + stride * slot; }

  /// Writes the page (kPageBytes, zero-filled past the fields).
  void encode(std::span<std::byte> page) const;
  /// Parses and checks a page: magic, version, checksum, geometry.
  [[nodiscard]] static Result<FileHeader> decode(std::span<const std::byte> page);
};

enum class SlotState : std::uint16_t { empty = 0, committed = 1, tombstone = 2 };

struct SlotHeader {
  SlotState state = SlotState::empty;
  std::uint32_t slot = 0;
  std::uint64_t shape_id = 0;
  SequenceHash hash{};
  std::uint64_t generation = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t payload_xxh3 = 0;

  /// Writes the page (kPageBytes, zero-filled past the fields).
  void encode(std::span<std::byte> page) const;
};

/// What a slot header page holds.
enum class SlotPage : std::uint8_t {
  empty,  // all zero: never written
  valid,  // a header whose magic, version and checksum are right
  torn,   // anything else: a torn or damaged write
};

struct DecodedSlot {
  SlotPage page = SlotPage::empty;
  SlotHeader header;
};
[[nodiscard]] DecodedSlot decode_slot_header(std::span<const std::byte> page) noexcept;

}  // namespace kvb::storage
