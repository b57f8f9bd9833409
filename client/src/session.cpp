#include "kvb/client/session.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <utility>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include "kvb/common/protocol.h"

namespace kvb::client {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;

namespace detail {

/// A frame waiting to be written; owns dup()s of the fds it carries.
struct OutFrame {
  std::vector<std::byte> bytes;
  std::vector<int> fds;

  void close_fds() noexcept {
    for (int fd : fds) ::close(fd);
    fds.clear();
  }
};

/// One request sent and not yet resolved.
struct PendingRequest {
  bool async_op = false;                               // offload / onboard: ends with a notification
  bool counted = false;                                // counts against the daemon's max_inflight
  bool accepted = false;                               // the reply said accepted
  std::function<void(Result<proto::Reply>)> on_reply;  // requests answered by their reply
  Callback<void> on_done;                              // async ops
  ProgressCallback on_progress;                        // onboard_layers

  void fail(const Error& e) const {
    if (async_op) {
      on_done(tl::unexpected(e));
    } else {
      on_reply(tl::unexpected(e));
    }
  }
};

}  // namespace detail

using detail::OutFrame;
using Pending = detail::PendingRequest;

namespace {

constexpr std::size_t kReadChunk = 4096;                         // per session: 10,000 sessions stay small
constexpr std::size_t kMaxBatchFrames = 64;                      // frames gathered into one write
constexpr std::size_t kMaxBatchBytes = std::size_t{256} * 1024;  // bytes gathered into one write
/// Async requests held back (not yet sent) per unit of the daemon's
/// max_inflight; beyond that a new one fails at once with busy.
constexpr std::size_t kHeldPerInflight = 8;
/// Bytes of frames not yet written; beyond that a new request fails with busy.
constexpr std::size_t kMaxQueuedBytes = std::size_t{64} << 20;

/// ok, or the reply's own error.
Status reply_status(const Result<proto::Reply>& reply) {
  if (!reply) return tl::unexpected(reply.error());
  if (reply->code != Errc::ok) return make_error(reply->code, reply->message);
  return ok();
}

}  // namespace

struct Session::Impl {
  explicit Impl(const Executor& ex) : strand(asio::make_strand(ex)), socket(strand), read_buffer(kReadChunk) {}

  asio::strand<Executor> strand;
  Socket socket;
  proto::FrameParser parser;
  std::vector<std::byte> read_buffer;
  // Everything below is touched only on the strand.
  std::deque<OutFrame> queue;
  std::size_t queued_bytes = 0;  // bytes of `queue`
  std::vector<OutFrame> writing_frames;
  std::vector<asio::const_buffer> writing_buffers;
  bool writing = false;
  bool closed = false;
  std::unordered_map<std::uint64_t, Pending> pending;
  // The daemon's max_inflight (from the hello reply; 0 = not known yet), the
  // counted requests sent and not resolved, and those held back, in order.
  std::uint32_t max_inflight = 0;
  std::uint32_t inflight = 0;
  std::deque<OutFrame> held;
};

Session::Session(const Executor& executor) : impl_(std::make_unique<Impl>(executor)) {}

Session::~Session() {
  // Only reached with requests pending when the executor was destroyed with
  // our handlers in it: still resolve each request exactly once.
  auto pending = std::move(impl_->pending);
  for (auto& [id, p] : pending) p.fail(Error{Errc::cancelled, "session destroyed"});
  for (auto& f : impl_->queue) f.close_fds();
  for (auto& f : impl_->writing_frames) f.close_fds();
  for (auto& f : impl_->held) f.close_fds();
}

Session::Executor Session::executor() const { return impl_->strand; }

// ---- connection -------------------------------------------------------------

namespace {

Error connect_error(const std::string& path, const boost::system::error_code& ec) {
  return Error{Errc::io_error, fmt::format("connect to kvblockd socket '{}': {}", path, ec.message())};
}

}  // namespace

Result<std::shared_ptr<Session>> Session::connect(const Executor& executor, const std::string& path) {
  std::shared_ptr<Session> s(new Session(executor));
  boost::system::error_code ec;
  s->impl_->socket.connect(asio::local::stream_protocol::endpoint(path), ec);
  if (ec) return tl::unexpected(connect_error(path, ec));
  s->open_.store(true);
  asio::dispatch(s->impl_->strand, [s] { s->start_read(); });
  return s;
}

void Session::async_connect(const Executor& executor, std::string path, Callback<std::shared_ptr<Session>> done) {
  std::shared_ptr<Session> s(new Session(executor));
  auto endpoint = asio::local::stream_protocol::endpoint(path);
  s->impl_->socket.async_connect(
      endpoint, [s, path = std::move(path), done = std::move(done)](const boost::system::error_code& ec) {
        if (ec) {
          done(tl::unexpected(connect_error(path, ec)));
          return;
        }
        s->open_.store(true);
        s->start_read();
        done(s);
      });
}

void Session::close() {
  asio::dispatch(impl_->strand, [self = shared_from_this()] {
    self->shut_down(Error{Errc::cancelled, "session closed by the client"});
  });
}

void Session::shut_down(const Error& reason) {
  Impl& m = *impl_;
  if (m.closed) return;
  m.closed = true;
  open_.store(false);
  boost::system::error_code ignored;
  m.socket.shutdown(Socket::shutdown_both, ignored);
  m.socket.close(ignored);
  for (auto& f : m.queue) f.close_fds();
  m.queue.clear();
  m.queued_bytes = 0;
  for (auto& f : m.held) f.close_fds();
  m.held.clear();
  m.inflight = 0;
  auto pending = std::move(m.pending);
  m.pending.clear();
  pending_count_.store(0);
  for (auto& [id, p] : pending) p.fail(reason);
}

// ---- reading ----------------------------------------------------------------

void Session::start_read() {
  Impl& m = *impl_;
  if (m.closed) return;
  m.socket.async_read_some(
      asio::buffer(m.read_buffer), [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
        Impl& im = *self->impl_;
        if (im.closed) return;
        if (ec) {
          self->shut_down(ec == asio::error::eof
                              ? Error{Errc::peer_lost, "connection closed by kvblockd"}
                              : Error{Errc::peer_lost, fmt::format("connection to kvblockd lost: {}", ec.message())});
          return;
        }
        im.parser.feed(std::span<const std::byte>(im.read_buffer.data(), n));
        while (!im.closed) {
          auto next = im.parser.next();
          if (!next) {
            self->shut_down(Error{Errc::protocol_error, "bad frame from kvblockd: " + next.error().message});
            return;
          }
          if (!next->has_value()) break;
          self->handle_frame(**next);
        }
        self->start_read();
      });
}

detail::PendingRequest Session::take(std::uint64_t id) {
  Impl& m = *impl_;
  auto it = m.pending.find(id);
  Pending done = std::move(it->second);
  m.pending.erase(it);
  pending_count_.fetch_sub(1, std::memory_order_relaxed);
  if (done.counted) {
    --m.inflight;
    // One counted request ended: the oldest held one may go now.
    if (!m.held.empty() && (m.max_inflight == 0 || m.inflight < m.max_inflight)) {
      OutFrame frame = std::move(m.held.front());
      m.held.pop_front();
      ++m.inflight;
      enqueue(std::move(frame));
    }
  }
  return done;
}

void Session::enqueue(detail::OutFrame frame) {
  Impl& m = *impl_;
  m.queued_bytes += frame.bytes.size();
  m.queue.push_back(std::move(frame));
  start_write();
}

void Session::handle_frame(const proto::Frame& frame) {
  Impl& m = *impl_;
  const std::uint64_t id = frame.header.request_id.value();
  switch (frame.header.type) {
    case proto::MsgType::reply: {
      auto reply = proto::decode_payload<proto::Reply>(frame.payload);
      if (!reply) {
        shut_down(Error{Errc::protocol_error, "bad reply from kvblockd: " + reply.error().message});
        return;
      }
      auto it = m.pending.find(id);
      if (it == m.pending.end() || it->second.accepted) return;  // not ours to resolve
      Pending& p = it->second;
      if (p.async_op && reply->code == Errc::ok && reply->accepted) {
        p.accepted = true;  // the notification resolves it
        return;
      }
      Pending done = take(id);
      if (done.async_op) {
        done.on_done(reply_status(*reply));
      } else {
        done.on_reply(std::move(*reply));
      }
      return;
    }
    case proto::MsgType::notification: {
      auto note = proto::decode_payload<proto::Notification>(frame.payload);
      if (!note) {
        shut_down(Error{Errc::protocol_error, "bad notification from kvblockd: " + note.error().message});
        return;
      }
      auto completion = proto::parse_completion(note->text);
      if (!completion) {
        shut_down(Error{Errc::protocol_error, "bad notification text from kvblockd: " + completion.error().message});
        return;
      }
      auto it = m.pending.find(completion->request_id.value());
      if (it == m.pending.end() || !it->second.async_op) return;
      Pending done = take(completion->request_id.value());
      if (completion->ok) {
        done.on_done(ok());
      } else {
        done.on_done(make_error(note->code == Errc::ok ? Errc::internal : note->code, completion->message));
      }
      return;
    }
    case proto::MsgType::progress: {
      auto progress = proto::decode_payload<proto::Progress>(frame.payload);
      if (!progress) {
        shut_down(Error{Errc::protocol_error, "bad progress from kvblockd: " + progress.error().message});
        return;
      }
      auto it = m.pending.find(id);
      if (it == m.pending.end() || !it->second.on_progress) return;
      it->second.on_progress(*progress);
      return;
    }
    case proto::MsgType::error: {
      auto err = proto::decode_payload<proto::ErrorFrame>(frame.payload);
      shut_down(err ? Error{err->code, "kvblockd closed the connection: " + err->message}
                    : Error{Errc::protocol_error, "bad error frame from kvblockd: " + err.error().message});
      return;
    }
    default:
      shut_down(Error{Errc::protocol_error, fmt::format("kvblockd sent a request-type frame ({}) for request {}",
                                                        proto::to_string(frame.header.type), id)});
      return;
  }
}

// ---- writing ----------------------------------------------------------------

void Session::start_write() {
  Impl& m = *impl_;
  if (m.writing || m.closed || m.queue.empty()) return;
  m.writing = true;
  if (!m.queue.front().fds.empty()) {
    m.queued_bytes -= m.queue.front().bytes.size();
    m.writing_frames.push_back(std::move(m.queue.front()));
    m.queue.pop_front();
    send_with_fds();
    return;
  }
  std::size_t bytes = 0;
  while (!m.queue.empty() && m.queue.front().fds.empty() && m.writing_frames.size() < kMaxBatchFrames &&
         bytes < kMaxBatchBytes) {
    bytes += m.queue.front().bytes.size();
    m.queued_bytes -= m.queue.front().bytes.size();
    m.writing_frames.push_back(std::move(m.queue.front()));
    m.queue.pop_front();
  }
  m.writing_buffers.clear();
  for (const auto& f : m.writing_frames) m.writing_buffers.push_back(asio::buffer(f.bytes));
  asio::async_write(
      m.socket, m.writing_buffers,
      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) { self->finish_write(ec, 0); });
}

// The first frame in writing_frames carries fds: its first bytes go with
// sendmsg + SCM_RIGHTS once the socket is writable, the rest with async_write.
void Session::send_with_fds() {
  Impl& m = *impl_;
  m.socket.async_wait(Socket::wait_write, [self = shared_from_this()](const boost::system::error_code& ec) {
    Impl& im = *self->impl_;
    if (ec || im.closed) {
      self->finish_write(ec ? ec : asio::error::operation_aborted, 0);
      return;
    }
    OutFrame& f = im.writing_frames.front();
    const std::size_t fd_bytes = sizeof(int) * f.fds.size();
    std::vector<char> control(CMSG_SPACE(fd_bytes), 0);
    iovec iov{f.bytes.data(), f.bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(fd_bytes);
    std::memcpy(CMSG_DATA(cm), f.fds.data(), fd_bytes);
    const ssize_t n = ::sendmsg(im.socket.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      self->send_with_fds();
      return;
    }
    if (n < 0) {
      self->finish_write(boost::system::error_code(errno, boost::system::system_category()), 0);
      return;
    }
    f.close_fds();  // the kernel holds its own references now
    const auto sent = static_cast<std::size_t>(n);
    if (sent == f.bytes.size()) {
      self->finish_write({}, 0);
      return;
    }
    asio::async_write(im.socket, asio::buffer(f.bytes.data() + sent, f.bytes.size() - sent),
                      [self](const boost::system::error_code& ec2, std::size_t) { self->finish_write(ec2, 0); });
  });
}

void Session::finish_write(const boost::system::error_code& ec, std::size_t) {
  Impl& m = *impl_;
  for (auto& f : m.writing_frames) f.close_fds();
  m.writing_frames.clear();
  m.writing = false;
  if (ec) {
    shut_down(Error{Errc::peer_lost, fmt::format("writing to kvblockd failed: {}", ec.message())});
    return;
  }
  start_write();
}

// ---- requests ---------------------------------------------------------------

template <class M>
RequestId Session::send(const M& message, std::function<void(Result<proto::Reply>)> on_reply, Callback<void> on_done,
                        std::vector<int> fds, ProgressCallback on_progress) {
  const RequestId id{next_request_id_.fetch_add(1, std::memory_order_relaxed)};
  Pending p;
  p.async_op = static_cast<bool>(on_done);
  // Requests the daemon counts against max_inflight until they end.
  p.counted =
      M::kType == proto::MsgType::offload || M::kType == proto::MsgType::onboard || M::kType == proto::MsgType::wait;
  p.on_reply = std::move(on_reply);
  p.on_done = std::move(on_done);
  p.on_progress = std::move(on_progress);
  auto frame = proto::encode_message(id, message);
  asio::dispatch(impl_->strand, [self = shared_from_this(), id, p = std::move(p), frame = std::move(frame),
                                 fds = std::move(fds)]() mutable {
    Impl& m = *self->impl_;
    auto fail_later = [&](Error e) {
      for (int fd : fds) ::close(fd);
      asio::post(m.strand, [p = std::move(p), e = std::move(e)] { p.fail(e); });
    };
    if (!frame) return fail_later(frame.error());
    if (m.closed) return fail_later(Error{Errc::peer_lost, "session is closed"});
    if (m.pending.contains(id.value()))
      return fail_later(Error{Errc::already_exists, fmt::format("request id {} is still pending", id)});
    if (m.queued_bytes + frame->size() > kMaxQueuedBytes) {
      return fail_later(Error{
          Errc::busy, fmt::format("client: {} bytes of requests are not yet written to kvblockd", m.queued_bytes)});
    }
    const bool hold = p.counted && m.max_inflight != 0 && m.inflight >= m.max_inflight;
    if (hold && m.held.size() >= std::size_t{m.max_inflight} * kHeldPerInflight) {
      return fail_later(Error{Errc::busy, fmt::format("client: {} requests in flight and {} waiting to be sent "
                                                      "(the daemon's max_inflight is {})",
                                                      m.inflight, m.held.size(), m.max_inflight)});
    }
    const bool counted = p.counted;
    m.pending.emplace(id.value(), std::move(p));
    self->pending_count_.fetch_add(1, std::memory_order_relaxed);
    if (hold) {
      m.held.push_back(OutFrame{std::move(*frame), std::move(fds)});
      return;
    }
    if (counted) ++m.inflight;
    self->enqueue(OutFrame{std::move(*frame), std::move(fds)});
  });
  return id;
}

namespace {

/// on_reply for a request whose ok reply carries Body, decoded into T by convert.
template <class Body, class T, class Convert>
std::function<void(Result<proto::Reply>)> body_reply(Callback<T> done, Convert convert) {
  return [done = std::move(done), convert](Result<proto::Reply> reply) {
    if (!reply) return done(tl::unexpected(reply.error()));
    auto body = proto::decode_reply_body<Body>(*reply);
    if (!body) return done(tl::unexpected(body.error()));
    done(convert(std::move(*body)));
  };
}

std::function<void(Result<proto::Reply>)> empty_reply(Callback<void> done) {
  return [done = std::move(done)](const Result<proto::Reply>& reply) { done(reply_status(reply)); };
}

}  // namespace

RequestId Session::async_hello(const HelloParams& params, Callback<HelloInfo> done) {
  proto::HelloRequest req;
  req.client_name = params.client_name;
  req.tenant_salt = params.tenant_salt;
  req.layout = params.shape;
  // Runs on the strand: from now on the session holds back what max_inflight does not allow.
  return send(req,
              body_reply<proto::HelloReply>(std::move(done),
                                            [self = weak_from_this()](proto::HelloReply r) {
                                              if (auto s = self.lock()) s->impl_->max_inflight = r.max_inflight;
                                              return r;
                                            }),
              {}, {});
}

RequestId Session::async_register_kv(const KvRegion& region, Callback<void> done) {
  proto::RegisterKvRequest req;
  req.memory = proto::MemoryHandle::memfd;
  req.layout_kind = region.kind();
  req.num_blocks = region.num_blocks();
  req.region_bytes = region.region_bytes();
  req.fd_count = region.num_regions();
  std::vector<int> fds;
  if (region.fds().size() != region.num_regions()) {
    const Error e{Errc::wrong_state, "register_kv: the kv region's fds were closed (close_fds) before registering"};
    asio::post(impl_->strand, [done = std::move(done), e] { done(tl::unexpected(e)); });
    return RequestId{0};
  }
  for (int fd : region.fds()) {
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      for (int c : fds) ::close(c);
      const Error e{Errc::io_error, fmt::format("dup of kv region fd {}: {}", fd, std::strerror(errno))};
      asio::post(impl_->strand, [done = std::move(done), e] { done(tl::unexpected(e)); });
      return RequestId{0};
    }
    fds.push_back(copy);
  }
  return send(req, empty_reply(std::move(done)), {}, std::move(fds));
}

RequestId Session::async_register_device_kv(const DeviceKv& kv, Callback<void> done) {
  std::vector<int> fds;
  for (int fd : kv.fds()) {
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      for (int c : fds) ::close(c);
      const Error e{Errc::io_error, fmt::format("dup of a VMM fd {}: {}", fd, std::strerror(errno))};
      asio::post(impl_->strand, [done = std::move(done), e] { done(tl::unexpected(e)); });
      return RequestId{0};
    }
    fds.push_back(copy);
  }
  return send(kv.request(), empty_reply(std::move(done)), {}, std::move(fds));
}

RequestId Session::async_lookup(std::span<const std::uint64_t> hashes, bool pin, Callback<LookupResult> done) {
  proto::LookupRequest req;
  req.pin = pin;
  req.hashes.assign(hashes.begin(), hashes.end());
  return send(req, body_reply<proto::LookupReply>(std::move(done), [](proto::LookupReply r) { return r; }), {}, {});
}

RequestId Session::async_locate(std::span<const std::uint64_t> hashes, Callback<std::vector<WorkerPrefix>> done) {
  proto::LocateRequest req;
  req.hashes.assign(hashes.begin(), hashes.end());
  return send(
      req, body_reply<proto::LocateReply>(std::move(done), [](proto::LocateReply r) { return std::move(r.workers); }),
      {}, {});
}

RequestId Session::async_offload(std::span<const OffloadItem> items, Callback<void> done) {
  proto::OffloadRequest req;
  req.items.assign(items.begin(), items.end());
  return send(req, {}, std::move(done), {});
}

RequestId Session::async_onboard(std::span<const OnboardItem> items, Callback<void> done) {
  proto::OnboardRequest req;
  req.items.assign(items.begin(), items.end());
  return send(req, {}, std::move(done), {});
}

RequestId Session::async_onboard_layers(std::span<const OnboardItem> items, std::uint32_t layers_per_group,
                                        ProgressCallback on_progress, Callback<void> done) {
  proto::OnboardLayersRequest req;
  req.layers_per_group = layers_per_group;
  req.items.assign(items.begin(), items.end());
  return send(req, {}, std::move(done), {}, std::move(on_progress));
}

RequestId Session::async_release(std::span<const std::uint64_t> hashes, Callback<std::uint32_t> done) {
  proto::ReleaseRequest req;
  req.hashes.assign(hashes.begin(), hashes.end());
  return send(req, body_reply<proto::ReleaseReply>(std::move(done), [](proto::ReleaseReply r) { return r.released; }),
              {}, {});
}

RequestId Session::async_status(RequestId target, Callback<RequestStatus> done) {
  proto::StatusRequest req;
  req.target = target;
  return send(req, body_reply<proto::RequestStateReply>(std::move(done), [](proto::RequestStateReply r) { return r; }),
              {}, {});
}

RequestId Session::async_wait(RequestId target, std::uint32_t timeout_ms, Callback<RequestStatus> done) {
  proto::WaitRequest req;
  req.target = target;
  req.timeout_ms = timeout_ms;
  return send(req, body_reply<proto::RequestStateReply>(std::move(done), [](proto::RequestStateReply r) { return r; }),
              {}, {});
}

RequestId Session::async_stats(Callback<std::string> done) {
  return send(proto::StatsRequest{},
              body_reply<proto::StatsReply>(std::move(done), [](proto::StatsReply r) { return std::move(r.json); }), {},
              {});
}

RequestId Session::async_config(Callback<std::string> done) {
  return send(proto::ConfigRequest{},
              body_reply<proto::ConfigReply>(std::move(done), [](proto::ConfigReply r) { return std::move(r.toml); }),
              {}, {});
}

RequestId Session::async_drain(Callback<void> done) {
  return send(proto::DrainRequest{}, empty_reply(std::move(done)), {}, {});
}

RequestId Session::async_bye(Callback<void> done) {
  return send(proto::ByeRequest{}, empty_reply(std::move(done)), {}, {});
}

}  // namespace kvb::client
