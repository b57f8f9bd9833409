// kvblockd-bench replay: the trace reader, and the replay through the real
// BlockManager against an exact LRU over prefix blocks written here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <list>
#include <random>
#include <unordered_map>

#include "belady_policy.h"
#include "replay.h"
#include "trace_reader.h"

namespace kvb::bench {
namespace {

// ---- an independent reference: exact LRU over prefix blocks ---------------
// A request hits its longest cached prefix. All of its cached blocks are
// pinned; missing blocks are inserted, as many as fit beside the pinned ones
// (the earliest first), evicting the least recently used unpinned blocks.
// Then the request's blocks are touched from the last to the first, so the
// head of a sequence is more recent than its tail.
std::uint64_t reference_lru_hits(std::span<const TraceRequest> trace, std::size_t capacity) {
  std::list<std::uint64_t> order;  // front = least recently used
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where;
  std::uint64_t hits = 0;
  for (const auto& req : trace) {
    const auto& ids = req.hash_ids;
    std::size_t m = 0;
    while (m < ids.size() && where.contains(ids[m])) ++m;
    hits += m;
    std::unordered_map<std::uint64_t, bool> pinned;
    std::vector<std::uint64_t> missing;
    for (auto id : ids) {
      if (where.contains(id))
        pinned[id] = true;
      else
        missing.push_back(id);
    }
    const std::size_t k = std::min(missing.size(), capacity - pinned.size());
    std::vector<std::uint64_t> placed;
    for (std::size_t j = 0; j < k; ++j) {
      if (where.size() == capacity) {
        auto victim = order.begin();
        while (pinned.contains(*victim)) ++victim;
        where.erase(*victim);
        order.erase(victim);
      }
      order.push_back(missing[j]);
      where[missing[j]] = std::prev(order.end());
      pinned[missing[j]] = true;
    }
    for (std::size_t i = ids.size(); i-- > 0;) {
      auto it = where.find(ids[i]);
      if (it == where.end()) continue;  // did not fit
      order.splice(order.end(), order, it->second);
    }
  }
  return hits;
}

// Conversations that grow turn by turn over a shared system-prompt block,
// plus a few one-off requests longer than the cache.
std::vector<TraceRequest> synthetic_trace(std::size_t requests, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<std::uint64_t>> conversations(25, std::vector<std::uint64_t>{0});
  std::uint64_t next_id = 1;
  std::vector<TraceRequest> trace;
  for (std::size_t r = 0; r < requests; ++r) {
    TraceRequest req;
    if (rng() % 40 == 0) {
      req.hash_ids.push_back(0);
      for (int i = 0; i < 70; ++i) req.hash_ids.push_back(next_id++);
    } else {
      auto& conv = conversations[rng() % conversations.size()];
      const int grow = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < grow; ++i) conv.push_back(next_id++);
      if (conv.size() > 40) conv.resize(1 + rng() % 3);  // a new conversation reuses a short prefix
      req.hash_ids = conv;
    }
    trace.push_back(std::move(req));
  }
  return trace;
}

std::string shared_trace_path() {
  if (const char* env = std::getenv("KVB_TRACE")) return env;
  return std::string(KVB_SOURCE_DIR) + "/../shared/traces/conversation_trace.jsonl";
}

TEST(Replay, LruEqualsTheReferenceLruOnASyntheticTrace) {
  const auto trace = synthetic_trace(3000, 42);
  for (std::size_t capacity : {8, 30, 64, 200}) {
    ReplayConfig config;
    config.block_tokens = 512;
    config.capacity_tokens = capacity * 512;
    config.policy = "lru";
    auto r = replay_trace(trace, config);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(r->hit_blocks, reference_lru_hits(trace, capacity)) << "capacity " << capacity;
    EXPECT_GT(r->evictions, 0U);
    // The comparison is sensitive: another policy gives another count (at
    // 8 blocks the cache is too small for the policies to differ).
    if (capacity < 30) continue;
    config.policy = "s3fifo";
    auto other = replay_trace(trace, config);
    ASSERT_TRUE(other.has_value());
    EXPECT_NE(other->hit_blocks, r->hit_blocks) << "capacity " << capacity;
  }
}

TEST(Replay, LruEqualsTheReferenceLruOnTheSharedTrace) {
  const auto path = shared_trace_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared trace at " << path << " (set KVB_TRACE)";
  auto trace = read_trace(path, 2000);
  ASSERT_TRUE(trace.has_value()) << trace.error().to_string();
  ASSERT_EQ(trace->size(), 2000U);
  for (std::size_t capacity : {100, 1000}) {
    ReplayConfig config;
    config.capacity_tokens = capacity * 512;
    config.policy = "lru";
    auto r = replay_trace(*trace, config);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(r->hit_blocks, reference_lru_hits(*trace, capacity)) << "capacity " << capacity;
    EXPECT_GT(r->hit_blocks, 0U);
  }
}

TEST(Replay, UnboundedCapacityReachesTheTheoreticalMaximum) {
  const auto trace = synthetic_trace(500, 7);
  for (const char* policy : {"lru", "s3fifo", "prefix", "belady"}) {
    ReplayConfig config;
    config.capacity_tokens = 0;
    config.policy = policy;
    auto r = replay_trace(trace, config);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->hit_blocks, r->unbounded_hit_blocks) << policy;
    EXPECT_EQ(r->evictions, 0U) << policy;
  }
}

TEST(Replay, AG2TierOnlyAddsHits) {
  const auto trace = synthetic_trace(2000, 9);
  ReplayConfig g1_only;
  g1_only.capacity_tokens = 30ULL * 512;
  ReplayConfig tiered = g1_only;
  tiered.host_capacity_tokens = 300ULL * 512;
  auto a = replay_trace(trace, g1_only);
  auto b = replay_trace(trace, tiered);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_GT(b->hit_blocks, a->hit_blocks);
  EXPECT_GT(b->g2_hit_blocks, 0U);
  EXPECT_GT(b->offloads, 0U);
  EXPECT_EQ(b->onboards, b->g2_hit_blocks);
  EXPECT_LE(b->hit_blocks, b->unbounded_hit_blocks);
}

TEST(Replay, BeladyIsAnUpperBoundForEveryPolicy) {
  const auto trace = synthetic_trace(3000, 11);
  for (std::size_t capacity : {16, 40, 120}) {
    ReplayConfig config;
    config.capacity_tokens = capacity * 512;
    config.policy = "belady";
    auto best = replay_trace(trace, config);
    ASSERT_TRUE(best.has_value()) << best.error().to_string();
    for (const char* policy : {"lru", "s3fifo", "prefix"}) {
      config.policy = policy;
      auto r = replay_trace(trace, config);
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      EXPECT_GE(best->hit_blocks, r->hit_blocks) << policy << " at " << capacity << " blocks";
    }
    config.host_capacity_tokens = capacity * 4 * 512;  // and with a G2 tier
    config.policy = "belady";
    auto tiered = replay_trace(trace, config);
    ASSERT_TRUE(tiered.has_value()) << tiered.error().to_string();
    EXPECT_GE(tiered->hit_blocks, best->hit_blocks);
  }
}

TEST(Replay, TraceFutureAnswersTheNextRequestThatNamesAHash) {
  std::vector<TraceRequest> trace(4);
  trace[0].hash_ids = {1, 2};
  trace[1].hash_ids = {1};
  trace[3].hash_ids = {2, 2};
  TraceFuture future(trace);
  future.set_now(0);
  EXPECT_EQ(future.next_use(SequenceHash{1}), 1U);
  EXPECT_EQ(future.next_use(SequenceHash{2}), 3U);
  EXPECT_EQ(future.next_use(SequenceHash{9}), TraceFuture::kNever);
  future.set_now(1);
  EXPECT_EQ(future.next_use(SequenceHash{1}), TraceFuture::kNever);
  EXPECT_EQ(future.next_use(SequenceHash{2}), 3U);
}

TEST(Replay, PrefixBeatsLruOnTheSharedTraceAtEveryCapacityOfTheTable) {
  const auto path = shared_trace_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared trace at " << path << " (set KVB_TRACE)";
  auto trace = read_trace(path);
  ASSERT_TRUE(trace.has_value()) << trace.error().to_string();
  for (std::uint64_t tokens : {1'000'000, 3'000'000, 10'000'000, 30'000'000}) {
    ReplayConfig config;
    config.capacity_tokens = tokens;
    config.policy = "lru";
    auto lru = replay_trace(*trace, config);
    config.policy = "prefix";
    auto prefix = replay_trace(*trace, config);
    ASSERT_TRUE(lru.has_value() && prefix.has_value());
    EXPECT_GE(prefix->hit_ratio(), lru->hit_ratio() - 0.002) << tokens << " tokens";
    if (tokens == 3'000'000) {
      EXPECT_GT(prefix->hit_ratio(), lru->hit_ratio() + 0.04) << "3M: the gain that matters";
    }
  }
}

TEST(Replay, PrefixFiguresDoNotDependOnThePaceOfTheTrace) {
  // The same requests 700 times faster (kvblockd-bench cluster sends the
  // hour-long trace to real daemons in about 5 s) hit the same blocks: the
  // policy measures idleness in uses, not clock time. With the former
  // 4-minute wall-clock bonus the fast copy fell from 0.186 to 0.150 at 3 M
  // tokens (and below LRU at 12 M).
  const auto path = shared_trace_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no shared trace at " << path << " (set KVB_TRACE)";
  auto trace = read_trace(path);
  ASSERT_TRUE(trace.has_value()) << trace.error().to_string();
  auto fast = *trace;
  for (auto& req : fast) req.timestamp_ms /= 700;
  ReplayConfig config;
  config.capacity_tokens = 3'000'000;
  config.policy = "prefix";
  auto real_pace = replay_trace(*trace, config);
  auto fast_pace = replay_trace(fast, config);
  ASSERT_TRUE(real_pace.has_value() && fast_pace.has_value());
  EXPECT_EQ(fast_pace->hit_blocks, real_pace->hit_blocks)
      << "hit ratio " << fast_pace->hit_ratio() << " at 700x the pace vs " << real_pace->hit_ratio();
}

TEST(Replay, RejectsACapacityBelowOneBlockAndUnknownPolicies) {
  const auto trace = synthetic_trace(10, 1);
  ReplayConfig config;
  config.capacity_tokens = 100;
  auto small = replay_trace(trace, config);
  ASSERT_FALSE(small.has_value());
  EXPECT_NE(small.error().message.find("capacity-tokens 100"), std::string::npos) << small.error().message;
  config.capacity_tokens = 0;
  config.policy = "clock";
  auto bad = replay_trace(trace, config);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("prefix, lru, s3fifo, belady"), std::string::npos) << bad.error().message;
}

// ---- the trace reader -------------------------------------------------------

TEST(TraceReader, ParsesAMooncakeLine) {
  auto r = parse_trace_line(
      R"({"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 2000000000000]})", 1);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->timestamp_ms, 27482);
  EXPECT_EQ(r->input_length, 6955U);
  EXPECT_EQ(r->output_length, 52U);
  EXPECT_EQ(r->hash_ids, (std::vector<std::uint64_t>{46, 47, 2000000000000}));
}

TEST(TraceReader, SkipsUnknownKeysAndAcceptsEmptyLists) {
  auto r = parse_trace_line(
      R"({"hash_ids":[],"extra":{"a":[1,"x\"y",null,true]},"timestamp":1.5,"input_length":0,"output_length":0})", 3);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->hash_ids.empty());
  EXPECT_EQ(r->timestamp_ms, 1.5);
}

TEST(TraceReader, ErrorsNameTheLineAndWhatWasExpected) {
  struct Case {
    const char* line;
    const char* expect;
  };
  for (const Case& c : {
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1})", "missing field 'hash_ids'"},
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1, -2]})", "hash_ids"},
           Case{R"({"timestamp": 0, "input_length": 1.5, "output_length": 1, "hash_ids": []})", "fraction"},
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1 2]})", "expected ']'"},
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": []} x)",
                "expected end of input"},
           Case{R"({"timestamp": x})", "invalid literal"},
           Case{R"({"timestamp": "0", "input_length": 1, "output_length": 1, "hash_ids": []})", "expected a number"},
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1, [2]]})", "hash_ids"},
           Case{R"([1, 2])", "expected '{'"},
           Case{R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1)", "end of input"},
       }) {
    auto r = parse_trace_line(c.line, 17);
    ASSERT_FALSE(r.has_value()) << c.line;
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find("line 17"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << r.error().message;
  }
}

TEST(TraceReader, AMissingFileIsAnIoError) {
  auto r = read_trace("/nonexistent/trace.jsonl");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::io_error);
  EXPECT_NE(r.error().message.find("/nonexistent/trace.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace kvb::bench
