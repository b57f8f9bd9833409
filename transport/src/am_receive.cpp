// ActiveMessageManager::Impl: the UCX AM receive callbacks. They run inside
// ucp_worker_progress: they copy or start receiving, and hand everything else
// to the executor (never user code, never progress).
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "am_wire.h"

namespace kvb::transport {

using namespace wire;

void ActiveMessageManager::Impl::receive(ActiveMessageManager& self, void* data, size_t length,
                                         const ucp_am_recv_param_t* param, Done done) {
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0) {
    Bytes payload(length);
    if (length > 0) std::memcpy(payload.data(), data, length);
    asio::post(self.worker_.executor(),
               [done = std::move(done), p = std::move(payload)]() mutable { done(std::move(p)); });
    return;
  }
  auto buffer = std::make_shared<Bytes>(length);
  receive_into(self, data, buffer->data(), length, [buffer, done = std::move(done)](Status st) {
    if (!st) return done(tl::unexpected(st.error()));
    done(std::move(*buffer));
  });
}

void ActiveMessageManager::Impl::receive_into(ActiveMessageManager& self, void* data, std::byte* dest, size_t length,
                                              std::function<void(Status)> done) {
  auto state = std::make_shared<detail::RequestState>(self.worker_.executor());
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE;
  params.datatype = ucp_dt_make_contig(1);
  detail::bind_am_recv_callback(params, state);
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(self.worker_.handle(), data, dest, length, &params);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) {
    detail::unbind_callback(params);
    Status st = ok();
    if (req != nullptr) st = tl::unexpected(detail::ucx_error("ucp_am_recv_data_nbx", UCS_PTR_STATUS(req)));
    asio::post(self.worker_.executor(), [done = std::move(done), st]() { done(st); });
    return;
  }
  // Completion arrives from a later progress; resume on the executor.
  asio::co_spawn(
      self.worker_.executor(),
      [state, req, done = std::move(done)]() -> asio::awaitable<void> {
        co_await state->done.wait();
        ucp_request_free(req);
        if (state->status != UCS_OK) {
          done(tl::unexpected(detail::ucx_error("am receive", state->status)));
        } else {
          done(ok());
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
  ucp_ep* reply_ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
  // A hello'd sender is known by its token, others by their endpoint.
  if (auto it = self.peer_of_token_.find(token); it != self.peer_of_token_.end()) {
    msg.peer = it->second;
  } else if (auto ep = self.peer_of_ep_.find(reply_ep); ep != self.peer_of_ep_.end()) {
    msg.peer = ep->second;
  }
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0 && self.worker_.in_loop_progress()) {
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
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0 && self.worker_.in_loop_progress()) {
    // Fast path: the worker's own loop is progressing on the executor, and
    // accept_response only records the result and wakes the waiter (its
    // resumption is posted), so no user code runs inside progress.
    Bytes payload(length);
    if (length > 0) std::memcpy(payload.data(), data, length);
    self.accept_response(std::string_view(static_cast<const char*>(header), header_length), std::move(payload));
    return UCS_OK;
  }
  std::string text(static_cast<const char*>(header), header_length);
  auto alive = self.alive_;
  receive(self, data, length, param, [&self, alive, text = std::move(text)](Result<Bytes> r) {
    if (!*alive) return;
    if (!r) {
      spdlog::error("transport: lost the payload of response '{}': {}", text, r.error().to_string());
      r = Bytes{};
    }
    self.accept_response(text, std::move(*r));
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
  receive(self, data, length, param, [&self, alive, hello](Result<Bytes> r) {
    if (*alive && r) self.accept_hello(hello, *r);
  });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_bye(void* arg, const void* header, size_t header_length, void*, size_t,
                                                const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  if (header_length != 4) return UCS_OK;
  const auto token = load<std::uint32_t>(static_cast<const std::byte*>(header));
  ucp_ep* reply_ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
  std::optional<PeerId> peer;
  if (auto it = self.peer_of_token_.find(token); it != self.peer_of_token_.end()) peer = it->second;
  if (auto it = self.peer_of_ep_.find(reply_ep); !peer && it != self.peer_of_ep_.end()) peer = it->second;
  if (!peer) return UCS_OK;
  asio::post(self.worker_.executor(), [&self, alive = self.alive_, p = *peer] {
    if (*alive && self.peers_.contains(p))
      self.peer_lost(p, Error{Errc::peer_lost, fmt::format("peer lost: {} (it closed)", p)});
  });
  return UCS_OK;
}

ucs_status_t ActiveMessageManager::Impl::on_write(void* arg, const void* header, size_t header_length, void* data,
                                                  size_t length, const ucp_am_recv_param_t* param) {
  auto& self = *static_cast<ActiveMessageManager*>(arg);
  if (header_length != sizeof(WriteHeader)) {
    ++self.stats_.rejected_writes;
    spdlog::error("transport: rejected a bulk write with a malformed header ({} bytes)", header_length);
    return UCS_OK;
  }
  WriteHeader wh;
  std::memcpy(&wh, header, sizeof(wh));
  const std::uint64_t address = wh.address;
  bool allowed = wh.length == length;
  if (allowed) {
    allowed = false;
    for (const auto* reg : self.exposed_) allowed = allowed || reg->contains(address, length);
  }
  if (!allowed) {
    ++self.stats_.rejected_writes;
    ++self.refused_writes_by_token_[wh.token];  // the sender's next after-writes notification fails
    spdlog::error("transport: rejected a bulk write of {} bytes at {:#x}: not in an exposed region", length, address);
    return UCS_OK;
  }
  auto* dest = reinterpret_cast<std::byte*>(address);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0) {
    std::memcpy(dest, data, length);
    return UCS_OK;
  }
  // The data lands in place; the completion only frees the request and
  // counts a failure (no executor round trip per chunk).
  struct Landing {
    std::shared_ptr<bool> alive;
    ActiveMessageManager* self;
    std::uint32_t token;
    static void done(void* request, ucs_status_t status, size_t, void* user_data) {
      std::unique_ptr<Landing> landing(static_cast<Landing*>(user_data));
      ucp_request_free(request);
      if (status != UCS_OK && *landing->alive) {
        ++landing->self->stats_.rejected_writes;
        ++landing->self->refused_writes_by_token_[landing->token];
        spdlog::error("transport: bulk write failed: {}", ucs_status_string(status));
      }
    }
  };
  auto* landing = new Landing{self.alive_, &self, wh.token};
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.datatype = ucp_dt_make_contig(1);
  params.cb.recv_am = &Landing::done;
  params.user_data = landing;
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(self.worker_.handle(), data, dest, length, &params);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) {
    delete landing;  // finished at once (or failed): the callback never runs
    if (req != nullptr) {
      ++self.stats_.rejected_writes;
      ++self.refused_writes_by_token_[wh.token];
      spdlog::error("transport: bulk write failed: {}", ucs_status_string(UCS_PTR_STATUS(req)));
    }
  }
  return UCS_OK;
}
}  // namespace kvb::transport
