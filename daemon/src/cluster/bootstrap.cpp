#include "cluster/bootstrap.h"

#include <charconv>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <nlohmann/json.hpp>

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxLine = std::size_t{64} * 1024;

std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out.push_back(kDigits[std::to_integer<unsigned>(b) >> 4]);
    out.push_back(kDigits[std::to_integer<unsigned>(b) & 15]);
  }
  return out;
}

Result<std::vector<std::byte>> from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return fail(Errc::protocol_error, "odd hex length {}", hex.size());
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return fail(Errc::protocol_error, "not hex at {}", 2 * i);
    out[i] = static_cast<std::byte>(hi * 16 + lo);
  }
  return out;
}

}  // namespace

Result<HostPort> HostPort::parse(std::string_view text, bool allow_any_port) {
  const auto colon = text.rfind(':');
  unsigned port = 0;
  if (colon == std::string_view::npos || colon == 0 ||
      std::from_chars(text.data() + colon + 1, text.data() + text.size(), port).ec != std::errc{} || port > 65535 ||
      (port == 0 && !allow_any_port)) {
    return fail(Errc::invalid_argument, "'{}' is not HOST:PORT{}", text, allow_any_port ? "" : " with a port > 0");
  }
  return HostPort{std::string(text.substr(0, colon)), static_cast<std::uint16_t>(port)};
}

std::string HostPort::to_string() const { return fmt::format("{}:{}", host, port); }

BootstrapListener::BootstrapListener(asio::io_context& io) : io_(io), acceptor_(io) {}

BootstrapListener::~BootstrapListener() { stop(); }

Status BootstrapListener::bind(const HostPort& at) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(at.host, ec);
  if (ec) return fail(Errc::invalid_argument, "cluster.listen '{}': not an IP address", at.to_string());
  const tcp::endpoint endpoint(address, at.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) return fail(Errc::io_error, "cluster.listen {}: {}", at.to_string(), ec.message());
  bound_ = HostPort{at.host, acceptor_.local_endpoint().port()};
  return kvb::ok();
}

void BootstrapListener::serve(PeerIdentity identity) {
  identity.bootstrap = bound_.to_string();
  line_ = json{{"cluster", identity.cluster},     {"worker", identity.worker},
               {"bootstrap", identity.bootstrap}, {"ucx_address", to_hex(identity.ucx_address)},
               {"ucx_port", identity.ucx_port},   {"boot_id", identity.boot_id}}
              .dump() +
          "\n";
  asio::co_spawn(io_, accept_loop(), asio::detached);
}

void BootstrapListener::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
}

asio::awaitable<void> BootstrapListener::accept_loop() {
  while (acceptor_.is_open()) {
    auto [ec, socket] = co_await acceptor_.async_accept(kUseTuple);
    if (!acceptor_.is_open()) co_return;
    if (ec) continue;
    // One short line into a fresh socket's buffer: sent without waiting.
    auto sock = std::make_shared<tcp::socket>(std::move(socket));
    asio::async_write(*sock, asio::buffer(line_), [sock](const boost::system::error_code&, std::size_t) {
      boost::system::error_code ignored;
      sock->shutdown(tcp::socket::shutdown_both, ignored);
    });
  }
}

/// A bootstrap answer's line as an identity. A field of the wrong type is
/// a protocol error, never an exception (the answer comes from anywhere).
Result<PeerIdentity> parse_identity(const std::string& line, const HostPort& at) {
  const json answer = json::parse(line, nullptr, false);
  if (answer.is_discarded() || !answer.is_object()) {
    return fail(Errc::protocol_error, "bootstrap {}: the answer is not a JSON object", at.to_string());
  }
  PeerIdentity id;
  std::int64_t port = 0;  // absent (an older worker): connected by address
  try {
    id.cluster = answer.value("cluster", std::string());
    id.worker = answer.value("worker", std::string());
    id.bootstrap = answer.value("bootstrap", std::string());
    auto address = from_hex(answer.value("ucx_address", std::string()));
    if (!address || address->empty() || id.worker.empty()) {
      return fail(Errc::protocol_error, "bootstrap {}: the answer names no worker or UCX address", at.to_string());
    }
    id.ucx_address = std::move(*address);
    if (answer.contains("ucx_port") && !answer["ucx_port"].is_number_integer()) {
      return fail(Errc::protocol_error, "bootstrap {}: ucx_port is not an integer", at.to_string());
    }
    port = answer.value("ucx_port", std::int64_t{0});
    id.boot_id = answer.value("boot_id", std::string());
  } catch (const json::exception& e) {
    return fail(Errc::protocol_error, "bootstrap {}: {}", at.to_string(), e.what());
  }
  if (port < 0 || port > 65535) return fail(Errc::protocol_error, "bootstrap {}: ucx_port {}", at.to_string(), port);
  id.ucx_port = static_cast<std::uint16_t>(port);
  return id;
}

asio::awaitable<Result<PeerIdentity>> read_identity(asio::any_io_executor executor, const HostPort& at,
                                                    std::chrono::milliseconds timeout) {
  boost::beast::tcp_stream stream(executor);
  stream.expires_after(timeout);
  tcp::resolver resolver(executor);
  auto [rec, results] = co_await resolver.async_resolve(at.host, std::to_string(at.port), kUseTuple);
  if (rec) co_return fail(Errc::unavailable, "bootstrap {}: {}", at.to_string(), rec.message());
  auto [cec, ep] = co_await stream.async_connect(results, kUseTuple);
  if (cec) co_return fail(Errc::unavailable, "bootstrap {}: {}", at.to_string(), cec.message());
  std::string line;
  std::array<char, 4096> chunk;
  for (;;) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(chunk), kUseTuple);
    line.append(chunk.data(), n);
    if (line.find('\n') != std::string::npos) break;
    if (ec == asio::error::eof) break;
    if (ec == boost::beast::error::timeout) co_return fail(Errc::timeout, "bootstrap {}: no answer", at.to_string());
    if (ec) co_return fail(Errc::unavailable, "bootstrap {}: {}", at.to_string(), ec.message());
    if (line.size() > kMaxLine) co_return fail(Errc::protocol_error, "bootstrap {}: answer too long", at.to_string());
  }
  co_return parse_identity(line.substr(0, line.find('\n')), at);
}

}  // namespace kvb::daemon::cluster
