// kvblockd-bench gpu-request: an engine on a GPU offloading and onboarding a
// request's blocks through a running kvblockd, beside the physical limit
// measured in the same run.
//
// The engine's KV cache lives in device memory (vLLM's layer-separate
// layout, registered with CUDA IPC or VMM handles); the daemon moves the
// blocks between it and its pinned host pool with its CUDA engines. Each
// iteration offloads `--blocks` blocks under fresh hashes, then onboards
// them into other engine blocks; beside each, one pinned cudaMemcpy of the
// same bytes (device -> host, host -> device) between two buffers of the
// bench's own. Then the latency of a one-block onboard (request to
// notification, through the client library) beside one cudaMemcpyAsync of
// the same bytes + event synchronize. The blocks are verified byte for byte
// once. Medians; the last stdout line is one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "device_engine_kv.h"
#include "kvb/client/client.h"
#include "kvb/client/device_kv.h"
#include "kvb/kernels/cuda_regions.h"
#include "subcommands.h"

namespace kvb::bench {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void fill(client::KvRegion& kv, std::uint32_t block, std::uint32_t seed) {
  for (std::uint32_t l = 0; l < kv.shape().num_layers; ++l)
    for (std::uint32_t o = 0; o < kv.shape().outer_dim; ++o) {
      auto chunk = kv.chunk(block, l, o);
      for (std::size_t i = 0; i < chunk.size(); i += 64)
        chunk[i] = static_cast<std::byte>((seed * 31 + l * 7 + o) & 0xFF);
    }
}

}  // namespace

int run_gpu_request(int argc, char** argv) {
  CLI::App app{"kvblockd-bench gpu-request: a request's blocks offloaded / onboarded through kvblockd on a GPU"};
  std::string socket = client::default_socket_path();
  int device = 0;
  std::uint32_t blocks = 64, iters = 15, latency_iters = 301;
  client::BlockShape shape{32, 2, 16, 1024, 2, 256};  // Llama-3-8B: 32 layers, K/V, 8 x 128 heads, bf16: 32 KiB chunks
  std::string handles = "auto";
  app.add_option("--socket", socket, "kvblockd's Unix socket")->capture_default_str();
  app.add_option("--device", device, "CUDA device")->capture_default_str();
  app.add_option("--blocks", blocks, "blocks per request")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--layers", shape.num_layers, "layers")->capture_default_str();
  app.add_option("--page-size", shape.page_size, "tokens per block")->capture_default_str();
  app.add_option("--inner-dim", shape.inner_dim, "num_kv_heads x head_dim")->capture_default_str();
  app.add_option("--iters", iters, "offload + onboard iterations")->capture_default_str();
  app.add_option("--latency-iters", latency_iters, "one-block onboards timed")->capture_default_str();
  app.add_option("--handles", handles, "auto | ipc | vmm")->check(CLI::IsMember({"auto", "ipc", "vmm"}));
  CLI11_PARSE(app, argc, argv);
  const auto fail_with = [](const std::string& what) {
    std::fprintf(stderr, "kvblockd-bench gpu-request: %s\n", what.c_str());
    return 1;
  };

  example::DeviceEngineKvOptions options;
  options.device = device;
  options.handles = handles == "vmm" ? client::DeviceHandles::cuda_vmm : client::DeviceHandles::automatic;
  auto kv = example::DeviceEngineKv::create(shape, client::WireLayoutKind::layer_separate_block_outer, 2 * blocks + 1,
                                            options);
  if (!kv) return fail_with("device KV cache: " + kv.error().to_string());
  for (std::uint32_t b = 0; b < blocks; ++b) fill(kv->mirror(), b, b + 1);
  if (auto st = kv->upload(); !st) return fail_with(st.error().to_string());
  const std::uint64_t block_bytes = client::block_bytes(shape);
  const std::uint64_t bytes = block_bytes * blocks;

  auto connected = client::Client::connect(socket);
  if (!connected) return fail_with(connected.error().to_string());
  client::Client& c = **connected;
  client::HelloParams hello;
  hello.client_name = "kvblockd-bench gpu-request";
  hello.tenant_salt = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  hello.shape = shape;
  if (auto info = c.hello(hello); !info) return fail_with("hello: " + info.error().to_string());
  auto exported = client::DeviceKv::export_regions(kv->spec());
  if (!exported) return fail_with("export: " + exported.error().to_string());
  if (auto st = c.register_device_kv(*exported); !st) return fail_with("register_kv: " + st.error().to_string());

  // The physical limit: one pinned cudaMemcpy of the same bytes each way.
  auto pinned = PinnedHostRegion::allocate(bytes);
  auto dev = DeviceRegion::allocate(device, bytes);
  if (!pinned || !dev) return fail_with("baseline buffers: " + (!pinned ? pinned.error() : dev.error()).to_string());
  std::memset((*pinned)->data(), 1, bytes);

  std::vector<double> off_gbps, on_gbps, d2h_gbps, h2d_gbps;
  std::uint64_t next_hash = hello.tenant_salt;
  std::vector<std::uint64_t> last_hashes;
  for (std::uint32_t i = 0; i <= iters; ++i) {  // iteration 0 warms up
    std::vector<client::OffloadItem> off;
    std::vector<client::OnboardItem> on;
    last_hashes.clear();
    for (std::uint32_t b = 0; b < blocks; ++b) {
      last_hashes.push_back(++next_hash);
      off.push_back({BlockId{b}, next_hash});
      on.push_back({next_hash, BlockId{blocks + b}});
    }
    auto t0 = Clock::now();
    if (auto st = c.offload(off); !st) return fail_with("offload: " + st.error().to_string());
    auto t1 = Clock::now();
    if (auto st = cuda_copy_sync(device, (*pinned)->data(), (*dev)->data(), bytes); !st)
      return fail_with(st.error().to_string());
    auto t2 = Clock::now();
    if (auto st = c.onboard(on); !st) return fail_with("onboard: " + st.error().to_string());
    auto t3 = Clock::now();
    if (auto st = cuda_copy_sync(device, (*dev)->data(), (*pinned)->data(), bytes); !st)
      return fail_with(st.error().to_string());
    auto t4 = Clock::now();
    if (i == 0) continue;
    off_gbps.push_back(static_cast<double>(bytes) / seconds(t1 - t0) / 1e9);
    d2h_gbps.push_back(static_cast<double>(bytes) / seconds(t2 - t1) / 1e9);
    on_gbps.push_back(static_cast<double>(bytes) / seconds(t3 - t2) / 1e9);
    h2d_gbps.push_back(static_cast<double>(bytes) / seconds(t4 - t3) / 1e9);
    std::fprintf(stderr, "  iter %u: offload %.2f GB/s (cudaMemcpy d2h %.2f), onboard %.2f GB/s (h2d %.2f)\n", i,
                 off_gbps.back(), d2h_gbps.back(), on_gbps.back(), h2d_gbps.back());
  }
  // The onboarded blocks must equal the offloaded ones, byte for byte.
  if (auto st = kv->download(); !st) return fail_with(st.error().to_string());
  for (std::uint32_t b = 0; b < blocks; ++b)
    for (std::uint32_t l = 0; l < shape.num_layers; ++l)
      for (std::uint32_t o = 0; o < shape.outer_dim; ++o) {
        auto want = kv->mirror().chunk(b, l, o), got = kv->mirror().chunk(blocks + b, l, o);
        if (std::memcmp(want.data(), got.data(), want.size()) != 0)
          return fail_with(fmt::format("block {} layer {} outer {}: onboarded bytes differ", b, l, o));
      }

  // Latency of one block: onboard through the daemon vs cudaMemcpyAsync + event.
  auto copier = CudaAsyncCopier::make(device);
  if (!copier) return fail_with(copier.error().to_string());
  std::vector<double> onboard_us, memcpy_us;
  const client::OnboardItem one{last_hashes.front(), BlockId{2 * blocks}};
  for (std::uint32_t i = 0; i < latency_iters; ++i) {
    auto t0 = Clock::now();
    if (auto st = c.onboard(std::span(&one, 1)); !st) return fail_with("onboard: " + st.error().to_string());
    auto t1 = Clock::now();
    if (auto st = (*copier)->copy((*dev)->data(), (*pinned)->data(), block_bytes); !st)
      return fail_with(st.error().to_string());
    auto t2 = Clock::now();
    onboard_us.push_back(seconds(t1 - t0) * 1e6);
    memcpy_us.push_back(seconds(t2 - t1) * 1e6);
  }
  auto stats = c.stats();
  (void)c.bye();

  const double off = median(off_gbps), on = median(on_gbps), d2h = median(d2h_gbps), h2d = median(h2d_gbps);
  const double lat = percentile(onboard_us, 0.5), lat99 = percentile(onboard_us, 0.99);
  const double base = percentile(memcpy_us, 0.5);
  const auto& req = exported->request();
  std::printf("request: %u blocks x %llu bytes (%llu MiB), %s\n", blocks, static_cast<unsigned long long>(block_bytes),
              static_cast<unsigned long long>(bytes >> 20),
              req.memory == proto::MemoryHandle::cuda_vmm ? "VMM fds" : "CUDA IPC");
  std::printf("offload %.2f GB/s vs pinned cudaMemcpy d2h %.2f GB/s: %.3fx\n", off, d2h, off / d2h);
  std::printf("onboard %.2f GB/s vs pinned cudaMemcpy h2d %.2f GB/s: %.3fx\n", on, h2d, on / h2d);
  std::printf("one-block onboard p50 %.1f us (p99 %.1f) vs cudaMemcpyAsync + event p50 %.1f us: %.2fx\n", lat, lat99,
              base, lat / base);
  std::string engines = "?";
  if (stats) {
    const auto at = stats->find("\"copy_engines\":[");
    if (at != std::string::npos) engines = stats->substr(at + 16, stats->find(']', at) - at - 16);
    std::replace(engines.begin(), engines.end(), '"', ' ');
  }
  std::printf(
      "{\"bench\":\"gpu_request\",\"device\":%d,\"handles\":\"%s\",\"blocks\":%u,\"block_bytes\":%llu,\"bytes\":%llu,"
      "\"iters\":%u,\"offload_gbps\":%.3f,\"onboard_gbps\":%.3f,\"memcpy_d2h_gbps\":%.3f,\"memcpy_h2d_gbps\":%.3f,"
      "\"offload_ratio\":%.4f,\"onboard_ratio\":%.4f,\"onboard1_p50_us\":%.2f,\"onboard1_p99_us\":%.2f,"
      "\"memcpy_async1_p50_us\":%.2f,\"latency_ratio\":%.3f,\"daemon_engines\":\"%s\"}\n",
      device, req.memory == proto::MemoryHandle::cuda_vmm ? "cuda_vmm" : "cuda_ipc", blocks,
      static_cast<unsigned long long>(block_bytes), static_cast<unsigned long long>(bytes), iters, off, on, d2h, h2d,
      off / d2h, on / h2d, lat, lat99, base, lat / base, engines.c_str());
  return 0;
}

}  // namespace kvb::bench
