// Phase "index": what index events cost a worker. Worker W serves lookups
// from --lookup-sessions sessions (closed loop, one lookup in flight each,
// one client io thread) of 32 hashes: 16 it holds, then 16 nobody holds (so
// every lookup also asks W's remote index). Meanwhile a peer P offloads new
// 4 KiB blocks at --peer-blocks-per-s (the same offered load in both cases)
// into a pool that keeps evicting:
//   base:   P runs alone (not joined): the same CPU load on this machine, no
//           index events reach W;
//   events: P is joined to W: every block P stores or evicts is an index
//           event W applies.
// Rounds alternate base and events; cost = 1 - events / base. On a machine
// where W, P and the clients share a few cores that figure also carries
// P's own cost of sending the events (P runs on other cores or hosts in a
// cluster), so each measurement also reads the CPU time of W's event-loop
// thread (/proc/PID/task/TID/schedstat): what a lookup costs W's loop
// (base rounds), and what is left in the joined rounds once their lookups
// are paid for is what applying the index events cost it. Each round also
// pauses the lookups for one more window: W's loop then runs only what P's
// events bring (joined) or nothing (not joined), the direct measure of
// what an index event costs the worker.
#include <dirent.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include "cluster_bench.h"
#include "kvb/client/client.h"
#include "kvb/common/mix64.h"
#include "worker_process.h"

namespace kvb::bench::cluster {

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kTenantSalt = 0x1DE7ULL;
constexpr client::BlockShape kShape{1, 2, 16, 128, 0, 256};  // 4 KiB blocks
constexpr std::uint32_t kHeld = 16;

/// Closed-loop lookups from several sessions on one io thread.
class LookupLoad {
 public:
  LookupLoad(std::string socket, std::uint32_t sessions) : socket_(std::move(socket)), count_(sessions) {
    for (std::uint32_t i = 0; i < kHeld; ++i) hashes_.push_back(mix64(0x5EEDULL + i));
    for (std::uint32_t i = 0; i < kHeld; ++i) hashes_.push_back(mix64(0xAB5E47ULL + i));
  }
  ~LookupLoad() { stop(); }

  [[nodiscard]] std::span<const std::uint64_t> held() const { return std::span(hashes_).first(kHeld); }

  Status start() {
    client::HelloParams hello;
    hello.client_name = "kvblockd-bench-cluster-lookup";
    hello.tenant_salt = kTenantSalt;
    hello.shape = kShape;
    for (std::uint32_t i = 0; i < count_; ++i) {
      auto s = client::Session::connect(io_.get_executor(), socket_);
      if (!s) return tl::unexpected(s.error());
      sessions_.push_back(*s);
    }
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
    for (auto& s : sessions_) {
      s->async_hello(hello, [this, s](const Result<client::HelloInfo>& r) {
        if (!r) ++hello_failed_;
        ++hello_done_;
        if (r) next(s);
      });
    }
    const auto until = Clock::now() + std::chrono::seconds(20);
    while (hello_done_.load() < sessions_.size() && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (hello_done_.load() < sessions_.size() || hello_failed_.load() > 0)
      return fail(Errc::unavailable, "lookup sessions: hello failed");
    return ok();
  }
  void stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    for (auto& s : sessions_) s->close();
    io_.stop();
    thread_.join();
  }
  /// Lookups per second over the next `seconds`.
  double measure(double seconds) {
    const auto n0 = done_.load();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    return static_cast<double>(done_.load() - n0) / std::chrono::duration<double>(Clock::now() - t0).count();
  }
  [[nodiscard]] std::uint64_t errors() const { return errors_.load(); }
  /// No new lookups; returns once none is in flight (at most ~5 s).
  void pause() {
    paused_ = true;
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (in_flight_.load() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  void resume() {
    paused_ = false;
    for (auto& s : sessions_) asio::post(io_, [this, s] { next(s); });
  }

 private:
  void next(const std::shared_ptr<client::Session>& s) {
    if (stopping_ || paused_) return;
    ++in_flight_;
    s->async_lookup(hashes_, false, [this, s](Result<client::LookupResult> r) {
      --in_flight_;
      if (!r || r->prefix_blocks != kHeld) {
        if (errors_++ < 3 && !stopping_)
          std::fprintf(stderr, "cluster: lookup: %s\n",
                       r ? fmt::format("matched {} of the {} held blocks", r->prefix_blocks, kHeld).c_str()
                         : r.error().to_string().c_str());
        if (!r) return;
      }
      ++done_;
      next(s);
    });
  }

  std::string socket_;
  std::uint32_t count_;
  std::vector<std::uint64_t> hashes_;
  asio::io_context io_{1};
  std::vector<std::shared_ptr<client::Session>> sessions_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};
  std::atomic<std::uint32_t> in_flight_{0};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint32_t> hello_done_{0}, hello_failed_{0};
};

/// An engine of this phase: hello with its shape and tenant, a region of `blocks`.
Result<std::unique_ptr<client::Client>> engine(const std::string& socket, std::unique_ptr<client::KvRegion>& region,
                                               std::uint32_t blocks) {
  auto e = attach_engine(socket, kShape, kTenantSalt, blocks);
  if (!e) return tl::unexpected(e.error());
  region = std::move(e->region);
  return std::move(e->client);
}

/// An engine on P offloading batches of 64 new blocks, one at a time, paced
/// to `blocks_per_s` (0: as fast as it can), until stopped.
class OffloadLoad {
 public:
  OffloadLoad(std::uint64_t seed, double blocks_per_s) : seed_(seed), rate_(blocks_per_s) {}
  ~OffloadLoad() { stop(); }
  Status start(const std::string& socket) {
    auto c = engine(socket, region_, 64);
    if (!c) return tl::unexpected(c.error());
    client_ = std::move(*c);
    thread_ = std::thread([this] {
      std::vector<client::OffloadItem> items(64);
      std::uint64_t n = 0;
      const auto t0 = Clock::now();
      while (!stopping_) {
        if (rate_ > 0)
          std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(static_cast<double>(n) / rate_)));
        for (std::uint32_t i = 0; i < items.size(); ++i) items[i] = {BlockId{i}, mix64(seed_ ^ ++n)};
        if (auto st = client_->offload(items); !st) {
          if (errors_++ < 3) std::fprintf(stderr, "cluster: offload on P: %s\n", st.error().to_string().c_str());
          continue;
        }
        blocks_ += items.size();
      }
    });
    return ok();
  }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::uint64_t blocks() const { return blocks_.load(); }
  [[nodiscard]] std::uint64_t errors() const { return errors_.load(); }

 private:
  std::uint64_t seed_;
  double rate_;
  std::unique_ptr<client::KvRegion> region_;
  std::unique_ptr<client::Client> client_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> blocks_{0}, errors_{0};
};

/// CPU time thread `tid` of process `pid` has run, in ns (0 if unreadable).
std::uint64_t thread_cpu_ns(pid_t pid, const std::string& tid) {
  std::ifstream in(fmt::format("/proc/{}/task/{}/schedstat", pid, tid));
  std::uint64_t ns = 0;
  in >> ns;
  return ns;
}

/// CPU time of `pid`'s main thread (W's event loop: kvblockd runs its loop
/// on the main thread) and of all its threads, in ns.
struct CpuTimes {
  std::uint64_t loop = 0;
  std::uint64_t process = 0;
};
CpuTimes cpu_times(pid_t pid) {
  CpuTimes t;
  t.loop = thread_cpu_ns(pid, std::to_string(pid));
  if (DIR* d = ::opendir(fmt::format("/proc/{}/task", pid).c_str())) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') t.process += thread_cpu_ns(pid, e->d_name);
    }
    ::closedir(d);
  }
  return t;
}

/// Lookups per second over `seconds`, and W's CPU seconds per second then.
struct Measured {
  double lookups_per_s = 0;
  double loop_cpu = 0;
  double process_cpu = 0;
};
Measured measure_on(LookupLoad& lookups, pid_t w, double seconds) {
  const CpuTimes c0 = cpu_times(w);
  const auto t0 = Clock::now();
  Measured m;
  m.lookups_per_s = lookups.measure(seconds);
  const CpuTimes c1 = cpu_times(w);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  m.loop_cpu = static_cast<double>(c1.loop - c0.loop) / 1e9 / s;
  m.process_cpu = static_cast<double>(c1.process - c0.process) / 1e9 / s;
  return m;
}

long long events_from(client::Client& c, const std::string& worker) {
  auto text = c.stats();
  if (!text) return -1;
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("cluster")) return -1;
  for (const auto& m : j["cluster"].value("members", nlohmann::json::array()))
    if (m.value("worker", std::string()) == worker) return m.value("index_events_in", -1LL);
  return -1;
}

}  // namespace

Result<IndexResult> run_index_phase(const Flags& f) {
  IndexResult out;
  std::fprintf(stderr, "cluster: index events: lookups on W (%u sessions), %.1f s per measurement, %d rounds\n",
               f.lookup_sessions, f.index_seconds, f.index_rounds);
  const std::vector<std::string> cluster_args{"--cluster-tls", f.hit_tls, "--log-level", "info"};
  WorkerProcess w;
  auto w_args = cluster_args;
  w_args.insert(w_args.end(), {"--cluster-listen", "127.0.0.1:0", "--cluster-worker", "W"});
  if (auto st = w.start(f.kvblockd, w_args); !st) return fail(st.error().code, "worker W: {}", st.error().message);

  std::unique_ptr<client::KvRegion> w_region;
  auto on_w = engine(w.socket_path(), w_region, kHeld);
  if (!on_w) return fail(on_w.error().code, "engine on W: {}", on_w.error().message);
  LookupLoad lookups(w.socket_path(), f.lookup_sessions);
  {
    std::vector<client::OffloadItem> seed;
    for (std::uint32_t i = 0; i < kHeld; ++i) seed.push_back({BlockId{i}, lookups.held()[i]});
    if (auto st = (*on_w)->offload(seed); !st) return fail(st.error().code, "seeding W: {}", st.error().message);
  }
  if (auto st = lookups.start(); !st) return tl::unexpected(st.error());
  (void)lookups.measure(0.5);  // warm-up
  const Measured alone = measure_on(lookups, w.pid(), f.index_seconds);
  out.alone_lookups_per_s = alone.lookups_per_s;
  out.alone_loop_cpu = alone.loop_cpu;
  std::fprintf(stderr, "cluster:   W alone: %.0f lookups/s, its loop thread %.2f CPU s/s\n", out.alone_lookups_per_s,
               alone.loop_cpu);

  // P's pool: 2048 blocks (8 MiB), so it evicts as fast as it stores.
  const std::vector<std::string> p_pool{"--host-pool-bytes", std::to_string(2048 * client::block_bytes(kShape))};
  for (int r = 0; r < f.index_rounds; ++r) {
    IndexRound round;
    for (const bool joined : {false, true}) {
      const std::string name = "P" + std::to_string(r);
      auto p_args = cluster_args;
      p_args.insert(p_args.end(), p_pool.begin(), p_pool.end());
      if (joined)
        p_args.insert(p_args.end(),
                      {"--cluster-listen", "127.0.0.1:0", "--cluster-worker", name, "--cluster-peers", w.bootstrap()});
      WorkerProcess p;
      if (auto st = p.start(f.kvblockd, p_args); !st) return fail(st.error().code, "peer P: {}", st.error().message);
      if (joined && !w.wait_for_log("cluster: worker " + name + " joined", std::chrono::seconds(30)))
        return fail(Errc::timeout, "P did not join W:\n{}", w.log_tail());
      OffloadLoad writer(mix64(static_cast<std::uint64_t>(r) * 2 + joined), f.peer_blocks_per_s);
      if (auto st = writer.start(p.socket_path()); !st)
        return fail(st.error().code, "engine on P: {}", st.error().message);
      (void)lookups.measure(0.3);  // let the writer get going
      const long long ev0 = joined ? events_from(**on_w, name) : 0;
      const auto b0 = writer.blocks();
      const auto t0 = Clock::now();
      const Measured m = measure_on(lookups, w.pid(), f.index_seconds);
      const double rate = m.lookups_per_s;
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      const double offloads = static_cast<double>(writer.blocks() - b0) / s;
      const long long ev1 = joined ? events_from(**on_w, name) : 0;
      // The same P with no lookups: W's loop does nothing but what P's
      // events (if joined) bring.
      lookups.pause();
      const long long ev2 = joined ? events_from(**on_w, name) : 0;
      const CpuTimes c0 = cpu_times(w.pid());
      const auto t2 = Clock::now();
      std::this_thread::sleep_for(std::chrono::duration<double>(f.index_seconds));
      const CpuTimes c1 = cpu_times(w.pid());
      const double idle_s = std::chrono::duration<double>(Clock::now() - t2).count();
      const long long ev3 = joined ? events_from(**on_w, name) : 0;
      const double idle_loop_cpu = static_cast<double>(c1.loop - c0.loop) / 1e9 / idle_s;
      lookups.resume();
      writer.stop();
      out.errors += writer.errors();
      p.stop();
      if (joined) {
        round.events_lookups_per_s = rate;
        round.events_offloads_per_s = offloads;
        round.index_events_per_s = static_cast<double>(ev1 - ev0) / s;
        round.events_loop_cpu = m.loop_cpu;
        round.events_process_cpu = m.process_cpu;
        round.events_idle_loop_cpu = idle_loop_cpu;
        round.idle_index_events_per_s = static_cast<double>(ev3 - ev2) / idle_s;
      } else {
        round.base_lookups_per_s = rate;
        round.base_offloads_per_s = offloads;
        round.base_loop_cpu = m.loop_cpu;
        round.base_process_cpu = m.process_cpu;
        round.base_idle_loop_cpu = idle_loop_cpu;
      }
      std::fprintf(stderr,
                   "cluster:   round %d, P %s: %.0f lookups/s on W (its loop %.2f CPU s/s, all threads %.2f); P "
                   "stores %.0f blocks/s%s\n",
                   r + 1, joined ? "joined" : "not joined", rate, m.loop_cpu, m.process_cpu, offloads,
                   joined ? fmt::format(", W applies {:.0f} index events/s", round.index_events_per_s).c_str() : "");
      std::fprintf(stderr, "cluster:   round %d, P %s, no lookups: W's loop %.3f CPU s/s%s\n", r + 1,
                   joined ? "joined" : "not joined", idle_loop_cpu,
                   joined ? fmt::format(" ({:.0f} index events/s)", round.idle_index_events_per_s).c_str() : "");
    }
    out.rounds.push_back(round);
  }
  lookups.stop();
  out.errors += lookups.errors();
  return out;
}

}  // namespace kvb::bench::cluster
