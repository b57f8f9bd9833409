#include "kvb/storage/slot_format.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include <xxhash.h>

namespace kvb::storage {
namespace {

static_assert(std::endian::native == std::endian::little, "slot files are little-endian; add byte swaps");

// A little-endian field cursor over one header page.
class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> page) : page_(page) {}
  template <class T>
  T get() {
    T v{};
    std::memcpy(&v, page_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  [[nodiscard]] std::size_t pos() const noexcept { return pos_; }

 private:
  std::span<const std::byte> page_;
  std::size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(std::span<std::byte> page) : page_(page) { std::fill(page.begin(), page.end(), std::byte{0}); }
  template <class T>
  void put(T v) {
    std::memcpy(page_.data() + pos_, &v, sizeof(T));
    pos_ += sizeof(T);
  }
  // Appends the XXH3-64 of everything written so far.
  void seal() { put<std::uint64_t>(XXH3_64bits(page_.data(), pos_)); }

 private:
  std::span<std::byte> page_;
  std::size_t pos_ = 0;
};

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

constexpr std::size_t kSlotHeaderFields = 4 + 2 + 2 + 4 + 4 + 8 * 5;  // before its checksum

}  // namespace

std::uint64_t shape_id(const LayoutSpec& spec) noexcept {
  const std::uint32_t fields[5] = {spec.num_layers, spec.outer_dim, spec.page_size, spec.inner_dim,
                                   static_cast<std::uint32_t>(spec.dtype)};
  return XXH3_64bits(fields, sizeof(fields));
}

std::string slot_file_name(std::uint64_t id) { return fmt::format("g3-{:016x}.slots", id); }

std::uint64_t payload_checksum(std::span<const std::byte> payload) noexcept {
  return XXH3_64bits(payload.data(), payload.size());
}

FileHeader FileHeader::plan(const LayoutSpec& spec, std::uint32_t slot_count) {
  FileHeader h;
  h.spec = spec;
  h.spec.alignment = 0;
  h.shape_id = storage::shape_id(spec);
  h.block_bytes = spec.block_bytes();
  h.stride = round_up(h.block_bytes, kPageBytes);
  h.slot_count = slot_count;
  h.data_offset = round_up(kPageBytes * (1 + std::uint64_t{slot_count}), kDataAlignment);
  h.file_bytes = h.data_offset + h.stride * slot_count;
  return h;
}

std::uint32_t FileHeader::slots_for_bytes(const LayoutSpec& spec, std::uint64_t bytes) {
  // file_bytes grows with the slot count: the largest count that fits.
  std::uint64_t lo = 0;
  std::uint64_t hi = std::min<std::uint64_t>(bytes / round_up(spec.block_bytes(), kPageBytes), 0xFFFFFFFEULL);
  while (lo < hi) {
    const std::uint64_t mid = (lo + hi + 1) / 2;
    if (plan(spec, static_cast<std::uint32_t>(mid)).file_bytes <= bytes)
      lo = mid;
    else
      hi = mid - 1;
  }
  return static_cast<std::uint32_t>(lo);
}

void FileHeader::encode(std::span<std::byte> page) const {
  Writer w(page);
  w.put<std::uint64_t>(kFileMagic);
  w.put<std::uint16_t>(kFormatVersion);
  w.put<std::uint16_t>(static_cast<std::uint16_t>(kPageBytes / 1024));
  w.put<std::uint32_t>(spec.num_layers);
  w.put<std::uint32_t>(spec.outer_dim);
  w.put<std::uint32_t>(spec.page_size);
  w.put<std::uint32_t>(spec.inner_dim);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(spec.dtype));
  w.put<std::uint8_t>(0);
  w.put<std::uint16_t>(0);
  w.put<std::uint64_t>(shape_id);
  w.put<std::uint64_t>(block_bytes);
  w.put<std::uint64_t>(stride);
  w.put<std::uint64_t>(data_offset);
  w.put<std::uint64_t>(file_bytes);
  w.put<std::uint64_t>(0);  // reserved
  w.put<std::uint32_t>(slot_count);
  w.put<std::uint32_t>(0);
  w.seal();
}

Result<FileHeader> FileHeader::decode(std::span<const std::byte> page) {
  if (page.size() < kPageBytes) return fail(Errc::invalid_argument, "slot file header: {} bytes read", page.size());
  Cursor c(page);
  if (c.get<std::uint64_t>() != kFileMagic) return fail(Errc::invalid_argument, "not a kvblockd slot file (magic)");
  const auto version = c.get<std::uint16_t>();
  if (version != kFormatVersion)
    return fail(Errc::unsupported, "slot file format version {} (this kvblockd reads {})", version, kFormatVersion);
  (void)c.get<std::uint16_t>();
  FileHeader h;
  h.spec.num_layers = c.get<std::uint32_t>();
  h.spec.outer_dim = c.get<std::uint32_t>();
  h.spec.page_size = c.get<std::uint32_t>();
  h.spec.inner_dim = c.get<std::uint32_t>();
  h.spec.dtype = static_cast<DType>(c.get<std::uint8_t>());
  h.spec.alignment = 0;
  (void)c.get<std::uint8_t>();
  (void)c.get<std::uint16_t>();
  h.shape_id = c.get<std::uint64_t>();
  h.block_bytes = c.get<std::uint64_t>();
  h.stride = c.get<std::uint64_t>();
  h.data_offset = c.get<std::uint64_t>();
  h.file_bytes = c.get<std::uint64_t>();
  (void)c.get<std::uint64_t>();
  h.slot_count = c.get<std::uint32_t>();
  (void)c.get<std::uint32_t>();
  const std::size_t fields = c.pos();
  if (c.get<std::uint64_t>() != XXH3_64bits(page.data(), fields))
    return fail(Errc::io_error, "slot file header checksum mismatch (damaged file header)");
  const FileHeader expect = plan(h.spec, h.slot_count);
  if (h.shape_id != expect.shape_id || h.block_bytes != expect.block_bytes || h.stride != expect.stride ||
      h.data_offset != expect.data_offset || h.file_bytes != expect.file_bytes)
    return fail(Errc::io_error, "slot file header geometry is inconsistent (shape {:016x}, {} slots)", h.shape_id,
                h.slot_count);
  return h;
}

void SlotHeader::encode(std::span<std::byte> page) const {
  Writer w(page);
  w.put<std::uint32_t>(kSlotMagic);
  w.put<std::uint16_t>(kFormatVersion);
  w.put<std::uint16_t>(static_cast<std::uint16_t>(state));
  w.put<std::uint32_t>(slot);
  w.put<std::uint32_t>(0);
  w.put<std::uint64_t>(shape_id);
  w.put<std::uint64_t>(hash.value());
  w.put<std::uint64_t>(generation);
  w.put<std::uint64_t>(payload_bytes);
  w.put<std::uint64_t>(payload_xxh3);
  w.seal();
}

DecodedSlot decode_slot_header(std::span<const std::byte> page) noexcept {
  DecodedSlot out;
  const std::size_t n = std::min<std::size_t>(page.size(), kSlotHeaderFields + 8);
  if (std::all_of(page.begin(), page.begin() + static_cast<std::ptrdiff_t>(n),
                  [](std::byte b) { return b == std::byte{0}; })) {
    out.page = SlotPage::empty;
    return out;
  }
  out.page = SlotPage::torn;
  if (page.size() < kSlotHeaderFields + 8) return out;
  Cursor c(page);
  if (c.get<std::uint32_t>() != kSlotMagic) return out;
  if (c.get<std::uint16_t>() != kFormatVersion) return out;
  const auto state = c.get<std::uint16_t>();
  SlotHeader& h = out.header;
  h.slot = c.get<std::uint32_t>();
  (void)c.get<std::uint32_t>();
  h.shape_id = c.get<std::uint64_t>();
  h.hash = SequenceHash{c.get<std::uint64_t>()};
  h.generation = c.get<std::uint64_t>();
  h.payload_bytes = c.get<std::uint64_t>();
  h.payload_xxh3 = c.get<std::uint64_t>();
  const std::size_t fields = c.pos();
  if (c.get<std::uint64_t>() != XXH3_64bits(page.data(), fields)) return out;
  if (state != static_cast<std::uint16_t>(SlotState::committed) &&
      state != static_cast<std::uint16_t>(SlotState::tombstone))
    return out;
  h.state = static_cast<SlotState>(state);
  out.page = SlotPage::valid;
  return out;
}

}  // namespace kvb::storage
