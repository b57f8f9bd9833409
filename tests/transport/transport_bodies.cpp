// The transport test bodies, shared by the in-process (unit) and the
// two-process (integration) instantiations.
#include <cstring>
#include <random>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "kvb/transport/block_transfer.h"
#include "transport_fixture.h"

namespace kvb::transport::test {
namespace {

using namespace std::chrono_literals;

Bytes u64s(std::initializer_list<std::uint64_t> values) {
  Bytes b(values.size() * 8);
  std::size_t at = 0;
  for (auto v : values) {
    std::memcpy(b.data() + at, &v, 8);
    at += 8;
  }
  return b;
}

Bytes text(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

/// The peer's registered buffer: its address and our unpacked key for it.
struct RemoteBuffer {
  std::uint64_t address = 0;
  std::unique_ptr<RemoteKey> rkey;
};

asio::awaitable<Result<RemoteBuffer>> alloc_remote(ActiveMessageManager& client, std::uint64_t size) {
  Bytes request = u64s({size});  // (GCC 12: no initializer_list inside co_await)
  auto reply = co_await client.send_request(kPeer, "alloc", std::move(request), 10s);
  if (!reply) co_return tl::unexpected(reply.error());
  if (reply->size() <= 8) co_return fail(Errc::protocol_error, "alloc reply of {} bytes", reply->size());
  RemoteBuffer buffer;
  std::memcpy(&buffer.address, reply->data(), 8);
  auto ep = client.endpoint(kPeer);
  if (!ep) co_return tl::unexpected(ep.error());
  auto rkey = RemoteKey::unpack(**ep, std::span<const std::byte>(*reply).subspan(8));
  if (!rkey) co_return tl::unexpected(rkey.error());
  buffer.rkey = std::move(*rkey);
  co_return buffer;
}

TEST_P(TransportTest, RegistrationAndRkeyExchange) {
  run([&]() -> asio::awaitable<void> {
    auto remote = co_await alloc_remote(*client_, 1 << 20);
    CO_ASSERT_TRUE(remote.has_value());
    std::vector<std::byte> local(64 << 10);
    auto reg = MemoryRegistration::create(*context_, local.data(), local.size());
    CO_ASSERT_TRUE(reg.has_value());
    EXPECT_FALSE((*reg)->packed_rkey().empty());
    EXPECT_TRUE((*reg)->contains(reinterpret_cast<std::uint64_t>(local.data()) + 10, 100));
    EXPECT_FALSE((*reg)->contains(reinterpret_cast<std::uint64_t>(local.data()) + 10, local.size()));
    auto ep = client_->endpoint(kPeer);
    CO_ASSERT_TRUE(ep.has_value());
    const RmaChunk chunk{local.data(), remote->address + 4096, local.size()};
    auto st = co_await get_chunks(**ep, *remote->rkey, std::span(&chunk, 1), 10s);
    CO_ASSERT_TRUE(st.has_value());
    for (std::size_t i = 0; i < local.size(); ++i) {
      if (local[i] != pattern_byte(4096 + i, 7)) {
        ADD_FAILURE() << "byte " << i << " differs after get";
        break;
      }
    }
    auto bad = RemoteKey::unpack(**ep, std::span<const std::byte>());
    EXPECT_FALSE(bad.has_value());
  });
}

TEST_P(TransportTest, PutGetRandomChunkListsWithNotification) {
  run(
      [&]() -> asio::awaitable<void> {
        constexpr std::uint64_t kRemoteSize = 8 << 20;
        auto remote = co_await alloc_remote(*client_, kRemoteSize);
        CO_ASSERT_TRUE(remote.has_value());
        std::mt19937_64 rng(42);
        for (auto protocol : {BulkProtocol::rma_put, BulkProtocol::am_rendezvous}) {
          for (int round = 0; round < 3; ++round) {
            // Non-overlapping chunks at random offsets with random lengths.
            std::vector<std::uint64_t> offsets;
            std::vector<RmaChunk> chunks;
            Bytes verify;
            std::vector<std::byte> local(kRemoteSize);
            std::uint64_t at = rng() % 4096;
            std::uint64_t seed = 100 * round + (protocol == BulkProtocol::rma_put ? 1 : 2);
            while (chunks.size() < 40) {
              const std::uint64_t len = 1 + rng() % (rng() % 4 == 0 ? (1 << 20) : (16 << 10));
              if (at + len > kRemoteSize) break;
              for (std::uint64_t i = 0; i < len; ++i) local[at + i] = pattern_byte(i, seed + chunks.size());
              chunks.push_back({local.data() + at, remote->address + at, len});
              const Bytes v = u64s({at, len, seed + chunks.size() - 1});
              verify.insert(verify.end(), v.begin(), v.end());
              at += len + rng() % 8192;
            }
            std::shuffle(chunks.begin(), chunks.end(), rng);
            auto notified = co_await write_then_notify(*client_, kPeer, protocol, remote->rkey.get(), chunks, "verify",
                                                       verify, 20s);
            EXPECT_TRUE(notified.has_value())
                << to_string(protocol) << " round " << round << ": " << (notified ? "" : notified.error().to_string());
            // Read every chunk back with get and compare with what was sent.
            std::vector<std::byte> back(kRemoteSize);
            std::vector<RmaChunk> gets;
            gets.reserve(chunks.size());
            for (const auto& c : chunks)
              gets.push_back({back.data() + (c.local - local.data()), c.remote_address, c.length});
            auto ep = client_->endpoint(kPeer);
            CO_ASSERT_TRUE(ep.has_value());
            auto st = co_await get_chunks(**ep, *remote->rkey, gets, 20s);
            CO_ASSERT_TRUE(st.has_value());
            for (const auto& c : chunks) {
              const auto off = static_cast<std::size_t>(c.local - local.data());
              EXPECT_EQ(0, std::memcmp(back.data() + off, local.data() + off, c.length)) << "chunk at " << off;
            }
          }
        }
      },
      std::chrono::seconds(40));
}

// A bulk write the receiver refuses (outside its exposed memory) fails the
// notification that follows it, and that notification's handler never runs:
// a handler never acts on data that did not arrive. The next clean batch
// goes through.
TEST_P(TransportTest, ARefusedBulkWriteFailsItsNotificationAndTheHandlerNeverRuns) {
  run([&]() -> asio::awaitable<void> {
    auto remote = co_await alloc_remote(*client_, 1 << 20);
    CO_ASSERT_TRUE(remote.has_value());
    std::vector<std::byte> local(64 << 10, std::byte{0x42});
    const auto handled_before = co_await remote_->stats();
    const RmaChunk bad[] = {{local.data(), remote->address, 4096},
                            {local.data() + 4096, remote->address + (std::uint64_t{64} << 20), 4096}};
    auto refused = co_await write_then_notify(*client_, kPeer, BulkProtocol::am_rendezvous, nullptr, bad, "echo",
                                              text("must not run"), 10s);
    CO_ASSERT_TRUE(!refused.has_value());
    EXPECT_EQ(refused.error().code, Errc::invalid_argument) << refused.error().to_string();
    EXPECT_NE(refused.error().message.find("rejected: 1 bulk write"), std::string::npos) << refused.error().message;
    // The echo handler did not run: the peer handled nothing since.
    EXPECT_EQ(co_await remote_->stats(), handled_before);
    const RmaChunk good[] = {{local.data(), remote->address, 4096}};
    auto accepted = co_await write_then_notify(*client_, kPeer, BulkProtocol::am_rendezvous, nullptr, good, "echo",
                                               text("runs"), 10s);
    CO_ASSERT_TRUE(accepted.has_value());
    EXPECT_EQ(*accepted, text("runs"));
  });
}

// A TransferPlan (vLLM-style layer-separate source -> fully contiguous
// destination in the peer's registered memory) moved run by run.
TEST_P(TransportTest, TransferPlanRunsReachThePeer) {
  run([&]() -> asio::awaitable<void> {
    const LayoutSpec spec{
        .num_layers = 4, .outer_dim = 2, .page_size = 16, .inner_dim = 64, .dtype = DType::bf16, .alignment = 256};
    auto src_layout = Layout::make(spec, LayoutKind::layer_separate_block_outer, 8);
    auto dst_layout = Layout::make(spec, LayoutKind::fully_contiguous, 8);
    CO_ASSERT_TRUE(src_layout.has_value() && dst_layout.has_value());
    std::vector<std::vector<std::byte>> src_storage;
    BlockSpace src{*src_layout, {}};
    for (std::uint32_t r = 0; r < src_layout->num_regions(); ++r) {
      src_storage.emplace_back(src_layout->region_bytes());
      for (std::size_t i = 0; i < src_storage.back().size(); ++i) src_storage.back()[i] = pattern_byte(i, 50 + r);
      src.regions.push_back({src_storage.back().data(), src_storage.back().size(), MemoryKind::host});
    }
    // A local mirror of what the peer's destination must hold afterwards.
    std::vector<std::byte> mirror(dst_layout->region_bytes());
    for (std::size_t i = 0; i < mirror.size(); ++i) mirror[i] = pattern_byte(i, 7);
    BlockSpace dst{*dst_layout, {{mirror.data(), mirror.size(), MemoryKind::host}}};
    const std::vector<BlockPair> pairs{{BlockId{0}, BlockId{3}}, {BlockId{1}, BlockId{4}}, {BlockId{6}, BlockId{0}}};
    auto plan = TransferPlan::build(src, dst, pairs);
    CO_ASSERT_TRUE(plan.has_value());
    for (const CopyRun& r : plan->runs()) std::memcpy(plan->dst_address(r), plan->src_address(r), r.bytes);

    auto remote = co_await alloc_remote(*client_, mirror.size());
    CO_ASSERT_TRUE(remote.has_value());
    const std::uint64_t bases[] = {remote->address};
    auto chunks = chunks_of_plan(*plan, bases);
    CO_ASSERT_TRUE(chunks.has_value());
    EXPECT_EQ(chunks->size(), plan->runs().size());
    auto done =
        co_await write_then_notify(*client_, kPeer, protocol_for_tls(GetParam().tls, Destination::ucx_allocated),
                                   remote->rkey.get(), *chunks, "echo", {}, 20s);
    CO_ASSERT_TRUE(done.has_value());
    Bytes read_request = u64s({0, mirror.size()});
    auto back = co_await client_->send_request(kPeer, "read", std::move(read_request), 20s);
    CO_ASSERT_TRUE(back.has_value());
    CO_ASSERT_TRUE(back->size() == mirror.size());
    EXPECT_EQ(0, std::memcmp(back->data(), mirror.data(), mirror.size()));
    const std::uint64_t too_few[] = {0};
    EXPECT_FALSE(chunks_of_plan(*plan, std::span(too_few, 0)).has_value());
  });
}

TEST_P(TransportTest, ActiveMessageDispatchAndNotifications) {
  run([&]() -> asio::awaitable<void> {
    for (std::size_t size : {std::size_t{0}, std::size_t{100}, std::size_t{64} << 10, std::size_t{2} << 20}) {
      Bytes payload(size);
      for (std::size_t i = 0; i < size; ++i) payload[i] = pattern_byte(i, size);
      auto reply = co_await client_->send_request(kPeer, "echo", payload, 10s);
      CO_ASSERT_TRUE(reply.has_value());
      EXPECT_EQ(*reply, payload) << "echo of " << size << " bytes";
    }
    // As many requests in flight at once as the peer accepts (its runners
    // plus its queue; more may arrive in one progress pass and be refused
    // busy, see FullQueueAnswersBusy): each gets its own answer.
    constexpr int kN = static_cast<int>(kPeerMaxConcurrent + kPeerMaxQueued);
    std::vector<std::optional<Result<Bytes>>> replies(kN);
    AsyncEvent all(worker_->executor());
    int left = kN;
    for (int i = 0; i < kN; ++i) {
      asio::co_spawn(
          io_,
          [&, i]() -> asio::awaitable<void> {
            replies[i] = co_await client_->send_request(kPeer, "echo", text(fmt::format("message {}", i)), 10s);
            if (--left == 0) all.set();
          },
          asio::detached);
    }
    CO_ASSERT_TRUE(co_await all.wait_for(15s));
    for (int i = 0; i < kN; ++i) {
      CO_ASSERT_TRUE(replies[i].has_value());
      if (!replies[i]->has_value()) ADD_FAILURE() << "request " << i << ": " << (*replies[i]).error().to_string();
      CO_ASSERT_TRUE(replies[i]->has_value());
      EXPECT_EQ(**replies[i], text(fmt::format("message {}", i)));
    }
    // Fire-and-forget reaches the handler.
    auto st = co_await client_->send(kPeer, "echo", text("ff"));
    EXPECT_TRUE(st.has_value());
    auto ping = co_await client_->send_request(kPeer, "echo", {}, 10s);
    EXPECT_TRUE(ping.has_value());
    const auto stats = co_await remote_->stats();
    EXPECT_NE(stats.find("handled=" + std::to_string(4 + kN + 2)), std::string::npos) << stats;
  });
}

TEST_P(TransportTest, ConcurrencyLimitIsNeverExceeded) {
  run([&]() -> asio::awaitable<void> {
    constexpr std::size_t kSent = kPeerMaxConcurrent + 5;
    std::vector<std::optional<Result<Bytes>>> replies(kSent);
    AsyncEvent all(worker_->executor());
    std::size_t left = kSent;
    for (std::size_t i = 0; i < kSent; ++i) {
      asio::co_spawn(
          io_,
          [&, i]() -> asio::awaitable<void> {
            replies[i] = co_await client_->send_request(kPeer, "park", {}, 15s);
            if (--left == 0) all.set();
          },
          asio::detached);
    }
    co_await remote_->wait_parked(kPeerMaxConcurrent);
    // Wait until every message reached the peer: the rest are queued.
    std::string stats;
    for (int i = 0; i < 2000; ++i) {
      stats = co_await remote_->stats();
      if (stats.find(fmt::format("queued={}", kSent - kPeerMaxConcurrent)) != std::string::npos) break;
    }
    EXPECT_NE(stats.find(fmt::format("running={} peak={} queued={}", kPeerMaxConcurrent, kPeerMaxConcurrent,
                                     kSent - kPeerMaxConcurrent)),
              std::string::npos)
        << stats;
    co_await remote_->release();
    CO_ASSERT_TRUE(co_await all.wait_for(15s));
    for (auto& r : replies) EXPECT_TRUE(r && r->has_value());
    stats = co_await remote_->stats();
    EXPECT_NE(stats.find(fmt::format("running=0 peak={} queued=0 handled={}", kPeerMaxConcurrent, kSent)),
              std::string::npos)
        << stats;
  });
}

TEST_P(TransportTest, FullQueueAnswersBusy) {
  run([&]() -> asio::awaitable<void> {
    constexpr std::size_t kAccepted = kPeerMaxConcurrent + kPeerMaxQueued;
    constexpr std::size_t kSent = kAccepted + 4;
    std::vector<std::optional<Result<Bytes>>> replies(kSent);
    AsyncEvent refused(worker_->executor());
    AsyncEvent all(worker_->executor());
    std::size_t busy = 0;
    std::size_t left = kSent;
    for (std::size_t i = 0; i < kSent; ++i) {
      asio::co_spawn(
          io_,
          [&, i]() -> asio::awaitable<void> {
            replies[i] = co_await client_->send_request(kPeer, "park", {}, 15s);
            if (!*replies[i] && replies[i]->error().code == Errc::busy && ++busy == kSent - kAccepted) refused.set();
            if (--left == 0) all.set();
          },
          asio::detached);
    }
    CO_ASSERT_TRUE(co_await refused.wait_for(15s));
    const auto stats = co_await remote_->stats();
    EXPECT_NE(
        stats.find(fmt::format("running={} peak={} queued={}", kPeerMaxConcurrent, kPeerMaxConcurrent, kPeerMaxQueued)),
        std::string::npos)
        << stats;
    co_await remote_->release();
    CO_ASSERT_TRUE(co_await all.wait_for(15s));
    std::size_t ok_count = 0;
    for (auto& r : replies) {
      CO_ASSERT_TRUE(r.has_value());
      if (r->has_value()) {
        ++ok_count;
      } else {
        EXPECT_TRUE(r->error().message.starts_with("busy: ")) << r->error().message;
      }
    }
    EXPECT_EQ(ok_count, kAccepted);
  });
}

// A type's own limit holds under the manager's permits: "park2" (limit 2)
// never runs more than 2 handlers at once, the manager's third permit goes
// to a "park" sent after them, and the other "park2" wait in their type's
// queue (counted queued).
TEST_P(TransportTest, PerTypeLimitHoldsUnderTheManagersPermits) {
  run([&]() -> asio::awaitable<void> {
    constexpr std::size_t kPark2 = 5;
    std::vector<std::optional<Result<Bytes>>> replies(kPark2 + 1);
    AsyncEvent all(worker_->executor());
    std::size_t left = replies.size();
    for (std::size_t i = 0; i < replies.size(); ++i) {
      asio::co_spawn(
          io_,
          [&, i]() -> asio::awaitable<void> {
            replies[i] = co_await client_->send_request(kPeer, i < kPark2 ? "park2" : "park", {}, 15s);
            if (--left == 0) all.set();
          },
          asio::detached);
    }
    co_await remote_->wait_parked(kPark2Limit + 1);
    const std::string expected =
        fmt::format("running={} peak={} queued={}", kPeerMaxConcurrent, kPeerMaxConcurrent, kPark2 - kPark2Limit);
    const std::string expected_type =
        fmt::format("park2: running={} peak={} queued={}", kPark2Limit, kPark2Limit, kPark2 - kPark2Limit);
    std::string stats;
    for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
      stats = co_await remote_->stats();
      if (stats.find(expected_type) != std::string::npos) break;
      co_await asio::post(io_, asio::use_awaitable);
    }
    EXPECT_NE(stats.find(expected), std::string::npos) << stats;
    EXPECT_NE(stats.find(expected_type), std::string::npos) << stats;
    co_await remote_->release();
    CO_ASSERT_TRUE(co_await all.wait_for(15s));
    for (auto& r : replies) EXPECT_TRUE(r && r->has_value());
    stats = co_await remote_->stats();
    EXPECT_NE(stats.find(fmt::format("park2: running=0 peak={} queued=0", kPark2Limit)), std::string::npos) << stats;
  });
}

// A handler's error code reaches the requester as a number (it used to be
// guessed back from the message text, so these all arrived as internal).
TEST_P(TransportTest, HandlerErrorCodesTravelAsNumbers) {
  run([&]() -> asio::awaitable<void> {
    for (Errc code : {Errc::not_found, Errc::out_of_capacity, Errc::wrong_state, Errc::timeout, Errc::peer_lost}) {
      const auto number = static_cast<std::uint16_t>(code);
      Bytes payload(2);
      std::memcpy(payload.data(), &number, 2);
      auto r = co_await client_->send_request(kPeer, "fail_code", std::move(payload), 10s);
      CO_ASSERT_TRUE(!r.has_value());
      EXPECT_EQ(r.error().code, code) << r.error().to_string();
      EXPECT_EQ(r.error().message, fmt::format("failed with code {} on purpose", number));
    }
  });
}

// A request whose handler writes into our exposed memory before answering:
// the bytes are there when the answer is ok; a write we refused (outside our
// exposed memory) turns the ok answer into err(rejected: ...).
TEST_P(TransportTest, ARequestReceivingWritesTrustsOnlyWrittenMemory) {
  run([&]() -> asio::awaitable<void> {
    std::vector<std::byte> local(1 << 20);
    auto reg = MemoryRegistration::create(*context_, local.data(), local.size());
    CO_ASSERT_TRUE(reg.has_value());
    client_->expose(**reg);
    const auto base = reinterpret_cast<std::uint64_t>(local.data());
    for (std::uint64_t length : {std::uint64_t{4096}, std::uint64_t{256} << 10}) {  // eager and rendezvous
      Bytes request = u64s({base + 4096, length, length});
      auto written = co_await client_->send_request_receiving_writes(kPeer, "write_back", std::move(request), 10s);
      CO_ASSERT_TRUE(written.has_value());
      for (std::uint64_t i = 0; i < length; ++i) {
        if (local[4096 + i] != pattern_byte(i, length)) {
          ADD_FAILURE() << "byte " << i << " of " << length << " not written";
          break;
        }
      }
    }
    Bytes outside = u64s({base + local.size(), 4096, 1});
    auto refused = co_await client_->send_request_receiving_writes(kPeer, "write_back", std::move(outside), 10s);
    client_->unexpose(**reg);
    CO_ASSERT_TRUE(!refused.has_value());
    EXPECT_EQ(refused.error().code, Errc::invalid_argument) << refused.error().to_string();
    EXPECT_TRUE(refused.error().message.starts_with("rejected: 1 bulk write")) << refused.error().message;
  });
}

// Ranges of caller memory, not registered with UCX, exposed for one
// exchange: writes land inside them (eager and rendezvous), nowhere else,
// and not at all once they are withdrawn; nothing is left landing after an
// ok answer.
TEST_P(TransportTest, ExposedRangesTakeWritesOnlyInsideThemAndOnlyUntilWithdrawn) {
  run([&]() -> asio::awaitable<void> {
    std::vector<std::byte> local(2 << 20, std::byte{0x5A});
    const auto base = reinterpret_cast<std::uint64_t>(local.data());
    constexpr std::uint64_t kBig = 256 << 10, kSmall = 4096;
    auto ranges = client_->expose_ranges({{base + (1 << 20), kSmall}, {base + 4096, kBig}});
    EXPECT_TRUE(ranges->contains(base + 4096, kBig));
    EXPECT_FALSE(ranges->contains(base + 4096, kBig + 1));
    EXPECT_FALSE(ranges->contains(base, 8));
    for (auto [at, length] : {std::pair{base + 4096, kBig}, std::pair{base + (1 << 20), kSmall}}) {
      Bytes request = u64s({at, length, length});
      auto written = co_await client_->send_request_receiving_writes(kPeer, "write_back", std::move(request), 10s);
      CO_ASSERT_TRUE(written.has_value());
      EXPECT_EQ(ranges->landing(), 0U);
      const std::size_t off = at - base;
      for (std::uint64_t i = 0; i < length; ++i) {
        if (local[off + i] != pattern_byte(i, length)) {
          ADD_FAILURE() << "byte " << i << " of " << length << " not written";
          break;
        }
      }
    }
    // One byte past a range, or between them: refused, nothing written.
    for (auto [at, length] : {std::pair{base + 4096 + 4096, kBig}, std::pair{base + (512 << 10), kSmall}}) {
      Bytes request = u64s({at, length, 3});
      auto refused = co_await client_->send_request_receiving_writes(kPeer, "write_back", std::move(request), 10s);
      CO_ASSERT_TRUE(!refused.has_value());
      EXPECT_TRUE(refused.error().message.starts_with("rejected: 1 bulk write")) << refused.error().message;
    }
    EXPECT_EQ(local[(512 << 10)], std::byte{0x5A});
    EXPECT_EQ(local[4096 + kBig], std::byte{0x5A});
    // Withdrawn: the same write is refused and the bytes stay as they were.
    client_->withdraw(*ranges);
    Bytes again = u64s({base + 4096, kBig, 9});
    auto refused = co_await client_->send_request_receiving_writes(kPeer, "write_back", std::move(again), 10s);
    CO_ASSERT_TRUE(!refused.has_value());
    EXPECT_TRUE(refused.error().message.starts_with("rejected: 1 bulk write")) << refused.error().message;
    EXPECT_EQ(ranges->landing(), 0U);
    for (std::uint64_t i = 0; i < kBig; ++i) {
      if (local[4096 + i] != pattern_byte(i, kBig)) {
        ADD_FAILURE() << "byte " << i << " changed after the ranges were withdrawn";
        break;
      }
    }
  });
}

TEST_P(TransportTest, SyncHandlersAnswerFailAndStayWithinTheConcurrencyLimit) {
  run([&]() -> asio::awaitable<void> {
    // Eager and rendezvous payloads alike.
    for (std::size_t size : {std::size_t{0}, std::size_t{100}, std::size_t{64} << 10, std::size_t{2} << 20}) {
      Bytes payload(size);
      for (std::size_t i = 0; i < size; ++i) payload[i] = pattern_byte(i, size + 1);
      auto reply = co_await client_->send_request(kPeer, "echo_sync", payload, 10s);
      CO_ASSERT_TRUE(reply.has_value());
      EXPECT_EQ(*reply, payload) << "sync echo of " << size << " bytes";
    }
    // It runs as a handler: counted in `running` while it runs.
    auto running = co_await client_->send_request(kPeer, "running_sync", {}, 10s);
    CO_ASSERT_TRUE(running.has_value() && running->size() == 8);
    std::uint64_t seen = 0;
    std::memcpy(&seen, running->data(), 8);
    EXPECT_EQ(seen, 1U);
    // A throw is err(<what>) to a request, counted for a fire-and-forget.
    auto thrown = co_await client_->send_request(kPeer, "fail_sync", {}, 10s);
    CO_ASSERT_TRUE(!thrown.has_value());
    EXPECT_EQ(thrown.error().message, "sync handler failed on purpose");
    EXPECT_TRUE((co_await client_->send(kPeer, "fail_sync", {})).has_value());
    // With every permit held by parked coroutine handlers, synchronous
    // messages wait in the queue instead of running beside them.
    constexpr std::size_t kSync = 4;
    std::vector<std::optional<Result<Bytes>>> parked(kPeerMaxConcurrent), sync(kSync);
    AsyncEvent all(worker_->executor());
    std::size_t left = kPeerMaxConcurrent + kSync;
    auto spawn = [&](std::optional<Result<Bytes>>& out, std::string type, Bytes payload) {
      asio::co_spawn(
          io_,
          [&, type = std::move(type), payload = std::move(payload)]() mutable -> asio::awaitable<void> {
            out = co_await client_->send_request(kPeer, type, std::move(payload), 15s);
            if (--left == 0) all.set();
          },
          asio::detached);
    };
    for (auto& r : parked) spawn(r, "park", {});
    co_await remote_->wait_parked(kPeerMaxConcurrent);
    for (std::size_t i = 0; i < kSync; ++i) spawn(sync[i], "echo_sync", text(fmt::format("sync {}", i)));
    // Until all of them reached the peer (bounded; each pass lets the
    // workers progress).
    std::string stats;
    for (const auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
      stats = co_await remote_->stats();
      if (stats.find(fmt::format("queued={}", kSync)) != std::string::npos) break;
      co_await asio::post(io_, asio::use_awaitable);
    }
    EXPECT_NE(stats.find(fmt::format("running={} peak={} queued={}", kPeerMaxConcurrent, kPeerMaxConcurrent, kSync)),
              std::string::npos)
        << stats;
    for (auto& r : sync) EXPECT_FALSE(r.has_value()) << "a synchronous handler ran past the limit";
    co_await remote_->release();
    CO_ASSERT_TRUE(co_await all.wait_for(15s));
    for (auto& r : parked) EXPECT_TRUE(r && r->has_value());
    for (std::size_t i = 0; i < kSync; ++i) {
      CO_ASSERT_TRUE(sync[i].has_value() && sync[i]->has_value());
      EXPECT_EQ(**sync[i], text(fmt::format("sync {}", i)));
    }
    stats = co_await remote_->stats();
    EXPECT_NE(stats.find(fmt::format("running=0 peak={} queued=0", kPeerMaxConcurrent)), std::string::npos) << stats;
    EXPECT_NE(stats.find("ff_failures=1"), std::string::npos) << stats;
  });
}

TEST_P(TransportTest, RequestsTimeOutInDeadlineOrderAndLateRepliesAreIgnored) {
  run([&]() -> asio::awaitable<void> {
    // The 10 s request is sent first, so the manager's deadline timer must be
    // moved earlier for the 300 ms one and again for the 100 ms one.
    // The requests run as detached coroutines: their results and counters
    // live in shared state they co-own, so a failed assertion that ends this
    // body early leaves nothing for them to write into afterwards.
    struct Shared {
      explicit Shared(const asio::any_io_executor& ex) : short_ones(ex), all(ex) {}
      std::optional<Result<Bytes>> slow, mid, fast;
      AsyncEvent short_ones;
      AsyncEvent all;
      int left = 3;
      int short_left = 2;
    };
    auto shared = std::make_shared<Shared>(worker_->executor());
    auto spawn = [&](std::optional<Result<Bytes>> Shared::*out, std::chrono::milliseconds timeout) {
      asio::co_spawn(
          io_,
          [shared, out, timeout, client = client_.get()]() -> asio::awaitable<void> {
            auto reply = co_await client->send_request(kPeer, "park", {}, timeout);
            (*shared).*out = std::move(reply);
            if (timeout < 10s && --shared->short_left == 0) shared->short_ones.set();
            if (--shared->left == 0) shared->all.set();
          },
          asio::detached);
    };
    spawn(&Shared::slow, 10s);
    spawn(&Shared::mid, 300ms);
    spawn(&Shared::fast, 100ms);
    CO_ASSERT_TRUE(co_await shared->short_ones.wait_for(15s));
    for (auto* r : {&shared->mid, &shared->fast}) {
      CO_ASSERT_TRUE(r->has_value() && !r->value().has_value());
      EXPECT_EQ(r->value().error().code, Errc::timeout);
      // Either no answer came in time, or (on a loaded machine, a tcp
      // connection still being set up) the request itself could not be sent
      // in time: its slow send timed out and ended the request first.
      const std::string& message = r->value().error().message;
      EXPECT_TRUE(message.starts_with("timeout: no answer to request") ||
                  (message.starts_with("am send to peer ") && message.find("not complete after") != std::string::npos))
          << message;
    }
    EXPECT_FALSE(shared->slow.has_value());
    co_await remote_->release();  // the late replies to the timed-out requests arrive and are dropped
    CO_ASSERT_TRUE(co_await shared->all.wait_for(15s));
    CO_ASSERT_TRUE(shared->slow.has_value());
    EXPECT_TRUE(shared->slow->has_value());
    auto ping = co_await client_->send_request(kPeer, "echo", {}, 10s);
    EXPECT_TRUE(ping.has_value());
  });
}

TEST_P(TransportTest, ARequestFromAnotherExecutorResumesOnIt) {
  run([&]() -> asio::awaitable<void> {
    // A caller on a strand: its answer is posted to the strand, never run
    // inline by the worker's loop.
    auto strand = asio::make_strand(io_);
    std::optional<Result<Bytes>> reply;
    bool resumed_on_strand = false;
    AsyncEvent done(worker_->executor());
    asio::co_spawn(
        strand,
        [&]() -> asio::awaitable<void> {
          reply = co_await client_->send_request(kPeer, "echo", text("from a strand"), 10s);
          resumed_on_strand = strand.running_in_this_thread();
          done.set();
        },
        asio::detached);
    CO_ASSERT_TRUE(co_await done.wait_for(10s));
    CO_ASSERT_TRUE(reply.has_value() && reply->has_value());
    EXPECT_EQ(**reply, text("from a strand"));
    EXPECT_TRUE(resumed_on_strand);
  });
}

TEST_P(TransportTest, UnknownTypeAndHandlerException) {
  run([&]() -> asio::awaitable<void> {
    auto unknown = co_await client_->send_request(kPeer, "no_such_type", {}, 10s);
    CO_ASSERT_TRUE(!unknown.has_value());
    EXPECT_EQ(unknown.error().message, "unknown message type: no_such_type");
    EXPECT_EQ(unknown.error().code, Errc::not_found);
    auto thrown = co_await client_->send_request(kPeer, "fail", {}, 10s);
    CO_ASSERT_TRUE(!thrown.has_value());
    EXPECT_EQ(thrown.error().message, "handler failed on purpose");
    // A failing fire-and-forget handler is counted (and logged) on the peer.
    auto st = co_await client_->send(kPeer, "fail", {});
    EXPECT_TRUE(st.has_value());
    auto ping = co_await client_->send_request(kPeer, "echo", {}, 10s);
    EXPECT_TRUE(ping.has_value());
    const auto stats = co_await remote_->stats();
    EXPECT_NE(stats.find("ff_failures=1"), std::string::npos) << stats;
  });
}

TEST_P(TransportTest, OversizeHeaderAndPayloadRefusedBeforeUcx) {
  run([&]() -> asio::awaitable<void> {
    const std::string huge(worker_->max_am_header() + 1, 'x');
    auto refused = co_await client_->send_request(kPeer, huge, {}, 10s);
    CO_ASSERT_TRUE(!refused.has_value());
    EXPECT_EQ(refused.error().code, Errc::invalid_argument);
    EXPECT_NE(refused.error().message.find("max_am_header"), std::string::npos) << refused.error().message;
    auto ff = co_await client_->send(kPeer, std::string(64 << 10, 'y'), {});
    EXPECT_FALSE(ff.has_value());
    auto reg =
        client_->register_handler(huge, [](IncomingMessage) -> asio::awaitable<Result<Bytes>> { co_return Bytes{}; });
    EXPECT_FALSE(reg.has_value());
    auto big = co_await client_->send_request(kPeer, "echo", Bytes(client_->options().max_payload + 1), 10s);
    CO_ASSERT_TRUE(!big.has_value());
    EXPECT_NE(big.error().message.find("max_payload"), std::string::npos) << big.error().message;
    // The process and the connection are still fine.
    auto ping = co_await client_->send_request(kPeer, "echo", text("still here"), 10s);
    CO_ASSERT_TRUE(ping.has_value());
    EXPECT_EQ(*ping, text("still here"));
  });
}

TEST_P(TransportTest, PeerKilledMidTransferFailsEverythingWithinTimeout) {
  run(
      [&]() -> asio::awaitable<void> {
        constexpr std::uint64_t kSize = 32 << 20;
        auto remote = co_await alloc_remote(*client_, kSize);
        CO_ASSERT_TRUE(remote.has_value());
        // A request that will still be waiting when the peer dies.
        std::optional<Result<Bytes>> parked;
        AsyncEvent parked_done(worker_->executor());
        asio::co_spawn(
            io_,
            [&]() -> asio::awaitable<void> {
              parked = co_await client_->send_request(kPeer, "park", {}, 15s);
              parked_done.set();
            },
            asio::detached);
        co_await remote_->wait_parked(1);
        std::vector<std::byte> local(kSize, std::byte{1});
        std::vector<RmaChunk> chunks;
        for (std::uint64_t at = 0; at < kSize; at += 4 << 20)
          chunks.push_back({local.data() + at, remote->address + at, 4 << 20});
        const auto protocol = protocol_for_tls(GetParam().tls, Destination::ucx_allocated);
        auto first = co_await write_then_notify(*client_, kPeer, protocol, remote->rkey.get(), chunks, "echo", {}, 15s);
        CO_ASSERT_TRUE(first.has_value());
        // Start a transfer, kill the peer while it runs, keep transferring.
        std::optional<Result<Bytes>> inflight;
        AsyncEvent inflight_done(worker_->executor());
        asio::co_spawn(
            io_,
            [&]() -> asio::awaitable<void> {
              inflight =
                  co_await write_then_notify(*client_, kPeer, protocol, remote->rkey.get(), chunks, "echo", {}, 15s);
              inflight_done.set();
            },
            asio::detached);
        remote_->kill();
        CO_ASSERT_TRUE(co_await parked_done.wait_for(16s));
        CO_ASSERT_TRUE(parked.has_value() && !parked->has_value());
        EXPECT_EQ(parked->error().code, Errc::peer_lost) << parked->error().to_string();
        EXPECT_EQ(parked->error().message, "peer lost: 1");
        CO_ASSERT_TRUE(co_await inflight_done.wait_for(16s));
        // The in-flight transfer may have finished before the kill; any later one fails.
        Result<Bytes> after = Bytes{};
        for (int i = 0; i < 3 && after.has_value(); ++i) {
          after = co_await write_then_notify(*client_, kPeer, protocol, remote->rkey.get(), chunks, "echo", {}, 15s);
        }
        CO_ASSERT_TRUE(!after.has_value());
        EXPECT_EQ(after.error().code, Errc::peer_lost) << after.error().to_string();
        auto later = co_await client_->send_request(kPeer, "echo", {}, 5s);
        CO_ASSERT_TRUE(!later.has_value());
        EXPECT_EQ(later.error().code, Errc::peer_lost);
      },
      std::chrono::seconds(50));
}

}  // namespace
}  // namespace kvb::transport::test
