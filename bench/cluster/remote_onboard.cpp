// Phase "onboard": workers A and B joined over UCX (--cluster-tls sm or
// tcp). A's engine offloads K blocks of 2 MiB; B's engine onboards all of
// them in onboards of --onboard-batch blocks, one at a time (B holds none:
// every block is fetched from A, then copied into B's engine region), timed
// from the first send to the last notification. In the same run, beside it:
// `kvblockd-bench transport --tls X --size 2 MiB --working-set K x 2 MiB
// --passes 2` (a child of /proc/self/exe; its steady-state pass), whose
// batches are 64 MiB too.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster_bench.h"
#include "kvb/client/client.h"
#include "kvb/common/mix64.h"
#include "worker_process.h"

extern char** environ;

namespace kvb::bench::cluster {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kTenantSalt = 0x0B0A2DULL;
/// 4 layers x (K,V) x 64 tokens x 4096 u8: 2 MiB blocks.
constexpr client::BlockShape kShape{4, 2, 64, 4096, 0, 4096};
constexpr std::uint64_t kBlockBytes = 2ULL << 20;
static_assert(4ULL * 2 * 64 * 4096 == kBlockBytes);

std::uint64_t block_hash(std::uint32_t i) { return mix64(0x2B10C5ULL + i); }

std::byte* block_data(const client::KvRegion& region, std::uint32_t block) {
  return region.chunk(block, 0, 0).data();  // fully contiguous: a block's chunks follow each other
}

/// A number of `stats` at a dotted path (-1: none).
long long stat_at(client::Client& c, std::initializer_list<const char*> path) {
  auto text = c.stats();
  if (!text) return -1;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  for (const char* key : path) {
    if (!j.is_object() || !j.contains(key)) return -1;
    j = j[key];
  }
  return j.is_number() ? j.get<long long>() : -1;
}

/// A number of member `worker` in `stats.cluster.members` (-1: none).
long long member_stat_at(client::Client& c, const std::string& worker, const char* key) {
  auto text = c.stats();
  if (!text) return -1;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("cluster") || !j["cluster"].contains("members")) return -1;
  for (const auto& m : j["cluster"]["members"]) {
    if (m.value("worker", "") == worker && m.contains(key) && m[key].is_number()) return m[key].get<long long>();
  }
  return -1;
}

/// Runs `kvblockd-bench transport` as a child and returns its "gbps".
Result<double> transport_gbps(const Flags& f, const std::string& tls) {
  // The same K distinct 2 MiB blocks: a working set of K blocks, its
  // steady-state figure ("gbps"; the first pass is the cold one).
  const std::string set = std::to_string(std::uint64_t{f.onboard_blocks} * kBlockBytes),
                    spin = std::to_string(f.spin_us);
  std::vector<std::string> args{"kvblockd-bench",
                                "transport",
                                "--tls",
                                tls,
                                "--size",
                                "2097152",
                                "--passes",
                                "2",
                                "--working-set",
                                set,
                                "--no-baseline",
                                "--am-iters",
                                "1000",
                                "--am-window",
                                "1",
                                "--spin-us",
                                spin};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return fail(Errc::io_error, "pipe2 failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    return fail(Errc::io_error, "cannot start kvblockd-bench transport: {}", std::strerror(rc));
  }
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fail(Errc::internal, "kvblockd-bench transport failed (status {})", status);
  // The last line is the JSON object (it nests objects: not the last '{').
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const auto eol = text.rfind('\n');
  auto j = nlohmann::json::parse(eol == std::string::npos ? text : text.substr(eol + 1), nullptr, false);
  if (!j.is_object() || !j.contains("gbps")) return fail(Errc::internal, "no gbps in the transport bench's output");
  return j["gbps"].get<double>();
}

}  // namespace

Result<OnboardResult> run_onboard_phase(const Flags& f, const std::string& tls) {
  OnboardResult out;
  out.tls = tls;
  const std::uint32_t k = f.onboard_blocks, batch = std::min(f.onboard_batch, f.onboard_blocks);
  std::fprintf(stderr, "cluster: remote onboard over %s: %u blocks of 2 MiB, onboards of %u\n", tls.c_str(), k, batch);
  auto args = [&](const char* name, std::uint64_t pool_blocks) {
    auto a = std::vector<std::string>{"--cluster-listen",
                                      "127.0.0.1:0",
                                      "--cluster-worker",
                                      name,
                                      "--cluster-tls",
                                      tls,
                                      "--cluster-spin-us",
                                      std::to_string(f.spin_us),
                                      "--cluster-cache-fetched",
                                      "false",
                                      "--host-pool-bytes",
                                      std::to_string(pool_blocks * kBlockBytes),
                                      "--log-level",
                                      "info"};
    a.insert(a.end(), f.worker_args.begin(), f.worker_args.end());
    return a;
  };
  WorkerProcess a, b;
  if (auto st = a.start(f.kvblockd, args("A", k)); !st)
    return fail(st.error().code, "worker A: {}", st.error().message);
  auto b_args = args("B", std::uint64_t{2} * batch);
  b_args.insert(b_args.end(), {"--cluster-peers", a.bootstrap()});
  if (auto st = b.start(f.kvblockd, b_args); !st) return fail(st.error().code, "worker B: {}", st.error().message);
  if (!b.wait_for_log("cluster: worker A joined", std::chrono::seconds(30)) ||
      !a.wait_for_log("cluster: worker B joined", std::chrono::seconds(30)))
    return fail(Errc::timeout, "A and B did not join:\n{}", b.log_tail());
  {
    static const std::regex bulk(R"(bulk by (\w+))");
    std::smatch m;
    const std::string log = a.log();
    if (std::regex_search(log, m, bulk)) out.protocol = m[1].str();
  }

  auto on_a = attach_engine(a.socket_path(), kShape, kTenantSalt, batch, std::chrono::seconds(120));
  if (!on_a) return fail(on_a.error().code, "engine on A: {}", on_a.error().message);
  auto on_b = attach_engine(b.socket_path(), kShape, kTenantSalt, batch, std::chrono::seconds(120));
  if (!on_b) return fail(on_b.error().code, "engine on B: {}", on_b.error().message);

  // A's engine: K blocks, each stamped with its hash at both ends.
  std::vector<client::OffloadItem> items;
  for (std::uint32_t first = 0; first < k; first += batch) {
    items.clear();
    for (std::uint32_t i = first; i < std::min(k, first + batch); ++i) {
      std::byte* p = block_data(*on_a->region, i - first);
      const std::uint64_t h = block_hash(i);
      std::memset(p, static_cast<int>(i & 0xFF), kBlockBytes);
      std::memcpy(p, &h, 8);
      std::memcpy(p + kBlockBytes - 8, &h, 8);
      items.push_back({BlockId{i - first}, h});
    }
    if (auto st = on_a->client->offload(items); !st)
      return fail(st.error().code, "offload on A: {}", st.error().message);
  }
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (stat_at(*on_b->client, {"cluster", "index_blocks"}) < static_cast<long long>(k)) {
    if (Clock::now() > until) return fail(Errc::timeout, "B's index did not learn A's {} blocks", k);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  auto onboard_all = [&](BenchEngine& e, std::uint32_t count) -> Status {
    std::vector<client::OnboardItem> want;
    for (std::uint32_t first = 0; first < count; first += batch) {
      want.clear();
      for (std::uint32_t i = first; i < std::min(count, first + batch); ++i)
        want.push_back({block_hash(i), BlockId{i - first}});
      if (auto st = e.client->onboard(want); !st) return st;
      for (std::uint32_t i = first; i < std::min(count, first + batch); ++i) {
        const std::byte* p = block_data(*e.region, i - first);
        std::uint64_t head = 0, tail = 0;
        std::memcpy(&head, p, 8);
        std::memcpy(&tail, p + kBlockBytes - 8, 8);
        if (head != block_hash(i) || tail != block_hash(i))
          return fail(Errc::internal, "block {} arrived on B's engine with the wrong bytes", i);
      }
    }
    return ok();
  };
  // Warm-up: one onboard (endpoints, registrations, B's pool pages).
  if (auto st = onboard_all(*on_b, batch); !st) return fail(st.error().code, "onboard on B: {}", st.error().message);
  // Same host over shared memory, B fetches from its mapping of A's pool
  // (docs/cluster.md, "Same-host mapped fetch"): its log says so.
  if (b.log().find("bulk by mapped (same host)") != std::string::npos) out.protocol = "mapped (same host)";

  // Blocks B took from A: into its G2 (blocks_in), read in place by the
  // copy into B's engine (direct_blocks: not cached, same host), or
  // written by A straight into B's engine (into_engine_blocks: not cached;
  // -1 from a kvblockd without those paths counts as 0).
  auto taken = [&] {
    return stat_at(*on_b->client, {"cluster", "fetch", "blocks_in"}) +
           std::max(0LL, stat_at(*on_b->client, {"cluster", "fetch", "direct_blocks"})) +
           std::max(0LL, stat_at(*on_b->client, {"cluster", "fetch", "into_engine_blocks"}));
  };
  if (stat_at(*on_b->client, {"cluster", "fetch", "direct_blocks"}) > 0) out.protocol = "mapped, direct";
  if (stat_at(*on_b->client, {"cluster", "fetch", "into_engine_blocks"}) > 0) out.protocol += ", into the engine";
  for (int rep = 0; rep < f.repeat; ++rep) {
    const long long before = taken();
    const long long bytes_before = member_stat_at(*on_b->client, "A", "bytes_in"),
                    us_before = member_stat_at(*on_b->client, "A", "fetch_us"),
                    served_us_before = member_stat_at(*on_a->client, "B", "serve_us");
    const auto t0 = Clock::now();
    if (auto st = onboard_all(*on_b, k); !st) return fail(st.error().code, "onboard on B: {}", st.error().message);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    {
      const long long bytes = member_stat_at(*on_b->client, "A", "bytes_in") - bytes_before,
                      us = member_stat_at(*on_b->client, "A", "fetch_us") - us_before;
      out.fetch_gbps.push_back(bytes > 0 && us > 0 ? static_cast<double>(bytes) / (static_cast<double>(us) * 1e3) : 0);
      const long long served_us = member_stat_at(*on_a->client, "B", "serve_us") - served_us_before;
      out.serve_gbps.push_back(
          bytes > 0 && served_us > 0 ? static_cast<double>(bytes) / (static_cast<double>(served_us) * 1e3) : 0);
    }
    // The same onboards on A, from its own G2: what the copy into the engine costs without the fetch.
    const auto t1 = Clock::now();
    if (auto st = onboard_all(*on_a, k); !st) return fail(st.error().code, "onboard on A: {}", st.error().message);
    out.local_gbps.push_back(static_cast<double>(k) * kBlockBytes /
                             std::chrono::duration<double>(Clock::now() - t1).count() / 1e9);
    out.fetched_blocks = static_cast<std::uint64_t>(taken() - before);
    if (out.fetched_blocks != k)
      return fail(Errc::internal, "B fetched {} blocks from A, not {}: the timing is not of remote onboards",
                  out.fetched_blocks, k);
    out.gbps.push_back(static_cast<double>(k) * kBlockBytes / s / 1e9);
    auto t = transport_gbps(f, tls);
    if (!t) return tl::unexpected(t.error());
    out.transport_gbps.push_back(*t);
    std::fprintf(
        stderr,
        "cluster:   run %d over %s: remote onboard %.3f GB/s, transport bench %.3f GB/s (%.2fx); local onboard on "
        "A %.3f GB/s; B's fetches alone %.3f GB/s (A's serving of them %.3f GB/s)\n",
        rep + 1, tls.c_str(), out.gbps.back(), *t, *t > 0 ? out.gbps.back() / *t : 0, out.local_gbps.back(),
        out.fetch_gbps.back(), out.serve_gbps.back());
  }
  (void)on_a->client->bye();
  (void)on_b->client->bye();
  return out;
}

}  // namespace kvb::bench::cluster
