#include "session.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <unordered_set>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "daemon_core.h"

namespace kvb::daemon {
namespace {

namespace asio = boost::asio;
using proto::MsgType;

constexpr std::size_t kReadBufferBytes = std::size_t{64} * 1024;
/// Reads one connection does in a row before it lets the others run.
constexpr int kReadsBeforeYield = 8;
/// A client that stops reading its answers is cut off past this backlog.
constexpr std::size_t kMaxOutputBacklog = 64U << 20;

}  // namespace

Session::Session(DaemonCore& core, SessionId id, Socket socket, std::uint32_t uid)
    : core_(core), id_(id), uid_(uid), socket_(std::move(socket)), parser_(core.config.max_frame_bytes) {}

Session::~Session() {
  if (!closed_) core_.connections.erase(id_.value());  // not reached while the loop runs: close_socket() did it
}

void Session::start() {
  core_.connections.emplace(id_.value(), this);
  core_.metrics.session_opened();
  rearm_deadline(true);
  asio::co_spawn(
      socket_.get_executor(), [self = shared_from_this()] { return self->read_loop(); }, asio::detached);
}

long Session::receive(std::byte* buffer, std::size_t capacity) {
  iovec iov{buffer, capacity};
  const std::size_t fd_room = make_fd_room();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * proto::kMaxFdsPerFrame)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Room for fd_room fds only: more are dropped by the kernel (MSG_CTRUNC),
  // which closes this connection below.
  msg.msg_control = fd_room == 0 ? nullptr : control;
  msg.msg_controllen = fd_room == 0 ? 0 : CMSG_SPACE(sizeof(int) * fd_room);
  const ssize_t n = ::recvmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) return -1;
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) fds_truncated_ = true;
  received_bytes_ += static_cast<std::uint64_t>(n);
  frame_fds_.received(received_bytes_, std::move(fds));
  return static_cast<long>(n);
}

std::size_t Session::make_fd_room() {
  while (core_.fd_room() < proto::kMaxFdsPerFrame &&
         core_.evict_biggest(/*fds=*/true, this, held_fds(), "the daemon's fd budget is exhausted")) {
  }
  return static_cast<std::size_t>(std::min<std::uint64_t>(proto::kMaxFdsPerFrame, core_.fd_room()));
}

void Session::enforce_byte_budget() {
  while (core_.held.bytes > core_.config.max_buffered_bytes &&
         core_.evict_biggest(/*fds=*/false, nullptr, 0, "the daemon's buffered bytes are over the budget")) {
  }
}

void Session::evict(const std::string& why) {
  spdlog::warn("session {} (uid {}): closed: {}", id_, uid_, why);
  abort_connection(Errc::out_of_capacity, "closed by the daemon: " + why);
}

void Session::account() noexcept {
  const std::size_t fds = held_fds();
  const std::size_t bytes = held_bytes();
  core_.held.fds = core_.held.fds - accounted_fds_ + fds;
  core_.held.bytes = core_.held.bytes - accounted_bytes_ + bytes;
  accounted_fds_ = fds;
  accounted_bytes_ = bytes;
}

asio::awaitable<void> Session::read_loop() {
  static thread_local std::vector<std::byte> buffer(kReadBufferBytes);
  int reads_in_a_row = 0;
  bool wait_first = false;  // a short read drained the socket: wait for readiness, skip the EAGAIN
  while (!stop_reading_ && !closed_) {
    if (wait_first) {
      boost::system::error_code ec;
      co_await socket_.async_wait(Socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      reads_in_a_row = 0;
      wait_first = false;
    }
    const long n = receive(buffer.data(), buffer.size());
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_first = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (parser_.mid_frame() && n == 0) {
        spdlog::debug("session {}: peer closed mid-frame ({} bytes buffered)", id_, parser_.buffered());
      }
      break;  // EOF, reset or another error: the session ends
    }
    parser_.feed(std::span(buffer.data(), static_cast<std::size_t>(n)));
    account();
    enforce_byte_budget();
    if (closed_) break;  // this connection held the most
    wait_first = static_cast<std::size_t>(n) < buffer.size();
    if (fds_truncated_ || frame_fds_.held() > proto::kMaxFdsPerFrame) {
      protocol_error(
          RequestId{0},
          Error{Errc::protocol_error,
                fds_truncated_ ? std::string("passed fds were dropped (MSG_CTRUNC): the daemon may be out of "
                                             "file descriptors")
                               : fmt::format("{} fds passed with one frame (at most {})", frame_fds_.held(),
                                             proto::kMaxFdsPerFrame)});
      break;
    }
    const std::uint64_t before = frames_handled_;
    const bool more = drain_frames();
    account();
    if (!more) break;
    rearm_deadline(frames_handled_ != before);
    if (++reads_in_a_row >= kReadsBeforeYield) {
      reads_in_a_row = 0;
      co_await asio::post(socket_.get_executor(), asio::use_awaitable);
    }
  }
  end();
  if (!writing_ && out_.empty())
    close_socket();
  else
    close_after_flush_ = true;
}

bool Session::drain_frames() {
  while (!stop_reading_) {
    if (hello_pending_) return true;  // resume_frames() goes on once the hello is answered
    auto next = parser_.next();
    if (!next) {
      protocol_error(parser_.failed_request_id(), next.error());
      return false;
    }
    if (!next->has_value()) return true;
    ++frames_handled_;
    handle(**next, frame_fds_.claim(received_bytes_ - parser_.buffered()));
  }
  return false;
}

void Session::handle(const proto::Frame& frame, std::vector<UniqueFd> fds) {
  const RequestId id = frame.header.request_id;
  const MsgType type = frame.header.type;
  handling_started_ = Clock::now();
  if (!fds.empty() && type != MsgType::register_kv) {
    spdlog::debug("session {}: closing {} fds passed with a {} frame", id_, fds.size(), proto::to_string(type));
    fds.clear();
  }
  auto decoded = proto::decode_request(type, frame.payload);
  if (!decoded) return protocol_error(id, decoded.error());
  if (in_flight(id)) {
    return refuse(id, proto::to_string(type),
                  Error{Errc::already_exists, fmt::format("request id {} is already in flight in this session", id)});
  }
  auto& request = *decoded;
  switch (type) {
    case MsgType::hello: return on_hello(id, std::get<proto::HelloRequest>(request));
    case MsgType::register_kv: return on_register_kv(id, std::get<proto::RegisterKvRequest>(request), std::move(fds));
    case MsgType::lookup: return on_lookup(id, std::get<proto::LookupRequest>(request));
    case MsgType::locate: return on_locate(id, std::get<proto::LocateRequest>(request));
    case MsgType::offload: return on_offload(id, std::move(std::get<proto::OffloadRequest>(request)));
    case MsgType::onboard:
      return on_onboard(id, std::move(std::get<proto::OnboardRequest>(request).items), 0, MsgType::onboard);
    case MsgType::onboard_layers: {
      auto& layered = std::get<proto::OnboardLayersRequest>(request);
      return on_onboard(id, std::move(layered.items), layered.layers_per_group, MsgType::onboard_layers);
    }
    case MsgType::release: return on_release(id, std::get<proto::ReleaseRequest>(request));
    case MsgType::status: return on_status(id, std::get<proto::StatusRequest>(request));
    case MsgType::wait: return on_wait(id, std::get<proto::WaitRequest>(request));
    case MsgType::stats: return reply(id, proto::make_reply(proto::StatsReply{core_.stats_json()}), "stats");
    case MsgType::config:
    case MsgType::drain: return on_operator(id, type);
    case MsgType::bye:
      reply(id, proto::make_empty_reply(), "bye");
      stop_reading_ = true;
      return;
    default: return protocol_error(id, Error{Errc::protocol_error, "not a request"});
  }
}

void Session::on_operator(RequestId id, MsgType type) {
  const auto name = proto::to_string(type);
  if (!core_.is_operator(uid_)) {
    spdlog::warn("session {}: {} refused: uid {} is not an operator (operator_uids)", id_, name, uid_);
    return refuse(id, name,
                  Error{Errc::permission_denied,
                        fmt::format("{} needs an operator: uid {} is not in operator_uids", name, uid_)});
  }
  if (type == MsgType::config) {
    return reply(id, proto::make_reply(proto::ConfigReply{core_.config.to_toml()}), name);
  }
  if (!core_.draining)
    spdlog::info("drain requested by session {} (uid {}): no new offload/onboard accepted", id_, uid_);
  core_.draining = true;
  reply(id, proto::make_empty_reply(), name);
}

void Session::on_hello(RequestId id, const proto::HelloRequest& request) {
  if (hello_done_) return refuse(id, "hello", Error{Errc::wrong_state, "hello was already done in this session"});
  if (request.min_version > proto::kVersion || request.max_version < proto::kVersion) {
    return refuse(id, "hello",
                  Error{Errc::unsupported, fmt::format("client speaks versions {}..{}, the daemon speaks {}",
                                                       request.min_version, request.max_version, proto::kVersion)});
  }
  // num_layers 0: no layout (an operator session, e.g. kvblockctl)
  if (request.layout.num_layers == 0) return finish_hello(id, request.client_name, request.tenant_salt);
  // A new shape's pool is built off the loop: until it is, this session's
  // next frames wait in its buffer (drain_frames), in order.
  hello_pending_ = true;
  auto called_back_inline = std::make_shared<bool>(true);
  core_.blocks.attach_layout_async(request.layout,
                                   [self = weak_from_this(), &blocks = core_.blocks, id, name = request.client_name,
                                    salt = request.tenant_salt, called_back_inline](Result<LayoutPool*> pool) {
                                     auto s = self.lock();
                                     if (!s || s->ended_) {  // the session ended while its pool was built
                                       if (pool) blocks.detach_layout(**pool);
                                       return;
                                     }
                                     s->hello_pending_ = false;
                                     if (pool) {
                                       s->pool_ = *pool;
                                       s->finish_hello(id, name, salt);
                                     } else {
                                       s->refuse(id, "hello", pool.error());
                                     }
                                     if (!*called_back_inline) s->resume_frames();
                                   });
  *called_back_inline = false;
}

void Session::resume_frames() {
  if (closed_ || stop_reading_ || ended_) return;
  const bool more = drain_frames();
  account();
  if (!more) {
    // The read loop may be waiting for the socket: wake it to end the session.
    stop_reading_ = true;
    boost::system::error_code ignored;
    socket_.cancel(ignored);
  }
}

void Session::finish_hello(RequestId id, const std::string& client_name, std::uint64_t tenant_salt) {
  hello_done_ = true;
  // The uid (SO_PEERCRED), not the client, picks the tenant namespace.
  salt_ = core_.tenants->session_key(uid_, tenant_salt);
  spdlog::debug("session {}: hello from '{}' (uid {}, salt {:#x}, layout {})", id_, client_name, uid_, tenant_salt,
                pool_ != nullptr ? "yes" : "none");
  proto::HelloReply body;
  body.session_id = id_;
  body.version = proto::kVersion;
  body.max_frame_bytes = core_.config.max_frame_bytes;
  body.max_inflight = core_.config.max_inflight;
  body.gpu_present = core_.gpu_present;
  body.server_version = "kvblockd " KVB_VERSION;
  reply(id, proto::make_reply(body), "hello");
}

void Session::on_register_kv(RequestId id, const proto::RegisterKvRequest& request, std::vector<UniqueFd> fds) {
  // The frame's own fds (FrameFds); any refusal below closes them with it.
  if (fds.size() < request.fd_count) {
    return protocol_error(
        id, Error{Errc::protocol_error,
                  fmt::format("register_kv declares {} fds but {} arrived with it", request.fd_count, fds.size())});
  }
  if (fds.size() > request.fd_count) {
    spdlog::debug("session {}: register_kv {} declares {} fds; closing {} more that came with it", id_, id,
                  request.fd_count, fds.size() - request.fd_count);
    fds.resize(request.fd_count);
  }
  if (pool_ == nullptr) {
    return refuse(id, "register_kv", Error{Errc::wrong_state, "register_kv needs a hello with a layout first"});
  }
  auto kv = core_.blocks.register_kv(*pool_, request, std::move(fds));
  if (!kv) return refuse(id, "register_kv", kv.error());
  kv_ = std::move(*kv);
  reply(id, proto::make_empty_reply(), "register_kv");
}

void Session::on_lookup(RequestId id, const proto::LookupRequest& request) {
  if (pool_ == nullptr) {
    return refuse(id, "lookup", Error{Errc::wrong_state, "lookup needs a hello with a layout first"});
  }
  auto result = core_.blocks.lookup(*pool_, salt_, request.hashes);
  if (request.pin && pins_.size() + result.matched > core_.config.max_session_pins) {
    // Refused whole: the leases of `result` end here.
    return refuse(id, "lookup",
                  Error{Errc::out_of_capacity,
                        fmt::format("pinning {} more blocks: the session holds {} leases (max_session_pins {}); "
                                    "release some first",
                                    result.matched, pins_.size(), core_.config.max_session_pins)});
  }
  if (request.pin) {
    for (std::uint32_t i = 0; i < result.matched; ++i) {
      pins_.emplace(request.hashes[i], std::move(result.leases[i]));
    }
  }
  last_lookup_.assign(request.hashes.begin(), request.hashes.end());
  last_prefix_ = result.prefix();
  last_counted_ = result.matched;
  proto::LookupReply body;
  body.prefix_blocks = result.prefix();  // pins cover the local prefix only
  // Blocks held here after a remote one count as G2 (where an onboard
  // reads them from; one only on disk is read into G2 first).
  body.tiers.push_back(proto::TierMatch{proto::WireTier::g2, result.g2_blocks + result.local_after_remote});
  if (result.g1_blocks > 0) body.tiers.push_back(proto::TierMatch{proto::WireTier::g1, result.g1_blocks});
  if (result.g3_blocks > 0) body.tiers.push_back(proto::TierMatch{proto::WireTier::g3, result.g3_blocks});
  if (result.g4_blocks > 0) body.tiers.push_back(proto::TierMatch{proto::WireTier::g4, result.g4_blocks});
  reply(id, proto::make_reply(body), "lookup");
}

void Session::on_locate(RequestId id, const proto::LocateRequest& request) {
  if (pool_ == nullptr) {
    return refuse(id, "locate", Error{Errc::wrong_state, "locate needs a hello with a layout first"});
  }
  reply(id, proto::make_reply(proto::LocateReply{core_.blocks.locate(*pool_, salt_, request.hashes)}), "locate");
}

std::optional<std::uint64_t> Session::parent_in_last_lookup(std::uint64_t hash) const {
  // Usually the offload of the lookup's misses: hash is the first of them.
  if (last_prefix_ > 0 && last_prefix_ < last_lookup_.size() && last_lookup_[last_prefix_] == hash)
    return last_lookup_[last_prefix_ - 1];
  for (std::size_t k = 1; k < last_lookup_.size(); ++k)
    if (last_lookup_[k] == hash) return last_lookup_[k - 1];
  return std::nullopt;
}

std::vector<std::uint8_t> Session::take_counted(std::span<const proto::OnboardItem> items) {
  std::vector<std::uint8_t> counted(items.size(), 0);
  const std::span<const std::uint64_t> hits(last_lookup_.data(),
                                            std::min<std::size_t>(last_counted_, last_lookup_.size()));
  std::unordered_set<std::uint64_t> set;  // built only when the items are not the hits in order
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i < hits.size() && hits[i] == items[i].hash) {
      counted[i] = 1;
      continue;
    }
    if (set.empty()) set.insert(hits.begin(), hits.end());
    counted[i] = set.contains(items[i].hash) ? 1 : 0;
  }
  last_counted_ = 0;
  return counted;
}

void Session::on_offload(RequestId id, proto::OffloadRequest request) {
  if (pool_ != nullptr) {
    if (auto fits = core_.blocks.check_fits(*pool_, salt_, request.items, core_.admission.would_start_now()); !fits)
      return refuse(id, proto::to_string(MsgType::offload), fits.error());
  }
  // The protocol names no parent for items[0]: when the last lookup named
  // it (an engine offloading the blocks its lookup missed), the block
  // before it there is its parent, so the prefix tree stays one tree.
  const auto first_parent = request.items.empty() ? std::nullopt : parent_in_last_lookup(request.items.front().hash);
  on_copy(id, MsgType::offload, std::move(request.items),
          [first_parent](BlockService& blocks, LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
                         const std::vector<proto::OffloadItem>& items, std::shared_ptr<OpControl> control,
                         BlockService::Done done) {
            blocks.start_offload(pool, std::move(kv), salt, items, std::move(control), std::move(done), first_parent);
          });
}

void Session::on_onboard(RequestId id, std::vector<proto::OnboardItem> items, std::uint32_t layers_per_group,
                         MsgType op) {
  if (op == MsgType::onboard_layers && layers_per_group == 0) {
    return refuse(id, proto::to_string(op),
                  Error{Errc::invalid_argument, "onboard_layers: layers_per_group must be >= 1 (got 0)"});
  }
  // Blocks the last lookup matched were counted as hits then; leasing them
  // again for this onboard is the same request, not a new use.
  auto looked_up = take_counted(items);
  on_copy(id, op, std::move(items),
          [id, layers_per_group, looked_up = std::move(looked_up), self = weak_from_this()](
              BlockService& blocks, LayoutPool& pool, std::shared_ptr<EngineKv> kv, std::uint64_t salt,
              std::vector<proto::OnboardItem> items, std::shared_ptr<OpControl> control, BlockService::Done done) {
            OnboardProgress progress{layers_per_group, nullptr};
            if (layers_per_group != 0) {
              const std::uint32_t num_layers = kv->layout.spec().num_layers;
              progress.announce = [self, id, num_layers](LayerRange range) {
                if (auto session = self.lock())
                  session->send_message(id, proto::Progress{range.first, range.first + range.count, num_layers});
              };
            }
            blocks.start_onboard(pool, std::move(kv), salt, std::move(items), std::move(progress), std::move(control),
                                 std::move(done), looked_up);
          });
}

template <class Items, class Start>
void Session::on_copy(RequestId id, MsgType op, Items items, Start start) {
  const auto name = proto::to_string(op);
  if (pool_ == nullptr || !kv_) {
    return refuse(id, name,
                  Error{Errc::wrong_state, fmt::format("{} needs hello with a layout and register_kv first", name)});
  }
  if (auto valid = core_.blocks.check_items(*kv_, items); !valid) return refuse(id, name, valid.error());
  accept_async(id, op,
               [&core = core_, start = std::move(start), pool = pool_, kv = kv_, salt = salt_, items = std::move(items),
                id, self = weak_from_this()](std::shared_ptr<OpControl> control) mutable {
                 start(core.blocks, *pool, std::move(kv), salt, std::move(items), control,
                       [&core, self, id, control](Status result) {
                         core.admission.release();
                         auto session = self.lock();
                         if (session && !control->cancelled) {
                           session->complete(id, control->token, std::move(result));
                         }
                       });
               });
}

void Session::accept_async(RequestId id, MsgType op, std::function<void(std::shared_ptr<OpControl>)> start) {
  const auto name = proto::to_string(op);
  if (core_.shutting_down) return refuse(id, name, Error{Errc::shutting_down, "shutting down"});
  if (core_.draining) return refuse(id, name, Error{Errc::unavailable, "the daemon is draining: no new work"});
  if (inflight_ >= core_.config.max_inflight) {
    return refuse(id, name,
                  Error{Errc::busy, fmt::format("session has {} requests in flight (max_inflight {})", inflight_,
                                                core_.config.max_inflight)});
  }
  auto control = std::make_shared<OpControl>();
  const std::uint64_t token = next_token_++;
  control->token = token;
  // The start runs now or when a copy slot frees up; a request that ended
  // meanwhile (timeout, session gone) gives its slot straight back.
  auto admitted = core_.admission.admit([&core = core_, control, start = std::move(start)] {
    if (control->cancelled) {
      core.admission.release();
      return;
    }
    start(control);
  });
  if (!admitted) return refuse(id, name, admitted.error());
  auto& pending = pending_.emplace(id.value(), Pending{op, token, Clock::now(), control, {}, {}}).first->second;
  ++inflight_;
  const auto timeout = std::chrono::milliseconds(core_.config.request_timeout_ms);
  pending.deadline = core_.deadlines.add(Clock::now() + timeout, [self = weak_from_this(), id, token] {
    if (auto session = self.lock()) session->expire(id, token);
  });
  proto::Reply accepted = proto::make_accepted_reply();
  send_message(id, accepted);
}

bool Session::in_flight(RequestId id) const { return pending_.contains(id.value()) || waits_.contains(id.value()); }

void Session::complete(RequestId id, std::uint64_t token, Status result) {
  auto it = pending_.find(id.value());
  if (it == pending_.end() || it->second.token != token) return;  // already ended
  Pending pending = std::move(it->second);
  pending_.erase(it);
  if (pending.deadline) core_.deadlines.cancel(*pending.deadline);
  pending.control->cancel();  // a copy still running drops its result; nothing lands in the engine after it
  --inflight_;
  const double seconds = std::chrono::duration<double>(Clock::now() - pending.started).count();
  Outcome outcome = Outcome::ok;
  if (!result) {
    outcome = result.error().code == Errc::timeout     ? Outcome::timeout
              : result.error().code == Errc::cancelled ? Outcome::cancelled
                                                       : Outcome::error;
  }
  core_.metrics.record(proto::to_string(pending.op), outcome, seconds);
  const std::string message = result ? std::string() : result.error().message;
  finished_[id.value()] = Finished{static_cast<bool>(result), message};
  finished_order_.push_back(id.value());
  while (finished_order_.size() > core_.config.status_history) {
    finished_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
  for (const RequestId wait_id : pending.waiters) {
    answer_wait(wait_id, result ? proto::RequestState::ok : proto::RequestState::err, message);
  }
  send_notification(id, result);
}

void Session::expire(RequestId id, std::uint64_t token) {
  auto it = pending_.find(id.value());
  if (it == pending_.end() || it->second.token != token) return;
  it->second.deadline.reset();  // it has fired: its entry is gone
  complete(id, token, fail(Errc::timeout, "timeout after {} ms", core_.config.request_timeout_ms));
}

void Session::on_release(RequestId id, const proto::ReleaseRequest& request) {
  std::uint32_t released = 0;
  if (request.hashes.empty()) {
    released = static_cast<std::uint32_t>(pins_.size());
    pins_.clear();
  } else {
    for (const auto hash : request.hashes) released += static_cast<std::uint32_t>(pins_.erase(hash));
  }
  reply(id, proto::make_reply(proto::ReleaseReply{released}), "release");
}

void Session::on_status(RequestId id, const proto::StatusRequest& request) {
  proto::RequestStateReply body;
  if (pending_.contains(request.target.value()) || waits_.contains(request.target.value())) {
    body.state = proto::RequestState::pending;
  } else if (auto it = finished_.find(request.target.value()); it != finished_.end()) {
    body.state = it->second.ok ? proto::RequestState::ok : proto::RequestState::err;
    body.message = it->second.message;
  } else {
    body.state = proto::RequestState::unknown;
  }
  reply(id, proto::make_reply(body), "status");
}

void Session::on_wait(RequestId id, const proto::WaitRequest& request) {
  auto target = pending_.find(request.target.value());
  if (target == pending_.end()) {
    proto::RequestStateReply body;
    if (auto it = finished_.find(request.target.value()); it != finished_.end()) {
      body.state = it->second.ok ? proto::RequestState::ok : proto::RequestState::err;
      body.message = it->second.message;
    } else {
      body.state = proto::RequestState::unknown;
    }
    return reply(id, proto::make_reply(body), "wait");
  }
  if (inflight_ >= core_.config.max_inflight) {
    return refuse(id, "wait",
                  Error{Errc::busy, fmt::format("session has {} requests in flight (max_inflight {})", inflight_,
                                                core_.config.max_inflight)});
  }
  const std::uint64_t token = next_token_++;
  target->second.waiters.push_back(id);
  auto& wait = waits_.emplace(id.value(), WaitState{request.target, token, Clock::now(), {}}).first->second;
  ++inflight_;
  wait.deadline = core_.deadlines.add(Clock::now() + std::chrono::milliseconds(request.timeout_ms),
                                      [self = weak_from_this(), id, token] {
                                        if (auto session = self.lock()) session->expire_wait(id, token);
                                      });
}

void Session::expire_wait(RequestId wait_id, std::uint64_t token) {
  auto it = waits_.find(wait_id.value());
  if (it == waits_.end() || it->second.token != token) return;
  it->second.deadline.reset();  // it has fired: its entry is gone
  if (auto target = pending_.find(it->second.target.value()); target != pending_.end()) {
    std::erase(target->second.waiters, wait_id);
  }
  answer_wait(wait_id, proto::RequestState::pending, "");
}

void Session::answer_wait(RequestId wait_id, proto::RequestState state, std::string message) {
  auto it = waits_.find(wait_id.value());
  if (it == waits_.end()) return;
  const auto started = it->second.started;
  if (it->second.deadline) core_.deadlines.cancel(*it->second.deadline);
  waits_.erase(it);
  --inflight_;
  core_.metrics.record("wait", Outcome::ok, std::chrono::duration<double>(Clock::now() - started).count());
  reply(wait_id, proto::make_reply(proto::RequestStateReply{state, std::move(message)}), "");
}

void Session::reply(RequestId id, const proto::Reply& reply, std::string_view op) {
  if (!op.empty() && reply.code == Errc::ok) {
    core_.metrics.record(op, Outcome::ok, std::chrono::duration<double>(Clock::now() - handling_started_).count());
  }
  send_message(id, reply);
}

void Session::refuse(RequestId id, std::string_view op, const Error& error) {
  core_.metrics.record(op, error.code == Errc::busy ? Outcome::busy : Outcome::error,
                       std::chrono::duration<double>(Clock::now() - handling_started_).count());
  spdlog::debug("session {}: {} request {} refused: {}", id_, op, id, error.to_string());
  send_message(id, proto::make_error_reply(error));
}

void Session::send_notification(RequestId id, const Status& result) {
  send_message(id, proto::make_notification(id, result));
}

template <class M>
void Session::send_message(RequestId id, const M& message) {
  auto frame = proto::encode_message(id, message);
  if (!frame) {
    spdlog::error("session {}: cannot encode {} for request {}: {}", id_, proto::to_string(M::kType), id,
                  frame.error().to_string());
    return;
  }
  send_bytes(*frame);
}

void Session::send_bytes(std::span<const std::byte> frame) {
  if (closed_) return;
  out_.insert(out_.end(), frame.begin(), frame.end());
  if (out_.size() > kMaxOutputBacklog) {
    spdlog::warn("session {}: client is not reading its answers ({} bytes queued): closing", id_, out_.size());
    end();
    close_socket();
    return;
  }
  account();
  enforce_byte_budget();
  if (!closed_ && !writing_) write_next();
}

void Session::write_next() {
  if (out_.empty() || closed_) return;
  writing_ = true;
  wbuf_.clear();
  std::swap(wbuf_, out_);
  asio::async_write(socket_, asio::buffer(wbuf_),
                    [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                      self->writing_ = false;
                      self->wbuf_.clear();
                      self->account();
                      if (ec) {
                        self->end();
                        self->close_socket();
                        return;
                      }
                      if (!self->out_.empty()) return self->write_next();
                      if (self->close_after_flush_) self->close_socket();
                    });
}

void Session::protocol_error(RequestId echo, const Error& error) {
  core_.metrics.protocol_error();
  spdlog::info("session {}: protocol error, closing: {}", id_, error.message);
  send_message(echo, proto::ErrorFrame{Errc::protocol_error, error.message});
  stop_reading_ = true;
  close_after_flush_ = true;
  end();
}

void Session::abort_connection(Errc code, const std::string& message) {
  spdlog::info("session {}: closing: {}", id_, message);
  if (!writing_ && out_.empty()) {
    auto frame = proto::encode_message(RequestId{0}, proto::ErrorFrame{code, message});
    if (frame) (void)::send(socket_.native_handle(), frame->data(), frame->size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  stop_reading_ = true;
  end();
  close_socket();
}

void Session::rearm_deadline(bool progressed) {
  const bool for_frame = parser_.mid_frame();
  const bool wanted = for_frame || !hello_done_;
  // Keep a running frame deadline while the same frame is still incomplete.
  if (deadline_ && wanted && !progressed && for_frame == deadline_for_frame_) return;
  if (deadline_) {
    core_.deadlines.cancel(*deadline_);
    deadline_.reset();
  }
  if (!wanted || ended_) return;
  deadline_for_frame_ = for_frame;
  const auto after =
      std::chrono::milliseconds(for_frame ? core_.config.frame_timeout_ms : core_.config.hello_timeout_ms);
  const std::uint64_t token = ++deadline_token_;
  deadline_ = core_.deadlines.add(Clock::now() + after, [self = weak_from_this(), token] {
    if (auto session = self.lock()) session->connection_deadline(token);
  });
}

void Session::connection_deadline(std::uint64_t token) {
  if (token != deadline_token_ || !deadline_) return;
  deadline_.reset();  // it has fired: its entry is gone
  if (ended_) return;
  if (deadline_for_frame_) {
    return abort_connection(Errc::timeout,
                            fmt::format("a frame was not complete {} ms after it began ({} bytes of it came; "
                                        "frame_timeout_ms)",
                                        core_.config.frame_timeout_ms, parser_.buffered()));
  }
  abort_connection(Errc::timeout,
                   fmt::format("no hello and no request for {} ms (hello_timeout_ms)", core_.config.hello_timeout_ms));
}

void Session::shutdown() {
  if (ended_) return;
  // End every pending request with err(shutting down); copies still running
  // drop their results when they finish.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ids;
  ids.reserve(pending_.size());
  for (const auto& [id, pending] : pending_) ids.emplace_back(id, pending.token);
  for (const auto& [id, token] : ids) complete(RequestId{id}, token, fail(Errc::shutting_down, "shutting down"));
  for (auto& [id, wait] : std::unordered_map<std::uint64_t, WaitState>(waits_)) {
    answer_wait(RequestId{id}, proto::RequestState::err, "shutting down");
  }
  stop_reading_ = true;
  close_after_flush_ = true;
  boost::system::error_code ec;
  socket_.shutdown(Socket::shutdown_receive, ec);  // wakes the reader with EOF
  end();
  if (!writing_ && out_.empty()) close_socket();
}

void Session::force_close() {
  end();
  close_socket();
}

void Session::end() {
  if (ended_) return;
  ended_ = true;
  if (deadline_) {
    core_.deadlines.cancel(*deadline_);
    deadline_.reset();
  }
  for (auto& [id, wait] : waits_) {
    if (wait.deadline) core_.deadlines.cancel(*wait.deadline);
  }
  for (auto& [id, pending] : pending_) {
    if (pending.deadline) core_.deadlines.cancel(*pending.deadline);
    pending.control->cancel();
    core_.metrics.record(proto::to_string(pending.op), Outcome::cancelled,
                         std::chrono::duration<double>(Clock::now() - pending.started).count());
  }
  inflight_ = 0;
  pending_.clear();
  waits_.clear();
  pins_.clear();  // leases end: pinned blocks become evictable again
  kv_.reset();    // unmapped once no running copy holds it
  // The layout is no longer used by this session: once no session uses it
  // and nothing holds its blocks, a new shape may reclaim its pool, so no
  // pointer to it stays here (copies still running hold leases: the pool
  // is not reclaimable until they end).
  if (pool_ != nullptr) core_.blocks.detach_layout(*std::exchange(pool_, nullptr));
  frame_fds_.clear();
  spdlog::debug("session {} ended", id_);
}

void Session::close_socket() {
  if (closed_) return;
  closed_ = true;
  frame_fds_.clear();  // passed fds of an unfinished frame go now, not with the object
  account();           // held_fds() and held_bytes() are 0 once closed
  boost::system::error_code ec;
  socket_.close(ec);
  core_.connection_closed(id_);  // last: may end the daemon's shutdown
}

}  // namespace kvb::daemon
