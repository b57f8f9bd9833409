// kvblockd-bench load: N concurrent engine sessions against a running kvblockd.
//
//   kvblockd-bench load --socket PATH --sessions N --duration S
//                       --mix lookup|offload|onboard|mixed|replay [--rate R] [--trace FILE]
//
// Progress on stderr; a results table, then (last stdout line) one JSON
// object with ops_per_s, p50_ms, p99_ms, p999_ms, errors and the baseline
// (redis-benchmark GET at the same concurrency, same run) with the ratio.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <nlohmann/json.hpp>

#include "cluster/worker_process.h"
#include "kvb/client/client.h"
#include "kvb/common/mix64.h"
#include "last_level_cache.h"
#include "load_session.h"
#include "memcpy_baseline.h"
#include "redis_baseline.h"
#include "replay/trace_reader.h"
#include "subcommands.h"

namespace kvb::bench {

namespace {

using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;

/// Raises the soft fd limit to the hard one; returns the new soft limit.
rlim_t raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
    (void)::getrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

const char* mix_name(LoadMix m) {
  switch (m) {
    case LoadMix::lookup: return "lookup";
    case LoadMix::offload: return "offload";
    case LoadMix::onboard: return "onboard";
    case LoadMix::mixed: return "mixed";
    case LoadMix::replay: return "replay";
  }
  return "?";
}

double gbps(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
}

double round3(double v) { return std::round(v * 1000) / 1000; }

/// The GB/s the run moved, cold (every session's first offload or onboard,
/// aggregate from the window's start to the last of them) and steady (the
/// window's second half, aggregate), each beside memcpy of the same bytes
/// measured now.
std::string report_bytes(nlohmann::ordered_json& j, const LoadConfig& cfg, double elapsed, double steady_s,
                         std::uint64_t offload_bytes, std::uint64_t onboard_bytes, std::uint64_t steady_offload,
                         std::uint64_t steady_onboard, std::uint64_t offload_ops, std::uint64_t onboard_ops,
                         std::uint64_t first_bytes, std::size_t first_count, double first_s, std::uint64_t engine_bytes,
                         std::uint64_t prefix_bytes) {
  const double off_all = gbps(offload_bytes, elapsed), on_all = gbps(onboard_bytes, elapsed);
  const double off_steady = gbps(steady_offload, steady_s), on_steady = gbps(steady_onboard, steady_s);
  // Paced sessions start spread over an interval: their first requests are
  // not a wave, and their aggregate would count the gaps.
  const bool cold_wave = cfg.rate == 0 && first_count > 0;
  const double cold = cold_wave ? gbps(first_bytes, first_s) : 0;
  const std::uint64_t moving_ops = offload_ops + onboard_ops;
  const std::uint64_t request_bytes = moving_ops ? (offload_bytes + onboard_bytes) / moving_ops : 0;
  const std::uint64_t llc = last_level_cache_bytes();
  const std::uint64_t working_set =
      std::min<std::uint64_t>(std::max<std::uint64_t>({engine_bytes, 4 * llc, std::uint64_t{256} << 20}), 4ULL << 30);
  const unsigned threads =
      std::max(1U, std::min<unsigned>(cfg.sessions, std::max(1U, std::thread::hardware_concurrency())));

  std::optional<double> cold_memcpy;
  std::optional<SteadyMemcpy> steady_memcpy;
  std::string why = "--memcpy-baseline off";
  if (cfg.memcpy_baseline != "off" && request_bytes > 0) {
    std::fprintf(stderr, "load: baseline: memcpy of %llu-byte requests, cold and steady (%u threads)\n",
                 static_cast<unsigned long long>(request_bytes), threads);
    if (cold_wave) {
      const std::uint64_t per = std::max<std::uint64_t>(first_bytes / first_count, 1);
      cold_memcpy = memcpy_cold_gbps(per, std::min<std::uint64_t>(first_count, (4ULL << 30) / per), threads, why);
    }
    if (!cold_wave || cold_memcpy) steady_memcpy = memcpy_steady_gbps(request_bytes, working_set, threads, 3, why);
  }
  const double steady_sum = off_steady + on_steady;
  std::string t;
  t += fmt::format("  bytes: offload {:.3f} GB/s ({} requests), onboard {:.3f} GB/s ({} requests) over the window\n",
                   off_all, offload_ops, on_all, onboard_ops);
  t += fmt::format("  steady (second half of the window): offload {:.3f} + onboard {:.3f} = {:.3f} GB/s", off_steady,
                   on_steady, steady_sum);
  if (steady_memcpy)
    t += fmt::format("; memcpy {:.3f} GB/s ({} threads, {} MiB working set): {:.3f}x", steady_memcpy->gbps,
                     steady_memcpy->threads, steady_memcpy->working_set >> 20,
                     steady_memcpy->gbps > 0 ? steady_sum / steady_memcpy->gbps : 0);
  t += "\n";
  if (cold_wave) {
    t +=
        fmt::format("  cold (every session's first offload or onboard, {} of them, {:.1f} ms to the last): {:.3f} GB/s",
                    first_count, first_s * 1e3, cold);
    if (cold_memcpy)
      t += fmt::format("; memcpy of the same requests ({} threads, touched buffers) {:.3f} GB/s: {:.3f}x", threads,
                       *cold_memcpy, *cold_memcpy > 0 ? cold / *cold_memcpy : 0);
    t += "\n";
  } else {
    t += "  cold: not measured (--rate spreads the sessions' first requests over an interval)\n";
  }
  if ((cold_wave && !cold_memcpy) || !steady_memcpy) t += "  memcpy not measured: " + why + "\n";
  if (onboard_ops > 0 && prefix_bytes < 4 * llc)
    t += fmt::format(
        "  note: onboards read the shared prefix's {} MiB, under 4x the last-level cache ({} MiB): their "
        "sources may stay in the caches (--prefix-blocks)\n",
        prefix_bytes >> 20, llc >> 20);
  if (engine_bytes < 4 * llc)
    t += fmt::format(
        "  note: the engines' regions ({} MiB) are under 4x the last-level cache ({} MiB): their bytes "
        "may stay in the caches, and requests of {} bytes measure the round trip more than memory\n",
        engine_bytes >> 20, llc >> 20, request_bytes);
  j["request_bytes"] = request_bytes;
  j["engine_bytes"] = engine_bytes;
  j["prefix_bytes"] = prefix_bytes;
  j["offload_ops"] = offload_ops;
  j["onboard_ops"] = onboard_ops;
  j["offload_gbps"] = round3(off_all);
  j["onboard_gbps"] = round3(on_all);
  j["steady_offload_gbps"] = round3(off_steady);
  j["steady_onboard_gbps"] = round3(on_steady);
  if (cold_wave) {
    j["cold_requests"] = first_count;
    j["cold_s"] = first_s;
    j["cold_gbps"] = round3(cold);
  }
  if (steady_memcpy) {
    j["memcpy_steady_gbps"] = round3(steady_memcpy->gbps);
    j["memcpy_threads"] = steady_memcpy->threads;
    j["memcpy_working_set"] = steady_memcpy->working_set;
    j["steady_ratio"] = round3(steady_memcpy->gbps > 0 ? steady_sum / steady_memcpy->gbps : 0);
  }
  if (cold_memcpy) {
    j["memcpy_cold_gbps"] = round3(*cold_memcpy);
    j["cold_ratio"] = round3(*cold_memcpy > 0 ? cold / *cold_memcpy : 0);
  }
  if ((cold_wave && !cold_memcpy) || !steady_memcpy) j["memcpy_note"] = why;
  return t;
}

/// Waits (bounded) until the daemon's host pools and engine regions are
/// populated, as `stats.g2_prefault` tells (or prefault is off); the
/// seconds waited, or -1 with `why`.
double wait_prefault(const LoadConfig& cfg, std::chrono::seconds limit, std::string& why) {
  auto c = client::Client::connect(cfg.socket);
  if (!c) {
    why = c.error().to_string();
    return -1;
  }
  client::HelloParams hello;
  hello.client_name = "kvblockd-bench-load-prefault";
  hello.tenant_salt = cfg.tenant_salt;
  hello.shape = cfg.shape;
  if (auto h = (*c)->hello(hello); !h) {
    why = h.error().to_string();
    return -1;
  }
  const auto start = Clock::now();
  for (;;) {
    auto text = (*c)->stats();
    if (!text) {
      why = text.error().to_string();
      return -1;
    }
    const auto stats = nlohmann::json::parse(*text, nullptr, false);
    if (stats.is_discarded() || !stats.contains("g2_prefault")) {
      why = "stats without g2_prefault";
      return -1;
    }
    const auto& p = stats["g2_prefault"];
    const bool pools = !p.value("enabled", false) || p.value("populated_bytes", 0ULL) >= p.value("pool_bytes", 1ULL);
    const bool engines = p.value("engine_done_bytes", 0ULL) >= p.value("engine_bytes", 0ULL);
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (pools && engines) return waited;
    if (Clock::now() - start > limit) {
      why = "not finished in " + std::to_string(limit.count()) + " s: " + p.dump();
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

/// One io_context thread and the sessions it drives.
struct Worker {
  LoadContext ctx;  // declared before io: handlers destroyed with io may still reach it
  asio::io_context io{1};
  std::vector<std::shared_ptr<LoadSession>> sessions;
  std::size_t next_to_start = 0;
  std::thread thread;

  // On the io thread: starts the next session's setup, keeping a window open.
  void start_next() {
    if (next_to_start >= sessions.size()) return;
    auto& s = sessions[next_to_start++];
    s->start([this](bool ok) {
      if (ok) ctx.counters->ready.fetch_add(1);
      ctx.counters->setup_done.fetch_add(1);
      start_next();
    });
  }
};

/// Runs fn on every worker's io thread and waits (bounded) until all ran it.
template <class Fn>
bool on_all(std::vector<std::unique_ptr<Worker>>& workers, Fn fn, std::chrono::seconds limit) {
  std::atomic<std::size_t> done{0};
  for (auto& w : workers)
    asio::post(w->io, [&, wp = w.get()] {
      fn(*wp);
      done.fetch_add(1);
    });
  const auto until = Clock::now() + limit;
  while (done.load() < workers.size() && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return done.load() == workers.size();
}

}  // namespace

std::vector<std::vector<std::uint64_t>> load_trace_hash_ids(const std::string& path, std::string& error) {
  std::vector<std::vector<std::uint64_t>> out;
  auto trace = read_trace(path);
  if (!trace) {
    error = trace.error().to_string();
    return out;
  }
  out.reserve(trace->size());
  for (auto& request : *trace) {
    if (request.hash_ids.empty()) continue;
    for (auto& id : request.hash_ids) id = mix64(id + 0x7124CE);  // trace block ids -> 64-bit sequence hashes
    out.push_back(std::move(request.hash_ids));
  }
  if (out.empty()) error = "trace '" + path + "' holds no request with hash_ids";
  return out;
}

int run_load(int argc, char** argv) {
  LoadConfig cfg;
  cfg.socket = client::default_socket_path();
  cfg.shape.num_layers = 1;
  cfg.shape.outer_dim = 2;
  cfg.shape.page_size = 16;
  cfg.shape.inner_dim = 8;
  cfg.shape.dtype = 1;  // f16: 256-byte chunks, 512-byte blocks
  cfg.shape.alignment = 256;
  std::string mix = "lookup";
  CLI::App app{"kvblockd-bench load: N concurrent engine sessions against a running kvblockd"};
  app.add_option("--socket", cfg.socket, "kvblockd's Unix socket")->capture_default_str();
  std::string start_kvblockd;
  std::vector<std::string> kvblockd_args;
  app.add_option("--start-kvblockd", start_kvblockd,
                 "start this kvblockd binary on a fresh socket for the run (its defaults), instead of --socket");
  app.add_option("--kvblockd-arg", kvblockd_args,
                 "with --start-kvblockd: one more argument for it (repeat the flag), e.g. --kvblockd-arg "
                 "--host-pool-bytes --kvblockd-arg 2GiB")
      ->allow_extra_args(false);
  app.add_option("--sessions", cfg.sessions, "concurrent sessions (up to 10,000+)")
      ->capture_default_str()
      ->check(CLI::Range(1U, 100000U));
  app.add_option("--duration", cfg.duration_s, "seconds of measured load")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--mix", mix, "lookup | offload | onboard | mixed (60/20/20) | replay (needs --trace)")
      ->capture_default_str()
      ->check(CLI::IsMember({"lookup", "offload", "onboard", "mixed", "replay"}));
  app.add_option("--rate", cfg.rate, "total requests/s over all sessions (0 = closed loop)")->capture_default_str();
  app.add_option("--threads", cfg.threads, "client io threads")->capture_default_str()->check(CLI::Range(1U, 64U));
  app.add_option("--prefix-blocks", cfg.prefix_blocks, "blocks of the shared prefix looked up / onboarded")
      ->capture_default_str()
      ->check(CLI::Range(1U, 4096U));
  app.add_option("--onboard-blocks", cfg.onboard_blocks, "blocks per onboard request")
      ->capture_default_str()
      ->check(CLI::Range(1U, 4096U));
  app.add_option("--offload-blocks", cfg.offload_blocks,
                 "blocks per offload request (fresh hashes, from the region's blocks in turn)")
      ->capture_default_str()
      ->check(CLI::Range(1U, 4096U));
  app.add_option("--memcpy-baseline", cfg.memcpy_baseline,
                 "memcpy of the same bytes, cold and steady, for mixes that move blocks: auto | off")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "off"}));
  app.add_option("--wait-prefault", cfg.wait_prefault,
                 "mixes that move blocks: wait for the daemon's pool and engine-region prefaults before measuring")
      ->capture_default_str();
  app.add_option("--connect-window", cfg.connect_window, "sessions setting up at once")
      ->capture_default_str()
      ->check(CLI::Range(1U, 100000U));
  app.add_option("--layers", cfg.shape.num_layers, "block shape: layers")->capture_default_str();
  app.add_option("--page-size", cfg.shape.page_size, "block shape: tokens per block")->capture_default_str();
  app.add_option("--inner-dim", cfg.shape.inner_dim, "block shape: num_kv_heads x head_dim (f16)")
      ->capture_default_str();
  app.add_option("--trace", cfg.trace, "Mooncake-style JSONL trace for --mix replay");
  app.add_option("--passes", cfg.passes, "replay: stop after this many passes over the trace (0: run --duration)")
      ->capture_default_str();
  app.add_option("--baseline", cfg.redis_baseline,
                 "redis-benchmark GET baseline at the same concurrency: auto (lookup/mixed, <= 1024 sessions) | "
                 "on | off")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--register", cfg.register_kv,
                 "register_kv a small memfd KV region: auto (every session whose mix moves blocks, and session 0) | "
                 "always")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "always"}));
  CLI11_PARSE(app, argc, argv);
  cfg.mix = mix == "lookup"    ? LoadMix::lookup
            : mix == "offload" ? LoadMix::offload
            : mix == "onboard" ? LoadMix::onboard
            : mix == "mixed"   ? LoadMix::mixed
                               : LoadMix::replay;

  WorkerProcess daemon;  // stopped when the run returns
  if (!start_kvblockd.empty()) {
    std::vector<std::string> args{"--log-level", "info"};
    args.insert(args.end(), kvblockd_args.begin(), kvblockd_args.end());
    if (auto st = daemon.start(start_kvblockd, args); !st) {
      std::fprintf(stderr, "load: starting %s: %s\n", start_kvblockd.c_str(), st.error().to_string().c_str());
      return 2;
    }
    cfg.socket = daemon.socket_path();
  }

  std::vector<std::vector<std::uint64_t>> trace;
  if (cfg.mix == LoadMix::replay) {
    if (cfg.trace.empty()) cfg.trace = "/work/shared/traces/conversation_trace.jsonl";
    std::string error;
    trace = load_trace_hash_ids(cfg.trace, error);
    if (trace.empty()) {
      std::fprintf(stderr, "load: %s\n", error.c_str());
      return 2;
    }
    std::uint32_t longest = 0;
    for (const auto& t : trace) longest = std::max<std::uint32_t>(longest, static_cast<std::uint32_t>(t.size()));
    cfg.prefix_blocks = std::min<std::uint32_t>(longest, 64);  // engine region size
  }

  const rlim_t fds = raise_fd_limit();
  if (fds < cfg.sessions + 64)
    std::fprintf(stderr, "load: warning: fd limit %llu is low for %u sessions\n", static_cast<unsigned long long>(fds),
                 cfg.sessions);
  const auto prefix = shared_prefix(cfg.tenant_salt, cfg.prefix_blocks);
  LoadCounters counters;

  std::vector<std::unique_ptr<Worker>> workers;
  for (std::uint32_t t = 0; t < cfg.threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->ctx.config = &cfg;
    w->ctx.counters = &counters;
    w->ctx.prefix = &prefix;
    w->ctx.trace = &trace;
    workers.push_back(std::move(w));
  }
  for (std::uint32_t i = 0; i < cfg.sessions; ++i) {
    Worker& w = *workers[i % cfg.threads];
    w.sessions.push_back(std::make_shared<LoadSession>(w.io, w.ctx, i));
  }
  for (auto& w : workers) {
    w->thread = std::thread([wp = w.get()] {
      auto guard = asio::make_work_guard(wp->io);
      wp->io.run();
    });
  }

  // ---- setup: connect, hello, register_kv; session 0 seeds the prefix first.
  const auto t_setup = Clock::now();
  asio::post(workers[0]->io, [w = workers[0].get()] { w->start_next(); });  // session 0 alone (it seeds)
  const auto setup_limit = std::chrono::seconds(30 + cfg.sessions / 200);
  while (counters.setup_done.load() < 1 && Clock::now() - t_setup < setup_limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const std::uint32_t window = std::max<std::uint32_t>(1, cfg.connect_window / cfg.threads);
  for (auto& w : workers)
    asio::post(w->io, [wp = w.get(), window] {
      for (std::uint32_t k = 0; k < window; ++k) wp->start_next();
    });
  auto last_progress = Clock::now();
  while (counters.setup_done.load() < cfg.sessions && Clock::now() - t_setup < setup_limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (Clock::now() - last_progress > std::chrono::seconds(1)) {
      last_progress = Clock::now();
      std::fprintf(stderr, "load: setup %u/%u sessions ready (%llu failed)\n", counters.ready.load(), cfg.sessions,
                   static_cast<unsigned long long>(counters.setup_errors.load()));
    }
  }
  const double setup_s = std::chrono::duration<double>(Clock::now() - t_setup).count();
  const std::uint32_t ready = counters.ready.load();
  std::fprintf(stderr, "load: %u/%u sessions ready in %.2f s (%llu setup errors); %s mix for %.1f s\n", ready,
               cfg.sessions, setup_s, static_cast<unsigned long long>(counters.setup_errors.load()), mix.c_str(),
               cfg.duration_s);

  // ---- the prefaults (host pools, engine regions) end first: the first
  // requests measured are "the first after start, pool prefault finished".
  const bool moves_blocks = cfg.mix != LoadMix::lookup;
  double waited = -1;
  if (moves_blocks && cfg.wait_prefault) {
    std::string why;
    waited = wait_prefault(cfg, std::chrono::seconds(120), why);
    if (waited < 0) {
      std::fprintf(stderr, "load: prefault not awaited: %s\n", why.c_str());
    } else {
      std::fprintf(stderr, "load: host pool and engine region prefaults done (waited %.2f s)\n", waited);
    }
  }

  // ---- measure
  counters.measuring.store(true);
  const auto t0 = Clock::now();
  (void)on_all(
      workers,
      [](Worker& w) {
        for (auto& s : w.sessions) s->run();
      },
      std::chrono::seconds(10));
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.duration_s));
  std::uint64_t last_ops = 0;
  auto last_tick = t0;
  // Steady state: the bytes moved in the second half of the window.
  const auto mid = t0 + (end - t0) / 2;
  std::optional<std::pair<Clock::time_point, std::uint64_t>> mid_mark;  // (when, offload bytes)
  std::uint64_t mid_onboard = 0;
  const auto replay_target = static_cast<std::uint64_t>(cfg.passes * static_cast<double>(trace.size()) * cfg.threads);
  while (Clock::now() < end) {
    if (cfg.mix == LoadMix::replay && cfg.passes > 0 && counters.replay_requests.load() >= replay_target) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(100), end - Clock::now()));
    if (!mid_mark && Clock::now() >= mid) {
      mid_mark.emplace(Clock::now(), counters.offload_bytes.load());
      mid_onboard = counters.onboard_bytes.load();
    }
    if (Clock::now() - last_tick >= std::chrono::seconds(1)) {
      const auto now = Clock::now();
      const std::uint64_t ops = counters.ops.load();
      std::fprintf(stderr, "load: %5.1f s  %9.0f ops/s  errors %llu\n", std::chrono::duration<double>(now - t0).count(),
                   static_cast<double>(ops - last_ops) / std::chrono::duration<double>(now - last_tick).count(),
                   static_cast<unsigned long long>(counters.errors.load()));
      last_ops = ops;
      last_tick = now;
    }
  }
  counters.measuring.store(false);
  counters.stopping.store(true);
  const auto t_end = Clock::now();
  const double elapsed = std::chrono::duration<double>(t_end - t0).count();
  const std::uint64_t offload_bytes = counters.offload_bytes.load(), onboard_bytes = counters.onboard_bytes.load();
  if (!mid_mark) mid_mark.emplace(t0, 0), mid_onboard = 0;  // ended early (replay passes): the whole window
  const double steady_s = std::chrono::duration<double>(t_end - mid_mark->first).count();

  // ---- drain: wait (bounded) for answers still in flight, then bye.
  const auto drain_until = Clock::now() + std::chrono::seconds(10);
  bool idle = false;
  while (!idle && Clock::now() < drain_until) {
    std::atomic<bool> all_idle{true};
    (void)on_all(
        workers,
        [&](Worker& w) {
          for (auto& s : w.sessions)
            if (!s->idle()) all_idle = false;
        },
        std::chrono::seconds(5));
    idle = all_idle.load();
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (void)on_all(
      workers,
      [](Worker& w) {
        for (auto& s : w.sessions) s->finish();
      },
      std::chrono::seconds(10));
  for (auto& w : workers) {
    asio::post(w->io, [wp = w.get()] { wp->io.stop(); });
  }
  // Give byes a moment to go out (bounded), then stop.
  for (auto& w : workers) w->thread.join();

  LatencyHistogram hist;
  for (auto& w : workers) hist.merge(w->ctx.histogram);
  const std::uint64_t ops = hist.count();
  const double ops_per_s = elapsed > 0 ? static_cast<double>(ops) / elapsed : 0;
  const double p50 = hist.quantile_ns(0.50) / 1e6, p99 = hist.quantile_ns(0.99) / 1e6,
               p999 = hist.quantile_ns(0.999) / 1e6, max_ms = static_cast<double>(hist.max_ns()) / 1e6;
  const std::uint64_t errors = counters.errors.load() + counters.setup_errors.load();

  // ---- baseline, same run: redis-benchmark GET at the same concurrency.
  const bool want_baseline = cfg.redis_baseline == "on" || (cfg.redis_baseline == "auto" && cfg.sessions <= 1024 &&
                                                            (cfg.mix == LoadMix::lookup || cfg.mix == LoadMix::mixed));
  std::optional<RedisBaseline> baseline;
  std::string why = "not run (--baseline off, or a mix/size it does not compare with)";
  if (want_baseline) {
    std::fprintf(stderr, "load: baseline: redis-benchmark GET, %u clients\n", cfg.sessions);
    baseline = run_redis_baseline(cfg.sessions, 300000, why);
    if (!baseline) std::fprintf(stderr, "load: baseline not measured: %s\n", why.c_str());
  }

  // ---- bytes, beside memcpy of the same bytes (same run): mixes that move blocks.
  const std::uint64_t block_bytes = client::block_bytes(cfg.shape);
  const std::uint64_t region_bytes =
      client::KvRegion::region_bytes_for(cfg.shape, client::WireLayoutKind::fully_contiguous, region_blocks(cfg))
          .value_or(0);
  nlohmann::ordered_json bytes_json;
  std::string bytes_table;
  if (offload_bytes + onboard_bytes > 0) {
    std::uint64_t first_bytes = 0;
    std::size_t first_count = 0;
    Clock::time_point last = t0;
    std::vector<double> ends_ms;
    for (auto& w : workers)
      for (const auto& f : w->ctx.first_moves) {
        first_bytes += f.bytes;
        ++first_count;
        last = std::max(last, f.ended);
        ends_ms.push_back(std::chrono::duration<double, std::milli>(f.ended - t0).count());
      }
    bytes_json["block_bytes"] = block_bytes;
    if (!ends_ms.empty()) {
      // When the first requests ended: a wave that ends late because a few
      // sessions' first requests waited shows as a median far below the max.
      std::sort(ends_ms.begin(), ends_ms.end());
      bytes_json["cold_end_ms"] = {
          {"min", ends_ms.front()}, {"median", ends_ms[ends_ms.size() / 2]}, {"max", ends_ms.back()}};
    }
    bytes_json["prefault_waited_s"] = waited;  // -1: not awaited
    bytes_table =
        report_bytes(bytes_json, cfg, elapsed, steady_s, offload_bytes, onboard_bytes, offload_bytes - mid_mark->second,
                     onboard_bytes - mid_onboard, counters.offload_ops.load(), counters.onboard_ops.load(), first_bytes,
                     first_count, std::chrono::duration<double>(last - t0).count(), std::uint64_t{ready} * region_bytes,
                     std::uint64_t{cfg.prefix_blocks} * block_bytes);
  }

  std::printf("kvblockd-bench load: %s mix, %u sessions (%u ready), %.1f s, %s\n", mix.c_str(), cfg.sessions, ready,
              elapsed, cfg.rate > 0 ? fmt::format("rate {:.0f}/s", cfg.rate).c_str() : "closed loop");
  std::printf("  %-34s %12s %9s %9s %9s %9s %8s\n", "", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "errors");
  std::printf("  %-34s %12.0f %9.3f %9.3f %9.3f %9.3f %8llu\n", "kvblockd", ops_per_s, p50, p99, p999, max_ms,
              static_cast<unsigned long long>(errors));
  double ratio = 0;
  if (baseline) {
    ratio = baseline->ops_per_s > 0 ? ops_per_s / baseline->ops_per_s : 0;
    std::printf("  %-34s %12.0f %9.3f %9.3f %9s %9s %8s\n", ("redis GET -c " + std::to_string(cfg.sessions)).c_str(),
                baseline->ops_per_s, baseline->p50_ms, baseline->p99_ms, "-", "-", "-");
    std::printf("  ratio kvblockd / redis: %.2f\n", ratio);
  }
  nlohmann::ordered_json json{{"bench", "load"},
                              {"mix", mix_name(cfg.mix)},
                              {"sessions", cfg.sessions},
                              {"ready", ready},
                              {"rate", cfg.rate},
                              {"duration_s", elapsed},
                              {"ops", ops},
                              {"ops_per_s", ops_per_s},
                              {"p50_ms", p50},
                              {"p99_ms", p99},
                              {"p999_ms", p999},
                              {"max_ms", max_ms},
                              {"errors", errors},
                              {"setup_errors", counters.setup_errors.load()},
                              {"setup_s", setup_s}};
  if (cfg.mix == LoadMix::replay) {
    const auto blocks = counters.replay_blocks.load();
    const double hit =
        blocks ? static_cast<double>(counters.replay_hit_blocks.load()) / static_cast<double>(blocks) : 0;
    const double passes = static_cast<double>(counters.replay_requests.load()) / static_cast<double>(trace.size());
    std::printf("  replay: %llu trace requests (%.2f passes over %zu), prefix hit ratio %.3f of %llu blocks\n",
                static_cast<unsigned long long>(counters.replay_requests.load()), passes, trace.size(), hit,
                static_cast<unsigned long long>(blocks));
    json["replay_requests"] = counters.replay_requests.load();
    json["replay_passes"] = passes;
    json["hit_ratio"] = hit;
  }
  std::printf("%s", bytes_table.c_str());
  if (bytes_json.is_object())
    for (auto& [k, v] : bytes_json.items()) json[k] = v;
  if (baseline) {
    json["baseline"] = fmt::format("redis-benchmark GET -c {}", cfg.sessions);
    json["baseline_ops_per_s"] = baseline->ops_per_s;
    json["baseline_p50_ms"] = baseline->p50_ms;
    json["baseline_p99_ms"] = baseline->p99_ms;
    json["ratio"] = ratio;
  } else {
    json["baseline"] = nullptr;
    json["baseline_note"] = why;
  }
  std::printf("%s\n", json.dump().c_str());
  return errors == 0 && ready == cfg.sessions ? 0 : 1;
}

}  // namespace kvb::bench
