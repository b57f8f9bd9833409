// Endpoint: owns a ucp_ep created with UCP_ERR_HANDLING_MODE_PEER; a failure
// of the peer (killed, disconnected) marks it failed and calls the error
// handler once, on the worker's executor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/ucx_fwd.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

namespace detail {
struct RequestState;
}  // namespace detail

/// Called once when the endpoint fails; runs on the worker's executor.
using EndpointErrorHandler = std::function<void(PeerId peer, const Error& error)>;

class Endpoint {
 public:
  /// Connects to a Listener at host:port. Throws TransportError.
  Endpoint(Worker& worker, const std::string& host, std::uint16_t port, PeerId peer, EndpointErrorHandler on_error);
  /// Accepts a connection request a Listener received. Throws TransportError.
  Endpoint(Worker& worker, ucp_conn_request* request, PeerId peer, EndpointErrorHandler on_error);
  /// Connects to a worker address (Worker::address() of the peer). Throws.
  Endpoint(Worker& worker, std::span<const std::byte> worker_address, PeerId peer, EndpointErrorHandler on_error);
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  /// Force-closes the endpoint if close() was not awaited; progresses the
  /// worker (bounded) until UCX released it.
  ~Endpoint();

  /// Non-throwing factory over the host:port constructor.
  [[nodiscard]] static Result<std::unique_ptr<Endpoint>> connect(Worker& worker, const std::string& host,
                                                                 std::uint16_t port, PeerId peer,
                                                                 EndpointErrorHandler on_error);

  /// Completes when every operation issued on this endpoint so far is
  /// complete at the remote side (ucp_ep_flush_nbx). Errors: peer_lost.
  boost::asio::awaitable<Status> flush();
  /// Flushes and closes gracefully. Idempotent.
  boost::asio::awaitable<void> close();

  [[nodiscard]] ucp_ep* handle() const noexcept { return ep_; }
  [[nodiscard]] Worker& worker() const noexcept { return worker_; }
  [[nodiscard]] PeerId peer() const noexcept { return peer_; }
  /// True once UCX reported the peer failed or the endpoint was closed.
  [[nodiscard]] bool failed() const noexcept { return state_->failed; }
  [[nodiscard]] const Error& failure() const noexcept { return state_->failure; }
  /// Whether UCX reports this peer's failure (UCP_ERR_HANDLING_MODE_PEER).
  [[nodiscard]] bool detects_failure() const noexcept { return detects_failure_; }

  /// Marks the endpoint failed (a loss the manager learned of without UCX,
  /// e.g. the peer process exited) and ends every tracked request. Idempotent.
  void mark_failed(const Error& error);
  /// Ends `request` with this endpoint's failure if the endpoint fails first.
  void track(const std::shared_ptr<detail::RequestState>& request);

  /// Shared with UCX's error callback (outlives the endpoint if needed).
  struct State {
    std::vector<std::weak_ptr<detail::RequestState>> inflight;
    void abort_inflight();
    bool failed = false;
    Error failure;
    PeerId peer;
    EndpointErrorHandler on_error;
    boost::asio::any_io_executor executor;
  };

 private:
  Endpoint(Worker& worker, PeerId peer, EndpointErrorHandler on_error);
  void finish_create(const void* params);
  Worker& worker_;
  PeerId peer_;
  ucp_ep* ep_ = nullptr;
  std::shared_ptr<State> state_;
  bool closed_ = false;
  bool detects_failure_ = true;
  std::shared_ptr<const bool> worker_exists_;
};

}  // namespace kvb::transport
