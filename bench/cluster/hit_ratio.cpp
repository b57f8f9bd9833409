// Phase "hit": the trace through real kvblockd workers, request i on worker
// i % N (round robin: the turns of one conversation land on different
// workers, the case a shared cache is for). Per request, as an engine does:
// lookup of its hash ids; onboard of the matched prefix (local G2 blocks and
// tier-4 blocks fetched from the worker holding them: a hit counts only once
// its bytes arrived); offload of the blocks it missed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>

#include "cluster_bench.h"
#include "kvb/client/client.h"
#include "kvb/common/mix64.h"
#include "worker_process.h"

namespace kvb::bench::cluster {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kTenantSalt = 0xC1057E5ULL;
/// 1 layer x (K,V) x 16 tokens x 128 u8: 4 KiB blocks. Only hit ratios are
/// measured here: the bytes per block do not change them.
constexpr client::BlockShape kShape{1, 2, 16, 128, 0, 256};

/// Starts `workers` kvblockd, joined into one cluster when `cluster`.
Result<std::vector<std::unique_ptr<WorkerProcess>>> start_workers(const Flags& f, std::uint32_t workers,
                                                                  std::uint64_t blocks, bool cluster) {
  std::vector<std::unique_ptr<WorkerProcess>> procs;
  std::vector<std::string> peers;
  for (std::uint32_t w = 0; w < workers; ++w) {
    std::vector<std::string> args{"--host-pool-bytes", std::to_string(blocks * client::block_bytes(kShape)),
                                  "--eviction-policy", f.eviction_policy,
                                  "--log-level",       "info"};
    if (cluster) {
      for (const auto& a : {"--cluster-listen", "127.0.0.1:0", "--cluster-worker"}) args.emplace_back(a);
      args.push_back(fmt::format("w{}", w));
      args.insert(args.end(),
                  {"--cluster-tls", f.hit_tls, "--cluster-cache-fetched", f.cache_fetched ? "true" : "false"});
      for (const auto& p : peers) args.insert(args.end(), {"--cluster-peers", p});
    }
    auto proc = std::make_unique<WorkerProcess>();
    if (auto st = proc->start(f.kvblockd, std::move(args)); !st)
      return fail(st.error().code, "worker w{}: {}", w, st.error().message);
    if (cluster) peers.push_back(proc->bootstrap());
    procs.push_back(std::move(proc));
  }
  if (cluster) {
    for (std::uint32_t w = 0; w < workers; ++w)
      for (std::uint32_t o = 0; o < workers; ++o) {
        if (o == w) continue;
        const std::string line = fmt::format("cluster: worker w{} joined", o);
        if (!procs[w]->wait_for_log(line, std::chrono::seconds(30)))
          return fail(Errc::timeout, "worker w{} did not log '{}':\n{}", w, line, procs[w]->log_tail());
      }
  }
  return procs;
}

/// A KV-aware router's pick for request `i`, as SGLang's router does it
/// (its cache threshold, 0.5 by default): the worker whose prefix of
/// `hashes` is longest (`locate`: one call answers for a cluster, each
/// worker answers for itself otherwise), round robin among the longest,
/// when that prefix covers at least half of the request; round robin
/// otherwise (the trace's requests all begin with one shared block: by the
/// longest prefix alone, every request would go to its first holder).
std::size_t locate_route(std::vector<BenchEngine>& engines, const std::vector<std::uint64_t>& hashes, std::size_t i,
                         bool cluster, std::uint64_t& errors) {
  const std::size_t rr = i % engines.size();
  std::vector<std::uint32_t> prefix(engines.size(), 0);
  auto index_of = [&](const std::string& worker) -> std::optional<std::size_t> {
    // Workers are named w0, w1, ... (alone: "").
    if (worker.size() < 2 || worker[0] != 'w') return std::nullopt;
    const auto k = static_cast<std::size_t>(std::strtoul(worker.c_str() + 1, nullptr, 10));
    return k < engines.size() ? std::optional<std::size_t>(k) : std::nullopt;
  };
  for (std::size_t e = 0; e < engines.size(); ++e) {
    if (cluster && e != rr) continue;  // one call answers for every worker
    auto found = engines[e].client->locate(hashes);
    if (!found) {
      if (errors++ < 5) std::fprintf(stderr, "cluster: locate: %s\n", found.error().to_string().c_str());
      return rr;
    }
    if (!cluster) {
      if (!found->empty()) prefix[e] = found->front().prefix_blocks;
      continue;
    }
    for (const auto& wp : *found) {
      if (auto k = index_of(wp.worker)) prefix[*k] = std::max(prefix[*k], wp.prefix_blocks);
    }
  }
  const std::uint32_t best = *std::max_element(prefix.begin(), prefix.end());
  if (2 * std::uint64_t{best} < hashes.size() || prefix[rr] == best) return rr;
  for (std::size_t k = 1; k <= engines.size(); ++k) {
    const std::size_t e = (rr + k) % engines.size();
    if (prefix[e] == best) return e;
  }
  return rr;
}

Result<HitRun> run_one(const Flags& f, const std::vector<std::vector<std::uint64_t>>& requests, HitRun run) {
  std::fprintf(stderr, "cluster: hit ratio, %s: %u worker(s) of %llu blocks%s\n", run.name.c_str(), run.workers,
               static_cast<unsigned long long>(run.blocks_per_worker), run.cluster ? " as one cluster" : "");
  auto procs = start_workers(f, run.workers, run.blocks_per_worker, run.cluster);
  if (!procs) return tl::unexpected(procs.error());
  std::uint32_t longest = 1;
  for (const auto& r : requests) longest = std::max<std::uint32_t>(longest, static_cast<std::uint32_t>(r.size()));
  std::vector<BenchEngine> engines;
  for (auto& p : *procs) {
    auto a = attach_engine(p->socket_path(), kShape, kTenantSalt, longest);
    if (!a) return fail(a.error().code, "attach to {}: {}", p->socket_path(), a.error().message);
    engines.push_back(std::move(*a));
  }

  const auto t0 = Clock::now();
  auto last_progress = t0;
  std::vector<client::OnboardItem> onboard;
  std::vector<client::OffloadItem> offload;
  const auto pace = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(f.pace_ms));
  run.routed.assign(engines.size(), 0);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (run.cluster && pace.count() > 0) std::this_thread::sleep_until(t0 + pace * static_cast<std::int64_t>(i));
    const auto& hashes = requests[i];
    const std::size_t w =
        f.route == "locate" ? locate_route(engines, hashes, i, run.cluster, run.errors) : i % engines.size();
    ++run.routed[w];
    client::Client& c = *engines[w].client;
    std::uint32_t matched = 0, remote = 0;
    bool served = false;
    for (int attempt = 0; attempt < 3 && !served; ++attempt) {
      auto found = c.lookup(hashes);
      if (!found) {
        if (run.errors++ < 5) std::fprintf(stderr, "cluster: lookup: %s\n", found.error().to_string().c_str());
        break;
      }
      matched = found->prefix_blocks;
      remote = 0;
      for (const auto& t : found->tiers)
        if (t.tier == proto::WireTier::g4) remote = t.blocks;
      if (matched == 0) {
        served = true;
        break;
      }
      onboard.clear();
      for (std::uint32_t k = 0; k < matched; ++k) onboard.push_back({hashes[k], BlockId{k}});
      if (auto st = c.onboard(onboard); st) {
        served = true;
      } else {
        // A block left its holder after the lookup (evicted; the index event
        // had not arrived yet): look up again.
        ++run.retries;
        if (run.retries <= 5)
          std::fprintf(stderr, "cluster: onboard: %s (looked up again)\n", st.error().to_string().c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    if (!served) {
      ++run.errors;
      matched = remote = 0;
    }
    run.blocks += hashes.size();
    run.hits += matched;
    run.remote_hits += remote;
    offload.clear();
    for (std::uint32_t k = matched; k < hashes.size(); ++k) offload.push_back({BlockId{k}, hashes[k]});
    if (!offload.empty()) {
      if (auto st = c.offload(offload); !st && run.errors++ < 5)
        std::fprintf(stderr, "cluster: offload: %s\n", st.error().to_string().c_str());
    }
    if (Clock::now() - last_progress > std::chrono::seconds(5)) {
      last_progress = Clock::now();
      std::fprintf(stderr, "cluster:   %zu/%zu requests, hit ratio so far %.3f\n", i + 1, requests.size(), run.ratio());
    }
  }
  run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::fprintf(stderr, "cluster:   %s: hit ratio %.4f (%llu of %llu blocks, %llu from other workers) in %.1f s\n",
               run.name.c_str(), run.ratio(), static_cast<unsigned long long>(run.hits),
               static_cast<unsigned long long>(run.blocks), static_cast<unsigned long long>(run.remote_hits),
               run.seconds);
  if (run.routed.size() > 1) {
    std::string shares;
    for (std::size_t w = 0; w < run.routed.size(); ++w)
      shares += fmt::format("{}{:.3f}", w ? " " : "", static_cast<double>(run.routed[w]) / requests.size());
    std::fprintf(stderr, "cluster:   %s: requests per worker (%s): %s\n", run.name.c_str(), f.route.c_str(),
                 shares.c_str());
  }
  for (auto& e : engines) (void)e.client->bye();
  engines.clear();
  for (auto& p : *procs) p->stop();
  return run;
}

}  // namespace

std::uint64_t trace_hash(std::uint64_t id) { return mix64(id + 0x7124CE); }

Result<HitResult> run_hit_phase(const Flags& f, const std::vector<TraceRequest>& trace) {
  HitResult out;
  std::vector<std::vector<std::uint64_t>> requests;
  for (const auto& t : trace) {
    if (t.hash_ids.empty()) continue;
    if (f.requests > 0 && requests.size() >= f.requests) break;
    std::vector<std::uint64_t> h;
    h.reserve(t.hash_ids.size());
    for (auto id : t.hash_ids) h.push_back(trace_hash(id));
    requests.push_back(std::move(h));
  }
  out.requests = requests.size();
  // The theoretical maximum: every block ever offloaded is still held.
  std::unordered_set<std::uint64_t> seen;
  std::uint64_t blocks = 0, hits = 0;
  for (const auto& r : requests) {
    std::size_t k = 0;
    while (k < r.size() && seen.contains(r[k])) ++k;
    hits += k;
    blocks += r.size();
    seen.insert(r.begin(), r.end());
  }
  out.unbounded = blocks ? static_cast<double>(hits) / static_cast<double>(blocks) : 0;

  const std::uint64_t per_worker = f.tokens_per_worker / f.block_tokens;
  const std::uint64_t all = f.tokens_per_worker * f.workers / f.block_tokens;
  const HitRun configs[] = {
      {.name = "alone", .workers = f.workers, .blocks_per_worker = per_worker, .cluster = false},
      {.name = "cluster", .workers = f.workers, .blocks_per_worker = per_worker, .cluster = true},
      {.name = "one worker", .workers = 1, .blocks_per_worker = all, .cluster = false},
  };
  for (const auto& cfg : configs) {
    auto run = run_one(f, requests, cfg);
    if (!run) return tl::unexpected(run.error());
    out.runs.push_back(std::move(*run));
  }
  return out;
}

}  // namespace kvb::bench::cluster
