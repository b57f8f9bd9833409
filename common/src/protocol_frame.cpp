#include "kvb/common/protocol_frame.h"

#include <charconv>

#include "kvb/common/wire.h"

namespace kvb::proto {

std::string_view to_string(MsgType type) noexcept {
  switch (type) {
    case MsgType::hello: return "hello";
    case MsgType::register_kv: return "register_kv";
    case MsgType::lookup: return "lookup";
    case MsgType::offload: return "offload";
    case MsgType::onboard: return "onboard";
    case MsgType::release: return "release";
    case MsgType::status: return "status";
    case MsgType::wait: return "wait";
    case MsgType::stats: return "stats";
    case MsgType::bye: return "bye";
    case MsgType::drain: return "drain";
    case MsgType::config: return "config";
    case MsgType::onboard_layers: return "onboard_layers";
    case MsgType::locate: return "locate";
    case MsgType::reply: return "reply";
    case MsgType::notification: return "notification";
    case MsgType::error: return "error";
    case MsgType::progress: return "progress";
  }
  return "unknown";
}

namespace {
constexpr auto kLastRequest = static_cast<std::uint16_t>(MsgType::locate);
constexpr auto kLastAnswer = static_cast<std::uint16_t>(MsgType::progress);
}  // namespace

bool is_known_type(std::uint16_t type) noexcept {
  return (type >= static_cast<std::uint16_t>(MsgType::hello) && type <= kLastRequest) ||
         (type >= static_cast<std::uint16_t>(MsgType::reply) && type <= kLastAnswer);
}

bool is_request_type(MsgType type) noexcept {
  const auto value = static_cast<std::uint16_t>(type);
  return value >= static_cast<std::uint16_t>(MsgType::hello) && value <= kLastRequest;
}

namespace {

void put_le(std::byte* out, std::uint64_t value, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((value >> (8 * i)) & 0xFFU);
}

std::uint64_t get_le(const std::byte* in, std::size_t n) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < n; ++i) value |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return value;
}

}  // namespace

std::array<std::byte, kHeaderBytes> encode_header(const FrameHeader& header) noexcept {
  std::array<std::byte, kHeaderBytes> out{};
  put_le(out.data() + 0, header.magic, 4);
  put_le(out.data() + 4, header.version, 2);
  put_le(out.data() + 6, static_cast<std::uint16_t>(header.type), 2);
  put_le(out.data() + 8, header.length, 4);
  put_le(out.data() + 12, header.flags, 4);
  put_le(out.data() + 16, header.request_id.value(), 8);
  return out;
}

FrameHeader read_header(std::span<const std::byte, kHeaderBytes> bytes) noexcept {
  FrameHeader header;
  header.magic = static_cast<std::uint32_t>(get_le(bytes.data() + 0, 4));
  header.version = static_cast<std::uint16_t>(get_le(bytes.data() + 4, 2));
  header.type = static_cast<MsgType>(get_le(bytes.data() + 6, 2));
  header.length = static_cast<std::uint32_t>(get_le(bytes.data() + 8, 4));
  header.flags = static_cast<std::uint32_t>(get_le(bytes.data() + 12, 4));
  header.request_id = RequestId{get_le(bytes.data() + 16, 8)};
  return header;
}

Status validate_header(const FrameHeader& header, std::uint32_t max_frame_bytes) noexcept {
  if (header.magic != kMagic)
    return fail(Errc::protocol_error, "bad magic {:#010x} (expected {:#010x})", header.magic, kMagic);
  if (header.version != kVersion) {
    return fail(Errc::protocol_error, "unsupported protocol version {} (this side speaks {})", header.version,
                kVersion);
  }
  if (!is_known_type(static_cast<std::uint16_t>(header.type))) {
    return fail(Errc::protocol_error, "unknown message type {:#06x}", static_cast<std::uint16_t>(header.type));
  }
  if (header.flags != 0) return fail(Errc::protocol_error, "non-zero flags {:#x} (reserved)", header.flags);
  if (header.length > max_frame_bytes) {
    return fail(Errc::protocol_error, "frame length {} over the limit of {} bytes", header.length, max_frame_bytes);
  }
  return ok();
}

Result<FrameHeader> decode_header(std::span<const std::byte> bytes, std::uint32_t max_frame_bytes) {
  if (bytes.size() < kHeaderBytes) {
    return fail(Errc::protocol_error, "frame header truncated: {} of {} bytes", bytes.size(), kHeaderBytes);
  }
  const FrameHeader header = read_header(bytes.first<kHeaderBytes>());
  if (auto status = validate_header(header, max_frame_bytes); !status) {
    return tl::unexpected<Error>(std::move(status.error()));
  }
  return header;
}

RequestId echo_request_id(const FrameHeader& header) noexcept {
  return header.magic == kMagic && header.version == kVersion ? header.request_id : RequestId{0};
}

Result<std::vector<std::byte>> encode_frame(MsgType type, RequestId request_id, std::span<const std::byte> payload) {
  if (payload.size() > 0xFFFFFFFFULL) {
    return fail(Errc::invalid_argument, "payload of {} bytes does not fit a frame", payload.size());
  }
  FrameHeader header;
  header.type = type;
  header.length = static_cast<std::uint32_t>(payload.size());
  header.request_id = request_id;
  const auto head = encode_header(header);
  std::vector<std::byte> out;
  out.reserve(kHeaderBytes + payload.size());
  out.insert(out.end(), head.begin(), head.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

void FrameParser::feed(std::span<const std::byte> bytes) {
  if (consumed_ > 0 && consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > std::size_t{64} * 1024 && consumed_ * 2 > buffer_.size()) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
    consumed_ = 0;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

Result<std::optional<Frame>> FrameParser::next() {
  if (failed_) return tl::unexpected<Error>(*failed_);
  if (buffered() < kHeaderBytes) return std::optional<Frame>{};
  const std::span<const std::byte> view(buffer_.data() + consumed_, buffered());
  const FrameHeader header = read_header(view.first<kHeaderBytes>());
  if (auto status = validate_header(header, max_frame_bytes_); !status) {
    failed_ = status.error();
    failed_request_id_ = echo_request_id(header);
    return tl::unexpected<Error>(*failed_);
  }
  if (view.size() - kHeaderBytes < header.length) return std::optional<Frame>{};
  Frame frame;
  frame.header = header;
  frame.payload.assign(view.begin() + kHeaderBytes,
                       view.begin() + static_cast<std::ptrdiff_t>(kHeaderBytes + header.length));
  consumed_ += kHeaderBytes + header.length;
  return std::optional<Frame>{std::move(frame)};
}

std::string_view format_completion_ok(RequestId request_id, std::span<char, kCompletionOkBytes> out) noexcept {
  char* end = std::to_chars(out.data(), out.data() + out.size() - 3, request_id.value()).ptr;
  end[0] = ':';  // no terminator: the view's length says where it ends
  end[1] = 'o';
  end[2] = 'k';
  return std::string_view(out.data(), static_cast<std::size_t>(end + 3 - out.data()));
}

std::string format_completion(RequestId request_id, const Status& result) {
  if (result) {
    std::array<char, kCompletionOkBytes> text;
    return std::string(format_completion_ok(request_id, text));
  }
  return fmt::format("{}:err({})", request_id, result.error().message);
}

Result<Completion> parse_completion(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(Errc::protocol_error, "completion '{}' has no '<id>:'", text);
  }
  std::uint64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + colon, id);
  if (ec != std::errc{} || end != text.data() + colon) {
    return fail(Errc::protocol_error, "completion '{}' has a bad request id", text);
  }
  const std::string_view rest = text.substr(colon + 1);
  Completion completion;
  completion.request_id = RequestId{id};
  if (rest == "ok") return completion;
  if (rest.size() >= 5 && rest.starts_with("err(") && rest.back() == ')') {
    completion.ok = false;
    completion.message = std::string(rest.substr(4, rest.size() - 5));
    return completion;
  }
  return fail(Errc::protocol_error, "completion '{}' is neither '<id>:ok' nor '<id>:err(<message>)'", text);
}

}  // namespace kvb::proto
