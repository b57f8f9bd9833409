// The real kvblockd process moving real bytes: offload / lookup / onboard
// round trip, tenants, request timeouts, a SIGKILLed client, and shutdown
// with work in flight.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

std::string stats_of(RawClient& client, std::uint64_t id) {
  auto stats = client.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
  return stats ? stats->json : std::string();
}

TEST(DaemonBlocks, OffloadLookupOnboardRoundTripIsByteExact) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 64, /*salt=*/42);
  ASSERT_TRUE(engine.attach()) << daemon.log();

  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < 8; ++b) {
    engine.fill(b, b + 1);
    offload.items.push_back({BlockId{b}, 1000 + b});
  }
  auto& client = engine.client();
  auto accepted = client.call(RequestId{100}, offload);
  ASSERT_TRUE(accepted);
  ASSERT_EQ(accepted->code, Errc::ok) << accepted->message;
  EXPECT_TRUE(accepted->accepted);
  auto done = client.notification_of(RequestId{100});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->text, "100:ok");
  EXPECT_EQ(done->code, Errc::ok);
  auto status = client.call_body<proto::RequestStateReply>(RequestId{101}, proto::StatusRequest{RequestId{100}});
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, proto::RequestState::ok);

  // The prefix matches up to the first unknown hash.
  auto lookup = client.call_body<proto::LookupReply>(
      RequestId{102}, proto::LookupRequest{false, {1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 5555, 1000}});
  ASSERT_TRUE(lookup) << lookup.error().to_string();
  EXPECT_EQ(lookup->prefix_blocks, 8U);
  ASSERT_FALSE(lookup->tiers.empty());
  EXPECT_EQ(lookup->tiers[0].tier, proto::WireTier::g2);
  EXPECT_EQ(lookup->tiers[0].blocks, 8U);

  proto::OnboardRequest onboard;
  for (std::uint32_t b = 0; b < 8; ++b) {
    engine.zero(20 + b);
    onboard.items.push_back({1000 + b, BlockId{20 + b}});
  }
  auto onboard_accepted = client.call(RequestId{103}, onboard);
  ASSERT_TRUE(onboard_accepted);
  ASSERT_EQ(onboard_accepted->code, Errc::ok) << onboard_accepted->message;
  auto onboarded = client.notification_of(RequestId{103});
  ASSERT_TRUE(onboarded);
  EXPECT_EQ(onboarded->text, "103:ok");
  for (std::uint32_t b = 0; b < 8; ++b) EXPECT_TRUE(engine.same(b, 20 + b)) << "block " << b;

  // Onboarding a hash the daemon does not hold ends with err(not_found).
  auto missing = client.call(RequestId{104}, proto::OnboardRequest{{{424242, BlockId{30}}}});
  ASSERT_TRUE(missing && missing->accepted);
  auto missing_done = client.notification_of(RequestId{104});
  ASSERT_TRUE(missing_done);
  EXPECT_EQ(missing_done->code, Errc::not_found);
  EXPECT_TRUE(missing_done->text.starts_with("104:err(")) << missing_done->text;

  // Wait on a finished request answers at once.
  auto waited = client.call_body<proto::RequestStateReply>(RequestId{105}, proto::WaitRequest{RequestId{103}, 1000});
  ASSERT_TRUE(waited);
  EXPECT_EQ(waited->state, proto::RequestState::ok);

  const auto json = stats_of(client, 106);
  EXPECT_EQ(stat_of(json, "g2.registered"), 8) << json;
  EXPECT_EQ(stat_of(json, "bytes_offloaded"), 8 * 8192) << json;
  EXPECT_EQ(stat_of(json, "bytes_onboarded"), 8 * 8192) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonBlocks, RegisterKvFdsSurviveAFrameSplitAcrossManyWrites) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.hello());
  // A stats frame first, then register_kv whose fds ride on its first 5 bytes
  // and whose other bytes trickle in one write at a time.
  auto stats = proto::encode_message(RequestId{70}, proto::StatsRequest{});
  auto frame = proto::encode_message(RequestId{71}, engine.register_request());
  ASSERT_TRUE(stats && frame);
  ASSERT_TRUE(engine.client().send_bytes(*stats));
  ASSERT_TRUE(engine.client().send_bytes(std::span(frame->data(), 5), engine.fds()));
  for (std::size_t i = 5; i < frame->size(); ++i) ASSERT_TRUE(engine.client().send_bytes(std::span(&(*frame)[i], 1)));
  auto registered = engine.client().reply_to(RequestId{71});
  ASSERT_TRUE(registered);
  EXPECT_EQ(registered->code, Errc::ok) << registered->message;
  ASSERT_TRUE(engine.client().reply_to(RequestId{70}));
  engine.fill(3, 77);
  ASSERT_TRUE(engine.client().call(RequestId{72}, proto::OffloadRequest{{{BlockId{3}, 33}}}));
  auto offloaded = engine.client().notification_of(RequestId{72});
  ASSERT_TRUE(offloaded && offloaded->code == Errc::ok);
  engine.zero(5);
  ASSERT_TRUE(engine.client().call(RequestId{73}, proto::OnboardRequest{{{33, BlockId{5}}}}));
  auto onboarded = engine.client().notification_of(RequestId{73});
  ASSERT_TRUE(onboarded && onboarded->code == Errc::ok);
  EXPECT_TRUE(engine.same(3, 5)) << "the daemon mapped the very memfds that were sent";
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonBlocks, TenantsMatchOnlyWithTheSameSaltAndPinsAreLeases) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine a(daemon.socket_path(), 16, /*salt=*/1);
  TestEngine b(daemon.socket_path(), 16, /*salt=*/2);
  TestEngine a2(daemon.socket_path(), 16, /*salt=*/1);
  ASSERT_TRUE(a.attach() && b.attach() && a2.attach());
  a.fill(0, 9);
  a.fill(1, 10);
  ASSERT_TRUE(a.client().call(RequestId{50}, proto::OffloadRequest{{{BlockId{0}, 7}, {BlockId{1}, 8}}}));
  auto done = a.client().notification_of(RequestId{50});
  ASSERT_TRUE(done && done->code == Errc::ok);

  auto other = b.client().call_body<proto::LookupReply>(RequestId{51}, proto::LookupRequest{false, {7, 8}});
  ASSERT_TRUE(other);
  EXPECT_EQ(other->prefix_blocks, 0U) << "another tenant's salt never matches";
  auto same = a2.client().call_body<proto::LookupReply>(RequestId{52}, proto::LookupRequest{true, {7, 8}});
  ASSERT_TRUE(same);
  EXPECT_EQ(same->prefix_blocks, 2U) << "the same salt shares";

  auto json = stats_of(a.client(), 53);
  EXPECT_EQ(stat_of(json, "leased_blocks"), 2) << json;
  EXPECT_EQ(stat_of(json, "pinned_blocks"), 2) << json;
  auto released = a2.client().call_body<proto::ReleaseReply>(RequestId{54}, proto::ReleaseRequest{{7}});
  ASSERT_TRUE(released);
  EXPECT_EQ(released->released, 1U);
  released = a2.client().call_body<proto::ReleaseReply>(RequestId{55}, proto::ReleaseRequest{});
  ASSERT_TRUE(released);
  EXPECT_EQ(released->released, 1U);
  json = stats_of(a.client(), 56);
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

// An engine's request as kvblockd-bench cluster sends it, on a host pool of
// 2 blocks (8 KiB each) under the "prefix" policy: the daemon gives the
// policy what the protocol does not say, from the session's last lookup.
class TwoBlockPool {
 public:
  TwoBlockPool()
      : daemon_(KVBLOCKD_PATH, {"--host-pool-bytes", "16384", "--eviction-policy", "prefix"}),
        engine_(daemon_.socket_path(), 8, /*salt=*/5) {}
  bool ready() { return daemon_.ready() && engine_.attach(); }
  std::string log() { return daemon_.log(); }

  std::uint32_t lookup(std::vector<std::uint64_t> hashes) {
    auto r = engine_.client().call_body<proto::LookupReply>(RequestId{next_++},
                                                            proto::LookupRequest{false, std::move(hashes)});
    EXPECT_TRUE(r) << r.error().to_string();
    return r ? r->prefix_blocks : 0;
  }
  void offload(const std::vector<std::uint64_t>& hashes) {
    proto::OffloadRequest req;
    for (std::uint32_t i = 0; i < hashes.size(); ++i) {
      engine_.fill(i, static_cast<std::uint32_t>(hashes[i]));
      req.items.push_back({BlockId{i}, hashes[i]});
    }
    finish(std::move(req));
  }
  void onboard(const std::vector<std::uint64_t>& hashes) {
    proto::OnboardRequest req;
    for (std::uint32_t i = 0; i < hashes.size(); ++i) req.items.push_back({hashes[i], BlockId{4 + i}});
    finish(std::move(req));
  }
  /// Whether `hash` is held, leasing and counting nothing (locate).
  bool holds(std::uint64_t hash) {
    auto r = engine_.client().call_body<proto::LocateReply>(RequestId{next_++}, proto::LocateRequest{{hash}});
    EXPECT_TRUE(r && !r->workers.empty());
    return r && !r->workers.empty() && r->workers[0].prefix_blocks == 1;
  }

 private:
  template <class Request>
  void finish(Request req) {
    const RequestId id{next_++};
    auto accepted = engine_.client().call(id, std::move(req));
    ASSERT_TRUE(accepted && accepted->code == Errc::ok) << (accepted ? accepted->message : "no reply");
    auto done = engine_.client().notification_of(id);
    ASSERT_TRUE(done);
    ASSERT_EQ(done->code, Errc::ok) << done->text;
  }

  DaemonProcess daemon_;
  TestEngine engine_;
  std::uint64_t next_ = 1;
};

TEST(DaemonBlocks, AnOffloadInChunksAfterALookupExtendsTheLookedUpSequence) {
  // lookup [P, C] misses; the engine offloads P, then C (two chunks). The
  // offload of C names no parent; the lookup says it is P. So P is no dead
  // end (it was extended) and C, the end of the sequence, goes first when
  // X needs room. Were C a root, P and C would both be one-off dead ends
  // and P, the older, would go, leaving C unreachable.
  TwoBlockPool pool;
  ASSERT_TRUE(pool.ready()) << pool.log();
  EXPECT_EQ(pool.lookup({100, 101}), 0U);
  pool.offload({100});
  pool.offload({101});
  pool.offload({300});
  EXPECT_TRUE(pool.holds(100)) << "the parent stays";
  EXPECT_FALSE(pool.holds(101)) << "the tail went";
  EXPECT_TRUE(pool.holds(300));
}

TEST(DaemonBlocks, AnOnboardAfterItsLookupIsNoSecondUseOfItsBlocks) {
  // B: stored, then looked up by 2 requests that did not onboard it (3
  // uses). A, later: stored, then looked up and onboarded by 1 request (2
  // uses: the onboard leases again what the unpinned lookup counted). A,
  // used less, goes when X needs room. Were the onboard a second use, A
  // would have 3 uses like B, and B, released first, would go.
  TwoBlockPool pool;
  ASSERT_TRUE(pool.ready()) << pool.log();
  pool.offload({200});
  EXPECT_EQ(pool.lookup({200}), 1U);
  EXPECT_EQ(pool.lookup({200}), 1U);
  pool.offload({100});
  EXPECT_EQ(pool.lookup({100}), 1U);
  pool.onboard({100});
  pool.offload({300});
  EXPECT_FALSE(pool.holds(100)) << "A, used once less, went";
  EXPECT_TRUE(pool.holds(200));
  EXPECT_TRUE(pool.holds(300));
}

// locate, the router's query, on a daemon that is not in a cluster: one
// entry, named "", with the longest prefix this tenant's hashes have here;
// it leases nothing, and another tenant's salt sees nothing.
TEST(DaemonBlocks, LocateOnALoneDaemonReportsItsOwnPrefixPerTenant) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine a(daemon.socket_path(), 16, /*salt=*/1);
  TestEngine b(daemon.socket_path(), 16, /*salt=*/2);
  ASSERT_TRUE(a.attach() && b.attach());
  a.fill(0, 9);
  a.fill(1, 10);
  ASSERT_TRUE(a.client().call(RequestId{60}, proto::OffloadRequest{{{BlockId{0}, 7}, {BlockId{1}, 8}}}));
  auto done = a.client().notification_of(RequestId{60});
  ASSERT_TRUE(done && done->code == Errc::ok);

  auto mine = a.client().call_body<proto::LocateReply>(RequestId{61}, proto::LocateRequest{{7, 8, 9}});
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->workers.size(), 1U);
  EXPECT_EQ(mine->workers[0].worker, "");
  EXPECT_EQ(mine->workers[0].prefix_blocks, 2U);
  auto gap = a.client().call_body<proto::LocateReply>(RequestId{62}, proto::LocateRequest{{9, 7, 8}});
  ASSERT_TRUE(gap && gap->workers.size() == 1U);
  EXPECT_EQ(gap->workers[0].prefix_blocks, 0U) << "a prefix starts at the first hash";
  auto other = b.client().call_body<proto::LocateReply>(RequestId{63}, proto::LocateRequest{{7, 8}});
  ASSERT_TRUE(other && other->workers.size() == 1U);
  EXPECT_EQ(other->workers[0].prefix_blocks, 0U) << "another tenant's salt never matches";
  EXPECT_EQ(stat_of(stats_of(a.client(), 64), "leased_blocks"), 0) << "locate leases nothing";

  // kvblockctl locate, with the tenant's salt and the test engine's shape.
  const std::vector<std::string> shape = kvblockctl_shape_args();
  std::vector<std::string> argv{KVBLOCKCTL_PATH, "--socket", daemon.socket_path(), "--salt", "1", "locate", "7", "8"};
  argv.insert(argv.end(), shape.begin(), shape.end());
  auto table = run_program(argv, 20s);
  ASSERT_TRUE(table && WIFEXITED(table->status) && WEXITSTATUS(table->status) == 0) << (table ? table->out : "");
  EXPECT_NE(table->out.find("(this daemon)            2\n"), std::string::npos) << table->out;
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(DaemonBlocks, RequestTimeoutEndsWithErrTimeoutAndRegistersNothing) {
  // 1 ms deadline against a 64 MiB offload (>= 5 ms of DRAM bandwidth here).
  DaemonProcess daemon(KVBLOCKD_PATH, {"--request-timeout-ms", "1", "--log-level", "debug"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  constexpr std::uint32_t kBlocks = 8192;  // 8 KiB each: 64 MiB
  TestEngine engine(daemon.socket_path(), kBlocks);
  ASSERT_TRUE(engine.attach());
  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < kBlocks; ++b) offload.items.push_back({BlockId{b}, 50'000 + std::uint64_t{b}});
  auto accepted = engine.client().call(RequestId{9}, offload);
  ASSERT_TRUE(accepted && accepted->accepted) << (accepted ? accepted->message : "no reply");
  auto done = engine.client().notification_of(RequestId{9});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Errc::timeout);
  EXPECT_TRUE(done->text.starts_with("9:err(timeout")) << done->text;
  auto status = engine.client().call_body<proto::RequestStateReply>(RequestId{10}, proto::StatusRequest{RequestId{9}});
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, proto::RequestState::err);
  // Once the copy has finished (the daemon logs it) its partial blocks are
  // discarded, never registered.
  ASSERT_TRUE(daemon.wait_for_log("offload copy of a request that already ended finished", 30s)) << daemon.log();
  const auto json = stats_of(engine.client(), 12);
  EXPECT_EQ(stat_of(json, "g2.partial"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2.registered"), 0) << json;
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(stat_of(json, "inflight_requests"), 0) << json;
  auto lookup = engine.client().call_body<proto::LookupReply>(RequestId{11}, proto::LookupRequest{false, {50'000}});
  ASSERT_TRUE(lookup);
  EXPECT_EQ(lookup->prefix_blocks, 0U);
  EXPECT_EQ(daemon.stop(SIGTERM), 0);
}

TEST(DaemonBlocks, SigkilledClientLosesItsLeases) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--log-level", "debug"});  // "session N ended" is the event to wait on
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  constexpr std::uint32_t kBlocks = 4096;  // 32 MiB: an onboard still copying when the client dies
  {
    TestEngine seeder(daemon.socket_path(), kBlocks, 3);
    ASSERT_TRUE(seeder.attach());
    proto::OffloadRequest offload;
    for (std::uint32_t b = 0; b < kBlocks; ++b) offload.items.push_back({BlockId{b}, 9'000 + std::uint64_t{b}});
    ASSERT_TRUE(seeder.client().call(RequestId{1}, offload));
    auto done = seeder.client().notification_of(RequestId{1}, 60s);
    ASSERT_TRUE(done && done->code == Errc::ok);
  }
  int ready_pipe[2];
  ASSERT_EQ(::pipe(ready_pipe), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The client: pins the prefix, starts an onboard, says so, then waits to die.
    ::close(ready_pipe[0]);
    TestEngine engine(daemon.socket_path(), kBlocks, 3);
    if (!engine.attach()) ::_exit(2);
    proto::LookupRequest pin{true, {}};
    proto::OnboardRequest onboard;
    for (std::uint32_t b = 0; b < kBlocks; ++b) {
      pin.hashes.push_back(9'000 + std::uint64_t{b});
      onboard.items.push_back({9'000 + std::uint64_t{b}, BlockId{b}});
    }
    auto pinned = engine.client().call_body<proto::LookupReply>(RequestId{2}, pin);
    if (!pinned || pinned->prefix_blocks != kBlocks) ::_exit(3);
    if (!engine.client().send(RequestId{3}, onboard)) ::_exit(4);
    const std::uint64_t session = engine.session_id().value();
    (void)::write(ready_pipe[1], &session, sizeof session);
    ::pause();
    ::_exit(0);
  }
  ::close(ready_pipe[1]);
  std::uint64_t session = 0;
  ASSERT_EQ(::read(ready_pipe[0], &session, sizeof session), static_cast<ssize_t>(sizeof session))
      << "the client did not get going";
  ::close(ready_pipe[0]);

  RawClient observer(daemon.socket_path());
  auto before = stats_of(observer, 1);
  EXPECT_GE(stat_of(before, "leased_blocks"), kBlocks) << before;
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  // The daemon ends the session when it reads the EOF, at once.
  ASSERT_TRUE(daemon.wait_for_log(fmt::format("session {} ended", session), 10s)) << daemon.log();
  // Its pins ended with the session; an onboard still copying holds its
  // source blocks until the copy finishes, then drops them (the daemon logs it).
  std::string json = stats_of(observer, 2);
  if (stat_of(json, "leased_blocks") != 0) {
    ASSERT_TRUE(daemon.wait_for_log("onboard copy of a request that already ended finished", 30s)) << daemon.log();
    json = stats_of(observer, 3);
  }
  EXPECT_EQ(stat_of(json, "leased_blocks"), 0) << json;
  EXPECT_EQ(stat_of(json, "sessions"), 1) << json;
  EXPECT_EQ(stat_of(json, "pinned_blocks"), 0) << json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonBlocks, SigtermWithWorkInFlightAnswersEveryRequestAndExitsZero) {
  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  constexpr std::uint32_t kBlocks = 8192;
  TestEngine engine(daemon.socket_path(), kBlocks);
  ASSERT_TRUE(engine.attach());
  proto::OffloadRequest offload;
  for (std::uint32_t b = 0; b < kBlocks; ++b) offload.items.push_back({BlockId{b}, 70'000 + std::uint64_t{b}});
  auto accepted = engine.client().call(RequestId{5}, offload);
  ASSERT_TRUE(accepted && accepted->accepted);
  ASSERT_EQ(::kill(daemon.pid(), SIGTERM), 0);
  auto done = engine.client().notification_of(RequestId{5});
  ASSERT_TRUE(done) << "every accepted request is answered before the daemon exits";
  EXPECT_TRUE(done->code == Errc::ok || done->code == Errc::shutting_down) << done->text;
  if (done->code != Errc::ok) {
    EXPECT_EQ(done->text, "5:err(shutting down)");
  }
  EXPECT_TRUE(engine.client().wait_closed());
  EXPECT_EQ(daemon.wait_exit(20s), 0) << daemon.log();
  EXPECT_FALSE(std::filesystem::exists(daemon.socket_path())) << "the socket file is removed";
}

}  // namespace
}  // namespace kvb::test

namespace kvb::test {
namespace {

// prefault (default on): the host pool a hello creates is populated in the
// background; the daemon logs when it is ready and the stats count its bytes.
TEST(DaemonBlocks, PrefaultPopulatesANewHostPoolAndSaysWhenItIsReady) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--host-pool-bytes", "64MiB"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8, /*salt=*/7);
  ASSERT_TRUE(engine.attach()) << daemon.log();
  ASSERT_TRUE(daemon.wait_for_log("G2 host pool 1 ready: ", 60s)) << daemon.log();
  const auto json = stats_of(engine.client(), 1);
  EXPECT_GT(stat_of(json, "g2_prefault.pool_bytes"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2_prefault.populated_bytes"), stat_of(json, "g2_prefault.pool_bytes")) << json;
  EXPECT_EQ(stat_of(json, "g2_prefault.pools_ready"), 1) << json;
  EXPECT_NE(daemon.log().find("huge pages for shared memory: shmem_enabled="), std::string::npos) << daemon.log();
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

TEST(DaemonBlocks, PrefaultOffLeavesTheHostPoolUnpopulated) {
  DaemonProcess daemon(KVBLOCKD_PATH, {"--host-pool-bytes", "64MiB", "--prefault", "false"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  TestEngine engine(daemon.socket_path(), 8, /*salt=*/7);
  ASSERT_TRUE(engine.attach()) << daemon.log();
  const auto json = stats_of(engine.client(), 1);
  EXPECT_GT(stat_of(json, "g2_prefault.pool_bytes"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2_prefault.populated_bytes"), 0) << json;
  EXPECT_EQ(stat_of(json, "g2_prefault.pools_ready"), 0) << json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
  EXPECT_EQ(daemon.log().find("G2 host pool 1 ready"), std::string::npos) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
