// Private to transport/src: the ActiveMessageManager's wire format (AM ids,
// headers) and its UCX receive callbacks (ActiveMessageManager::Impl).
#pragma once

#include <array>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "kvb/transport/am_manager.h"
#include "ucx_request.h"

namespace kvb::transport {

namespace wire {

// UCX AM ids owned by the manager.
constexpr unsigned kAmMessage = 11;   // header: fixed 16 bytes + type; data: payload
constexpr unsigned kAmResponse = 12;  // header: "<id>:ok" | "<id>:err(<message>)"; data: reply payload
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
constexpr auto kSendTimeout = std::chrono::milliseconds(30000);

template <class T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A message header, on the stack (heap only for very long type names).
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

/// Error code for an `err(<message>)` text received from a peer.
inline Errc errc_of_text(std::string_view message) {
  if (message.starts_with("busy")) return Errc::busy;
  if (message.starts_with("unknown message type")) return Errc::not_found;
  if (message.starts_with("peer lost")) return Errc::peer_lost;
  if (message.starts_with("timeout")) return Errc::timeout;
  if (message.starts_with("rejected")) return Errc::invalid_argument;
  return Errc::internal;
}

}  // namespace wire

struct ActiveMessageManager::Hello {
  std::uint32_t token = 0;        // the sender manager's token
  std::uint32_t pid = 0;          // the sender's process id
  std::uint32_t sender_peer = 0;  // the PeerId the connecting side uses
  std::uint32_t ack = 0;          // 1 in the answer to a hello
};

/// Receive path shared by the AM ids: copy eager data inside the callback;
/// for rendezvous, start ucp_am_recv_data_nbx and finish on the executor.
struct ActiveMessageManager::Impl {
  using Done = std::function<void(Result<Bytes>)>;
  static void receive(ActiveMessageManager& self, void* data, size_t length, const ucp_am_recv_param_t* param,
                      Done done);
  static void receive_into(ActiveMessageManager& self, void* data, std::byte* dest, size_t length,
                           std::function<void(Status)> done);
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
