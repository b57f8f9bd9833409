// kvblockd-bench cluster --workers N --trace FILE [--requests K] [--phases hit,onboard,index] [--full]
// Real kvblockd workers on 127.0.0.1 (cluster_bench.h has the phases).
// Progress on stderr; a table with the targets, then (last stdout
// line) one JSON object with every figure.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cluster_bench.h"
#include "kvb/common/logging.h"
#include "subcommands.h"

namespace kvb::bench {

namespace cluster {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

namespace {

const char* met(bool ok) { return ok ? "met" : "NOT met"; }

}  // namespace

}  // namespace cluster

int run_cluster(int argc, char** argv) {
  using namespace cluster;
  Flags f;
  const char* env = std::getenv("KVB_KVBLOCKD");
  f.kvblockd = env != nullptr && *env != '\0' ? env : KVB_KVBLOCKD_PATH;
  bool full = false;
  CLI::App app{
      "kvblockd workers as one cache: hit ratio alone vs as one cluster, remote onboard GB/s beside the "
      "transport bench, what index events cost a worker's lookups",
      "kvblockd-bench cluster"};
  app.add_option("--kvblockd", f.kvblockd, "the kvblockd binary (default: $KVB_KVBLOCKD, else the one built here)")
      ->capture_default_str();
  app.add_option("--trace", f.trace, "Mooncake-format JSONL trace (hash_ids of 512-token blocks)")
      ->capture_default_str()
      ->check(CLI::ExistingFile);
  app.add_option("--workers", f.workers, "workers of the hit-ratio phase")
      ->capture_default_str()
      ->check(CLI::Range(1U, 16U));
  app.add_option("--tokens-per-worker", f.tokens_per_worker, "capacity of each worker's host pool, in trace tokens")
      ->capture_default_str();
  app.add_option("--requests", f.requests, "replay only the first K requests of the trace (0: all)")
      ->capture_default_str();
  app.add_option("--eviction-policy", f.eviction_policy,
                 "the workers' eviction_policy (auto: the daemon's default, prefix; in the cluster run it counts "
                 "idleness in each worker's share of the traffic)")
      ->capture_default_str()
      ->check(CLI::IsMember({"prefix", "lru", "s3fifo", "auto"}));
  app.add_option("--cache-fetched", f.cache_fetched,
                 "cluster.cache_fetched of the clustered workers (false: a fetched block is not kept twice)")
      ->capture_default_str();
  app.add_option("--hit-tls", f.hit_tls, "UCX_TLS of the hit-ratio and index phases")
      ->capture_default_str()
      ->check(CLI::IsMember({"tcp", "sm"}));
  app.add_option("--route", f.route,
                 "hit phase: which worker gets a request: round-robin (request i on worker i % N), or locate (a "
                 "KV-aware router like SGLang's: the worker whose prefix of the request is longest, by `locate`, "
                 "when it covers at least half of the request; round robin otherwise); each run prints the "
                 "workers' shares of the requests")
      ->capture_default_str()
      ->check(CLI::IsMember({"round-robin", "locate"}));
  app.add_option("--pace-ms", f.pace_ms,
                 "hit phase, cluster run: one request per this many ms at most (0: back to back); at 2 x "
                 "cluster.index_flush_ms or more each request sees the index events of the ones before it")
      ->capture_default_str();
  app.add_option("--phases", f.phases, "which phases: hit, onboard, index")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"hit", "onboard", "index"}));
  app.add_option("--onboard-tls", f.onboard_tls, "transports of the onboard phase")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"tcp", "sm"}));
  app.add_option("--onboard-blocks", f.onboard_blocks, "2 MiB blocks offloaded on A and onboarded on B")
      ->capture_default_str()
      ->check(CLI::Range(1U, 8192U));
  app.add_option("--onboard-batch", f.onboard_batch, "blocks per onboard")
      ->capture_default_str()
      ->check(CLI::Range(1U, 1024U));
  app.add_flag("--full", full, "the issue's sizes: 512 blocks of 2 MiB (1 GiB) per onboard pass, 3 repetitions");
  app.add_option("--spin-us", f.spin_us, "cluster.spin_us of the onboard workers and --spin-us of the transport bench")
      ->capture_default_str();
  app.add_option("--worker-arg", f.worker_args,
                 "one more kvblockd argument for both onboard workers (repeat it: --worker-arg --cluster-connect "
                 "--worker-arg address)")
      ->allow_extra_args(false);
  app.add_option("--repeat", f.repeat, "repetitions of the onboard phase (figures are medians)")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--index-seconds", f.index_seconds, "seconds per lookup measurement")->capture_default_str();
  app.add_option("--index-rounds", f.index_rounds, "rounds of (peer not joined, peer joined)")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--peer-blocks-per-s", f.peer_blocks_per_s,
                 "index phase: blocks per second the peer offloads (each one stored, later evicted: 2 index events); "
                 "0: as fast as it can")
      ->capture_default_str();
  app.add_option("--lookup-sessions", f.lookup_sessions, "sessions looking up on the measured worker")
      ->capture_default_str()
      ->check(CLI::Range(1U, 256U));
  CLI11_PARSE(app, argc, argv);
  if (full) {
    f.onboard_blocks = std::max<std::uint32_t>(f.onboard_blocks, 512);
    f.repeat = std::max(f.repeat, 3);
  }
  if (auto st = kvb::setup_logging("warn"); !st) return 2;
  auto wants = [&](const char* p) { return std::find(f.phases.begin(), f.phases.end(), p) != f.phases.end(); };

  nlohmann::ordered_json json{{"bench", "cluster"}, {"kvblockd", f.kvblockd}};
  std::string table;
  std::uint64_t errors = 0;
  bool failed = false;

  if (wants("hit")) {
    auto trace = read_trace(f.trace, f.requests);
    if (!trace) {
      std::fprintf(stderr, "cluster: %s\n", trace.error().to_string().c_str());
      return 2;
    }
    auto hit = run_hit_phase(f, *trace);
    if (!hit) {
      std::fprintf(stderr, "cluster: hit phase: %s\n", hit.error().to_string().c_str());
      failed = true;
    } else {
      const auto& runs = hit->runs;
      const double gap = runs[1].ratio() - runs[2].ratio();
      const bool ok = gap >= -0.01;
      table += fmt::format(
          "hit ratio: {} requests of {}, {} ({} workers), 4 KiB blocks of 512 trace tokens,\n"
          "  eviction policy {}, cluster over UCX_TLS {}, cluster.cache_fetched {}\n",
          hit->requests, f.trace,
          f.route == "locate"
              ? "routed by locate (the longest prefix when it covers half the request, else round robin)"
              : "round robin (request i on worker i % N)",
          f.workers, f.eviction_policy, f.hit_tls, f.cache_fetched);
      table += fmt::format("  {:<34} {:>8} {:>12} {:>9} {:>11} {:>8} {:>7} {:>7}\n", "run", "workers", "blocks each",
                           "hit ratio", "from others", "retries", "errors", "s");
      nlohmann::ordered_json jruns = nlohmann::ordered_json::array();
      for (const auto& r : runs) {
        const std::string label = r.name == "alone"     ? fmt::format("{} workers alone", r.workers)
                                  : r.name == "cluster" ? fmt::format("{} workers as one cluster", r.workers)
                                                        : std::string("one worker, all the capacity");
        table += fmt::format("  {:<34} {:>8} {:>12} {:>9.4f} {:>11} {:>8} {:>7} {:>7.1f}\n", label, r.workers,
                             r.blocks_per_worker, r.ratio(), r.remote_hits, r.retries, r.errors, r.seconds);
        errors += r.errors;
        jruns.push_back({{"run", r.name},
                         {"workers", r.workers},
                         {"blocks_per_worker", r.blocks_per_worker},
                         {"hit_ratio", r.ratio()},
                         {"blocks", r.blocks},
                         {"hits", r.hits},
                         {"remote_hits", r.remote_hits},
                         {"retries", r.retries},
                         {"errors", r.errors},
                         {"routed", r.routed},
                         {"seconds", r.seconds}});
      }
      table +=
          fmt::format("  {:<34} {:>8} {:>12} {:>9.4f}\n", "unbounded (theoretical maximum)", "-", "-", hit->unbounded);
      table +=
          fmt::format("  gain of the cluster over the workers alone: {:+.4f}\n", runs[1].ratio() - runs[0].ratio());
      table += fmt::format(
          "  target: {} workers of {} tokens reach one worker of {} tokens (within 0.01): gap {:+.4f}: {}\n", f.workers,
          f.tokens_per_worker, f.tokens_per_worker * f.workers, gap, met(ok));
      json["hit"] = {{"requests", hit->requests},
                     {"assignment", f.route == "locate" ? "locate" : "round_robin"},
                     {"eviction_policy", f.eviction_policy},
                     {"tls", f.hit_tls},
                     {"cache_fetched", f.cache_fetched},
                     {"route", f.route},
                     {"tokens_per_worker", f.tokens_per_worker},
                     {"runs", jruns},
                     {"unbounded_hit_ratio", hit->unbounded},
                     {"cluster_minus_alone", runs[1].ratio() - runs[0].ratio()},
                     {"cluster_minus_one_worker", gap},
                     {"target_met", ok}};
    }
  }

  if (wants("onboard")) {
    nlohmann::ordered_json jon = nlohmann::ordered_json::array();
    std::string rows;
    for (const auto& tls : f.onboard_tls) {
      auto r = run_onboard_phase(f, tls);
      if (!r) {
        std::fprintf(stderr, "cluster: onboard phase over %s: %s\n", tls.c_str(), r.error().to_string().c_str());
        failed = true;
        continue;
      }
      const double ours = median(r->gbps), base = median(r->transport_gbps);
      const double ratio = base > 0 ? ours / base : 0;
      rows += fmt::format("  {:<5} {:<18} {:>14.3f} {:>16.3f} {:>7.2f} {:>14.3f}   >= 0.85: {}\n", tls, r->protocol,
                          ours, base, ratio, median(r->local_gbps), met(ratio >= 0.85));
      jon.push_back({{"tls", tls},
                     {"protocol", r->protocol},
                     {"remote_onboard_gbps", ours},
                     {"remote_onboard_gbps_runs", r->gbps},
                     {"transport_gbps", base},
                     {"transport_gbps_runs", r->transport_gbps},
                     {"local_onboard_gbps", median(r->local_gbps)},
                     {"local_onboard_gbps_runs", r->local_gbps},
                     {"fetch_gbps", median(r->fetch_gbps)},
                     {"fetch_gbps_runs", r->fetch_gbps},
                     {"serve_gbps", median(r->serve_gbps)},
                     {"serve_gbps_runs", r->serve_gbps},
                     {"ratio", ratio},
                     {"fetched_blocks", r->fetched_blocks},
                     {"target_met", ratio >= 0.85}});
    }
    table += fmt::format(
        "remote onboard: {} blocks of 2 MiB ({} MiB) offloaded on A, onboarded on B ({} per onboard, every block\n"
        "  fetched from A, then copied into B's engine region), send to notification; beside kvblockd-bench transport\n"
        "  --size 2097152 --working-set {} MiB --passes 2 (steady state, same run), and the same onboards on A from\n"
        "  its own G2 (local on A); spin {} us; median of {}\n",
        f.onboard_blocks, f.onboard_blocks * 2, std::min(f.onboard_batch, f.onboard_blocks), f.onboard_blocks * 2,
        f.spin_us, f.repeat);
    table += fmt::format("  {:<5} {:<18} {:>14} {:>16} {:>7} {:>14}\n", "tls", "bulk", "onboard GB/s", "transport GB/s",
                         "ratio", "local on A");
    table += rows;
    json["onboard"] = {{"blocks", f.onboard_blocks},
                       {"block_bytes", 2097152},
                       {"batch", f.onboard_batch},
                       {"spin_us", f.spin_us},
                       {"repeat", f.repeat},
                       {"worker_args", f.worker_args},
                       {"runs", jon}};
  }

  if (wants("index")) {
    auto r = run_index_phase(f);
    if (!r) {
      std::fprintf(stderr, "cluster: index phase: %s\n", r.error().to_string().c_str());
      failed = true;
    } else {
      std::vector<double> base, events, costs, loop_costs, ns_per_event, ns_per_lookup, direct_costs,
          direct_ns_per_event;
      nlohmann::ordered_json jr = nlohmann::ordered_json::array();
      for (const auto& round : r->rounds) {
        base.push_back(round.base_lookups_per_s);
        events.push_back(round.events_lookups_per_s);
        costs.push_back(round.base_lookups_per_s > 0 ? 1 - round.events_lookups_per_s / round.base_lookups_per_s : 0);
        // W's loop: CPU per lookup from the base round; what the joined
        // round's loop used beyond its lookups is the index events' share
        // of the core (= of a saturated worker's lookup throughput).
        const double per_lookup = round.base_lookups_per_s > 0 ? round.base_loop_cpu / round.base_lookups_per_s : 0;
        const double events_cpu = round.events_loop_cpu - per_lookup * round.events_lookups_per_s;
        loop_costs.push_back(events_cpu);
        ns_per_lookup.push_back(per_lookup * 1e9);
        ns_per_event.push_back(round.index_events_per_s > 0 ? events_cpu / round.index_events_per_s * 1e9 : 0);
        // Direct: the lookups paused, W's loop with P joined minus not joined,
        // scaled to the events/s of the lookup windows.
        const double direct = round.events_idle_loop_cpu - round.base_idle_loop_cpu;
        const double per_event = round.idle_index_events_per_s > 0 ? direct / round.idle_index_events_per_s : 0;
        direct_ns_per_event.push_back(per_event * 1e9);
        direct_costs.push_back(per_event * round.index_events_per_s);
        jr.push_back({{"base_lookups_per_s", round.base_lookups_per_s},
                      {"events_lookups_per_s", round.events_lookups_per_s},
                      {"base_peer_blocks_per_s", round.base_offloads_per_s},
                      {"events_peer_blocks_per_s", round.events_offloads_per_s},
                      {"index_events_per_s", round.index_events_per_s},
                      {"base_loop_cpu", round.base_loop_cpu},
                      {"events_loop_cpu", round.events_loop_cpu},
                      {"base_process_cpu", round.base_process_cpu},
                      {"events_process_cpu", round.events_process_cpu},
                      {"loop_ns_per_lookup", ns_per_lookup.back()},
                      {"loop_ns_per_index_event", ns_per_event.back()},
                      {"loop_cost", events_cpu},
                      {"base_idle_loop_cpu", round.base_idle_loop_cpu},
                      {"events_idle_loop_cpu", round.events_idle_loop_cpu},
                      {"idle_index_events_per_s", round.idle_index_events_per_s},
                      {"direct_loop_ns_per_index_event", direct_ns_per_event.back()},
                      {"direct_loop_cost", direct_costs.back()}});
      }
      const double cost = median(costs);
      const double loop_cost = median(loop_costs);
      const double direct_cost = median(direct_costs);
      std::vector<double> ev_rates;
      for (const auto& round : r->rounds) ev_rates.push_back(round.index_events_per_s);
      errors += r->errors;
      table += fmt::format(
          "index events: lookups of 32 hashes (16 held) on worker W from {} sessions; peer P offloads 4 KiB blocks\n"
          "  ({:.0f}/s offered) into an 8 MiB pool (stores and evictions), not joined (base) vs joined to W; {} rounds "
          "of {} s\n",
          f.lookup_sessions, f.peer_blocks_per_s, f.index_rounds, f.index_seconds);
      table += fmt::format("  W alone:                {:>10.0f} lookups/s\n", r->alone_lookups_per_s);
      table += fmt::format("  P offloads, not joined: {:>10.0f} lookups/s (median)\n", median(base));
      table += fmt::format("  P offloads, joined:     {:>10.0f} lookups/s (median), {:.0f} index events/s into W\n",
                           median(events), median(ev_rates));
      table += fmt::format(
          "  W's event loop: {:.0f} ns of CPU per lookup (not joined); joined, beyond its lookups: {:.0f} ns per "
          "index event,\n  {:.1f} % of the loop's core (medians of the rounds; the loop serves every lookup, so "
          "this is the share of a\n  saturated worker's lookup throughput the events take)\n",
          median(ns_per_lookup), median(ns_per_event), loop_cost * 100);
      table += fmt::format(
          "  lookups paused: W's loop {:.0f} ns of CPU per index event (joined minus not joined), {:.1f} % of the "
          "core at the\n  events/s above (median of the rounds)\n",
          median(direct_ns_per_event), direct_cost * 100);
      table += fmt::format(
          "  target: index events cost <= 5 % of a worker's lookup throughput: {:.1f} % of W's loop (lookups "
          "paused), {:.1f} %\n  (beside its lookups): {}; lookups/s measured here {:.1f} % lower joined (median of "
          "the rounds; on this\n  machine that includes P sending the events on the same cores)\n",
          direct_cost * 100, loop_cost * 100, met(direct_cost <= 0.05 && loop_cost <= 0.05), cost * 100);
      json["index"] = {{"lookup_sessions", f.lookup_sessions},
                       {"peer_blocks_per_s_offered", f.peer_blocks_per_s},
                       {"seconds", f.index_seconds},
                       {"alone_lookups_per_s", r->alone_lookups_per_s},
                       {"rounds", jr},
                       {"base_lookups_per_s", median(base)},
                       {"events_lookups_per_s", median(events)},
                       {"cost", cost},
                       {"alone_loop_cpu", r->alone_loop_cpu},
                       {"loop_ns_per_lookup", median(ns_per_lookup)},
                       {"loop_ns_per_index_event", median(ns_per_event)},
                       {"loop_cost", loop_cost},
                       {"direct_loop_ns_per_index_event", median(direct_ns_per_event)},
                       {"direct_loop_cost", direct_cost},
                       {"target_met", direct_cost <= 0.05 && loop_cost <= 0.05},
                       {"errors", r->errors}};
    }
  }

  std::printf("kvblockd-bench cluster (%s)\n%s", f.kvblockd.c_str(), table.c_str());
  json["errors"] = errors;
  json["failed"] = failed;
  std::printf("%s\n", json.dump().c_str());
  return failed || errors > 0 ? 1 : 0;
}

}  // namespace kvb::bench
