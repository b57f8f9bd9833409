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

  DaemonProcess daemon(KVBLOCKD_PATH, {"--log-level", "debug"});  // logs "session N ended"
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
  // Closed connections end their sessions: wait for the daemon to log each end.
  const bool ended = daemon.wait_for_log_lines(
      [](std::string_view line) {
        return line.find("] session ") != std::string_view::npos && line.ends_with(" ended");
      },
      kClients, std::chrono::seconds(30));
  ASSERT_TRUE(ended) << "not every closed connection ended its session";
  auto now = last.call_body<proto::StatsReply>(RequestId{1}, proto::StatsRequest{});
  ASSERT_TRUE(now);
  EXPECT_EQ(stat_of(now->json, "sessions"), 1) << now->json;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
