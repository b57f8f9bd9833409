// kvblockd-bench copy: GB/s of one copy engine running a TransferPlan, and
// in the same run the baseline that moves the same bytes between the same
// buffers with one call (host: memcpy; CUDA: cudaMemcpy device-to-device or
// pinned host <-> device). The working set (1 GiB of distinct source and as
// much destination by default, many times the last-level cache) is copied
// whole each time. Host engine: first a cold copy (the destination's pages
// never touched: the engine into its destination, then memcpy into a fresh
// buffer of the same size), then the steady state: iterations alternate
// engine and baseline so that noise hits both; medians and the ratios go to
// stdout, last line JSON.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kvb/kernels/copy_engines.h"
#include "kvb/kernels/cuda_regions.h"
#include "last_level_cache.h"
#include "subcommands.h"

namespace kvb::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
constexpr std::uint64_t kRegionAlign = 4096;

struct Args {
  std::string engine = "host";
  std::string src_layout = "layer_separate_block_outer";
  std::string dst_layout = "fully_contiguous";
  std::uint64_t chunk_bytes = 32 << 10;
  std::uint32_t blocks = 0;  // 0: enough for 1 GiB
  std::uint32_t layers = 32;
  std::uint32_t outer = 2;
  int iters = 7;
  unsigned threads = 0;
  bool shuffle = false;
  bool no_streaming = false;
  std::string direction = "d2d";
  int device = 0;
  std::uint64_t staging_mib = CudaEngineOptions{}.staging_bytes >> 20;
  std::uint32_t spin_us = CudaEngineOptions{}.completion_spin_us;
  std::uint32_t poll_us = CudaEngineOptions{}.completion_poll_us;
  int inflight = 1;
  bool descriptors = false;
};

Result<LayoutKind> parse_layout(const std::string& name) {
  if (name == "fc" || name == "contiguous") return LayoutKind::fully_contiguous;
  if (name == "lsbo") return LayoutKind::layer_separate_block_outer;
  if (name == "lsob") return LayoutKind::layer_separate_outer_block;
  return parse_layout_kind(name);
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double gbps(std::uint64_t bytes, Clock::duration d) {
  return static_cast<double>(bytes) / std::chrono::duration<double>(d).count() / 1e9;
}

// Slices one allocation of `base` into the layout's regions.
BlockSpace space_over(const Layout& layout, std::byte* base, MemoryKind kind) {
  BlockSpace space{layout, {}};
  const std::uint64_t stride = round_up(layout.region_bytes(), kRegionAlign);
  for (std::uint32_t r = 0; r < layout.num_regions(); ++r)
    space.regions.push_back({base + r * stride, layout.region_bytes(), kind});
  return space;
}

std::uint64_t space_bytes(const Layout& layout) {
  return round_up(layout.region_bytes(), kRegionAlign) * layout.num_regions();
}

struct HostBuffer {
  std::byte* data = nullptr;
  explicit HostBuffer(std::uint64_t bytes)
      : data(static_cast<std::byte*>(std::aligned_alloc(2 * kMiB, round_up(bytes, 2 * kMiB)))) {}
  ~HostBuffer() { std::free(data); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
};

// Submits and waits. CUDA engines: the bench thread polls a flag, as its
// baseline's cudaDeviceSynchronize polls the device (the default schedule on
// a machine with more cores than GPUs), so neither figure carries the OS
// wake-up of a sleeping thread. Host engine: it sleeps (its workers need the
// cores; the memcpy baseline runs on this thread).
Status run_plan(CopyEngine& engine, TransferPlan plan, bool poll) {
  if (!poll) {
    std::promise<Status> done;
    auto f = done.get_future();
    engine.submit(std::move(plan), [&done](Status s) { done.set_value(std::move(s)); });
    return f.get();
  }
  std::atomic<bool> finished{false};
  Status result = ok();
  engine.submit(std::move(plan), [&](Status s) {
    result = std::move(s);
    finished.store(true, std::memory_order_release);
  });
  while (!finished.load(std::memory_order_acquire)) {
  }
  return result;
}

// Submits every plan back to back, then waits for all (first error wins).
Status run_plans(CopyEngine& engine, std::vector<TransferPlan> plans, bool poll) {
  if (plans.size() == 1) return run_plan(engine, std::move(plans.front()), poll);
  std::mutex mutex;
  std::condition_variable cv;
  std::atomic<std::size_t> left{plans.size()};
  Status result = ok();
  for (auto& p : plans)
    engine.submit(std::move(p), [&](Status s) {
      std::lock_guard lock(mutex);
      if (!s && result) result = std::move(s);
      if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) cv.notify_all();
    });
  if (poll) {
    while (left.load(std::memory_order_acquire) != 0) {
    }
  }
  std::unique_lock lock(mutex);
  cv.wait(lock, [&] { return left.load(std::memory_order_acquire) == 0; });
  return result;
}

int fail_with(const std::string& message) {
  std::fprintf(stderr, "kvblockd-bench copy: %s\n", message.c_str());
  return 1;
}

}  // namespace

int run_copy(int argc, char** argv) {
  Args a;
  CLI::App app{"kvblockd-bench copy: copy engine GB/s against memcpy / cudaMemcpy of the same bytes"};
  app.add_option("--engine", a.engine, "host | cuda-kernel | cuda-batch | cuda-memcpy | cuda-staged")
      ->capture_default_str();
  app.add_option("--src-layout", a.src_layout,
                 "fully_contiguous (fc) | layer_separate_block_outer (lsbo) | layer_separate_outer_block (lsob)")
      ->capture_default_str();
  app.add_option("--dst-layout", a.dst_layout, "as --src-layout")->capture_default_str();
  app.add_option("--chunk-bytes", a.chunk_bytes, "bytes of one (block, layer, K/V) chunk")->capture_default_str();
  app.add_option("--blocks", a.blocks, "blocks copied (default: enough for 1 GiB)");
  app.add_option("--layers", a.layers, "layers per block")->capture_default_str();
  app.add_option("--outer", a.outer, "2 = K,V; 1 = MLA")->capture_default_str();
  app.add_option("--iters", a.iters, "timed iterations of engine and baseline each")->capture_default_str();
  app.add_option("--inflight", a.inflight,
                 "submit the plan N times back to back per iteration (throughput under load; the baseline "
                 "repeats its copy N times)")
      ->capture_default_str();
  app.add_option("--threads", a.threads, "host engine workers (default: cores)");
  app.add_flag("--shuffle", a.shuffle, "copy block i to a random destination block (else i -> i)");
  app.add_flag("--no-streaming", a.no_streaming, "host engine: plain memcpy, no non-temporal stores");
  app.add_option("--direction", a.direction, "CUDA engines: d2d | h2d | d2h (pinned host)")->capture_default_str();
  app.add_option("--device", a.device, "CUDA device ordinal")->capture_default_str();
  app.add_option("--staging-mib", a.staging_mib, "cuda-staged: staging buffer (MiB)")->capture_default_str();
  app.add_option("--spin-us", a.spin_us, "CUDA engines: completion busy poll (microseconds)")->capture_default_str();
  app.add_flag("--descriptors", a.descriptors,
               "cuda-kernel: one descriptor per run built on the host instead of chunk addresses computed on the "
               "device");
  app.add_option("--poll-us", a.poll_us, "CUDA engines: then poll every N us (0: block in the driver)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto kind = parse_copy_engine_kind(a.engine);
  if (!kind) return fail_with(kind.error().message);
  auto src_kind = parse_layout(a.src_layout);
  if (!src_kind) return fail_with("--src-layout: " + src_kind.error().message);
  auto dst_kind = parse_layout(a.dst_layout);
  if (!dst_kind) return fail_with("--dst-layout: " + dst_kind.error().message);
  if (a.chunk_bytes == 0 || a.chunk_bytes > (1ULL << 31)) return fail_with("--chunk-bytes must be in [1, 2 GiB]");
  if (a.iters < 1) return fail_with(fmt::format("--iters must be >= 1 (got {})", a.iters));
  if (a.staging_mib < 1 || a.staging_mib > (1 << 20))
    return fail_with(fmt::format("--staging-mib must be in [1, 1048576] (got {})", a.staging_mib));
  if (a.inflight < 1 || a.inflight > 64)
    return fail_with(fmt::format("--inflight must be in [1, 64] (got {})", a.inflight));
  const LayoutSpec spec{.num_layers = a.layers,
                        .outer_dim = a.outer,
                        .page_size = 1,
                        .inner_dim = static_cast<std::uint32_t>(a.chunk_bytes),
                        .dtype = DType::u8,
                        .alignment = 256};
  if (auto v = spec.validate(); !v) return fail_with(v.error().message);
  if (a.blocks == 0)
    a.blocks = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, 1024 * kMiB / spec.block_bytes()));
  const std::uint64_t total = spec.block_bytes() * a.blocks;
  const std::uint64_t llc = last_level_cache_bytes();
  if (total < (llc > 0 ? 4 * llc : 256 * kMiB))
    std::fprintf(stderr,
                 "warning: %llu MiB per copy, under 4x the last-level cache (%llu B): the working set may sit in "
                 "cache\n",
                 static_cast<unsigned long long>(total / kMiB), static_cast<unsigned long long>(llc));
  auto src_layout = Layout::make(spec, *src_kind, a.blocks);
  auto dst_layout = Layout::make(spec, *dst_kind, a.blocks);
  if (!src_layout) return fail_with(src_layout.error().message);
  if (!dst_layout) return fail_with(dst_layout.error().message);

  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < a.blocks; ++i) pairs.push_back({BlockId{i}, BlockId{i}});
  if (a.shuffle) {
    std::mt19937 rng(1);
    std::vector<std::uint32_t> perm(a.blocks);
    std::iota(perm.begin(), perm.end(), 0U);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (std::uint32_t i = 0; i < a.blocks; ++i) pairs[i].dst = BlockId{perm[i]};
  }

  // Engines and memory.
  CopyEngineOptions options;
  options.host.workers = a.threads;
  if (a.no_streaming) options.host.streaming_min_plan_bytes = UINT64_MAX;
  options.use_cuda = *kind != CopyEngineKind::host;
  options.cuda_device = a.device;
  options.cuda.staging_bytes = a.staging_mib << 20;
  options.cuda.completion_spin_us = a.spin_us;
  options.cuda.completion_poll_us = a.poll_us;
  options.cuda.direct_chunks = !a.descriptors;
  CopyEngines engines(options);
  auto got = engines.get(*kind, a.device);
  if (!got && !engines.has_cuda())
    return fail_with(fmt::format("--engine {} needs a CUDA device: {}", a.engine, engines.cuda_unavailable()));
  if (!got)
    return fail_with(
        fmt::format("--engine {} is not available with this device and build: {}", a.engine, got.error().message));
  CopyEngine* engine = *got;

  const std::uint64_t src_bytes = space_bytes(*src_layout), dst_bytes = space_bytes(*dst_layout);
  std::unique_ptr<HostBuffer> host_src, host_dst;
  std::unique_ptr<MemoryRegion> cuda_src, cuda_dst;
  std::byte* src_base = nullptr;
  std::byte* dst_base = nullptr;
  MemoryKind src_mem = MemoryKind::host, dst_mem = MemoryKind::host;
  std::string baseline_name = "memcpy";
  if (*kind == CopyEngineKind::host) {
    host_src = std::make_unique<HostBuffer>(src_bytes);
    host_dst = std::make_unique<HostBuffer>(dst_bytes);
    if (host_src->data == nullptr || host_dst->data == nullptr) return fail_with("out of host memory");
    src_base = host_src->data;
    dst_base = host_dst->data;
    // Write every source page; the destination stays untouched for the
    // cold copy.
    for (std::uint64_t i = 0; i < src_bytes; ++i) src_base[i] = static_cast<std::byte>(i * 2654435761U >> 24);
  } else {
    const bool src_dev = a.direction != "h2d", dst_dev = a.direction != "d2h";
    if (a.direction != "d2d" && a.direction != "h2d" && a.direction != "d2h")
      return fail_with(fmt::format("--direction must be d2d, h2d or d2h (got '{}')", a.direction));
    const auto alloc = [&](bool dev, std::uint64_t bytes) -> Result<std::unique_ptr<MemoryRegion>> {
      if (dev) {
        auto r = DeviceRegion::allocate(a.device, bytes);
        if (!r) return tl::unexpected(r.error());
        return std::unique_ptr<MemoryRegion>(std::move(*r));
      }
      auto r = PinnedHostRegion::allocate(bytes);
      if (!r) return tl::unexpected(r.error());
      return std::unique_ptr<MemoryRegion>(std::move(*r));
    };
    auto s = alloc(src_dev, src_bytes);
    if (!s) return fail_with(s.error().to_string());
    auto d = alloc(dst_dev, dst_bytes);
    if (!d) return fail_with(d.error().to_string());
    cuda_src = std::move(*s);
    cuda_dst = std::move(*d);
    src_base = cuda_src->data();
    dst_base = cuda_dst->data();
    src_mem = cuda_src->kind();
    dst_mem = cuda_dst->kind();
    baseline_name = a.direction == "d2d" ? "cudaMemcpy D2D" : fmt::format("cudaMemcpy pinned {}", a.direction);
  }

  auto plan = TransferPlan::build(space_over(*src_layout, src_base, src_mem),
                                  space_over(*dst_layout, dst_base, dst_mem), pairs);
  if (!plan) return fail_with(plan.error().message);
  const bool poll = *kind != CopyEngineKind::host;
  const auto baseline = [&]() -> Status {
    if (*kind == CopyEngineKind::host) {
      std::memcpy(dst_base, src_base, total);
      return ok();
    }
    return cuda_copy_sync(a.device, dst_base, src_base, total);
  };

  std::fprintf(stderr,
               "copy: %s %s -> %s, %u blocks x %u layers x %u x %llu B = %llu MiB in %zu runs (working set: %llu "
               "MiB source, %llu MiB destination; last-level cache %llu MiB), %d iters\n",
               a.engine.c_str(), std::string(to_string(*src_kind)).c_str(), std::string(to_string(*dst_kind)).c_str(),
               a.blocks, a.layers, a.outer, static_cast<unsigned long long>(a.chunk_bytes),
               static_cast<unsigned long long>(total / kMiB), plan->runs().size(),
               static_cast<unsigned long long>(src_bytes / kMiB), static_cast<unsigned long long>(dst_bytes / kMiB),
               static_cast<unsigned long long>(llc / kMiB), a.iters);

  // Host engine, cold: the engine into its untouched destination, then
  // memcpy of the same bytes into a fresh buffer of the same size (freed
  // before the steady state).
  double engine_cold = 0, baseline_cold = 0;
  if (*kind == CopyEngineKind::host) {
    const auto t0 = Clock::now();
    if (auto st = run_plan(*engine, *plan, poll); !st) return fail_with(st.error().to_string());
    engine_cold = gbps(total, Clock::now() - t0);
    HostBuffer fresh(dst_bytes);
    if (fresh.data == nullptr) return fail_with("out of host memory");
    const auto t1 = Clock::now();
    std::memcpy(fresh.data, src_base, total);
    // The buffer is freed unread: keep the compiler from dropping the copy.
    asm volatile("" : : "r"(fresh.data) : "memory");
    baseline_cold = gbps(total, Clock::now() - t1);
    std::fprintf(stderr, "  cold (untouched destination pages): %s %.2f GB/s, %s %.2f GB/s\n", a.engine.c_str(),
                 engine_cold, baseline_name.c_str(), baseline_cold);
  }

  // Warm-up (also faults in every destination page), then a correctness check.
  if (auto st = run_plan(*engine, *plan, poll); !st) return fail_with(st.error().to_string());
  if (auto st = baseline(); !st) return fail_with(st.error().to_string());
  if (*kind == CopyEngineKind::host) {
    if (auto st = run_plan(*engine, *plan, poll); !st) return fail_with(st.error().to_string());
    for (const auto& run : plan->runs())
      if (std::memcmp(plan->dst_address(run), plan->src_address(run), run.bytes) != 0)
        return fail_with("engine output differs from its source");
  }

  std::vector<double> engine_gbps, baseline_gbps;
  const std::uint64_t moved = total * static_cast<std::uint64_t>(a.inflight);
  for (int i = 0; i < a.iters; ++i) {
    std::vector<TransferPlan> copies(static_cast<std::size_t>(a.inflight), *plan);  // outside the timed region
    const auto t0 = Clock::now();
    if (auto st = run_plans(*engine, std::move(copies), poll); !st) return fail_with(st.error().to_string());
    const auto t1 = Clock::now();
    for (int k = 0; k < a.inflight; ++k)
      if (auto st = baseline(); !st) return fail_with(st.error().to_string());
    const auto t2 = Clock::now();
    engine_gbps.push_back(gbps(moved, t1 - t0));
    baseline_gbps.push_back(gbps(moved, t2 - t1));
    std::fprintf(stderr, "  iter %d: %s %.2f GB/s, %s %.2f GB/s\n", i, a.engine.c_str(), engine_gbps.back(),
                 baseline_name.c_str(), baseline_gbps.back());
  }
  const double e = median(engine_gbps), b = median(baseline_gbps);
  const double e_best = *std::max_element(engine_gbps.begin(), engine_gbps.end());
  const double b_best = *std::max_element(baseline_gbps.begin(), baseline_gbps.end());
  std::printf("working set: %llu MiB of source, %llu MiB of destination (last-level cache %llu MiB)\n",
              static_cast<unsigned long long>(src_bytes / kMiB), static_cast<unsigned long long>(dst_bytes / kMiB),
              static_cast<unsigned long long>(llc / kMiB));
  if (baseline_cold > 0) {
    std::printf("cold: %s %.2f GB/s, %s (same bytes, fresh buffer, one call) %.2f GB/s, ratio %.3f\n", a.engine.c_str(),
                engine_cold, baseline_name.c_str(), baseline_cold, engine_cold / baseline_cold);
  }
  std::printf("%s: %.2f GB/s (median of %d; best %.2f)\n", a.engine.c_str(), e, a.iters, e_best);
  std::printf("%s (same bytes, same buffers, one call): %.2f GB/s (median; best %.2f)\n", baseline_name.c_str(), b,
              b_best);
  std::printf("ratio: %.3f\n", e / b);
  const nlohmann::ordered_json json{{"bench", "copy"},
                                    {"engine", a.engine},
                                    {"src_layout", to_string(*src_kind)},
                                    {"dst_layout", to_string(*dst_kind)},
                                    {"direction", *kind == CopyEngineKind::host ? "h2h" : a.direction},
                                    {"chunk_bytes", a.chunk_bytes},
                                    {"blocks", a.blocks},
                                    {"layers", a.layers},
                                    {"outer", a.outer},
                                    {"bytes", total},
                                    {"working_set_bytes", total},
                                    {"src_bytes", src_bytes},
                                    {"dst_bytes", dst_bytes},
                                    {"last_level_cache_bytes", llc},
                                    {"runs", plan->runs().size()},
                                    {"iters", a.iters},
                                    {"inflight", a.inflight},
                                    {"threads", engines.host().workers()},
                                    {"gbps", e},
                                    {"gbps_best", e_best},
                                    {"baseline", baseline_name},
                                    {"baseline_gbps", b},
                                    {"baseline_gbps_best", b_best},
                                    {"ratio", e / b},
                                    {"gbps_cold", engine_cold},
                                    {"baseline_gbps_cold", baseline_cold},
                                    {"ratio_cold", baseline_cold > 0 ? engine_cold / baseline_cold : 0.0},
                                    {"descriptors", a.descriptors},
                                    {"spin_us", a.spin_us},
                                    {"poll_us", a.poll_us},
                                    {"staging_mib", a.staging_mib}};
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace kvb::bench
