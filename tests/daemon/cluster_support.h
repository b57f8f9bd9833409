// Helpers of the cluster tests (cluster_test.cpp, cluster_etcd_test.cpp):
// real kvblockd workers on 127.0.0.1 and their engines.
#pragma once

#include <cstdint>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {

inline std::string stats_of(RawClient& client, std::uint64_t id) {
  auto stats = client.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
  return stats ? stats->json : std::string();
}

/// The bootstrap address a worker logged ("cluster: worker W of cluster 'C' on HOST:PORT").
inline std::string bootstrap_of(const DaemonProcess& daemon) {
  std::smatch match;
  const std::string log = daemon.log();
  static const std::regex line(R"(cluster: worker \S+ of cluster '[^']*' on (\S+:\d+))");
  return std::regex_search(log, match, line) ? match[1].str() : std::string();
}

/// A number of member `worker` in the stats' cluster.members (-1: none).
inline long long member_stat(const std::string& json, const std::string& worker, const std::string& field) {
  const auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.contains("cluster")) return -1;
  for (const auto& m : stats["cluster"].value("members", nlohmann::json::array())) {
    if (m.value("worker", std::string()) == worker && m.contains(field) && m[field].is_number())
      return m[field].get<long long>();
  }
  return -1;
}

/// kvblockd's arguments for worker `name` listening on 127.0.0.1 (port 0).
inline std::vector<std::string> worker_args(const std::string& name, const std::string& tls,
                                            std::vector<std::string> more) {
  std::vector<std::string> args{"--cluster-listen", "127.0.0.1:0", "--cluster-worker", name,
                                "--cluster-tls",    tls,           "--log-level",      "debug"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

/// Offloads engine blocks [first, first + count) of `engine` (filled with
/// seed block + 1) under hashes base + block; true once the daemon answered ok.
inline ::testing::AssertionResult offload_blocks(TestEngine& engine, std::uint64_t id, std::uint32_t first,
                                                 std::uint32_t count, std::uint64_t base) {
  proto::OffloadRequest offload;
  for (std::uint32_t blk = first; blk < first + count; ++blk) {
    engine.fill(blk, blk + 1);
    offload.items.push_back({BlockId{blk}, base + blk});
  }
  auto accepted = engine.client().call(RequestId{id}, offload);
  if (!accepted || !accepted->accepted) return ::testing::AssertionFailure() << "offload " << id << " not accepted";
  auto stored = engine.client().notification_of(RequestId{id});
  if (!stored) return ::testing::AssertionFailure() << "offload " << id << ": no notification";
  if (stored->text != std::to_string(id) + ":ok") return ::testing::AssertionFailure() << stored->text;
  return ::testing::AssertionSuccess();
}

}  // namespace kvb::test
