// ActiveMessageManager: composition of its parts, registration, and the
// send side of requests, messages and replies.
#include "kvb/transport/am_manager.h"

#include <random>

#include <spdlog/spdlog.h>
#include <boost/asio/append.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "am_send.h"
#include "am_wire.h"
#include "kvb/common/protocol_frame.h"

namespace kvb::transport {

using namespace wire;

namespace {

constexpr unsigned kOwnAmIds[] = {kAmMessage, kAmResponse, kAmWrite, kAmHello, kAmBye};

std::uint32_t random_token() { return static_cast<std::uint32_t>(std::random_device{}()); }

}  // namespace

ActiveMessageManager::ActiveMessageManager(Worker& worker, AmOptions options)
    : worker_(worker),
      options_(options),
      token_(random_token()),
      peers_(worker, token_, [this](PeerId peer, const Error& error) { peer_lost(peer, error); }),
      bulk_(worker, options_, token_),
      handlers_(worker, options_, *this),
      requests_(worker) {
  if (options.max_concurrent == 0) throw TransportError(Error{Errc::invalid_argument, "max_concurrent must be > 0"});
  const ucp_am_recv_callback_t callbacks[] = {Impl::on_message, Impl::on_response, Impl::on_write, Impl::on_hello,
                                              Impl::on_bye};
  for (std::size_t i = 0; i < std::size(kOwnAmIds); ++i) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = kOwnAmIds[i];
    p.cb = callbacks[i];
    p.arg = this;
    const ucs_status_t st = ucp_worker_set_am_recv_handler(worker.handle(), &p);
    if (st != UCS_OK) detail::throw_ucx("ucp_worker_set_am_recv_handler", st);
  }
}

ActiveMessageManager::~ActiveMessageManager() {
  peers_.say_goodbye();
  *alive_ = false;
  for (unsigned id : kOwnAmIds) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = id;
    p.cb = nullptr;
    p.arg = nullptr;
    (void)ucp_worker_set_am_recv_handler(worker_.handle(), &p);
  }
  // The members go in reverse order: pending requests end cancelled, idle
  // runners end, then the listener and the peers.
}

Status ActiveMessageManager::check_type(const std::string& type) const {
  if (type.empty()) return fail(Errc::invalid_argument, "message type must not be empty");
  return check_sizes(kFixedHeader + type.size(), 0, type);
}

Status ActiveMessageManager::register_handler(const std::string& type, AmHandler handler, AmTypeLimits limits) {
  if (!handler) return fail(Errc::invalid_argument, "handler for '{:.40}' is empty", type);
  if (auto st = check_type(type); !st) return st;
  return handlers_.add(type, std::move(handler), nullptr, limits);
}

Status ActiveMessageManager::register_sync_handler(const std::string& type, AmSyncHandler handler,
                                                   AmTypeLimits limits) {
  if (!handler) return fail(Errc::invalid_argument, "handler for '{:.40}' is empty", type);
  if (auto st = check_type(type); !st) return st;
  return handlers_.add(type, nullptr, std::move(handler), limits);
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

void ActiveMessageManager::disconnect(PeerId peer, const std::string& reason) {
  peers_.lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} ({})", peer, reason)});
}

void ActiveMessageManager::peer_lost(PeerId peer, const Error& error) {
  requests_.fail_peer(peer);
  if (on_peer_lost_) on_peer_lost_(peer, error);
}

asio::awaitable<Status> ActiveMessageManager::send(PeerId peer, std::string type, Bytes payload) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st) co_return st;
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  const MessageHeader header(type, std::nullopt, token_, 0);
  co_return co_await detail::am_send(worker_, *ep, kAmMessage, Bytes(header.bytes().begin(), header.bytes().end()),
                                     std::move(payload), detail::kSendTimeout);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_request(PeerId peer, std::string type, Bytes payload,
                                                                  std::chrono::milliseconds timeout) {
  return request(peer, std::move(type), std::move(payload), timeout, 0, false);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_request_receiving_writes(PeerId peer, std::string type,
                                                                                   Bytes payload,
                                                                                   std::chrono::milliseconds timeout) {
  return request(peer, std::move(type), std::move(payload), timeout, 0, true);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::send_notification_after_writes(PeerId peer, std::string type,
                                                                                    Bytes payload,
                                                                                    std::chrono::milliseconds timeout) {
  return request(peer, std::move(type), std::move(payload), timeout, kFlagAfterWrites, false);
}

asio::awaitable<Result<Bytes>> ActiveMessageManager::request(PeerId peer, std::string type, Bytes payload,
                                                             std::chrono::milliseconds timeout, std::uint8_t flags,
                                                             bool receives_writes) {
  // One asynchronous operation: its frame (asio's) holds the Pending, and
  // its completion handler resumes the caller directly (no coroutine of
  // ours in between).
  Pending pending;
  pending.peer = peer;
  pending.timeout = timeout;
  if (receives_writes) pending.refused_writes_at_send = bulk_.rejected_writes();
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
        if (failed) return requests_.finish(p, tl::unexpected(std::move(*failed)));
        requests_.start_deadline(p);  // listed: start_request succeeded
      },
      asio::use_awaitable, std::move(pending), std::move(type), std::move(payload), flags);
}

std::optional<Error> ActiveMessageManager::start_request(Pending& pending, std::string_view type, Bytes payload,
                                                         std::uint8_t flags) {
  if (auto st = check_sizes(kFixedHeader + type.size(), payload.size(), type); !st) return st.error();
  Endpoint* ep = peers_.live_endpoint(pending.peer);
  if (ep == nullptr) return peers_.endpoint(pending.peer).error();
  if (!requests_.insert(pending)) {
    return Error{Errc::out_of_capacity, fmt::format("{} requests already wait for answers", RequestTable::kMaxSlots)};
  }
  const MessageHeader header(type, pending.id, token_, flags);
  std::optional<Status> sent =
      detail::am_send_now(worker_, ep->handle(), pending.peer, kAmMessage, header.bytes(), payload);
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
  // Never a co_await inside a conditional expression: GCC 12 destroys the
  // expression's result at the end of the statement and again at the end of
  // the scope (a failed send's error text was freed twice; test
  // ARequestWhoseSlowSendFailsEndsOnceAndFreesTheSendsErrorOnce).
  auto ep = endpoint(peer);
  Status sent = ok();
  if (ep) {
    sent = co_await detail::am_send(worker_, *ep, kAmMessage, std::move(header), std::move(payload), timeout);
  } else {
    sent = tl::unexpected(ep.error());
  }
  if (!*alive || sent) co_return;
  if (Pending* pending = requests_.find(id)) requests_.finish(*pending, tl::unexpected(sent.error()));
}

void ActiveMessageManager::accept_message(IncomingMessage message, ucp_ep* reply_ep, std::uint32_t sender_token,
                                          bool after_writes) {
  if (after_writes) {
    // Writes and this notification travel one ordered connection: every
    // write sent before it has been checked (and landed or failed) by now.
    if (const std::uint64_t refused = bulk_.take_refused(sender_token); refused > 0) {
      return handlers_.refuse(
          message, reply_ep,
          Error{Errc::invalid_argument,
                fmt::format("rejected: {} bulk write(s) before this '{}' were refused (outside the receiver's "
                            "exposed memory, or failed to land); its handler did not run",
                            refused, message.type)});
    }
  }
  handlers_.accept(std::move(message), reply_ep, sender_token);
}

void ActiveMessageManager::reply(PeerId peer, ucp_ep* reply_ep, std::uint64_t id, Result<Bytes> result) {
  if (worker_.in_loop_progress()) {
    // From a UCX callback (unknown type, busy): send after the progress pass.
    worker_.complete_soon(Completion([this, alive = alive_, peer, reply_ep, id, result = std::move(result)]() mutable {
      if (*alive) reply(peer, reply_ep, id, std::move(result));
    }));
    return;
  }
  ResponseHeader header(id, result, worker_.max_am_header());
  const std::span<const std::byte> payload =
      result ? std::span<const std::byte>(*result) : std::span<const std::byte>{};
  Endpoint* ep = nullptr;
  if (peer != PeerId{0}) {
    ep = peers_.live_endpoint(peer);
    if (ep == nullptr) {
      spdlog::warn("transport: reply {} to peer {} dropped: {}", header.text(), peer,
                   peers_.endpoint(peer).error().message);
      return;
    }
  } else if (reply_ep == nullptr) {
    spdlog::warn("transport: reply {} dropped: the sender gave no reply endpoint", header.text());
    return;
  }
  if (auto now = detail::am_send_now(worker_, ep != nullptr ? ep->handle() : reply_ep, peer, kAmResponse,
                                     header.bytes(), payload)) {
    if (!*now) spdlog::warn("transport: reply {} to peer {} failed: {}", header.text(), peer, now->error().message);
    return;
  }
  Bytes owned_payload = result ? std::move(*result) : Bytes{};
  asio::co_spawn(worker_.executor(),
                 reply_slow(peer, ep != nullptr ? nullptr : reply_ep,
                            Bytes(header.bytes().begin(), header.bytes().end()), std::move(owned_payload)),
                 asio::detached);
}

asio::awaitable<void> ActiveMessageManager::reply_slow(PeerId peer, ucp_ep* reply_ep, Bytes header, Bytes payload) {
  const std::string text = ResponseHeader::text_of(header);
  if (reply_ep == nullptr) {
    auto ep = endpoint(peer);
    if (!ep) {
      spdlog::warn("transport: reply {} to peer {} dropped: {}", text, peer, ep.error().message);
      co_return;
    }
    auto st = co_await detail::am_send(worker_, *ep, kAmResponse, std::move(header), std::move(payload),
                                       detail::kSendTimeout);
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
  (void)co_await detail::await_request(worker_, req, params, state, "reply", detail::kSendTimeout);
}

void ActiveMessageManager::accept_response(std::span<const std::byte> header, Bytes payload) {
  auto parsed = ResponseHeader::parse(header);
  if (!parsed) {
    spdlog::error("transport: malformed response: {}", parsed.error().message);
    return;
  }
  Pending* pending = requests_.find(parsed->completion.request_id.value());
  if (pending == nullptr || pending->result) return;  // timed out earlier
  if (!parsed->completion.ok) {
    return requests_.finish(*pending, make_error(parsed->code, std::move(parsed->completion.message)));
  }
  if (pending->refused_writes_at_send && bulk_.rejected_writes() != *pending->refused_writes_at_send) {
    return requests_.finish(
        *pending, fail(Errc::invalid_argument,
                       "rejected: {} bulk write(s) to this side were refused while request '{:.40}' waited; its answer "
                       "is not trusted",
                       bulk_.rejected_writes() - *pending->refused_writes_at_send, pending->type));
  }
  requests_.finish(*pending, std::move(payload));
}

asio::awaitable<Status> ActiveMessageManager::write_chunks_am(PeerId peer, std::span<const RmaChunk> chunks,
                                                              std::chrono::milliseconds timeout) {
  auto ep = endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  co_return co_await bulk_.write(std::move(*ep), chunks, timeout);
}

}  // namespace kvb::transport
