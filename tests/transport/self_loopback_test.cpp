// UCX_TLS=self: one worker talking to itself (connect by worker address):
// AM round trip and put/get into its own registered memory.
#include <gtest/gtest.h>

#include <cstring>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "kvb/transport/block_transfer.h"

namespace kvb::transport {
namespace {

using namespace std::chrono_literals;

TEST(SelfTransport, AmRoundTripAndPutGetOnOneWorker) {
  asio::io_context io;
  std::unique_ptr<Context> context;
  std::unique_ptr<Worker> worker;
  try {
    context = std::make_unique<Context>(ContextOptions{.tls = "self"});
    worker = std::make_unique<Worker>(*context, io.get_executor());
  } catch (const TransportError& e) {
    GTEST_SKIP() << "UCX_TLS=self is not available here: " << e.what();
  }
  worker->start();
  ActiveMessageManager manager(*worker);
  ASSERT_TRUE(manager.register_handler(
      "echo", [](IncomingMessage m) -> asio::awaitable<Result<Bytes>> { co_return std::move(m.payload); }));
  const PeerId self{7};
  auto st = manager.connect_address(self, worker->address());
  ASSERT_TRUE(st) << st.error().to_string();
  std::vector<std::byte> src(1 << 20), dst(1 << 20), back(1 << 20);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 13);
  auto reg = MemoryRegistration::create(*context, dst.data(), dst.size());
  ASSERT_TRUE(reg);
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto reply = co_await manager.send_request(self, "echo", Bytes(100, std::byte{5}), 5s);
        EXPECT_TRUE(reply.has_value());
        if (reply) {
          EXPECT_EQ(*reply, Bytes(100, std::byte{5}));
        }
        auto ep = manager.endpoint(self);
        EXPECT_TRUE(ep.has_value());
        if (!ep) co_return;
        auto rkey = RemoteKey::unpack(**ep, (*reg)->packed_rkey());
        EXPECT_TRUE(rkey.has_value());
        if (!rkey) co_return;
        const auto base = reinterpret_cast<std::uint64_t>(dst.data());
        const RmaChunk put{src.data(), base, src.size()};
        EXPECT_TRUE(co_await put_chunks(**ep, **rkey, std::span(&put, 1), 5s));
        const RmaChunk get{back.data(), base, back.size()};
        EXPECT_TRUE(co_await get_chunks(**ep, **rkey, std::span(&get, 1), 5s));
        done = true;
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done && std::chrono::steady_clock::now() < deadline) io.run_one_for(100ms);
  ASSERT_TRUE(done);
  EXPECT_EQ(0, std::memcmp(src.data(), dst.data(), src.size()));
  EXPECT_EQ(0, std::memcmp(src.data(), back.data(), src.size()));
}

// The bulk protocol per transport and destination (docs/transport.md,
// "Protocol per transport"): into memory UCX did not allocate (the daemon's
// memfd pools), UCX 1.13 over sm has no put lane (UCX_PROTO_INFO: "software
// emulation") and moves it by rendezvous, a CMA read by the receiver.
TEST(BulkProtocol, PerTransportAndDestination) {
  EXPECT_EQ(protocol_for_tls("tcp", Destination::ucx_allocated), BulkProtocol::am_rendezvous);
  EXPECT_EQ(protocol_for_tls("tcp", Destination::caller_memory), BulkProtocol::am_rendezvous);
  EXPECT_EQ(protocol_for_tls("sm", Destination::ucx_allocated), BulkProtocol::rma_put);
  for (const char* tls : {"sm", "posix", "sysv,cma", "cma", "sm,tcp", "tcp,sm", ""}) {
    EXPECT_EQ(protocol_for_tls(tls, Destination::caller_memory), BulkProtocol::am_rendezvous) << "tls '" << tls << "'";
  }
  for (const char* tls : {"self", "rc", "rc_x,dc_x", "ib"}) {
    EXPECT_EQ(protocol_for_tls(tls, Destination::caller_memory), BulkProtocol::rma_put) << "tls '" << tls << "'";
  }
}

}  // namespace
}  // namespace kvb::transport
