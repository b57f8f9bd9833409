// kvblockd-bench daemon: offload and onboard through a running kvblockd
// (host memory: the engine's KV cache is a memfd region, as engine_sim's),
// beside memcpy of the same bytes measured in the same run.
//
// Without --socket the bench starts the kvblockd built with it (one fresh
// daemon per first-request case), with a host pool of --pool-bytes (default:
// twice the request, 2 GiB for the default 512 x 2 MiB blocks), and waits
// until the pool's prefault has populated every byte (stats g2_prefault)
// before the first request. Then, for each case of --engine-memory:
//   first request after start: one offload of --blocks blocks, then one
//   onboard of them into the other half of the engine's region: "untouched"
//   (the engine never wrote that half: the copy allocates its pages) or
//   "touched" (the engine zeroed it first, as an engine that allocates its
//   KV cache up front has). Beside them memcpy of the same bytes between two
//   memfd buffers of the bench's own: into a fresh buffer (untouched), then
//   again into the same one (touched).
//   steady state: --iters passes of offload (fresh hashes) + onboard, each
//   followed by one memcpy of the same bytes between touched buffers.
// Then --sessions engines at once (fresh regions, touched; a started kvblockd
// uses eviction_policy lru), each offloading and onboarding its share of
// --blocks per pass: aggregate offload+onboard GB/s beside two threads
// memcpy'ing the same bytes between touched buffers.
// Every onboard is checked byte for byte (exit 1 on a mismatch). Medians;
// the last stdout line is one JSON object.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cluster/worker_process.h"
#include "kvb/client/client.h"
#include "kvb/client/kv_region.h"
#include "kvb/common/mix64.h"
#include "subcommands.h"

namespace kvb::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

struct Args {
  std::string socket;  // empty: start a kvblockd
  std::string kvblockd = KVB_KVBLOCKD_PATH;
  std::string layout = "fully_contiguous";
  std::uint32_t blocks = 512;
  client::BlockShape shape{32, 2, 16, 1024, 2, 256};  // 32 KiB chunks, 2 MiB blocks
  std::uint32_t iters = 5;
  std::uint32_t sessions = 16;
  std::uint32_t session_passes = 5;
  std::uint64_t pool_bytes = 0;  // 0: 2 x the request
  std::string engine_memory = "both";
  std::uint32_t settle_ms = 0;  // pause between the prefaults' end and the first request
  std::vector<std::string> daemon_args;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
double gbps(std::uint64_t bytes, Clock::duration d) {
  return static_cast<double>(bytes) / std::chrono::duration<double>(d).count() / 1e9;
}
double round3(double v) { return std::round(v * 1000) / 1000; }

/// A memfd mapped shared, as the pool and the engine's regions are: the
/// memcpy baseline's buffers fault in pages the same way they do.
class MemfdBuffer {
 public:
  static std::unique_ptr<MemfdBuffer> create(std::uint64_t bytes) {
    const int fd = ::memfd_create("kvb-bench-memcpy", MFD_CLOEXEC);
    if (fd < 0) return nullptr;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      ::close(fd);
      return nullptr;
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return nullptr;
    return std::unique_ptr<MemfdBuffer>(new MemfdBuffer(static_cast<std::byte*>(p), bytes));
  }
  ~MemfdBuffer() { ::munmap(data_, bytes_); }
  MemfdBuffer(const MemfdBuffer&) = delete;
  MemfdBuffer& operator=(const MemfdBuffer&) = delete;
  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::uint64_t size() const noexcept { return bytes_; }

 private:
  MemfdBuffer(std::byte* d, std::uint64_t n) : data_(d), bytes_(n) {}
  std::byte* data_;
  std::uint64_t bytes_;
};

/// Two threads copying one half each; returns the wall time of both.
Clock::duration memcpy_two_threads(std::byte* dst, const std::byte* src, std::uint64_t bytes) {
  const std::uint64_t half = bytes / 2 / 64 * 64;
  const auto t0 = Clock::now();
  std::thread other([&] { std::memcpy(dst + half, src + half, bytes - half); });
  std::memcpy(dst, src, half);
  other.join();
  return Clock::now() - t0;
}

/// Recognizable bytes of chunk (key, block, layer, outer): one word per 8 bytes.
void fill_chunk(std::span<std::byte> chunk, std::uint64_t key) {
  auto* w = reinterpret_cast<std::uint64_t*>(chunk.data());
  const std::size_t n = chunk.size() / 8;
  for (std::size_t i = 0; i < n; ++i) w[i] = key ^ (i * 0x9E3779B97F4A7C15ULL);
}
std::uint64_t chunk_key(std::uint64_t salt, std::uint32_t b, std::uint32_t l, std::uint32_t o) {
  return mix64(salt ^ (std::uint64_t{b} << 24) ^ (std::uint64_t{l} << 8) ^ o);
}

/// The page faults (minor + major) of process `pid` so far; 0 when unknown.
std::uint64_t page_faults(pid_t pid) {
  if (pid <= 0) return 0;
  std::FILE* f = std::fopen(fmt::format("/proc/{}/stat", pid).c_str(), "r");
  if (f == nullptr) return 0;
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name (which may hold spaces): state ppid pgrp
  // session tty_nr tpgid flags minflt cminflt majflt.
  const char* at = std::strrchr(buf, ')');
  unsigned long long minflt = 0, majflt = 0;
  if (at == nullptr ||
      std::sscanf(at + 1, " %*c %*d %*d %*d %*d %*d %*u %llu %*u %llu", &minflt, &majflt) != 2)  // NOLINT
    return 0;
  return minflt + majflt;
}

struct Pass {
  Clock::duration offload{}, onboard{};
  std::uint64_t offload_faults = 0, onboard_faults = 0;  // the daemon's page faults (started here)
};

/// One engine: a memfd KV region of 2 x `blocks` blocks (source half first),
/// attached to the daemon.
struct Engine {
  std::unique_ptr<client::Client> client;
  std::optional<client::KvRegion> region;
  std::uint64_t salt = 0;
  std::uint32_t blocks = 0;
  std::uint64_t next_hash = 0;
  pid_t daemon_pid = -1;  // known when the bench started the daemon

  void fill_source() {
    const auto& s = region->shape();
    for (std::uint32_t b = 0; b < blocks; ++b)
      for (std::uint32_t l = 0; l < s.num_layers; ++l)
        for (std::uint32_t o = 0; o < s.outer_dim; ++o) fill_chunk(region->chunk(b, l, o), chunk_key(salt, b, l, o));
  }
  void touch_destination() {
    const auto& s = region->shape();
    for (std::uint32_t b = blocks; b < 2 * blocks; ++b)
      for (std::uint32_t l = 0; l < s.num_layers; ++l)
        for (std::uint32_t o = 0; o < s.outer_dim; ++o) {
          auto c = region->chunk(b, l, o);
          std::memset(c.data(), 0, c.size());
        }
  }
  /// Chunks of the destination half that differ from the source half.
  std::uint64_t mismatches() const {
    const auto& s = region->shape();
    std::uint64_t bad = 0;
    for (std::uint32_t b = 0; b < blocks; ++b)
      for (std::uint32_t l = 0; l < s.num_layers; ++l)
        for (std::uint32_t o = 0; o < s.outer_dim; ++o) {
          auto want = region->chunk(b, l, o), got = region->chunk(blocks + b, l, o);
          if (std::memcmp(want.data(), got.data(), want.size()) != 0) ++bad;
        }
    return bad;
  }
  /// A pass: the source half offloaded under fresh hashes, then onboarded
  /// into the destination half.
  Result<Pass> pass() {
    std::vector<client::OffloadItem> off(blocks);
    std::vector<client::OnboardItem> on(blocks);
    for (std::uint32_t b = 0; b < blocks; ++b) {
      const std::uint64_t h = mix64(salt ^ ++next_hash);
      off[b] = {BlockId{b}, h};
      on[b] = {h, BlockId{blocks + b}};
    }
    Pass p;
    const std::uint64_t f0 = page_faults(daemon_pid);
    const auto t0 = Clock::now();
    if (auto st = client->offload(off); !st) return tl::unexpected(st.error());
    const auto t1 = Clock::now();
    const std::uint64_t f1 = page_faults(daemon_pid);
    if (auto st = client->onboard(on); !st) return tl::unexpected(st.error());
    p.onboard = Clock::now() - t1;

    p.offload = t1 - t0;
    p.offload_faults = f1 - f0;
    p.onboard_faults = page_faults(daemon_pid) - f1;
    return p;
  }
};

Result<client::WireLayoutKind> layout_kind(const std::string& name) {
  if (name == "fully_contiguous") return client::WireLayoutKind::fully_contiguous;
  if (name == "layer_separate_block_outer") return client::WireLayoutKind::layer_separate_block_outer;
  if (name == "layer_separate_outer_block") return client::WireLayoutKind::layer_separate_outer_block;
  return fail(Errc::invalid_argument, "unknown --layout '{}'", name);
}

Result<Engine> make_engine(const Args& a, const std::string& socket, std::uint32_t blocks, std::uint64_t salt) {
  auto kind = layout_kind(a.layout);
  if (!kind) return tl::unexpected(kind.error());
  Engine e;
  e.salt = salt;
  e.blocks = blocks;
  auto region = client::KvRegion::create(a.shape, *kind, 2 * blocks);
  if (!region) return tl::unexpected(region.error());
  e.region.emplace(std::move(*region));
  auto c = client::Client::connect(socket);
  if (!c) return tl::unexpected(c.error());
  e.client = std::move(*c);
  e.client->set_timeout(std::chrono::minutes(5));
  client::HelloParams hello;
  hello.client_name = "kvblockd-bench daemon";
  hello.tenant_salt = salt;
  hello.shape = a.shape;
  if (auto h = e.client->hello(hello); !h) return tl::unexpected(h.error());
  return e;
}

/// Waits until every host pool's prefault populated every byte and every
/// engine region's was walked (or prefault is off); returns the g2_prefault
/// object seen last, with the seconds waited.
Result<json> wait_prefault(client::Client& c, std::chrono::seconds limit) {
  const auto start = Clock::now();
  const auto until = start + limit;
  for (;;) {
    auto text = c.stats();
    if (!text) return tl::unexpected(text.error());
    json stats = json::parse(*text, nullptr, false);
    if (stats.is_discarded() || !stats.contains("g2_prefault"))
      return fail(Errc::protocol_error, "stats without g2_prefault");
    json p = stats["g2_prefault"];
    p["copy_engine"] = stats.value("copy_engine", "?");
    p["waited_s"] = round3(std::chrono::duration<double>(Clock::now() - start).count());
    const bool pools = !p.value("enabled", false) || p.value("populated_bytes", 0ULL) >= p.value("pool_bytes", 1ULL);
    const bool engines = p.value("engine_done_bytes", 0ULL) >= p.value("engine_bytes", 0ULL);
    if (pools && engines) return p;
    if (Clock::now() > until) return fail(Errc::timeout, "host pool prefault not finished: {}", p.dump());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

struct Daemon {
  std::unique_ptr<WorkerProcess> process;  // null: --socket
  std::string socket;
};

Result<Daemon> start_daemon(const Args& a, std::uint64_t pool_bytes, std::vector<std::string> extra = {}) {
  Daemon d;
  if (!a.socket.empty()) {
    d.socket = a.socket;
    return d;
  }
  d.process = std::make_unique<WorkerProcess>();
  std::vector<std::string> args{"--host-pool-bytes", std::to_string(pool_bytes), "--log-level", "info"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), a.daemon_args.begin(), a.daemon_args.end());
  if (auto st = d.process->start(a.kvblockd, args, std::chrono::seconds(30)); !st) return tl::unexpected(st.error());
  d.socket = d.process->socket_path();
  return d;
}

int fail_with(const std::string& what) {
  std::fprintf(stderr, "kvblockd-bench daemon: %s\n", what.c_str());
  return 1;
}

/// The first requests after the daemon's start, then the steady state.
Result<json> run_single(const Args& a, bool touched, std::uint64_t pool_bytes, json& steady_out) {
  auto daemon = start_daemon(a, pool_bytes);
  if (!daemon) return tl::unexpected(daemon.error());
  const std::uint64_t salt = mix64(static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
  auto engine = make_engine(a, daemon->socket, a.blocks, salt);
  if (!engine) return tl::unexpected(engine.error());
  if (daemon->process) engine->daemon_pid = daemon->process->pid();
  const std::uint64_t bytes = client::block_bytes(a.shape) * a.blocks;
  engine->fill_source();
  if (touched) engine->touch_destination();
  if (auto st = engine->client->register_kv(*engine->region); !st) return tl::unexpected(st.error());
  auto prefault = wait_prefault(*engine->client, std::chrono::seconds(300));
  if (!prefault) return tl::unexpected(prefault.error());

  // The first request after start: one offload, one onboard.
  std::this_thread::sleep_for(std::chrono::milliseconds(a.settle_ms));
  auto first = engine->pass();
  if (!first) return tl::unexpected(first.error());
  if (const auto bad = engine->mismatches(); bad != 0)
    return fail(Errc::internal, "first onboard: {} chunks differ from the offloaded ones", bad);
  // memcpy of the same bytes: into a fresh buffer, then into it again.
  auto src = MemfdBuffer::create(bytes), dst = MemfdBuffer::create(bytes);
  if (!src || !dst) return fail(Errc::out_of_capacity, "memfd buffers of {} bytes", bytes);
  std::memset(src->data(), 0x5A, bytes);
  auto t0 = Clock::now();
  std::memcpy(dst->data(), src->data(), bytes);
  const double memcpy_untouched = gbps(bytes, Clock::now() - t0);
  t0 = Clock::now();
  std::memcpy(dst->data(), src->data(), bytes);
  const double memcpy_touched = gbps(bytes, Clock::now() - t0);
  const double off1 = gbps(bytes, first->offload), on1 = gbps(bytes, first->onboard);
  const double on_base = touched ? memcpy_touched : memcpy_untouched;
  std::fprintf(stderr,
               "  first request (engine destination %s): offload %.2f GB/s, onboard %.2f GB/s; memcpy into untouched "
               "%.2f, touched %.2f GB/s\n",
               touched ? "touched" : "untouched", off1, on1, memcpy_untouched, memcpy_touched);
  json out{{"engine_destination", touched ? "touched" : "untouched"},
           {"offload_gbps", round3(off1)},
           {"onboard_gbps", round3(on1)},
           {"memcpy_untouched_gbps", round3(memcpy_untouched)},
           {"memcpy_touched_gbps", round3(memcpy_touched)},
           {"offload_ratio", round3(off1 / memcpy_touched)},
           {"onboard_ratio", round3(on1 / on_base)},
           {"onboard_baseline", touched ? "memcpy_touched" : "memcpy_untouched"},
           {"daemon_page_faults", {{"offload", first->offload_faults}, {"onboard", first->onboard_faults}}},
           {"settle_ms", a.settle_ms},
           {"prefault", *prefault}};

  // Steady state: passes, each beside one memcpy of the same bytes.
  std::vector<double> off, on, base;
  std::uint64_t steady_faults = 0;
  for (std::uint32_t i = 0; i < a.iters; ++i) {
    auto p = engine->pass();
    if (!p) return tl::unexpected(p.error());
    t0 = Clock::now();
    std::memcpy(dst->data(), src->data(), bytes);
    base.push_back(gbps(bytes, Clock::now() - t0));
    off.push_back(gbps(bytes, p->offload));
    on.push_back(gbps(bytes, p->onboard));
    steady_faults += p->offload_faults + p->onboard_faults;
    std::fprintf(stderr, "  steady pass %u: offload %.2f GB/s, onboard %.2f GB/s, memcpy %.2f GB/s\n", i, off.back(),
                 on.back(), base.back());
  }
  if (const auto bad = engine->mismatches(); bad != 0)
    return fail(Errc::internal, "steady onboard: {} chunks differ from the offloaded ones", bad);
  const double m = median(base);
  steady_out = {{"passes", a.iters},
                {"offload_gbps", round3(median(off))},
                {"onboard_gbps", round3(median(on))},
                {"memcpy_gbps", round3(m)},
                {"offload_ratio", round3(median(off) / m)},
                {"onboard_ratio", round3(median(on) / m)},
                {"daemon_page_faults", steady_faults}};
  (void)engine->client->bye();
  return out;
}

/// --sessions engines at once against one daemon.
Result<json> run_sessions(const Args& a, std::uint64_t pool_bytes) {
  const std::uint32_t per = std::max(1U, a.blocks / a.sessions);
  // Each pass offloads --blocks fresh blocks into a pool of (by default)
  // twice that. The default eviction policy (prefix) may evict a block a
  // session just offloaded while the others' offloads fill the pool, before
  // that session onboards it; lru evicts the previous pass's blocks.
  auto daemon = start_daemon(a, pool_bytes, {"--eviction-policy", "lru"});
  if (!daemon) return tl::unexpected(daemon.error());
  std::vector<Engine> engines;
  const std::uint64_t salt = mix64(static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) ^ 0x5E55);
  for (std::uint32_t s = 0; s < a.sessions; ++s) {
    auto e = make_engine(a, daemon->socket, per, mix64(salt + s));
    if (!e) return tl::unexpected(e.error());
    e->fill_source();
    e->touch_destination();
    if (auto st = e->client->register_kv(*e->region); !st) return tl::unexpected(st.error());
    engines.push_back(std::move(*e));
  }
  if (auto p = wait_prefault(*engines.front().client, std::chrono::seconds(300)); !p) return tl::unexpected(p.error());
  const std::uint64_t moved = 2 * client::block_bytes(a.shape) * per * a.sessions;  // offload + onboard
  auto src = MemfdBuffer::create(moved / 2), dst = MemfdBuffer::create(moved / 2);
  if (!src || !dst) return fail(Errc::out_of_capacity, "memfd buffers of {} bytes", moved / 2);
  std::memset(src->data(), 0x5A, moved / 2);
  std::memset(dst->data(), 0, moved / 2);

  std::atomic<bool> failed{false};
  std::string error;
  std::barrier sync(static_cast<std::ptrdiff_t>(a.sessions + 1));
  const std::uint32_t passes = a.session_passes + 1;  // pass 0 warms up
  std::vector<std::thread> threads;
  threads.reserve(engines.size());
  for (auto& e : engines)
    threads.emplace_back([&, ep = &e] {
      for (std::uint32_t i = 0; i < passes; ++i) {
        sync.arrive_and_wait();
        if (auto p = ep->pass(); !p && !failed.exchange(true)) error = p.error().to_string();
        sync.arrive_and_wait();
      }
    });
  std::vector<double> agg, base;
  for (std::uint32_t i = 0; i < passes; ++i) {
    sync.arrive_and_wait();
    const auto t0 = Clock::now();
    sync.arrive_and_wait();
    const auto wall = Clock::now() - t0;
    // Two threads memcpy the same bytes: there and back, between touched buffers.
    const auto m = memcpy_two_threads(dst->data(), src->data(), moved / 2) +
                   memcpy_two_threads(src->data(), dst->data(), moved / 2);
    if (i == 0) continue;
    agg.push_back(gbps(moved, wall));
    base.push_back(gbps(moved, m));
    std::fprintf(stderr, "  %u sessions pass %u: offload+onboard %.2f GB/s, two-thread memcpy %.2f GB/s\n", a.sessions,
                 i, agg.back(), base.back());
  }
  for (auto& t : threads) t.join();
  if (failed) return fail(Errc::internal, "a session failed: {}", error);
  std::uint64_t bad = 0;
  for (auto& e : engines) bad += e.mismatches();
  if (bad != 0) return fail(Errc::internal, "sessions: {} chunks differ from the offloaded ones", bad);
  for (auto& e : engines) (void)e.client->bye();
  return json{{"sessions", a.sessions},
              {"blocks_per_session", per},
              {"passes", a.session_passes},
              {"bytes_per_pass", moved},
              {"aggregate_gbps", round3(median(agg))},
              {"memcpy_2t_gbps", round3(median(base))},
              {"ratio", round3(median(agg) / median(base))}};
}

}  // namespace

int run_daemon_bench(int argc, char** argv) {
  Args a;
  CLI::App app{"kvblockd-bench daemon: offload / onboard through kvblockd (host memory) vs memcpy, same run"};
  app.add_option("--socket", a.socket, "a running kvblockd's Unix socket (default: start one per case)");
  app.add_option("--kvblockd", a.kvblockd, "the kvblockd to start")->capture_default_str();
  app.add_option("--layout", a.layout, "fully_contiguous | layer_separate_block_outer | layer_separate_outer_block")
      ->capture_default_str();
  app.add_option("--blocks", a.blocks, "blocks per request")->capture_default_str()->check(CLI::Range(1, 65536));
  app.add_option("--layers", a.shape.num_layers, "layers")->capture_default_str();
  app.add_option("--page-size", a.shape.page_size, "tokens per block")->capture_default_str();
  app.add_option("--inner-dim", a.shape.inner_dim, "num_kv_heads x head_dim (bf16)")->capture_default_str();
  app.add_option("--iters", a.iters, "steady-state passes")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--sessions", a.sessions, "concurrent sessions (0: skip), sharing --blocks")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--session-passes", a.session_passes, "measured passes of the sessions")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--pool-bytes", a.pool_bytes, "host pool of the started kvblockd (0: twice the request)")
      ->capture_default_str();
  app.add_option("--engine-memory", a.engine_memory,
                 "first request's onboard destination: untouched | touched | both (both: two daemon starts)")
      ->capture_default_str()
      ->check(CLI::IsMember({"untouched", "touched", "both"}));
  app.add_option("--settle-ms", a.settle_ms, "pause between the prefaults' end and the first request")
      ->capture_default_str();
  app.add_option("--daemon-arg", a.daemon_args, "extra argument for the started kvblockd (repeatable)");
  CLI11_PARSE(app, argc, argv);
  if (!a.socket.empty() && a.engine_memory == "both") a.engine_memory = "untouched";  // one start: one first request
  const std::uint64_t block_bytes = client::block_bytes(a.shape);
  const std::uint64_t bytes = block_bytes * a.blocks;
  const std::uint64_t pool_bytes = a.pool_bytes != 0 ? a.pool_bytes : 2 * bytes;
  std::fprintf(stderr, "daemon bench: %u blocks x %llu bytes (%.1f MiB) per request, %s, pool %.1f MiB%s\n", a.blocks,
               static_cast<unsigned long long>(block_bytes), static_cast<double>(bytes) / (1 << 20), a.layout.c_str(),
               static_cast<double>(pool_bytes) / (1 << 20), a.socket.empty() ? " (kvblockd started here)" : "");

  json first = json::object(), steady;
  for (const bool touched : {false, true}) {
    if (a.engine_memory != "both" && (a.engine_memory == "touched") != touched) continue;
    auto r = run_single(a, touched, pool_bytes, steady);
    if (!r) return fail_with(r.error().to_string());
    first[touched ? "touched" : "untouched"] = std::move(*r);
  }
  json sessions = nullptr;
  if (a.sessions > 0) {
    auto r = run_sessions(a, pool_bytes);
    if (!r) return fail_with(r.error().to_string());
    sessions = std::move(*r);
  }

  for (const auto& [name, f] : first.items())
    std::printf(
        "first request, engine destination %s: offload %.2f GB/s (%.3fx memcpy touched %.2f), onboard %.2f "
        "GB/s (%.3fx %s)\n",
        name.c_str(), f["offload_gbps"].get<double>(), f["offload_ratio"].get<double>(),
        f["memcpy_touched_gbps"].get<double>(), f["onboard_gbps"].get<double>(), f["onboard_ratio"].get<double>(),
        f["onboard_baseline"].get<std::string>().c_str());
  std::printf("steady (%u passes): offload %.2f GB/s (%.3fx), onboard %.2f GB/s (%.3fx) vs memcpy %.2f GB/s\n", a.iters,
              steady["offload_gbps"].get<double>(), steady["offload_ratio"].get<double>(),
              steady["onboard_gbps"].get<double>(), steady["onboard_ratio"].get<double>(),
              steady["memcpy_gbps"].get<double>());
  if (!sessions.is_null())
    std::printf("%u sessions: offload+onboard %.2f GB/s vs two-thread memcpy %.2f GB/s: %.3fx\n", a.sessions,
                sessions["aggregate_gbps"].get<double>(), sessions["memcpy_2t_gbps"].get<double>(),
                sessions["ratio"].get<double>());
  json out{{"bench", "daemon"},    {"layout", a.layout},       {"blocks", a.blocks}, {"block_bytes", block_bytes},
           {"bytes", bytes},       {"pool_bytes", pool_bytes}, {"first", first},     {"steady", steady},
           {"sessions", sessions}, {"byte_exact", true}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace kvb::bench
