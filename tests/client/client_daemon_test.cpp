// The client library against a real kvblockd process (label integration).
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "kvb/client/awaitable.h"
#include "kvb/client/client.h"
#include "support/daemon_process.h"

namespace {

using namespace std::chrono_literals;
using kvb::BlockId;
using kvb::Errc;
using kvb::client::BlockShape;
using kvb::client::Client;
using kvb::client::KvRegion;
using kvb::client::Session;
using kvb::client::WireLayoutKind;

BlockShape small_shape() {
  BlockShape s;
  s.num_layers = 2;
  s.outer_dim = 2;
  s.page_size = 16;
  s.inner_dim = 32;
  s.dtype = 1;  // f16: 1 KiB chunks
  return s;
}

/// Counts down to zero; wait_for is bounded.
class Countdown {
 public:
  explicit Countdown(int n) : left_(n) {}
  void done() {
    std::lock_guard lock(m_);
    if (--left_ <= 0) cv_.notify_all();
  }
  [[nodiscard]] bool wait_for(std::chrono::milliseconds t) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, t, [&] { return left_ <= 0; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int left_;
};

/// An io_context run by one thread, for the async API.
class IoThread {
 public:
  IoThread() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

void fill(const KvRegion& r, std::uint32_t block, std::uint32_t seed) {
  for (std::uint32_t l = 0; l < r.shape().num_layers; ++l)
    for (std::uint32_t o = 0; o < r.shape().outer_dim; ++o) {
      auto c = r.chunk(block, l, o);
      for (std::size_t i = 0; i < c.size(); ++i)
        c[i] = static_cast<std::byte>((seed * 131 + l * 17 + o * 7 + i) & 0xFF);
    }
}

bool same_block(const KvRegion& r, std::uint32_t a, std::uint32_t b) {
  for (std::uint32_t l = 0; l < r.shape().num_layers; ++l)
    for (std::uint32_t o = 0; o < r.shape().outer_dim; ++o) {
      auto x = r.chunk(a, l, o);
      auto y = r.chunk(b, l, o);
      if (std::memcmp(x.data(), y.data(), x.size()) != 0) return false;
    }
  return true;
}

class ClientDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.ready()) << "kvblockd did not start:\n" << daemon_.log(); }

  /// A blocking client that said hello with `shape` and registered `region`.
  std::unique_ptr<Client> attach(const KvRegion& region, std::uint64_t salt = 7) {
    auto c = Client::connect(daemon_.socket_path());
    EXPECT_TRUE(c) << c.error().to_string();
    if (!c) return nullptr;
    (*c)->set_timeout(20s);
    kvb::client::HelloParams hello;
    hello.client_name = "client_daemon_test";
    hello.tenant_salt = salt;
    hello.shape = region.shape();
    auto info = (*c)->hello(hello);
    EXPECT_TRUE(info) << info.error().to_string();
    auto st = (*c)->register_kv(region);
    EXPECT_TRUE(st) << st.error().to_string();
    return std::move(*c);
  }

  kvb::test::DaemonProcess daemon_{KVB_DAEMON_BIN};
};

class RoundTrip : public ClientDaemonTest, public ::testing::WithParamInterface<WireLayoutKind> {};

TEST_P(RoundTrip, OffloadLookupOnboardIsByteExact) {
  constexpr std::uint32_t kBlocks = 6;
  auto region = KvRegion::create(small_shape(), GetParam(), 2 * kBlocks);
  ASSERT_TRUE(region) << region.error().to_string();
  auto c = attach(*region);
  ASSERT_TRUE(c);
  std::vector<std::uint64_t> hashes;
  std::vector<kvb::client::OffloadItem> off;
  std::vector<kvb::client::OnboardItem> on;
  for (std::uint32_t b = 0; b < kBlocks; ++b) {
    fill(*region, b, b + 1);
    hashes.push_back(0x1000 + b);
    off.push_back({BlockId{b}, hashes.back()});
    on.push_back({hashes.back(), BlockId{kBlocks + b}});
  }
  ASSERT_TRUE(c->offload(off));
  auto found = c->lookup(hashes);
  ASSERT_TRUE(found) << found.error().to_string();
  EXPECT_EQ(found->prefix_blocks, kBlocks);
  // A prefix stops at the first unknown hash.
  std::vector<std::uint64_t> broken = {hashes[0], hashes[1], 0xDEAD, hashes[3]};
  auto partial = c->lookup(broken);
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->prefix_blocks, 2U);
  ASSERT_TRUE(c->onboard(on));
  for (std::uint32_t b = 0; b < kBlocks; ++b) EXPECT_TRUE(same_block(*region, b, kBlocks + b)) << "block " << b;
  // A pinned lookup leases the matched blocks until release.
  auto pinned = c->lookup(hashes, true);
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->prefix_blocks, kBlocks);
  auto released = c->release();
  ASSERT_TRUE(released) << released.error().to_string();
  EXPECT_EQ(*released, kBlocks);
  EXPECT_TRUE(c->bye());
}

INSTANTIATE_TEST_SUITE_P(Layouts, RoundTrip,
                         ::testing::Values(WireLayoutKind::fully_contiguous, WireLayoutKind::layer_separate_block_outer,
                                           WireLayoutKind::layer_separate_outer_block));

// vLLM's wait_for_layer_load: progress per layer group, in layer order,
// before the onboard resolves; each announced layer already holds its bytes.
TEST_F(ClientDaemonTest, OnboardLayersReportsEachGroupInOrderBeforeItResolves) {
  kvb::client::BlockShape shape = small_shape();
  shape.num_layers = 6;
  auto region = KvRegion::create(shape, WireLayoutKind::layer_separate_block_outer, 8);
  ASSERT_TRUE(region);
  auto c = attach(*region);
  ASSERT_TRUE(c);
  std::vector<kvb::client::OffloadItem> off;
  std::vector<kvb::client::OnboardItem> on;
  for (std::uint32_t b = 0; b < 4; ++b) {
    fill(*region, b, 50 + b);
    off.push_back({BlockId{b}, 0x7700 + b});
    on.push_back({0x7700 + b, BlockId{4 + b}});
  }
  ASSERT_TRUE(c->offload(off));
  std::vector<std::pair<std::uint32_t, std::uint32_t>> seen;
  bool layers_in_place = true;
  auto st = c->onboard_layers(on, 4, [&](const kvb::client::LayerProgress& p) {
    seen.emplace_back(p.layer_begin, p.layer_end);
    for (std::uint32_t b = 0; b < 4; ++b)
      for (std::uint32_t l = p.layer_begin; l < p.layer_end; ++l)
        for (std::uint32_t o = 0; o < shape.outer_dim; ++o) {
          auto x = region->chunk(b, l, o);
          if (std::memcmp(x.data(), region->chunk(4 + b, l, o).data(), x.size()) != 0) layers_in_place = false;
        }
  });
  ASSERT_TRUE(st) << st.error().to_string();
  EXPECT_EQ(seen, (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{0, 4}, {4, 6}}));
  EXPECT_TRUE(layers_in_place);
  for (std::uint32_t b = 0; b < 4; ++b) EXPECT_TRUE(same_block(*region, b, 4 + b)) << "block " << b;
}

TEST_F(ClientDaemonTest, CompletionIsPushedWithoutPolling) {
  auto region = KvRegion::create(small_shape(), WireLayoutKind::layer_separate_block_outer, 4);
  ASSERT_TRUE(region);
  auto c = attach(*region);
  ASSERT_TRUE(c);
  fill(*region, 0, 42);
  std::promise<kvb::Status> done;
  const kvb::client::OffloadItem item{BlockId{0}, 0xF00D};
  // Only the offload goes out: no status or wait request; the notification resolves it.
  const auto id = c->session().async_offload(std::span(&item, 1), [&](kvb::Status st) { done.set_value(st); });
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(20s), std::future_status::ready);
  auto st = fut.get();
  EXPECT_TRUE(st) << st.error().to_string();
  EXPECT_EQ(c->session().pending(), 0U);
  // status(id) afterwards agrees: ok.
  auto state = c->status(id);
  ASSERT_TRUE(state) << state.error().to_string();
  EXPECT_EQ(state->state, kvb::client::RequestState::ok);
}

TEST_F(ClientDaemonTest, WaitResolvesWithTheTargetsOutcome) {
  auto region = KvRegion::create(small_shape(), WireLayoutKind::fully_contiguous, 4);
  ASSERT_TRUE(region);
  auto c = attach(*region);
  ASSERT_TRUE(c);
  std::promise<kvb::Status> done;
  const kvb::client::OnboardItem missing{0xAB5E47ULL, BlockId{1}};
  const auto id = c->session().async_onboard(std::span(&missing, 1), [&](kvb::Status st) { done.set_value(st); });
  auto waited = c->wait(id, 10'000);
  ASSERT_TRUE(waited) << waited.error().to_string();
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(20s), std::future_status::ready);
  const auto st = fut.get();
  ASSERT_FALSE(st);  // nobody offloaded that hash
  EXPECT_FALSE(st.error().message.empty());
  // wait answers the same outcome (err), or unknown when the refusal came in the reply.
  EXPECT_TRUE(waited->state == kvb::client::RequestState::err || waited->state == kvb::client::RequestState::unknown)
      << static_cast<int>(waited->state) << " " << waited->message;
}

TEST_F(ClientDaemonTest, EveryRequestResolvesExactlyOnce) {
  auto region = KvRegion::create(small_shape(), WireLayoutKind::fully_contiguous, 8);
  ASSERT_TRUE(region);
  auto c = attach(*region);
  ASSERT_TRUE(c);
  constexpr int kEach = 50;
  std::atomic<int> calls{0}, failures{0};
  Countdown all(3 * kEach);
  for (int i = 0; i < kEach; ++i) {
    const std::uint64_t h = 0x5000 + static_cast<std::uint64_t>(i);
    const kvb::client::OffloadItem item{BlockId{static_cast<std::uint32_t>(i % 8)}, h};
    c->session().async_offload(std::span(&item, 1), [&](kvb::Status st) {
      if (!st) ++failures;
      ++calls;
      all.done();
    });
    c->session().async_lookup(std::span(&h, 1), false, [&](kvb::Result<kvb::client::LookupResult> r) {
      if (!r) ++failures;
      ++calls;
      all.done();
    });
    // Onboard of a hash nobody offloaded: refused or failed, but resolved once.
    const kvb::client::OnboardItem missing{0xBAD0000 + static_cast<std::uint64_t>(i), BlockId{0}};
    c->session().async_onboard(std::span(&missing, 1), [&](kvb::Status st) {
      if (st) ++failures;  // must not succeed
      ++calls;
      all.done();
    });
  }
  ASSERT_TRUE(all.wait_for(30s)) << "only " << calls.load() << " of " << 3 * kEach << " resolved";
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(c->bye());
  c.reset();  // closes: nothing may resolve a second time
  EXPECT_EQ(calls.load(), 3 * kEach);
}

// The client holds async requests beyond the daemon's max_inflight (from the
// hello reply) and sends each when an earlier one ends, so none is refused
// busy by the daemon; past 8 x max_inflight held it fails them at once.
TEST(ClientFlowControl, RequestsBeyondMaxInflightWaitTheirTurn) {
  kvb::test::DaemonProcess daemon(KVB_DAEMON_BIN, {"--max-inflight", "2"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  auto region = KvRegion::create(small_shape(), WireLayoutKind::fully_contiguous, 8);
  ASSERT_TRUE(region);
  auto c = Client::connect(daemon.socket_path());
  ASSERT_TRUE(c);
  (*c)->set_timeout(20s);
  kvb::client::HelloParams hello;
  hello.shape = region->shape();
  auto info = (*c)->hello(hello);
  ASSERT_TRUE(info);
  ASSERT_EQ(info->max_inflight, 2U);
  ASSERT_TRUE((*c)->register_kv(*region));
  constexpr int kAccepted = 2 + 2 * 8;  // in flight + held
  constexpr int kTotal = kAccepted + 3;
  std::vector<kvb::Status> results(kTotal, kvb::ok());
  Countdown all(kTotal);
  Session& session = (*c)->session();
  // Started together on the session's strand: no answer can free a slot in between.
  boost::asio::dispatch(session.executor(), [&] {
    for (int i = 0; i < kTotal; ++i) {
      const kvb::client::OffloadItem item{BlockId{static_cast<std::uint32_t>(i % 8)}, 0x7000 + std::uint64_t(i)};
      session.async_offload(std::span(&item, 1), [&, i](kvb::Status st) {
        results[i] = st;
        all.done();
      });
    }
  });
  ASSERT_TRUE(all.wait_for(30s));
  for (int i = 0; i < kAccepted; ++i) EXPECT_TRUE(results[i]) << i << ": " << results[i].error().to_string();
  for (int i = kAccepted; i < kTotal; ++i) {
    ASSERT_FALSE(results[i]) << i;
    EXPECT_EQ(results[i].error().code, Errc::busy);
    EXPECT_NE(results[i].error().message.find("max_inflight is 2"), std::string::npos) << results[i].error().message;
  }
  auto stats = (*c)->stats();
  ASSERT_TRUE(stats);
  EXPECT_NE(stats->find("\"inflight_requests\":0"), std::string::npos) << *stats;
}

TEST_F(ClientDaemonTest, RefusalResolvesFromTheReply) {
  auto c = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(c);
  const std::uint64_t h = 1;
  auto r = (*c)->lookup(std::span(&h, 1));  // before hello
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::wrong_state) << r.error().to_string();
  EXPECT_FALSE(r.error().message.empty());
}

TEST_F(ClientDaemonTest, ConnectionLossFailsEveryPendingRequest) {
  auto region = KvRegion::create(small_shape(), WireLayoutKind::fully_contiguous, 4);
  ASSERT_TRUE(region);
  auto c = attach(*region);
  ASSERT_TRUE(c);
  daemon_.signal(SIGSTOP);  // the requests below stay pending
  constexpr int kN = 12;
  std::mutex m;
  std::vector<kvb::Error> errors;
  Countdown all(kN);
  for (int i = 0; i < kN; ++i) {
    const std::uint64_t h = 0x9000 + static_cast<std::uint64_t>(i);
    auto record = [&](const kvb::Error* e) {
      std::lock_guard lock(m);
      errors.push_back(e ? *e : kvb::Error{Errc::ok, "unexpected success"});
      all.done();
    };
    if (i % 2 == 0) {
      c->session().async_lookup(std::span(&h, 1), false, [record](kvb::Result<kvb::client::LookupResult> r) {
        record(r ? nullptr : &r.error());
      });
    } else {
      const kvb::client::OffloadItem item{BlockId{0}, h};
      c->session().async_offload(std::span(&item, 1), [record](kvb::Status st) { record(st ? nullptr : &st.error()); });
    }
  }
  daemon_.kill();  // SIGKILL: the connection drops with the requests unanswered
  ASSERT_TRUE(all.wait_for(10s)) << "pending requests were not failed on connection loss";
  for (const auto& e : errors) {
    EXPECT_EQ(e.code, Errc::peer_lost) << e.to_string();
  }
  EXPECT_EQ(c->session().pending(), 0U);
  EXPECT_FALSE(c->session().is_open());
  // New requests fail at once, and still exactly once.
  auto after = c->stats();
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::peer_lost);
}

TEST_F(ClientDaemonTest, StatsJsonHasTheCountersAndKvblockctlPrintsIt) {
  auto c = Client::connect(daemon_.socket_path());
  ASSERT_TRUE(c);
  kvb::client::HelloParams hello;
  hello.shape.num_layers = 0;  // operator session
  ASSERT_TRUE((*c)->hello(hello));
  auto json = (*c)->stats();
  ASSERT_TRUE(json) << json.error().to_string();
  for (const char* key : {"\"sessions\"", "\"inflight_requests\"", "\"leased_blocks\""})
    EXPECT_NE(json->find(key), std::string::npos) << key << " missing in " << *json;
  auto out = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", daemon_.socket_path(), "stats", "--json"}, 20s);
  ASSERT_TRUE(out) << "kvblockctl timed out";
  EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out;
  ASSERT_FALSE(out->out.empty());
  EXPECT_EQ(out->out.front(), '{');
  EXPECT_EQ(out->out.back(), '\n');
  for (const char* key : {"\"sessions\"", "\"inflight_requests\"", "\"leased_blocks\""})
    EXPECT_NE(out->out.find(key), std::string::npos) << key << " missing in " << out->out;
  auto status = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", daemon_.socket_path(), "status"}, 20s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(status->status) && WEXITSTATUS(status->status) == 0) << status->out;
  EXPECT_NE(status->out.find("up"), std::string::npos) << status->out;
}

TEST_F(ClientDaemonTest, KvblockctlLookupConfigAndDrain) {
  // Offload two blocks with engine_sim's default shape under tenant salt 5.
  BlockShape shape;
  shape.num_layers = 4;
  shape.outer_dim = 2;
  shape.page_size = 16;
  shape.inner_dim = 128;
  shape.dtype = 2;
  auto region = KvRegion::create(shape, WireLayoutKind::layer_separate_block_outer, 4);
  ASSERT_TRUE(region);
  auto c = attach(*region, 5);
  ASSERT_TRUE(c);
  const kvb::client::OffloadItem items[] = {{BlockId{0}, 0x11}, {BlockId{1}, 0x22}};
  ASSERT_TRUE(c->offload(items));
  const std::string sock = daemon_.socket_path();

  auto lookup =
      kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", sock, "--salt", "5", "lookup", "0x11", "34", "0x99"}, 20s);
  ASSERT_TRUE(lookup);
  EXPECT_TRUE(WIFEXITED(lookup->status) && WEXITSTATUS(lookup->status) == 0) << lookup->out;
  EXPECT_NE(lookup->out.find("prefix_blocks 2 of 3"), std::string::npos) << lookup->out;
  auto other_tenant = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", sock, "lookup", "0x11"}, 20s);
  ASSERT_TRUE(other_tenant);
  EXPECT_NE(other_tenant->out.find("prefix_blocks 0 of 1"), std::string::npos) << other_tenant->out;

  auto config = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", sock, "config"}, 20s);
  ASSERT_TRUE(config);
  EXPECT_TRUE(WIFEXITED(config->status) && WEXITSTATUS(config->status) == 0) << config->out;
  EXPECT_NE(config->out.find(sock), std::string::npos) << config->out;

  auto drain = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", sock, "drain"}, 20s);
  ASSERT_TRUE(drain);
  EXPECT_TRUE(WIFEXITED(drain->status) && WEXITSTATUS(drain->status) == 0) << drain->out;
  // Draining: new offloads are refused, from the reply, once.
  const kvb::client::OffloadItem more{BlockId{2}, 0x33};
  auto refused = c->offload(std::span(&more, 1));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::unavailable) << refused.error().to_string();

  auto bad = kvb::test::run_program({KVBLOCKCTL_BIN, "--socket", sock + ".missing", "stats"}, 20s);
  ASSERT_TRUE(bad);
  EXPECT_TRUE(WIFEXITED(bad->status) && WEXITSTATUS(bad->status) == 1);
}

// The same round trip written as an Asio coroutine over the token forms.
boost::asio::awaitable<std::string> coroutine_round_trip(Session& s, const KvRegion& region) {
  namespace asio = boost::asio;
  kvb::client::HelloParams hello;
  hello.shape = region.shape();
  if (auto info = co_await kvb::client::hello(s, hello, asio::use_awaitable); !info) co_return info.error().to_string();
  if (auto st = co_await kvb::client::register_kv(s, region, asio::use_awaitable); !st)
    co_return st.error().to_string();
  fill(region, 0, 9);
  // Named vectors: GCC 12 rejects braced-init temporaries inside co_await ("array used as initializer").
  std::vector<kvb::client::OffloadItem> off(1, kvb::client::OffloadItem{BlockId{0}, 0xC0});
  std::vector<std::uint64_t> hashes(1, 0xC0);
  std::vector<kvb::client::OnboardItem> on(1, kvb::client::OnboardItem{0xC0, BlockId{1}});
  if (auto st = co_await kvb::client::offload(s, std::move(off), asio::use_awaitable); !st)
    co_return st.error().to_string();
  auto found = co_await kvb::client::lookup(s, std::move(hashes), false, asio::use_awaitable);
  if (!found) co_return found.error().to_string();
  if (found->prefix_blocks != 1) co_return std::string("lookup matched ") + std::to_string(found->prefix_blocks);
  if (auto st = co_await kvb::client::onboard(s, std::move(on), asio::use_awaitable); !st)
    co_return st.error().to_string();
  if (!same_block(region, 0, 1)) co_return std::string("onboarded block differs");
  if (auto st = co_await kvb::client::bye(s, asio::use_awaitable); !st) co_return st.error().to_string();
  co_return std::string("ok");
}

TEST_F(ClientDaemonTest, AwaitableRoundTrip) {
  IoThread io;
  auto region = KvRegion::create(small_shape(), WireLayoutKind::layer_separate_outer_block, 2);
  ASSERT_TRUE(region);
  auto s = Session::connect(io.io().get_executor(), daemon_.socket_path());
  ASSERT_TRUE(s) << s.error().to_string();
  auto fut = boost::asio::co_spawn(io.io(), coroutine_round_trip(**s, *region), boost::asio::use_future);
  ASSERT_EQ(fut.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(fut.get(), "ok");
  // use_future works too.
  auto stats = kvb::client::stats(**s, boost::asio::use_future);
  ASSERT_EQ(stats.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(stats.get());  // the session said bye: closed
}

TEST_F(ClientDaemonTest, ManySessionsOnOneThread) {
  IoThread io;
  constexpr int kSessions = 200;
  std::atomic<int> ok{0};
  Countdown all(kSessions);
  std::vector<std::shared_ptr<Session>> sessions;
  for (int i = 0; i < kSessions; ++i) {
    auto s = Session::connect(io.io().get_executor(), daemon_.socket_path());
    ASSERT_TRUE(s) << s.error().to_string();
    sessions.push_back(*s);
    kvb::client::HelloParams hello;
    hello.shape = small_shape();
    (*s)->async_hello(hello, [&, s = *s](kvb::Result<kvb::client::HelloInfo> info) {
      if (!info) return all.done();
      const std::uint64_t h = 0x77;
      s->async_lookup(std::span(&h, 1), false, [&](kvb::Result<kvb::client::LookupResult> r) {
        if (r) ++ok;
        all.done();
      });
    });
  }
  ASSERT_TRUE(all.wait_for(30s));
  EXPECT_EQ(ok.load(), kSessions);
  for (auto& s : sessions) s->close();
}

TEST_F(ClientDaemonTest, CAbiRoundTrip) {
  auto out = kvb::test::run_program({KVB_C_ABI_BIN, daemon_.socket_path()}, 60s);
  ASSERT_TRUE(out) << "the C program timed out";
  EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out << "\n" << daemon_.log();
}

TEST_F(ClientDaemonTest, EngineSimVerifiesItsBlocks) {
  auto out = kvb::test::run_program({ENGINE_SIM_BIN, "--socket", daemon_.socket_path(), "--blocks", "16"}, 60s);
  ASSERT_TRUE(out) << "engine_sim timed out";
  EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out << "\n" << daemon_.log();
  EXPECT_NE(out->out.find("byte-exact"), std::string::npos) << out->out;
}

// --steady: more rounds under fresh hashes, each onboard into zeroed blocks
// and checked, and the median of them (64 MiB: beside memcpy).
TEST_F(ClientDaemonTest, EngineSimSteadyRoundsAreCheckedAndComparedWithMemcpy) {
  auto out = kvb::test::run_program({ENGINE_SIM_BIN, "--socket", daemon_.socket_path(), "--layout", "fully_contiguous",
                                     "--blocks", "64", "--layers", "16", "--inner-dim", "1024", "--steady", "2"},
                                    60s);
  ASSERT_TRUE(out) << "engine_sim timed out";
  EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out << "\n" << daemon_.log();
  EXPECT_NE(out->out.find("steady   2 rounds: offload "), std::string::npos) << out->out;
  EXPECT_NE(out->out.find("(medians), verify byte-exact"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find("steady / memcpy touched ("), std::string::npos) << out->out;
}

}  // namespace
