// Listener: a ucp_listener on a TCP address; each connection request is
// handed to the accept callback on the worker's executor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvb/common/error.h"
#include "kvb/transport/ucx_fwd.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

/// Receives a connection request; build an Endpoint(worker, request, ...)
/// from it (or let it drop: UCX rejects it).
using AcceptHandler = std::function<void(ucp_conn_request* request)>;

class Listener {
 public:
  /// Listens on host:port (port 0 = any free port). Throws TransportError.
  Listener(Worker& worker, const std::string& host, std::uint16_t port, AcceptHandler on_accept);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  [[nodiscard]] static Result<std::unique_ptr<Listener>> create(Worker& worker, const std::string& host,
                                                                std::uint16_t port, AcceptHandler on_accept);
  /// The bound port (useful with port 0).
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

  struct State {
    AcceptHandler on_accept;
    boost::asio::any_io_executor executor;
    bool alive = true;
    std::weak_ptr<State> self;  // lets deferred accepts outlive the Listener safely
  };

 private:
  Worker& worker_;
  ucp_listener* listener_ = nullptr;
  std::shared_ptr<State> state_;
  std::uint16_t port_ = 0;
};

}  // namespace kvb::transport
