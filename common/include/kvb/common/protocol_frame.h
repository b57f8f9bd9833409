// IPC protocol v1, frame level: the 24-byte header, message types, a stream
// frame parser and the completion text `<id>:ok` / `<id>:err(<message>)`.
// docs/protocol.md is the contract; this file is its code.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb::proto {

inline constexpr std::uint32_t kMagic = 0x4442564BU;  // "KVBD" in memory order
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::size_t kHeaderBytes = 24;
inline constexpr std::uint32_t kDefaultMaxFrameBytes = 16U * 1024U * 1024U;
/// Most fds one register_kv frame may carry (SCM_MAX_FD on Linux is 253).
inline constexpr std::uint32_t kMaxFdsPerFrame = 253;

enum class MsgType : std::uint16_t {
  // client -> daemon (requests)
  hello = 1,
  register_kv = 2,
  lookup = 3,
  offload = 4,
  onboard = 5,
  release = 6,
  status = 7,
  wait = 8,
  stats = 9,
  bye = 10,
  drain = 11,
  config = 12,
  onboard_layers = 13,
  locate = 14,
  // daemon -> client
  reply = 0x8001,
  notification = 0x8002,
  error = 0x8003,
  progress = 0x8004,
};

/// Stable lower-case name ("hello", "register_kv", ..., "reply"); "unknown" otherwise.
[[nodiscard]] std::string_view to_string(MsgType type) noexcept;
/// One of the 18 types above.
[[nodiscard]] bool is_known_type(std::uint16_t type) noexcept;
/// A client -> daemon type (hello .. locate).
[[nodiscard]] bool is_request_type(MsgType type) noexcept;

struct FrameHeader {
  std::uint32_t magic = kMagic;
  std::uint16_t version = kVersion;
  MsgType type = MsgType::hello;
  std::uint32_t length = 0;  // payload bytes after the header
  std::uint32_t flags = 0;   // reserved, must be 0
  RequestId request_id{0};

  friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

/// The 24 header bytes, little-endian.
[[nodiscard]] std::array<std::byte, kHeaderBytes> encode_header(const FrameHeader& header) noexcept;
/// The fields of 24 header bytes, without any validation.
[[nodiscard]] FrameHeader read_header(std::span<const std::byte, kHeaderBytes> bytes) noexcept;
/// protocol_error naming the bad field and value: wrong magic, version other
/// than kVersion, unknown type, non-zero flags, or length > max_frame_bytes.
[[nodiscard]] Status validate_header(const FrameHeader& header, std::uint32_t max_frame_bytes) noexcept;
/// read_header + validate_header; fewer than kHeaderBytes bytes is an error too.
[[nodiscard]] Result<FrameHeader> decode_header(std::span<const std::byte> bytes, std::uint32_t max_frame_bytes);
/// The request id to echo in an error frame answering this (possibly
/// invalid) header: its request_id when magic and version are right, else 0.
[[nodiscard]] RequestId echo_request_id(const FrameHeader& header) noexcept;

/// Header + payload as one buffer; invalid_argument when the payload is over
/// u32 bytes.
[[nodiscard]] Result<std::vector<std::byte>> encode_frame(MsgType type, RequestId request_id,
                                                          std::span<const std::byte> payload);

struct Frame {
  FrameHeader header;
  std::vector<std::byte> payload;
};

/// Cuts a byte stream into validated frames. Not thread-safe.
class FrameParser {
 public:
  explicit FrameParser(std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes) : max_frame_bytes_(max_frame_bytes) {}

  /// Appends received bytes.
  void feed(std::span<const std::byte> bytes);
  /// The next complete frame; nullopt when more bytes are needed; a
  /// protocol_error when the next header is invalid (the parser then stays
  /// failed: the connection must be closed).
  [[nodiscard]] Result<std::optional<Frame>> next();
  /// After next() failed: the request id to echo (see echo_request_id).
  [[nodiscard]] RequestId failed_request_id() const noexcept { return failed_request_id_; }
  /// Bytes fed but not yet returned as frames.
  [[nodiscard]] std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }
  /// Whether a frame has started but not completed (bytes buffered).
  [[nodiscard]] bool mid_frame() const noexcept { return buffered() != 0; }

 private:
  std::uint32_t max_frame_bytes_;
  std::vector<std::byte> buffer_;
  std::size_t consumed_ = 0;
  std::optional<Error> failed_;
  RequestId failed_request_id_{0};
};

/// The result of one async request as pushed in a notification.
struct Completion {
  RequestId request_id{0};
  bool ok = true;
  std::string message;  // empty when ok
};

/// "<id>:ok" or "<id>:err(<message>)" (message = the error's message).
/// Used for IPC notifications and for active-message responses between
/// workers alike: the one definition of the text.
[[nodiscard]] std::string format_completion(RequestId request_id, const Status& result);
/// The longest "<id>:ok": 20 digits and ":ok".
inline constexpr std::size_t kCompletionOkBytes = 23;
/// format_completion's "<id>:ok" written into `out` without allocating (hot
/// paths); returns the text, a view of `out`.
[[nodiscard]] std::string_view format_completion_ok(RequestId request_id,
                                                    std::span<char, kCompletionOkBytes> out) noexcept;
/// Parses format_completion's text; protocol_error when it is not one.
[[nodiscard]] Result<Completion> parse_completion(std::string_view text);

}  // namespace kvb::proto
