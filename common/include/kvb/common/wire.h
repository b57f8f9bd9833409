// Bounded little-endian encoding of protocol payloads (docs/protocol.md).
//
// WireWriter appends fields to a byte vector and refuses to grow past its
// limit; WireReader reads fields from a span and never reads past its end.
// Both keep the FIRST error (naming the field) and turn every later call into
// a no-op, so that an encoder or decoder is a straight list of fields
// followed by one check: writer.finish() / reader.finish().
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/common/error.h"

namespace kvb::proto {

/// Longest string or byte blob a payload may carry (64 KiB).
inline constexpr std::uint32_t kMaxStringBytes = 64U * 1024U;

class WireWriter {
 public:
  /// A writer that fails once more than `limit` bytes would be written.
  explicit WireWriter(std::size_t limit = std::numeric_limits<std::uint32_t>::max()) : limit_(limit) {}

  void u8(std::uint8_t value);
  void u16(std::uint16_t value);
  void u32(std::uint32_t value);
  void u64(std::uint64_t value);
  /// u32 length then the bytes; longer than kMaxStringBytes is an error naming `field`.
  void string(std::string_view value, std::string_view field);
  /// u32 length then the bytes; longer than kMaxStringBytes is an error naming `field`.
  void blob(std::span<const std::byte> value, std::string_view field);
  /// A list count (u32); more than u32 max is an error naming `field`.
  void count(std::size_t n, std::string_view field);
  /// Raw bytes, no length prefix.
  void raw(std::span<const std::byte> bytes);

  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size(); }
  [[nodiscard]] bool ok() const noexcept { return !error_.has_value(); }
  /// The bytes written, or the first error.
  [[nodiscard]] Result<std::vector<std::byte>> finish() &&;

 private:
  [[nodiscard]] bool reserve(std::size_t n);
  void put_le(std::uint64_t value, std::size_t n);

  std::size_t limit_;
  std::vector<std::byte> bytes_;
  std::optional<Error> error_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}

  // Each read returns the value, or 0 / empty after recording a
  // protocol_error naming `field` when the payload is too short.
  [[nodiscard]] std::uint8_t u8(std::string_view field);
  [[nodiscard]] std::uint16_t u16(std::string_view field);
  [[nodiscard]] std::uint32_t u32(std::string_view field);
  [[nodiscard]] std::uint64_t u64(std::string_view field);
  [[nodiscard]] std::string string(std::string_view field);
  [[nodiscard]] std::vector<std::byte> blob(std::string_view field);
  /// A list count whose elements take at least `min_element_bytes` each; a
  /// count that cannot fit in the remaining bytes is an error (returns 0).
  [[nodiscard]] std::uint32_t count(std::string_view field, std::size_t min_element_bytes);
  /// All remaining bytes.
  [[nodiscard]] std::vector<std::byte> rest();
  /// Records `error` if no error was recorded yet (for semantic checks).
  void fail_with(Error error);

  [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  [[nodiscard]] bool ok() const noexcept { return !error_.has_value(); }
  /// ok when every read succeeded and every byte was consumed (trailing
  /// bytes are a protocol_error).
  [[nodiscard]] Status finish() const;

 private:
  [[nodiscard]] bool need(std::size_t n, std::string_view field);
  [[nodiscard]] std::uint64_t get_le(std::size_t n);

  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
  std::optional<Error> error_;
};

}  // namespace kvb::proto
