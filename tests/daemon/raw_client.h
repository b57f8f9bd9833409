// RawClient: a blocking test client that speaks the protocol through the
// kvb_common codec only (no client library), so tests control every byte.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvb/common/protocol.h"

namespace kvb::test {

class RawClient {
 public:
  using ms = std::chrono::milliseconds;

  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  RawClient(RawClient&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        connected_(other.connected_),
        parser_(std::move(other.parser_)),
        stash_(std::move(other.stash_)),
        eof_(other.eof_) {}
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] bool connected() const noexcept { return connected_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] bool eof() const noexcept { return eof_; }

  /// Sends raw bytes in one sendmsg, with `fds` as SCM_RIGHTS when given.
  bool send_bytes(std::span<const std::byte> bytes, std::span<const int> fds = {}) {
    std::size_t sent = 0;
    bool first = true;
    while (sent < bytes.size()) {
      iovec iov{const_cast<std::byte*>(bytes.data() + sent), bytes.size() - sent};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      std::vector<char> control;
      if (first && !fds.empty()) {
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
      }
      const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
      first = false;
    }
    return true;
  }

  template <class M>
  bool send(RequestId id, const M& message, std::span<const int> fds = {}) {
    auto frame = proto::encode_message(id, message);
    return frame && send_bytes(*frame, fds);
  }

  /// The next frame from the daemon (stashed ones first), or nullopt after
  /// `timeout`, at EOF or on a malformed frame.
  std::optional<proto::Frame> read_frame(ms timeout = ms(10000)) {
    if (!stash_.empty()) {
      auto frame = std::move(stash_.front());
      stash_.pop_front();
      return frame;
    }
    return read_wire(timeout);
  }

  /// Reads until the reply to `id` (other frames are stashed).
  std::optional<proto::Reply> reply_to(RequestId id, ms timeout = ms(10000)) {
    return next_of<proto::Reply>(proto::MsgType::reply, id, timeout);
  }

  /// Reads until the notification of `id` (other frames are stashed).
  std::optional<proto::Notification> notification_of(RequestId id, ms timeout = ms(10000)) {
    return next_of<proto::Notification>(proto::MsgType::notification, id, timeout);
  }

  /// The first frame of `type` for `id`, from the stash or the wire (other
  /// frames are stashed), decoded as Msg; nullopt on timeout or a bad payload.
  template <class Msg>
  std::optional<Msg> next_of(proto::MsgType type, RequestId id, ms timeout) {
    const auto matches = [&](const auto& frame) { return frame.header.type == type && frame.header.request_id == id; };
    const auto decode = [](const auto& frame) -> std::optional<Msg> {
      auto msg = proto::decode_payload<Msg>(frame.payload);
      return msg ? std::optional(*msg) : std::nullopt;
    };
    for (auto it = stash_.begin(); it != stash_.end(); ++it) {
      if (matches(*it)) {
        auto msg = decode(*it);
        stash_.erase(it);
        return msg;
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto frame = read_wire(left);
      if (!frame) return std::nullopt;
      if (matches(*frame)) return decode(*frame);
      stash_.push_back(std::move(*frame));
    }
  }

  /// send + reply_to.
  template <class M>
  std::optional<proto::Reply> call(RequestId id, const M& message, std::span<const int> fds = {}) {
    if (!send(id, message, fds)) return std::nullopt;
    return reply_to(id);
  }

  /// send + reply_to + the typed body (an error when refused).
  template <class Body, class M>
  Result<Body> call_body(RequestId id, const M& message) {
    auto reply = call(id, message);
    if (!reply) return fail(Errc::io_error, "no reply to request {}", id);
    return proto::decode_reply_body<Body>(*reply);
  }

  /// Whether the daemon closes the connection within `timeout` (frames
  /// before the close are stashed).
  bool wait_closed(ms timeout = ms(10000)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!eof_) {
      const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      auto frame = read_wire(left);
      if (frame) stash_.push_back(std::move(*frame));
    }
    return true;
  }

 private:
  std::optional<proto::Frame> read_wire(ms timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      auto next = parser_.next();
      if (!next) return std::nullopt;
      if (next->has_value()) return std::move(**next);
      if (eof_) return std::nullopt;
      const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      std::byte buffer[65536];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        eof_ = true;
        continue;
      }
      parser_.feed(std::span(buffer, static_cast<std::size_t>(n)));
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  proto::FrameParser parser_{0xFFFFFFFFU};
  std::deque<proto::Frame> stash_;
  bool eof_ = false;
};

}  // namespace kvb::test
