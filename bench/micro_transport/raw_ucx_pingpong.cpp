#include "raw_ucx_pingpong.h"

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstring>
#include <vector>

namespace kvb::bench {

namespace {

struct Side {
  ucp_worker_h worker = nullptr;
  ucp_ep_h ep = nullptr;  // to the other side
  std::size_t received = 0;
  std::byte last[64] = {};
};

ucs_status_t on_am(void* arg, const void*, size_t, void* data, size_t length, const ucp_am_recv_param_t*) {
  auto* side = static_cast<Side*>(arg);
  std::memcpy(side->last, data, length < sizeof(side->last) ? length : sizeof(side->last));
  ++side->received;
  return UCS_OK;
}

// Progresses both workers until the send completes (over tcp the first sends
// wait for the connection, which needs the other side's progress too).
bool send(Side& from, Side& to, const std::byte* payload) {
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
  p.flags = 0;
  std::uint64_t header = 1;
  for (;;) {
    ucs_status_ptr_t r = ucp_am_send_nbx(from.ep, 1, &header, sizeof(header), payload, 64, &p);
    if (r == nullptr) return true;
    if (UCS_PTR_IS_ERR(r) && UCS_PTR_STATUS(r) == UCS_ERR_NO_RESOURCE) {
      ucp_worker_progress(from.worker);
      ucp_worker_progress(to.worker);
      continue;
    }
    return false;
  }
}

}  // namespace

double raw_ucx_pingpong_ns(const std::string& tls, std::size_t round_trips, std::string& error) {
  ucp_config_t* config = nullptr;
  if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) return error = "ucp_config_read", -1;
  ucp_config_modify(config, "TLS", tls.c_str());
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM;
  ucp_context_h context = nullptr;
  const ucs_status_t st = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (st != UCS_OK) return error = std::string("ucp_init: ") + ucs_status_string(st), -1;
  Side a, b;
  double result = -1;
  for (Side* s : {&a, &b}) {
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucp_worker_create(context, &wp, &s->worker) != UCS_OK) {
      error = "ucp_worker_create";
      goto out;
    }
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    hp.id = 1;
    hp.cb = on_am;
    hp.arg = s;
    ucp_worker_set_am_recv_handler(s->worker, &hp);
  }
  for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    ucp_address_t* address = nullptr;
    std::size_t length = 0;
    ucp_worker_get_address(to->worker, &address, &length);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address = address;
    const ucs_status_t es = ucp_ep_create(from->worker, &ep, &from->ep);
    ucp_worker_release_address(to->worker, address);
    if (es != UCS_OK) {
      error = std::string("ucp_ep_create: ") + ucs_status_string(es);
      goto out;
    }
  }
  {
    std::byte payload[64] = {};
    const bool tcp = tls != "sm";
    auto round_trip = [&]() {
      const std::size_t b_before = b.received, a_before = a.received;
      if (!send(a, b, payload)) return false;
      while (b.received == b_before) {
        ucp_worker_progress(b.worker);
        if (tcp) ucp_worker_progress(a.worker);  // the sender may still have bytes to push
      }
      if (!send(b, a, b.last)) return false;  // echo
      while (a.received == a_before) {
        ucp_worker_progress(a.worker);
        if (tcp) ucp_worker_progress(b.worker);
      }
      std::memcpy(payload, a.last, sizeof(payload));
      return true;
    };
    bool ok = true;
    for (int i = 0; i < 10000 && ok; ++i) ok = round_trip();
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < round_trips && ok; ++i) ok = round_trip();
    const auto t1 = std::chrono::steady_clock::now();
    if (ok) {
      result = std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(round_trips);
    } else {
      error = "ucp_am_send_nbx failed";
    }
  }
out:
  for (Side* s : {&a, &b}) {
    if (s->ep != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t r = ucp_ep_close_nbx(s->ep, &p);
      while (r != nullptr && !UCS_PTR_IS_ERR(r) && ucp_request_check_status(r) == UCS_INPROGRESS) {
        ucp_worker_progress(a.worker);
        ucp_worker_progress(b.worker);
      }
      if (r != nullptr && !UCS_PTR_IS_ERR(r)) ucp_request_free(r);
    }
  }
  for (Side* s : {&a, &b})
    if (s->worker != nullptr) ucp_worker_destroy(s->worker);
  ucp_cleanup(context);
  return result;
}

}  // namespace kvb::bench
