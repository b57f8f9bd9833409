#include <time.h>

#include <charconv>
#include <random>

#include <spdlog/spdlog.h>
#include <boost/asio/append.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "am_wire.h"

namespace kvb::transport {

using namespace wire;

ActiveMessageManager::ActiveMessageManager(Worker& worker, AmOptions options)
    : worker_(worker), options_(options), deadline_timer_(worker.executor()) {
  token_ = static_cast<std::uint32_t>(std::random_device{}());
  if (options.max_concurrent == 0) throw TransportError(Error{Errc::invalid_argument, "max_concurrent must be > 0"});
  const std::pair<unsigned, ucp_am_recv_callback_t> handlers[] = {{kAmMessage, Impl::on_message},
                                                                  {kAmResponse, Impl::on_response},
                                                                  {kAmWrite, Impl::on_write},
                                                                  {kAmHello, Impl::on_hello},
                                                                  {kAmBye, Impl::on_bye}};
  for (auto [id, cb] : handlers) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = id;
    p.cb = cb;
    p.arg = this;
    const ucs_status_t st = ucp_worker_set_am_recv_handler(worker.handle(), &p);
    if (st != UCS_OK) detail::throw_ucx("ucp_worker_set_am_recv_handler", st);
  }
}

ActiveMessageManager::~ActiveMessageManager() {
  say_goodbye();
  *alive_ = false;
  for (auto& [peer, fd] : watched_) fd->cancel();
  watched_.clear();
  pending_.for_each([this](std::uint64_t id, Pending& p) {
    p.manager_gone = true;
    finish(p, fail(Errc::cancelled, "request {} cancelled: the manager is shutting down", id));
  });
  // Idle runners resume (posted), see the manager gone and end.
  for (auto& h : idle_runners_) asio::post(worker_.executor(), [h = std::move(h)]() mutable { std::move(h)(); });
  idle_runners_.clear();
  for (unsigned id : {kAmMessage, kAmResponse, kAmWrite, kAmHello, kAmBye}) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = id;
    p.cb = nullptr;
    p.arg = nullptr;
    (void)ucp_worker_set_am_recv_handler(worker_.handle(), &p);
  }
  listener_.reset();
  peers_.clear();
}

Status ActiveMessageManager::register_handler(const std::string& type, AmHandler handler) {
  if (!handler) return fail(Errc::invalid_argument, "handler for '{:.40}' is empty", type);
  return add_handler(type, HandlerEntry{std::move(handler), nullptr});
}

Status ActiveMessageManager::register_sync_handler(const std::string& type, AmSyncHandler handler) {
  if (!handler) return fail(Errc::invalid_argument, "handler for '{:.40}' is empty", type);
  return add_handler(type, HandlerEntry{nullptr, std::move(handler)});
}

Status ActiveMessageManager::add_handler(const std::string& type, HandlerEntry entry) {
  if (type.empty()) return fail(Errc::invalid_argument, "message type must not be empty");
  if (auto st = check_sizes(kFixedHeader + type.size(), 0, type); !st) return st;
  if (!handlers_->emplace(type, std::move(entry)).second) {
    return fail(Errc::already_exists, "message type '{}' already has a handler", type);
  }
  return ok();
}

Status ActiveMessageManager::check_sizes(std::size_t header, std::size_t payload, std::string_view type) const {
  if (header > worker_.max_am_header()) {
    return fail(Errc::invalid_argument, "message type '{:.40}' makes a {}-byte AM header, over UCX's max_am_header {}",
                type, header, worker_.max_am_header());
  }
  if (payload > options_.max_payload) {
    return fail(Errc::invalid_argument, "payload of {} bytes for '{:.40}' exceeds max_payload {}", payload, type,
                options_.max_payload);
  }
  return ok();
}

asio::awaitable<Status> ActiveMessageManager::send_am(std::shared_ptr<Endpoint> ep, unsigned am_id, Bytes header,
                                                      Bytes payload, std::chrono::milliseconds timeout) {
  if (ep->failed()) co_return tl::unexpected(ep->failure());
  if (auto now = send_now(ep->handle(), ep->peer(), am_id, header, payload)) co_return std::move(*now);
  // UCX cannot send at once: a tracked request that owns the buffers.
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  auto owned = std::make_shared<std::pair<Bytes, Bytes>>(std::move(header), std::move(payload));
  state->keep = owned;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE;
  params.flags = am_id == kAmResponse ? 0U : unsigned{UCP_AM_SEND_FLAG_REPLY};
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_am_send_nbx(ep->handle(), am_id, owned->first.data(), owned->first.size(),
                                         owned->second.data(), owned->second.size(), &params);
  auto st = co_await detail::await_request(worker_, req, params, state, fmt::format("am send to peer {}", ep->peer()),
                                           timeout, ep.get());
  if (!st && ep->failed()) co_return tl::unexpected(ep->failure());
  co_return st;
}

asio::awaitable<Status> ActiveMessageManager::send(PeerId peer, std::string type, Bytes payload) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st) co_return st;
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  const MessageHeader header(type, std::nullopt, token_, 0);
  co_return co_await send_am(*ep, kAmMessage, Bytes(header.bytes().begin(), header.bytes().end()), std::move(payload),
                             kSendTimeout);
}

namespace {

// now + timeout, never early, at most one coarse clock tick (~1-4 ms) late:
// CLOCK_MONOTONIC_COARSE (steady_clock's clock, at tick resolution) costs a
// few ns where a precise read costs ~25 ns on every request.
std::chrono::steady_clock::time_point coarse_deadline(std::chrono::milliseconds timeout) {
  static const std::chrono::nanoseconds tick = [] {
    timespec res{};
    ::clock_getres(CLOCK_MONOTONIC_COARSE, &res);
    return std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec);
  }();
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  const auto coarse =
      std::chrono::steady_clock::time_point(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec)));
  return coarse + tick + timeout;
}

}  // namespace

std::optional<Status> ActiveMessageManager::send_now(ucp_ep* ep, PeerId peer, unsigned am_id,
                                                     std::span<const std::byte> header,
                                                     std::span<const std::byte> payload) {
  // Most small eager sends complete inside ucp_am_send_nbx; ask UCX to
  // finish now or refuse (NO_RESOURCE): no request state, callback or
  // buffer handover.
  ucp_request_param_t imm{};
  imm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
  // Messages carry the reply endpoint (it names senders without a hello);
  // responses need none.
  imm.flags = am_id == kAmResponse ? 0U : unsigned{UCP_AM_SEND_FLAG_REPLY};
  imm.datatype = ucp_dt_make_contig(1);
  ucs_status_ptr_t req = ucp_am_send_nbx(ep, am_id, header.data(), header.size(), payload.data(), payload.size(), &imm);
  if (req == nullptr) return ok();
  if (UCS_PTR_IS_ERR(req)) {
    if (UCS_PTR_STATUS(req) == UCS_ERR_NO_RESOURCE) return std::nullopt;
    return tl::unexpected(detail::ucx_error(fmt::format("am send to peer {}", peer), UCS_PTR_STATUS(req)));
  }
  // Not expected with FORCE_IMM_CMPL: UCX took a request; it owns nothing of
  // ours after completion, so wait for it here (bounded by progress).
  while (ucp_request_check_status(req) == UCS_INPROGRESS) worker_.progress_once();
  const ucs_status_t st = ucp_request_check_status(req);
  ucp_request_free(req);
  if (st != UCS_OK) return tl::unexpected(detail::ucx_error(fmt::format("am send to peer {}", peer), st));
  return ok();
}

Endpoint* ActiveMessageManager::live_endpoint(PeerId peer) const {
  auto it = peers_.find(peer);
  return it == peers_.end() || it->second->failed() ? nullptr : it->second.get();
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_request(PeerId peer, std::string type, Bytes payload,
                                                                  std::chrono::milliseconds timeout) {
  return request(peer, std::move(type), std::move(payload), timeout, 0);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_notification_after_writes(PeerId peer, std::string type,
                                                                                    Bytes payload,
                                                                                    std::chrono::milliseconds timeout) {
  return request(peer, std::move(type), std::move(payload), timeout, kFlagAfterWrites);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::request(PeerId peer, std::string type, Bytes payload,
                                                             std::chrono::milliseconds timeout, std::uint8_t flags) {
  // One asynchronous operation: its frame (asio's) holds the Pending, and
  // its completion handler resumes the caller directly (no coroutine of
  // ours in between).
  Pending pending;
  pending.peer = peer;
  pending.timeout = timeout;
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Result<Bytes>)>(
      [this](auto handler, Pending&& p, std::string type, Bytes payload, std::uint8_t flags) {
        // `p` stays where it is (the operation's frame) until `handler` runs.
        // The message goes out first; what follows overlaps with the peer.
        std::optional<Error> failed = start_request(p, type, std::move(payload), flags);
        if (asio::get_associated_executor(handler) == worker_.executor()) {
          p.waiter = Completion([h = std::move(handler), &p]() mutable { std::move(h)(std::move(*p.result)); });
        } else {
          p.waiter = Completion(
              [h = std::move(handler), &p]() mutable { asio::post(asio::append(std::move(h), std::move(*p.result))); });
        }
        p.type = std::move(type);
        if (failed) return finish(p, tl::unexpected(std::move(*failed)));
        p.deadline = coarse_deadline(p.timeout);  // listed: start_request succeeded
        arm_deadline(p.deadline);
      },
      asio::use_awaitable, std::move(pending), std::move(type), std::move(payload), flags);
}

std::optional<Error> ActiveMessageManager::start_request(Pending& pending, std::string_view type, Bytes payload,
                                                         std::uint8_t flags) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st) return st.error();
  Endpoint* ep = live_endpoint(pending.peer);
  if (ep == nullptr) return endpoint(pending.peer).error();
  pending.self = this;
  pending.id = pending_.insert(&pending);
  if (pending.id == 0) {
    return Error{Errc::out_of_capacity, fmt::format("{} requests already wait for answers", PendingTable::kMaxSlots)};
  }
  pending.listed = true;
  const MessageHeader header(type, pending.id, token_, flags);
  std::optional<Status> sent = send_now(ep->handle(), pending.peer, kAmMessage, header.bytes(), payload);
  if (!sent) {
    // UCX cannot send at once: a coroutine sends it and fails the request
    // if the send fails (the answer may still come first).
    asio::co_spawn(
        worker_.executor(),
        send_request_slow(alive_, pending.id, pending.peer, Bytes(header.bytes().begin(), header.bytes().end()),
                          std::move(payload), pending.timeout),
        asio::detached);
  } else if (!*sent) {
    return sent->error();
  }
  return std::nullopt;
}

asio::awaitable<void> ActiveMessageManager::send_request_slow(std::shared_ptr<bool> alive, std::uint64_t id,
                                                              PeerId peer, Bytes header, Bytes payload,
                                                              std::chrono::milliseconds timeout) {
  auto ep = endpoint(peer);
  Status sent = ep ? co_await send_am(*ep, kAmMessage, std::move(header), std::move(payload), timeout)
                   : Status(tl::unexpected(ep.error()));
  if (!*alive || sent) co_return;
  if (Pending* pending = pending_.find(id)) finish(*pending, tl::unexpected(sent.error()));
}

void ActiveMessageManager::finish(Pending& pending, Result<Bytes> result) {
  if (pending.result) return;
  pending.result = std::move(result);
  if (pending.listed && !pending.manager_gone) {
    pending_.erase(pending.id);  // a late answer finds nothing
    pending.listed = false;
  }
  worker_.complete_soon(std::move(pending.waiter));
}

void ActiveMessageManager::arm_deadline(std::chrono::steady_clock::time_point deadline) {
  if (armed_deadline_ && *armed_deadline_ <= deadline) return;  // an earlier wake will re-arm
  armed_deadline_ = deadline;
  deadline_timer_.expires_at(deadline);  // cancels the later wait, if any
  deadline_timer_.async_wait([this, alive = alive_, deadline](const boost::system::error_code& ec) {
    if (!*alive || ec == asio::error::operation_aborted || armed_deadline_ != deadline) return;
    armed_deadline_.reset();
    expire_requests();
  });
}

void ActiveMessageManager::expire_requests() {
  const auto now = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> next;
  pending_.for_each([&](std::uint64_t id, Pending& p) {
    if (p.result) return;
    if (p.deadline <= now) {
      finish(p, fail(Errc::timeout, "timeout: no answer to request {} ('{:.40}') from peer {} within {} ms", id, p.type,
                     p.peer, p.timeout.count()));
    } else if (!next || p.deadline < *next) {
      next = p.deadline;
    }
  });
  if (next) arm_deadline(*next);
}

void ActiveMessageManager::accept_message(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token,
                                          bool after_writes) {
  if (after_writes) {
    // Writes and this notification travel one ordered connection: every
    // write sent before it has been checked (and landed or failed) by now.
    auto refused = refused_writes_by_token_.find(sender_token);
    if (refused != refused_writes_by_token_.end()) {
      const std::uint64_t count = refused->second;
      refused_writes_by_token_.erase(refused);
      const std::string text = fmt::format(
          "rejected: {} bulk write(s) before this '{}' were refused (outside the receiver's exposed memory, or failed "
          "to land); its handler did not run",
          count, message.type);
      if (message.notification_id) {
        reply(message.peer, reply_ep, *message.notification_id, fail(Errc::invalid_argument, "{}", text));
      } else {
        ++stats_.fire_and_forget_failures;
        spdlog::warn("transport: fire-and-forget from peer {}: {}", message.peer, text);
      }
      return;
    }
  }
  auto handler = handlers_->find(message.type);
  if (handler == handlers_->end()) {
    const std::string text = fmt::format("unknown message type: {}", message.type);
    if (message.notification_id) {
      reply(message.peer, reply_ep, *message.notification_id, fail(Errc::not_found, "{}", text));
    } else {
      ++stats_.fire_and_forget_failures;
      spdlog::warn("transport: fire-and-forget from peer {}: {}", message.peer, text);
    }
    return;
  }
  // A message takes a permit (an idle runner, a new one up to
  // max_concurrent, or for a synchronous handler the end of this progress
  // pass), or waits in the queue (stats_.queued, bounded).
  const bool permit_free = permits_in_use() < options_.max_concurrent;
  if (!permit_free && stats_.queued >= options_.max_queued) {
    if (message.notification_id) {
      ++stats_.busy_refusals;
      reply(message.peer, reply_ep, *message.notification_id,
            fail(Errc::busy, "busy: {} messages already queued (max_queued {})", stats_.queued, options_.max_queued));
    } else {
      ++stats_.dropped;
      spdlog::warn("transport: dropped fire-and-forget '{}' from peer {}: queue full ({})", message.type, message.peer,
                   stats_.queued);
    }
    return;
  }
  Queued q{std::move(message), reply_ep, &handler->second, &handler->first};
  if (permit_free && handler->second.sync && stats_.queued == 0) {
    // No runner: it runs right after this pass (never inside the callback).
    sync_ready_.push_back(std::move(q));
    if (!sync_scheduled_) {
      sync_scheduled_ = true;
      worker_.complete_soon(Completion([this, alive = alive_] {
        if (*alive) run_sync_ready(alive);
      }));
    }
    return;
  }
  incoming_.push_back(std::move(q));
  if (permit_free) {
    ++woken_;
    wake_runner();
  } else {
    ++stats_.queued;
    stats_.peak_queued = std::max(stats_.peak_queued, stats_.queued);
  }
}

void ActiveMessageManager::run_sync_ready(const std::shared_ptr<bool>& alive) {
  sync_scheduled_ = false;
  while (sync_done_ < sync_ready_.size()) {
    Queued& q = sync_ready_[sync_done_];
    ++sync_done_;
    ++stats_.running;  // the permit passes from sync_ready_ to running
    stats_.peak_running = std::max(stats_.peak_running, stats_.running);
    Result<Bytes> result = call_sync(q.handler->sync, q.message);
    if (!*alive) return;  // the handler destroyed the manager
    --stats_.running;
    handled(q.message.peer, q.message.notification_id, *q.type, q.reply_ep, std::move(result));
  }
  sync_ready_.clear();  // keeps its capacity
  sync_done_ = 0;
  // Permits these held may be what queued messages wait for.
  while (stats_.queued > 0 && permits_in_use() < options_.max_concurrent) {
    --stats_.queued;
    ++woken_;
    wake_runner();
  }
}

Result<Bytes> ActiveMessageManager::call_sync(const AmSyncHandler& handler, IncomingMessage& message) {
  try {
    return handler(message);
  } catch (const std::exception& e) {
    return fail(Errc::internal, "{}", e.what());
  } catch (...) {
    return fail(Errc::internal, "unknown exception");
  }
}

void ActiveMessageManager::handled(PeerId peer, std::optional<std::uint64_t> id, const std::string& type,
                                   ucp_ep* reply_ep, Result<Bytes> result) {
  ++stats_.handled;
  if (!result) {
    ++stats_.handler_failures;
    if (!id) {
      ++stats_.fire_and_forget_failures;
      spdlog::warn("transport: fire-and-forget '{}' from peer {} failed: {}", type, peer, result.error().message);
    }
  }
  // The reply never blocks the caller (a slow send finishes elsewhere).
  if (id) reply(peer, reply_ep, *id, std::move(result));
}

void ActiveMessageManager::wake_runner() {
  if (!idle_runners_.empty()) {
    auto h = std::move(idle_runners_.back());
    idle_runners_.pop_back();
    worker_.complete_soon(std::move(h));
    return;
  }
  ++runners_;
  // Started by the worker after the current progress pass (never inside a
  // UCX callback): co_spawn then runs it inline up to its first wait.
  worker_.complete_soon(Completion([this, alive = alive_] {
    if (*alive) asio::co_spawn(worker_.executor(), runner(alive, handlers_), asio::detached);
  }));
}

asio::awaitable<void> ActiveMessageManager::runner(std::shared_ptr<bool> alive,
                                                   [[maybe_unused]] std::shared_ptr<const HandlerMap> handlers) {
  // Each queued message is either assigned to a woken runner (woken_) or
  // waiting (stats_.queued); incoming_.size() == woken_ + stats_.queued.
  bool woken = true;  // spawned for a message
  for (;;) {
    if (woken) {
      --woken_;
      woken = false;
    } else if (stats_.queued > 0) {
      --stats_.queued;
    } else {
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
          [this](auto handler) { idle_runners_.emplace_back(std::move(handler)); }, asio::use_awaitable);
      if (!*alive) co_return;
      woken = true;
      continue;
    }
    Queued q = std::move(incoming_.front());
    incoming_.pop_front();
    ++stats_.running;
    stats_.peak_running = std::max(stats_.peak_running, stats_.running);
    const PeerId peer = q.message.peer;  // the handler takes the message
    const auto id = q.message.notification_id;
    Result<Bytes> result = Bytes{};
    if (q.handler->sync) {
      // Queued behind other messages: the runner calls it in place.
      result = call_sync(q.handler->sync, q.message);
    } else {
      // `handlers` keeps the handler (and its captures) alive while its
      // coroutine runs.
      try {
        result = co_await q.handler->coroutine(std::move(q.message));
      } catch (const std::exception& e) {
        result = fail(Errc::internal, "{}", e.what());
      } catch (...) {
        result = fail(Errc::internal, "unknown exception");
      }
    }
    if (!*alive) co_return;
    --stats_.running;
    handled(peer, id, *q.type, q.reply_ep, std::move(result));
  }
}

void ActiveMessageManager::reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id, Result<Bytes> result) {
  if (worker_.in_loop_progress()) {
    // From a UCX callback (unknown type, busy): send after the progress pass.
    worker_.complete_soon(Completion([this, alive = alive_, peer, reply_ep, id, result = std::move(result)]() mutable {
      if (*alive) reply(peer, reply_ep, id, std::move(result));
    }));
    return;
  }
  std::array<char, 64> ok_text;
  std::string err_text;
  std::string_view text;
  if (result) {
    char* end = std::to_chars(ok_text.data(), ok_text.data() + ok_text.size() - 3, id).ptr;
    std::memcpy(end, ":ok", 3);
    text = std::string_view(ok_text.data(), static_cast<std::size_t>(end + 3 - ok_text.data()));
  } else {
    err_text = fmt::format("{}:err({})", id, result.error().message);
    const std::size_t limit = worker_.max_am_header();
    if (err_text.size() > limit) err_text = err_text.substr(0, limit - 4) + "...)";
    text = err_text;
  }
  const std::span<const std::byte> header(reinterpret_cast<const std::byte*>(text.data()), text.size());
  const std::span<const std::byte> payload =
      result ? std::span<const std::byte>(*result) : std::span<const std::byte>{};
  Endpoint* ep = nullptr;
  if (peer != PeerId{0}) {
    ep = live_endpoint(peer);
    if (ep == nullptr) {
      spdlog::warn("transport: reply {} to peer {} dropped: {}", text, peer, endpoint(peer).error().message);
      return;
    }
  } else if (reply_ep == nullptr) {
    spdlog::warn("transport: reply {} dropped: the sender gave no reply endpoint", text);
    return;
  }
  if (auto now = send_now(ep != nullptr ? ep->handle() : reply_ep, peer, kAmResponse, header, payload)) {
    if (!*now) spdlog::warn("transport: reply {} to peer {} failed: {}", text, peer, now->error().message);
    return;
  }
  Bytes owned_payload = result ? std::move(*result) : Bytes{};
  asio::co_spawn(worker_.executor(),
                 reply_slow(peer, ep != nullptr ? nullptr : reply_ep, Bytes(header.begin(), header.end()),
                            std::move(owned_payload)),
                 asio::detached);
}

asio::awaitable<void> ActiveMessageManager::reply_slow(PeerId peer, ucp_ep* reply_ep, Bytes header, Bytes payload) {
  const std::string text(reinterpret_cast<const char*>(header.data()), header.size());
  if (reply_ep == nullptr) {
    auto ep = endpoint(peer);
    if (!ep) {
      spdlog::warn("transport: reply {} to peer {} dropped: {}", text, peer, ep.error().message);
      co_return;
    }
    auto st = co_await send_am(*ep, kAmResponse, std::move(header), std::move(payload), kSendTimeout);
    if (!st) spdlog::warn("transport: reply {} to peer {} failed: {}", text, peer, st.error().message);
    co_return;
  }
  // A sender we have no Endpoint for (connect-by-address): answer on UCX's reply ep.
  auto state = std::make_shared<detail::RequestState>(worker_.executor());
  auto owned = std::make_shared<std::pair<Bytes, Bytes>>(std::move(header), std::move(payload));
  state->keep = owned;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_send_callback(params, state);
  ucs_status_ptr_t req = ucp_am_send_nbx(reply_ep, kAmResponse, owned->first.data(), owned->first.size(),
                                         owned->second.data(), owned->second.size(), &params);
  (void)co_await detail::await_request(worker_, req, params, state, "reply", kSendTimeout);
}

void ActiveMessageManager::accept_response(std::string_view text, Bytes payload) {
  const auto colon = text.find(':');
  std::uint64_t id = 0;
  if (colon == std::string_view::npos || std::from_chars(text.data(), text.data() + colon, id).ec != std::errc{}) {
    spdlog::error("transport: malformed response '{:.80}'", text);
    return;
  }
  Pending* pending = pending_.find(id);
  if (pending == nullptr || pending->result) return;  // timed out earlier
  const std::string_view status = text.substr(colon + 1);
  if (status == "ok") {
    finish(*pending, std::move(payload));
  } else if (status.starts_with("err(") && status.ends_with(")")) {
    const std::string_view message = status.substr(4, status.size() - 5);
    finish(*pending, make_error(errc_of_text(message), std::string(message)));
  } else {
    finish(*pending, fail(Errc::protocol_error, "malformed response status '{:.80}'", status));
  }
}

void ActiveMessageManager::expose(const MemoryRegistration& registration) { exposed_.push_back(&registration); }

void ActiveMessageManager::unexpose(const MemoryRegistration& registration) { std::erase(exposed_, &registration); }

namespace {

// The chunks of one write_chunks_am call: one completion for all of them.
// Owned by the in-flight UCX requests (the last callback deletes it), so a
// caller that timed out or saw the peer fail may leave before UCX is done.
struct WriteBatch {
  std::size_t outstanding = 1;  // +1 held by the issuing loop until it is done
  ucs_status_t first_error = UCS_OK;
  std::shared_ptr<detail::RequestState> waiter;
  std::shared_ptr<void> headers;

  void complete_one(ucs_status_t status) {
    if (status != UCS_OK && first_error == UCS_OK) first_error = status;
    if (--outstanding > 0) return;
    waiter->status = first_error;
    waiter->done.set();
    delete this;
  }
  static void on_sent(void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    static_cast<WriteBatch*>(user_data)->complete_one(status);
  }
};

}  // namespace

asio::awaitable<Status> ActiveMessageManager::write_chunks_am(PeerId peer, std::span<const RmaChunk> chunks,
                                                              std::chrono::milliseconds timeout) {
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  if (chunks.empty()) co_return ok();
  // Issue every chunk, then await them all at once: UCX pipelines the
  // rendezvous; one waiter, one timer and one endpoint watch per call.
  auto waiter = std::make_shared<detail::RequestState>(worker_.executor());
  auto* batch = new WriteBatch;
  batch->waiter = waiter;
  auto headers = std::make_shared<std::vector<WriteHeader>>(chunks.size());
  batch->headers = headers;
  ucs_status_t issue_error = UCS_OK;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto& c = chunks[i];
    (*headers)[i] = WriteHeader{c.remote_address, c.length, token_, 0};
    ucp_request_param_t params{};
    params.op_attr_mask =
        UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.flags = c.length <= options_.bulk_eager_max ? UCP_AM_SEND_FLAG_EAGER : UCP_AM_SEND_FLAG_RNDV;
    params.datatype = ucp_dt_make_contig(1);
    params.cb.send = &WriteBatch::on_sent;
    params.user_data = batch;
    ++batch->outstanding;
    ucs_status_ptr_t req =
        ucp_am_send_nbx((*ep)->handle(), kAmWrite, &(*headers)[i], sizeof(WriteHeader), c.local, c.length, &params);
    if (req == nullptr) {
      --batch->outstanding;  // done already; the callback will not run
    } else if (UCS_PTR_IS_ERR(req)) {
      --batch->outstanding;
      issue_error = UCS_PTR_STATUS(req);
      break;
    }
  }
  worker_.kick();
  batch->complete_one(issue_error);  // the issuing loop's share; may finish the batch
  (*ep)->track(waiter);
  const bool done = co_await waiter->done.wait_for(timeout);
  if (waiter->aborted) co_return tl::unexpected((*ep)->failure());
  if (!done) co_return fail(Errc::timeout, "bulk write to peer {}: not complete after {} ms", peer, timeout.count());
  if (waiter->status != UCS_OK) {
    co_return tl::unexpected(detail::ucx_error(fmt::format("bulk write to peer {}", peer), waiter->status));
  }
  if ((*ep)->failed()) co_return tl::unexpected((*ep)->failure());
  co_return ok();
}

}  // namespace kvb::transport
