// Fetched straight into the engine (docs/cluster.md, "Fetched straight into
// the engine"): real kvblockd workers over UCX_TLS=tcp and sm. B keeps no
// fetched block (cluster.cache_fetched false) and its engine's KV cache is
// one fully contiguous region of the pool's block shape, so A writes the
// blocks straight into the engine's memory: byte-exact, nothing enters B's
// pool. A layer-separate engine on the same B still goes through the pool.
// A holder that writes only after the onboard ended (a fault injection,
// KVB_INJECT_SERVE_DELAY_MS) writes nothing into the engine: its writes are
// refused. A holder stopped (SIGSTOP) in the middle of its writes: once the
// engine got its error, its memory never changes again, whatever A writes
// when it resumes; a later onboard of the same blocks is byte-exact.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cluster_support.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

/// Workers A and B joined over `tls`: B keeps no fetched block and
/// fetches by UCX even on one host (nothing mapped); A's engine (`layout`,
/// layer separate) has offloaded `blocks` blocks under hashes base + i,
/// and B's index knows them.
struct Holder {
  std::unique_ptr<DaemonProcess> a, b;
  std::unique_ptr<TestEngine> on_a;

  /// `serve_delay_ms`: A writes that long after each fetch arrived
  /// (KVB_INJECT_SERVE_DELAY_MS, a fault injection).
  ::testing::AssertionResult start(const std::string& tls, std::vector<std::string> a_more,
                                   std::vector<std::string> b_more, std::uint64_t base, std::uint64_t salt,
                                   const char* serve_delay_ms = nullptr, proto::WireLayout layout = small_layout(),
                                   std::uint32_t blocks = 8) {
    if (serve_delay_ms != nullptr) ::setenv("KVB_INJECT_SERVE_DELAY_MS", serve_delay_ms, 1);
    a = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("A", tls, std::move(a_more)));
    ::unsetenv("KVB_INJECT_SERVE_DELAY_MS");
    if (!a->ready()) return ::testing::AssertionFailure() << "A: " << a->log();
    std::vector<std::string> args{"--cluster-peers", bootstrap_of(*a),          "--cluster-cache-fetched",
                                  "false",           "--cluster-map-same-host", "false"};
    args.insert(args.end(), b_more.begin(), b_more.end());
    b = std::make_unique<DaemonProcess>(KVBLOCKD_PATH, worker_args("B", tls, std::move(args)));
    if (!b->ready() || !b->wait_for_log("cluster: worker A joined", 20s))
      return ::testing::AssertionFailure() << "B: " << b->log();
    on_a = std::make_unique<TestEngine>(a->socket_path(), std::max<std::uint32_t>(blocks, 32), salt, layout);
    if (!on_a->attach()) return ::testing::AssertionFailure() << "engine on A: " << a->log();
    if (auto offloaded = offload_blocks(*on_a, 1, 0, blocks, base); !offloaded) return offloaded;
    if (!b->wait_for_log(fmt::format("A holds {} blocks", blocks), 20s))
      return ::testing::AssertionFailure() << "B did not learn A's blocks: " << b->log();
    return ::testing::AssertionSuccess();
  }
  void stop() {
    EXPECT_EQ(b->stop(SIGTERM), 0) << b->log();
    EXPECT_EQ(a->stop(SIGTERM), 0) << a->log();
  }
};

class IntoEngine : public ::testing::TestWithParam<std::string> {};

TEST_P(IntoEngine, AHolderWritesStraightIntoAFullyContiguousEngineAndNothingEntersThePool) {
  Holder w;
  ASSERT_TRUE(w.start(GetParam(), {}, {}, 6000, /*salt=*/5));
  DaemonProcess& b = *w.b;
  TestEngine flat(b.socket_path(), 32, /*salt=*/5, small_layout(), Seal::shrink, LayoutKind::fully_contiguous);
  ASSERT_TRUE(flat.attach()) << b.log();
  ASSERT_TRUE(onboard_blocks(flat, 2, 0, 8, 6000)) << b.log();
  std::uint64_t id = 10;
  auto json = stats_of(flat.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_requests"), 1) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), 0) << json;  // no G2 block on B
  EXPECT_EQ(stat_of(json, "cluster.fetch.late_writes_detached"), 0) << json;
  EXPECT_EQ(stat_of(json, "cluster.handlers.rejected_writes"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2.registered"), 0) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  const long long bytes = member_stat(json, "A", "bytes_in");
  EXPECT_EQ(bytes, 8 * 8192) << json;  // 4 layers x (K,V) x 16 tokens x 64 u8
  EXPECT_EQ(member_stat(stats_of(w.on_a->client(), id++), "B", "bytes_out"), bytes);

  // A layer-separate engine's block is not the pool's block byte for byte:
  // fetched into B's pool, copied, not kept.
  TestEngine layered(b.socket_path(), 32, /*salt=*/5);
  ASSERT_TRUE(layered.attach()) << b.log();
  ASSERT_TRUE(onboard_blocks(layered, 3, 0, 8, 6000)) << b.log();
  json = stats_of(layered.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 8) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.blocks_in"), 8) << json;
  EXPECT_EQ(stat_of(json, "g2.registered"), 0) << json;

  // The flat engine again, into the same engine blocks: straight in again.
  ASSERT_TRUE(onboard_blocks(flat, 4, 0, 8, 6000)) << b.log();
  EXPECT_EQ(stat_of(stats_of(flat.client(), id++), "cluster.fetch.into_engine_blocks"), 16);
  w.stop();
}

// A writes only after B's onboard ended with err(timeout): B withdrew the
// engine's blocks from bulk writes before it answered, so A's writes are
// refused and the engine's bytes stay as the engine left them.
TEST_P(IntoEngine, AHolderThatWritesAfterTheOnboardTimedOutWritesNothingIntoTheEngine) {
  Holder w;
  ASSERT_TRUE(w.start(GetParam(), {}, {"--request-timeout-ms", "400"}, 6100, /*salt=*/6, "1500"));
  DaemonProcess& b = *w.b;
  TestEngine flat(b.socket_path(), 32, /*salt=*/6, small_layout(), Seal::shrink, LayoutKind::fully_contiguous);
  ASSERT_TRUE(flat.attach()) << b.log();
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    flat.fill(8 + blk, 77);  // what the engine left there
    onboard.items.push_back({6100 + blk, BlockId{8 + blk}});
  }
  ASSERT_TRUE(flat.client().call(RequestId{2}, onboard)) << b.log();
  auto ended = flat.client().notification_of(RequestId{2}, 10s);
  ASSERT_TRUE(ended) << b.log();
  EXPECT_TRUE(ended->text.starts_with("2:err(timeout")) << ended->text;

  // A writes 1.5 s after it got the request: refused on B, all 8 of them.
  std::uint64_t id = 10;
  EXPECT_GE(wait_stat_at_least(flat.client(), id, "cluster.handlers.rejected_writes", 8), 8) << b.log();
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    flat.fill(blk, 77);
    EXPECT_TRUE(flat.same(blk, 8 + blk)) << "engine block " << 8 + blk << " was written after its onboard ended";
  }
  const auto json = stats_of(flat.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 0) << json;
  EXPECT_EQ(stat_of(json, "cluster.fetch.late_writes_detached"), 0) << json;  // nothing was landing when it ended
  w.stop();
}

// The engine's session ends (its socket shut) while B's fetch into its
// memory waits for A, which writes 1.5 s later, long before the request's
// own deadline (10 s): the session's end withdrew the engine's blocks at
// once, A's writes are refused, and the memory (still the engine's: it may
// be reused right away) stays as the engine left it.
TEST_P(IntoEngine, AnEngineWhoseSessionEndsGetsNoWriteFromAFetchStillWaiting) {
  Holder w;
  ASSERT_TRUE(w.start(GetParam(), {}, {"--request-timeout-ms", "10000"}, 6300, /*salt=*/8, "1500"));
  DaemonProcess& b = *w.b;
  TestEngine gone(b.socket_path(), 32, /*salt=*/8, small_layout(), Seal::shrink, LayoutKind::fully_contiguous);
  ASSERT_TRUE(gone.attach()) << b.log();
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    gone.fill(8 + blk, 78);
    onboard.items.push_back({6300 + blk, BlockId{8 + blk}});
  }
  ASSERT_TRUE(gone.client().send(RequestId{2}, onboard)) << b.log();
  ASSERT_TRUE(b.wait_for_log("fetch of 8 blocks from A sent (into the engine)", 10s)) << b.log();
  ASSERT_EQ(::shutdown(gone.client().fd(), SHUT_RDWR), 0);

  TestEngine watcher(b.socket_path(), 8, /*salt=*/8);
  ASSERT_TRUE(watcher.hello()) << b.log();
  std::uint64_t id = 10;
  EXPECT_GE(wait_stat_at_least(watcher.client(), id, "cluster.handlers.rejected_writes", 8), 8) << b.log();
  for (std::uint32_t blk = 0; blk < 8; ++blk) {
    gone.fill(blk, 78);
    EXPECT_TRUE(gone.same(blk, 8 + blk)) << "engine block " << 8 + blk << " was written after its session ended";
  }
  const auto json = stats_of(watcher.client(), id++);
  EXPECT_EQ(stat_of(json, "cluster.fetch.into_engine_blocks"), 0) << json;
  w.stop();
}

INSTANTIATE_TEST_SUITE_P(Tls, IntoEngine, ::testing::Values("tcp", "sm"), [](const auto& info) { return info.param; });

// A is stopped (SIGSTOP) while it writes 192 MiB into B's engine, and B's
// onboard ends with err(timeout) while a write may be half landed. From
// that answer on, the engine's memory must not change, whatever A writes
// when it resumes (SIGCONT): B withdrew the blocks and detached those a
// write was still landing in. Where A's writes stop depends on when the
// signal lands (all may have landed: then the answer is ok and the check
// is the same); the outcome must not. A later onboard of the same blocks
// is byte-exact.
TEST(IntoEngineStopped, AHolderStoppedMidWriteNeverChangesTheEngineAfterItsAnswer) {
  const proto::WireLayout big{8, 2, 64, 1024, 0, 256};  // 1 MiB blocks (u8)
  constexpr std::uint32_t kBlocks = 192;
  constexpr std::uint64_t kBlockBytes = 1 << 20;
  Holder w;
  ASSERT_TRUE(w.start("tcp", {"--host-pool-bytes", "512MiB"},
                      {"--request-timeout-ms", "4000", "--host-pool-bytes", "64MiB"}, 6200, /*salt=*/7, nullptr, big,
                      kBlocks));
  DaemonProcess& a = *w.a;
  DaemonProcess& b = *w.b;
  TestEngine& on_a = *w.on_a;

  TestEngine flat(b.socket_path(), kBlocks + 8, /*salt=*/7, big, Seal::shrink, LayoutKind::fully_contiguous);
  ASSERT_TRUE(flat.attach()) << b.log();
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = 0; blk < kBlocks; ++blk) {
    std::memset(flat.chunk(8 + blk, 0, 0), 0xEE, kBlockBytes);  // contiguous: the whole block
    onboard.items.push_back({6200 + blk, BlockId{8 + blk}});
  }
  ASSERT_TRUE(flat.client().call(RequestId{2}, onboard)) << b.log();
  // Stopped while B receives A's writes (all of them start at once and
  // take tens of ms on loopback), unless they all landed between two polls.
  std::uint64_t id = 10, id_a = 100;
  const long long landing = wait_stat_at_least(flat.client(), id, "cluster.handlers.landing_writes", 1, 10s);
  ASSERT_EQ(::kill(a.pid(), SIGSTOP), 0);
  auto ended = flat.client().notification_of(RequestId{2}, 10s);
  ASSERT_TRUE(ended) << b.log();
  std::vector<std::byte> seen(flat.chunk(8, 0, 0), flat.chunk(8, 0, 0) + kBlocks * kBlockBytes);
  ASSERT_EQ(::kill(a.pid(), SIGCONT), 0);

  // A's serve ends (it writes what it had left, or gives up); then every
  // byte it sent has reached B (refused, or landed outside the engine).
  EXPECT_EQ(wait_stat(on_a.client(), id_a, "cluster.fetch_handlers.running", 0, 30s), 0);
  const auto json = stats_of(flat.client(), id++);
  const long long detached = stat_of(json, "cluster.fetch.late_writes_detached");
  std::printf(
      "stopped with %lld write(s) landing; onboard answered %s; B: %lld engine block(s) detached, %lld "
      "write(s) refused\n",
      landing, ended->text.c_str(), detached, stat_of(json, "cluster.handlers.rejected_writes"));
  // Stopped with writes landing (192 MiB take tens of ms, the poll ~1 ms)
  // and answered an error: a write was still landing, its blocks were
  // detached before the answer.
  if (landing > 0 && ended->text != "2:ok") {
    EXPECT_GT(detached, 0) << json;
  }
  // A's serve ended, so B has had every write it will get: nothing is
  // being received any more (a write not started by now is refused).
  EXPECT_EQ(wait_stat(flat.client(), id, "cluster.handlers.landing_writes", 0, 30s), 0);
  EXPECT_EQ(std::memcmp(seen.data(), flat.chunk(8, 0, 0), seen.size()), 0)
      << "the engine's memory changed after B answered " << ended->text;

  // The same blocks again (A runs): byte-exact, straight in or through the pool.
  for (std::uint32_t blk = 0; blk < kBlocks; ++blk) flat.zero(8 + blk);
  ASSERT_TRUE(flat.client().call(RequestId{3}, onboard)) << b.log();
  auto again = flat.client().notification_of(RequestId{3}, 20s);
  ASSERT_TRUE(again) << b.log();
  EXPECT_EQ(again->text, "3:ok") << b.log();
  bool exact = true;
  for (std::uint32_t blk = 0; blk < kBlocks && exact; ++blk) {
    on_a.fill(0, blk + 1);  // block blk's bytes, made again on A's (layer separate) side
    for (std::uint32_t l = 0; l < big.num_layers; ++l) {
      for (std::uint32_t o = 0; o < big.outer_dim; ++o) {
        if (std::memcmp(on_a.chunk(0, l, o), flat.chunk(8 + blk, l, o), kBlockBytes / 16) != 0) exact = false;
      }
    }
    EXPECT_TRUE(exact) << "block " << blk << " differs after the second onboard";
  }
  w.stop();
}

}  // namespace
}  // namespace kvb::test
