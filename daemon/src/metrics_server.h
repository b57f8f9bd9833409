// MetricsServer: Prometheus text at http://127.0.0.1:PORT/metrics through
// Boost.Beast, on the daemon's event loop (so rendering reads the daemon's
// state without locks). One request per connection; anything but
// GET /metrics is a 404. Event-loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "kvb/common/error.h"

namespace kvb::daemon {

class MetricsServer {
 public:
  MetricsServer(boost::asio::io_context& io, std::function<std::string()> render);

  /// Binds 127.0.0.1:port and starts serving. io_error when the port is taken.
  [[nodiscard]] Status start(std::uint16_t port);
  /// Stops accepting. Idempotent.
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();
  static boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket, std::function<std::string()> render);

  boost::asio::io_context& io_;
  std::function<std::string()> render_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace kvb::daemon
