// transport_test_peer: the other process of the two-process transport tests.
//   transport_test_peer <tls> <max_concurrent> <max_queued>
// Prints "port <n>" once listening and "address <hex worker address>", then serves PeerService and obeys
// commands on stdin, one per line, answering one line each on stdout:
//   wait_parked <n> -> "ok" once n handlers are parked
//   stats           -> PeerService::stats_line()
//   release         -> "ok"
//   quit            -> exits (also on stdin EOF: the test process died)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <istream>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "kvb/common/logging.h"
#include "peer_service.h"

namespace asio = boost::asio;
using namespace kvb::transport;

namespace {

void say(const std::string& line) {
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

asio::awaitable<void> commands(asio::io_context& io, test::PeerService& service) {
  asio::posix::stream_descriptor in(io, ::dup(STDIN_FILENO));
  asio::streambuf buf;
  for (;;) {
    boost::system::error_code ec;
    co_await asio::async_read_until(in, buf, '\n', asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    std::istream is(&buf);
    std::string line;
    std::getline(is, line);
    if (line.starts_with("wait_parked ")) {
      co_await service.wait_parked(std::stoul(line.substr(12)));
      say("ok");
    } else if (line == "stats") {
      say(service.stats_line());
    } else if (line == "release") {
      service.release();
      say("ok");
    } else if (line == "quit") {
      break;
    } else {
      say("unknown command");
    }
  }
  io.stop();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: transport_test_peer <tls> <max_concurrent> <max_queued>\n");
    return 2;
  }
  // stdout carries the command replies: logs go to stderr.
  if (auto st = kvb::setup_logging("info"); !st) return 2;
  try {
    asio::io_context io;
    Context context(ContextOptions{.tls = argv[1]});
    Worker worker(context, io.get_executor());
    worker.start();
    AmOptions options;
    options.max_concurrent = std::strtoul(argv[2], nullptr, 10);
    options.max_queued = std::strtoul(argv[3], nullptr, 10);
    ActiveMessageManager manager(worker, options);
    test::PeerService service(context, manager);
    auto port = manager.listen("127.0.0.1", 0);
    if (!port) {
      std::fprintf(stderr, "transport_test_peer: %s\n", port.error().to_string().c_str());
      say("error " + port.error().to_string());
      return 1;
    }
    say("port " + std::to_string(*port));
    say("address " + test::to_hex(worker.address()));
    asio::co_spawn(io, commands(io, service), asio::detached);
    io.run();
    worker.stop();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport_test_peer: %s\n", e.what());
    say(std::string("error ") + e.what());
    return 1;
  }
}
