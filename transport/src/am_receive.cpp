// ActiveMessageManager::Impl: the UCX AM receive callbacks. They run inside
// ucp_worker_progress: they copy or start receiving, and hand everything else
// to the executor or to the parts that only record and schedule (never user
// code, never progress).
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "am_wire.h"

namespace kvb::transport {

using namespace wire;

namespace {

bool rendezvous(const ucp_am_recv_param_t* param) { return (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0; }

ucp_ep* reply_ep_of(const ucp_am_recv_param_t* param) {
  return (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
}

}  // namespace

void ActiveMessageManager::Impl::receive(ActiveMessageManager& self, void* data, size_t length,
                                         const ucp_am_recv_param_t* param, Done done) {
  if (!rendezvous(param)) {
    Bytes payload(length);
    if (length > 0) std::memcpy(payload.data(), data, length);
    asio::post(self.worker_.executor(),
               [done = std::move(done), p = std::move(payload)]() mutable { done(std::move(p)); });
    return;
  }
  auto buffer = std::make_shared<Bytes>(length);
  auto state = std::make_shared<detail::RequestState>(self.worker_.executor());
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_am_recv_callback(params, state);
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(self.worker_.handle(), data, buffer->data(), length, &params);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) {
    detail::unbind_callback(params);
    Result<Bytes> r = std::move(*buffer);
    if (req != nullptr) r = tl::unexpected(detail::ucx_error("ucp_am_recv_data_nbx", UCS_PTR_STATUS(req)));
    asio::post(self.worker_.executor(), [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return;
  }
  // Completion arrives from a later progress; resume on the executor.
  asio::co_spawn(
      self.worker_.executor(),
      [state, req, buffer, done = std::move(done)]() -> asio::awaitable<void> {
        co_await state->done.wait();
        ucp_request_free(req);
        if (state->status != UCS_OK) {
          done(tl::unexpected(detail::ucx_error("am receive", state->status)));
        } else {
          done(std::move(*buffer));
        }
      },
      asio::detached);
}

ucs_status_t ActiveMessageManager::Impl::on_message(void* arg, const void* header, size_t header_length, void* data,
                                                    size_t length, const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  const auto* h = static_cast<const std::byte*>(header);
  if (header_length < kFixedHeader || std::to_integer<std::uint8_t>(h[0]) != kVersion) {
    spdlog::error("transport: dropped a message with a malformed header ({} bytes)", header_length);
    return UCS_OK;
  }
  const auto type_len = load<std::uint16_t>(h + 2);
  if (kFixedHeader + type_len > header_length) {
    spdlog::error("transport: dropped a message whose type length {} exceeds its header", type_len);
    return UCS_OK;
  }
  IncomingMessage msg;
  msg.type.assign(reinterpret_cast<const char*>(h + kFixedHeader), type_len);
  const auto flags = std::to_integer<std::uint8_t>(h[1]);
  if (flags & kFlagNotify) msg.notification_id = load<std::uint64_t>(h + 8);
  const bool after_writes = (flags & kFlagAfterWrites) != 0;
  const auto token = load<std::uint32_t>(h + 4);
  ucp_ep* reply_ep = reply_ep_of(param);
  msg.peer = self.peers_.sender(token, reply_ep);
  if (!rendezvous(param) && self.worker_.in_loop_progress()) {
    // Fast path: accept_message only queues the message and wakes a runner
    // through the worker (after this progress pass); no user code runs here.
    msg.payload.assign(static_cast<const std::byte*>(data), static_cast<const std::byte*>(data) + length);
    self.accept_message(std::move(msg), reply_ep, token, after_writes);
    return UCS_OK;
  }
  auto alive = self.alive_;
  receive(self, data, length, param,
          [&self, alive, msg = std::move(msg), reply_ep, token, after_writes](Result<Bytes> r) mutable {
            if (!*alive) return;
            if (!r) {
              spdlog::error("transport: lost the payload of a '{}' message: {}", msg.type, r.error().to_string());
              return;
            }
            msg.payload = std::move(*r);
            self.accept_message(std::move(msg), reply_ep, token, after_writes);
          });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_response(void* arg, const void* header, size_t header_length, void* data,
                                                     size_t length, const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  const std::span<const std::byte> head(static_cast<const std::byte*>(header), header_length);
  if (!rendezvous(param) && self.worker_.in_loop_progress()) {
    // Fast path: the worker's own loop is progressing on the executor, and
    // accept_response only records the result and wakes the waiter (its
    // resumption is queued), so no user code runs inside progress.
    Bytes payload(length);
    if (length > 0) std::memcpy(payload.data(), data, length);
    self.accept_response(head, std::move(payload));
    return UCS_OK;
  }
  Bytes copy(head.begin(), head.end());
  auto alive = self.alive_;
  receive(self, data, length, param, [&self, alive, copy = std::move(copy)](Result<Bytes> r) {
    if (!*alive) return;
    if (!r) {
      spdlog::error("transport: lost the payload of response '{}': {}", ResponseHeader::text_of(copy),
                    r.error().to_string());
      r = Bytes{};
    }
    self.accept_response(copy, std::move(*r));
  });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_hello(void* arg, const void* header, size_t header_length, void* data,
                                                  size_t length, const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  if (header_length != sizeof(Hello)) return UCS_OK;
  Hello hello;
  std::memcpy(&hello, header, sizeof(Hello));
  auto alive = self.alive_;
  if (!rendezvous(param) && self.worker_.in_loop_progress()) {
    // Accepted right after this progress pass, before the handlers of the
    // messages the sender sent after it start: they can name their sender.
    Bytes address(static_cast<const std::byte*>(data), static_cast<const std::byte*>(data) + length);
    self.worker_.complete_soon(Completion([&self, alive, hello, address = std::move(address)] {
      if (*alive) self.peers_.accept_hello(hello.token, hello.pid, hello.sender_peer, hello.ack != 0, address);
    }));
    return UCS_OK;
  }
  receive(self, data, length, param, [&self, alive, hello](Result<Bytes> r) {
    if (*alive && r) self.peers_.accept_hello(hello.token, hello.pid, hello.sender_peer, hello.ack != 0, *r);
  });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_bye(void* arg, const void* header, size_t header_length, void*, size_t,
                                                const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  if (header_length != 4) return UCS_OK;
  const auto token = load<std::uint32_t>(static_cast<const std::byte*>(header));
  const PeerId peer = self.peers_.sender(token, reply_ep_of(param));
  if (peer == PeerId{0}) return UCS_OK;
  asio::post(self.worker_.executor(), [&self, alive = self.alive_, peer] {
    if (*alive) self.peers_.lost(peer, Error{Errc::peer_lost, fmt::format("peer lost: {} (it closed)", peer)});
  });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_write(void* arg, const void* header, size_t header_length, void* data,
                                                  size_t length, const ucp_am_recv_param_t* param) {
  static_cast<ActiveMessageManager*>(arg)->bulk_.land(header, header_length, data, length, rendezvous(param));
  return UCS_OK;
}

}  // namespace kvb::transport
