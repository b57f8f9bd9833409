#include "kvb/common/wire.h"

#include <cstring>

namespace kvb::proto {

bool WireWriter::reserve(std::size_t n) {
  if (error_) return false;
  if (n > limit_ || bytes_.size() > limit_ - n) {
    error_ = Error{Errc::out_of_capacity,
                   fmt::format("payload would exceed its limit of {} bytes ({} + {})", limit_, bytes_.size(), n)};
    return false;
  }
  return true;
}

void WireWriter::put_le(std::uint64_t value, std::size_t n) {
  if (!reserve(n)) return;
  for (std::size_t i = 0; i < n; ++i) bytes_.push_back(static_cast<std::byte>((value >> (8 * i)) & 0xFFU));
}

void WireWriter::u8(std::uint8_t value) { put_le(value, 1); }
void WireWriter::u16(std::uint16_t value) { put_le(value, 2); }
void WireWriter::u32(std::uint32_t value) { put_le(value, 4); }
void WireWriter::u64(std::uint64_t value) { put_le(value, 8); }

void WireWriter::string(std::string_view value, std::string_view field) {
  blob(std::as_bytes(std::span<const char>(value.data(), value.size())), field);
}

void WireWriter::blob(std::span<const std::byte> value, std::string_view field) {
  if (error_) return;
  if (value.size() > kMaxStringBytes) {
    error_ = Error{Errc::invalid_argument,
                   fmt::format("{} is {} bytes, over the limit of {}", field, value.size(), kMaxStringBytes)};
    return;
  }
  u32(static_cast<std::uint32_t>(value.size()));
  raw(value);
}

void WireWriter::count(std::size_t n, std::string_view field) {
  if (error_) return;
  if (n > std::numeric_limits<std::uint32_t>::max()) {
    error_ = Error{Errc::invalid_argument, fmt::format("{} has {} elements, over the u32 limit", field, n)};
    return;
  }
  u32(static_cast<std::uint32_t>(n));
}

void WireWriter::raw(std::span<const std::byte> bytes) {
  if (!reserve(bytes.size())) return;
  bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
}

Result<std::vector<std::byte>> WireWriter::finish() && {
  if (error_) return tl::unexpected<Error>(std::move(*error_));
  return std::move(bytes_);
}

bool WireReader::need(std::size_t n, std::string_view field) {
  if (error_) return false;
  if (remaining() < n) {
    error_ = Error{Errc::protocol_error,
                   fmt::format("payload truncated reading {}: needs {} bytes, {} left", field, n, remaining())};
    return false;
  }
  return true;
}

std::uint64_t WireReader::get_le(std::size_t n) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < n; ++i) value |= static_cast<std::uint64_t>(bytes_[pos_ + i]) << (8 * i);
  pos_ += n;
  return value;
}

std::uint8_t WireReader::u8(std::string_view field) {
  return need(1, field) ? static_cast<std::uint8_t>(get_le(1)) : 0;
}
std::uint16_t WireReader::u16(std::string_view field) {
  return need(2, field) ? static_cast<std::uint16_t>(get_le(2)) : 0;
}
std::uint32_t WireReader::u32(std::string_view field) {
  return need(4, field) ? static_cast<std::uint32_t>(get_le(4)) : 0;
}
std::uint64_t WireReader::u64(std::string_view field) { return need(8, field) ? get_le(8) : 0; }

std::vector<std::byte> WireReader::blob(std::string_view field) {
  const std::uint32_t length = u32(field);
  if (error_) return {};
  if (length > kMaxStringBytes) {
    error_ = Error{Errc::protocol_error,
                   fmt::format("{} declares {} bytes, over the limit of {}", field, length, kMaxStringBytes)};
    return {};
  }
  if (!need(length, field)) return {};
  std::vector<std::byte> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                             bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + length));
  pos_ += length;
  return out;
}

std::string WireReader::string(std::string_view field) {
  const auto bytes = blob(field);
  std::string out(bytes.size(), '\0');
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::uint32_t WireReader::count(std::string_view field, std::size_t min_element_bytes) {
  const std::uint32_t n = u32(field);
  if (error_) return 0;
  if (min_element_bytes > 0 && n > remaining() / min_element_bytes) {
    error_ = Error{Errc::protocol_error, fmt::format("{} declares {} elements of >= {} bytes but only {} bytes remain",
                                                     field, n, min_element_bytes, remaining())};
    return 0;
  }
  return n;
}

std::vector<std::byte> WireReader::rest() {
  if (error_) return {};
  std::vector<std::byte> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_), bytes_.end());
  pos_ = bytes_.size();
  return out;
}

void WireReader::fail_with(Error error) {
  if (!error_) error_ = std::move(error);
}

Status WireReader::finish() const {
  if (error_) return tl::unexpected<Error>(*error_);
  if (remaining() != 0) return fail(Errc::protocol_error, "payload has {} trailing bytes", remaining());
  return kvb::ok();
}

}  // namespace kvb::proto
