// Private to transport/src: the ActiveMessageManager's wire format (AM ids,
// headers) and its UCX receive callbacks (ActiveMessageManager::Impl).
#pragma once

#include <array>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kvb/common/protocol_frame.h"
#include "kvb/transport/am_manager.h"
#include "ucx_request.h"

namespace kvb::transport {

namespace wire {

// UCX AM ids owned by the manager.
constexpr unsigned kAmMessage = 11;   // header: fixed 16 bytes + type; data: payload
constexpr unsigned kAmResponse = 12;  // header: ResponseHeader; data: reply payload
constexpr unsigned kAmWrite = 13;     // header: WriteHeader; data: bulk bytes (eager or rendezvous)
constexpr unsigned kAmHello = 14;     // header: Hello; data: sender's worker address (empty in an ack)
constexpr unsigned kAmBye = 15;       // header: u32 sender token
constexpr std::uint8_t kVersion = 1;
constexpr std::uint8_t kFlagNotify = 1;
// The message notifies about bulk writes sent before it: if any of them was
// refused, it is answered err(rejected: ...) and its handler does not run.
constexpr std::uint8_t kFlagAfterWrites = 2;

struct WriteHeader {
  std::uint64_t address = 0;  // in memory the receiver exposed
  std::uint64_t length = 0;
  std::uint32_t token = 0;  // the sending manager (counts refused writes per sender)
  std::uint32_t reserved = 0;
};
static_assert(sizeof(WriteHeader) == 24);

struct Hello {
  std::uint32_t token = 0;        // the sender manager's token
  std::uint32_t pid = 0;          // the sender's process id
  std::uint32_t sender_peer = 0;  // the PeerId the connecting side uses
  std::uint32_t ack = 0;          // 1 in the answer to a hello
};
static_assert(sizeof(Hello) == 16);

template <class T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A message header, on the stack (heap only for very long type names):
// [u8 version][u8 flags][u16 type length][u32 sender token][u64 notification id][type].
class MessageHeader {
 public:
  MessageHeader(std::string_view type, std::optional<std::uint64_t> id, std::uint32_t token, std::uint8_t flags) {
    const std::size_t size = ActiveMessageManager::kFixedHeader + type.size();
    if (size > inline_.size()) heap_.resize(size);
    std::byte* h = heap_.empty() ? inline_.data() : heap_.data();
    h[0] = std::byte{kVersion};
    h[1] = std::byte{static_cast<std::uint8_t>((id ? kFlagNotify : 0) | flags)};
    const auto len = static_cast<std::uint16_t>(type.size());
    std::memcpy(h + 2, &len, 2);
    std::memcpy(h + 4, &token, 4);
    const std::uint64_t nid = id.value_or(0);
    std::memcpy(h + 8, &nid, 8);
    std::memcpy(h + ActiveMessageManager::kFixedHeader, type.data(), type.size());
    view_ = {h, size};
  }
  MessageHeader(const MessageHeader&) = delete;
  MessageHeader& operator=(const MessageHeader&) = delete;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return view_; }

 private:
  std::array<std::byte, 128> inline_;
  Bytes heap_;
  std::span<const std::byte> view_;
};

// A response header: [u16 Errc, 0 when ok][completion text: `<id>:ok` or
// `<id>:err(<message>)`, common's format]. The code travels as a number:
// nothing is guessed back from the message text. On the stack when ok.
class ResponseHeader {
 public:
  static constexpr std::size_t kCodeBytes = 2;

  /// `limit`: the largest header UCX takes; a longer error text is cut.
  ResponseHeader(std::uint64_t id, const Result<Bytes>& result, std::size_t limit) {
    const auto code = static_cast<std::uint16_t>(result ? Errc::ok : result.error().code);
    std::string_view text;
    if (result) {
      text = proto::format_completion_ok(RequestId{id}, std::span<char, proto::kCompletionOkBytes>(ok_text_));
    } else {
      err_text_ = proto::format_completion(RequestId{id}, Status(tl::unexpected(result.error())));
      if (err_text_.size() + kCodeBytes > limit) err_text_ = err_text_.substr(0, limit - kCodeBytes - 4) + "...)";
      text = err_text_;
    }
    std::memcpy(bytes_.data(), &code, kCodeBytes);
    if (text.size() + kCodeBytes > bytes_.size()) {
      heap_.resize(text.size() + kCodeBytes);
      std::memcpy(heap_.data(), &code, kCodeBytes);
      std::memcpy(heap_.data() + kCodeBytes, text.data(), text.size());
      view_ = heap_;
    } else {
      std::memcpy(bytes_.data() + kCodeBytes, text.data(), text.size());
      view_ = std::span<const std::byte>(bytes_.data(), text.size() + kCodeBytes);
    }
  }
  ResponseHeader(const ResponseHeader&) = delete;
  ResponseHeader& operator=(const ResponseHeader&) = delete;

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return view_; }
  [[nodiscard]] std::string_view text() const noexcept { return text_of_view(view_); }
  [[nodiscard]] static std::string text_of(std::span<const std::byte> header) {
    return std::string(text_of_view(header));
  }

  struct Parsed {
    Errc code = Errc::ok;
    proto::Completion completion;
  };
  /// The code and common's parse of the text; protocol_error when either is
  /// malformed or they disagree (ok with a code, err without one).
  [[nodiscard]] static Result<Parsed> parse(std::span<const std::byte> header) {
    if (header.size() < kCodeBytes) return fail(Errc::protocol_error, "response header of {} bytes", header.size());
    const auto code = static_cast<Errc>(load<std::uint16_t>(header.data()));
    auto completion = proto::parse_completion(text_of_view(header));
    if (!completion) return tl::unexpected(completion.error());
    if (completion->ok != (code == Errc::ok)) {
      return fail(Errc::protocol_error, "response '{:.80}' carries code {}", text_of_view(header),
                  static_cast<unsigned>(code));
    }
    return Parsed{code, std::move(*completion)};
  }

 private:
  static std::string_view text_of_view(std::span<const std::byte> header) {
    if (header.size() < kCodeBytes) return {};
    return std::string_view(reinterpret_cast<const char*>(header.data()) + kCodeBytes, header.size() - kCodeBytes);
  }
  std::array<char, proto::kCompletionOkBytes> ok_text_;
  std::array<std::byte, 64> bytes_;
  std::string err_text_;
  Bytes heap_;
  std::span<const std::byte> view_;
};

}  // namespace wire

/// Receive path shared by the AM ids: copy eager data inside the callback;
/// for rendezvous, start ucp_am_recv_data_nbx and finish on the executor.
struct ActiveMessageManager::Impl {
  using Done = std::function<void(Result<Bytes>)>;
  static void receive(ActiveMessageManager& self, void* data, size_t length, const ucp_am_recv_param_t* param,
                      Done done);
  static ucs_status_t on_message(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                 const ucp_am_recv_param_t* param);
  static ucs_status_t on_response(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                  const ucp_am_recv_param_t* param);
  static ucs_status_t on_hello(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param);
  static ucs_status_t on_bye(void* arg, const void* header, size_t header_length, void*, size_t,
                             const ucp_am_recv_param_t* param);
  static ucs_status_t on_write(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param);
};

}  // namespace kvb::transport
