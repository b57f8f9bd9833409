// The bootstrap listener on cluster.listen: a worker's UCX address travels
// out of band (UCX 1.13 cannot connect shared-memory workers by IP:PORT,
// see docs/transport.md), so each worker answers every TCP connection on
// cluster.listen with one JSON line naming itself and its UCX worker
// address, then closes it. A peer reads that line, connects by address and
// speaks UCX active messages from then on. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "kvb/common/error.h"

namespace kvb::daemon::cluster {

struct PeerIdentity {
  std::string cluster;
  std::string worker;
  std::string bootstrap;  // HOST:PORT it listens on
  std::vector<std::byte> ucx_address;
  std::uint16_t ucx_port = 0;  // its UCX listener on the bootstrap's host (0: none; connect by address)
  std::string boot_id;         // its host's boot id (same host as ours: shared memory may reach it)
};

/// "HOST:PORT" -> host, port (port 0 allowed when `allow_any_port`).
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  [[nodiscard]] static Result<HostPort> parse(std::string_view text, bool allow_any_port);
  [[nodiscard]] std::string to_string() const;
};

class BootstrapListener {
 public:
  explicit BootstrapListener(boost::asio::io_context& io);
  ~BootstrapListener();
  /// Binds `at` (port 0: any). Errors: io_error naming the address.
  [[nodiscard]] Status bind(const HostPort& at);
  /// Starts answering with `identity` (its bootstrap field is set to the
  /// bound address).
  void serve(PeerIdentity identity);
  void stop();
  /// The bound address (after start).
  [[nodiscard]] const HostPort& bound() const noexcept { return bound_; }

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  HostPort bound_;
  std::string line_;  // the answer
};

/// A bootstrap answer (one JSON line) as the identity of the worker at `at`;
/// protocol_error for anything else (a field of the wrong type included).
[[nodiscard]] Result<PeerIdentity> parse_identity(const std::string& line, const HostPort& at);

/// Reads a peer's identity from its bootstrap listener. Errors: unavailable
/// (nothing answers), protocol_error (not an identity line), timeout.
boost::asio::awaitable<Result<PeerIdentity>> read_identity(boost::asio::any_io_executor executor, const HostPort& at,
                                                           std::chrono::milliseconds timeout);

}  // namespace kvb::daemon::cluster
