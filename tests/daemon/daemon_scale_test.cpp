// The real kvblockd process with 1,000 concurrent connections.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {
namespace {

TEST(DaemonScale, ThousandConcurrentClientsAreAllServed) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 1100) GTEST_SKIP() << "open file limit " << limit.rlim_cur << " is under 1100";

  DaemonProcess daemon(KVBLOCKD_PATH);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  constexpr int kClients = 1000;
  std::vector<RawClient> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(daemon.socket_path());
    ASSERT_TRUE(clients.back().connected()) << "client " << i;
  }
  // Every client sends before any reads: all 1,000 are in the daemon at once.
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i].send(
        RequestId{1}, proto::HelloRequest{1, 1, std::string("c").append(std::to_string(i)), 5, small_layout()}));
    ASSERT_TRUE(clients[i].send(RequestId{2}, proto::LookupRequest{false, {1, 2, 3}}));
  }
  for (int i = 0; i < kClients; ++i) {
    auto hello = clients[i].reply_to(RequestId{1});
    ASSERT_TRUE(hello && hello->code == Errc::ok) << "client " << i;
    auto lookup = clients[i].reply_to(RequestId{2});
    ASSERT_TRUE(lookup && lookup->code == Errc::ok) << "client " << i;
  }
  auto stats = clients[0].call_body<proto::StatsReply>(RequestId{3}, proto::StatsRequest{});
  ASSERT_TRUE(stats);
  EXPECT_EQ(stat_of(stats->json, "sessions"), kClients) << stats->json;
  clients.clear();
  RawClient last(daemon.socket_path());
  // Closed connections end their sessions (bounded poll of stats).
  long long sessions = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (std::uint64_t id = 1; std::chrono::steady_clock::now() < deadline; ++id) {
    auto now = last.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
    ASSERT_TRUE(now);
    sessions = stat_of(now->json, "sessions");
    if (sessions == 1) break;
  }
  EXPECT_EQ(sessions, 1);
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
