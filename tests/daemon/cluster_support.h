// Helpers of the cluster tests (cluster_*_test.cpp): real kvblockd workers
// on 127.0.0.1 (or in network namespaces) and their engines.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <thread>

#include <gtest/gtest.h>

#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {

inline std::string stats_of(RawClient& client, std::uint64_t id) {
  auto stats = client.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
  return stats ? stats->json : std::string();
}

/// Polls `field` of `client`'s stats (ids from `id` on) until `done(value)`
/// or `limit` passed; the last value read. (Stats come only by request:
/// there is no event to wait on.)
template <class Done>
long long wait_stat_until(RawClient& client, std::uint64_t& id, const std::string& field, Done done,
                          std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  long long got = -1;
  for (;;) {
    got = stat_of(stats_of(client, id++), field);
    if (done(got) || std::chrono::steady_clock::now() >= until) return got;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// wait_stat_until the value equals `want`.
inline long long wait_stat(RawClient& client, std::uint64_t& id, const std::string& field, long long want,
                           std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  return wait_stat_until(
      client, id, field, [want](long long v) { return v == want; }, limit);
}

/// wait_stat_until the value is at least `want`.
inline long long wait_stat_at_least(RawClient& client, std::uint64_t& id, const std::string& field, long long want,
                                    std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  return wait_stat_until(
      client, id, field, [want](long long v) { return v >= want; }, limit);
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

/// A text field of member `worker` in the stats' cluster.members ("" : none).
inline std::string member_text(const std::string& json, const std::string& worker, const std::string& field) {
  const auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.contains("cluster")) return {};
  for (const auto& m : stats["cluster"].value("members", nlohmann::json::array())) {
    if (m.value("worker", std::string()) == worker && m.contains(field) && m[field].is_string())
      return m[field].get<std::string>();
  }
  return {};
}

/// kvblockd's arguments for worker `name` listening on `listen` (HOST:PORT).
inline std::vector<std::string> worker_args_on(const std::string& name, const std::string& tls,
                                               const std::string& listen, std::vector<std::string> more) {
  std::vector<std::string> args{"--cluster-listen", listen, "--cluster-worker", name,
                                "--cluster-tls",    tls,    "--log-level",      "debug"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

/// kvblockd's arguments for worker `name` listening on 127.0.0.1 (port 0).
inline std::vector<std::string> worker_args(const std::string& name, const std::string& tls,
                                            std::vector<std::string> more) {
  return worker_args_on(name, tls, "127.0.0.1:0", std::move(more));
}

/// How many lines of `daemon`'s log so far contain `text`.
inline std::size_t log_lines_with(const DaemonProcess& daemon, std::string_view text) {
  const std::string log = daemon.log();
  std::size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + text.size())) ++n;
  return n;
}

/// Every notification an engine gets, counted by request id: the test's
/// waits go through wait(); settle() reads what else came before a fence
/// (a stats round trip), so a second notification of a request that was
/// already answered is counted too.
class NotificationLedger {
 public:
  explicit NotificationLedger(RawClient& client) : client_(client) {}
  /// The notification of `id`, waiting at most `timeout`; counted.
  std::optional<proto::Notification> wait(std::uint64_t id, std::chrono::milliseconds timeout) {
    auto n = client_.notification_of(RequestId{id}, timeout);
    if (n) ++counts_[id];
    return n;
  }
  /// Counts every notification the daemon sent before answering a stats
  /// request `fence_id`; false when the fence got no answer.
  bool settle(std::uint64_t fence_id) {
    if (!client_.send(RequestId{fence_id}, proto::StatsRequest{})) return false;
    for (int frames = 0; frames < 100000; ++frames) {
      auto frame = client_.read_frame(std::chrono::seconds(10));
      if (!frame) return false;
      if (frame->header.type == proto::MsgType::notification) ++counts_[frame->header.request_id.value()];
      if (frame->header.type == proto::MsgType::reply && frame->header.request_id == RequestId{fence_id}) return true;
    }
    return false;
  }
  /// Requests among `ids` that did not get exactly one notification, as
  /// "id: n" (empty: every one got one).
  [[nodiscard]] std::string not_exactly_once(const std::vector<std::uint64_t>& ids) const {
    std::string out;
    for (auto id : ids) {
      const auto it = counts_.find(id);
      const int n = it == counts_.end() ? 0 : it->second;
      if (n != 1) out += std::to_string(id) + ": " + std::to_string(n) + " notifications; ";
    }
    for (const auto& [id, n] : counts_) {
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) out += "unexpected " + std::to_string(id) + "; ";
    }
    return out;
  }

 private:
  RawClient& client_;
  std::map<std::uint64_t, int> counts_;
};

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

/// Onboards the blocks offload_blocks(.., first, count, base) stored: hash
/// base + blk into engine block 8 + blk (zeroed first), for blk in
/// [first, first + count); waits for "<id>:ok" and checks each block is
/// byte-exact (block blk refilled with offload_blocks' pattern to compare).
inline ::testing::AssertionResult onboard_blocks(TestEngine& engine, std::uint64_t id, std::uint32_t first,
                                                 std::uint32_t count, std::uint64_t base,
                                                 std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  proto::OnboardRequest onboard;
  for (std::uint32_t blk = first; blk < first + count; ++blk) {
    engine.zero(8 + blk);
    onboard.items.push_back({base + blk, BlockId{8 + blk}});
  }
  if (!engine.client().call(RequestId{id}, onboard))
    return ::testing::AssertionFailure() << "onboard " << id << " not sent";
  auto onboarded = engine.client().notification_of(RequestId{id}, timeout);
  if (!onboarded) return ::testing::AssertionFailure() << "onboard " << id << ": no notification";
  if (onboarded->text != std::to_string(id) + ":ok") return ::testing::AssertionFailure() << onboarded->text;
  for (std::uint32_t blk = first; blk < first + count; ++blk) {
    engine.fill(blk, blk + 1);
    if (!engine.same(blk, 8 + blk))
      return ::testing::AssertionFailure() << "onboard " << id << ": block " << blk << " differs";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace kvb::test
