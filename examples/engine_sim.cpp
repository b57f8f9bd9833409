// engine_sim: an engine-like program on top of the kvblockd client library.
//
// It attaches to kvblockd, registers a KV cache (memfd regions, or with
// --device N regions in GPU memory shared through CUDA IPC or VMM fds),
// writes recognizable bytes into N blocks, offloads them under chained
// sequence hashes, looks the prefix up, onboards the blocks into N OTHER
// engine blocks (layer by layer with --layerwise G) and checks every byte.
// Prints a short report; the exit code is non-zero on any error or mismatch.
// --hold stops after the offload and waits to be killed (tests kill it to
// check that the daemon releases a dead engine's device memory). --only
// offload / --only onboard run one half: with the same --salt (the hashes
// and bytes derive from it), an offload through one kvblockd of a cluster
// is onboarded and checked through another (make run's cluster act).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "device_engine_kv.h"
#include "kvb/client/client.h"
#include "kvb/client/device_kv.h"
#include "kvb/common/mix64.h"

namespace {

using Clock = std::chrono::steady_clock;
using kvb::client::Client;
using kvb::client::KvRegion;

using kvb::mix64;

/// The recognizable content of chunk (hash, layer, outer): a keyed byte stream.
void fill_chunk(std::span<std::byte> chunk, std::uint64_t hash, std::uint32_t layer, std::uint32_t outer) {
  std::uint64_t state = mix64(hash ^ (std::uint64_t{layer} << 32) ^ outer);
  for (std::size_t i = 0; i < chunk.size(); i += 8) {
    state = mix64(state);
    std::memcpy(chunk.data() + i, &state, std::min<std::size_t>(8, chunk.size() - i));
  }
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

/// Blocks 0..N-1 hold the prefix: chained hashes as an engine would compute them.
std::vector<std::uint64_t> chained_hashes(std::uint64_t salt, std::uint32_t blocks) {
  std::vector<std::uint64_t> hashes(blocks);
  std::uint64_t h = salt;
  for (std::uint32_t b = 0; b < blocks; ++b) hashes[b] = h = mix64(h ^ (0xB10CULL + b));
  return hashes;
}

/// memcpy of `bytes` between two memfd mappings of its own (as the daemon's
/// pool and the engine's region are): first into untouched pages, then into
/// the same pages again. MiB/s of each; {0, 0} when the memory is not there.
std::pair<double, double> memcpy_baseline(std::uint64_t bytes) {
  auto map = [bytes]() -> std::byte* {
    const int fd = ::memfd_create("engine_sim-memcpy", MFD_CLOEXEC);
    if (fd < 0) return nullptr;
    void* p = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0
                  ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    ::close(fd);
    return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  };
  std::byte* src = map();
  std::byte* dst = map();
  std::pair<double, double> out{0, 0};
  if (src != nullptr && dst != nullptr) {
    std::memset(src, 0x5A, bytes);
    const double mib = static_cast<double>(bytes) / (1 << 20);
    auto t0 = Clock::now();
    std::memcpy(dst, src, bytes);
    out.first = mib / (ms_since(t0) / 1000.0);
    t0 = Clock::now();
    std::memcpy(dst, src, bytes);
    out.second = mib / (ms_since(t0) / 1000.0);
  }
  if (src != nullptr) ::munmap(src, bytes);
  if (dst != nullptr) ::munmap(dst, bytes);
  return out;
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{"engine_sim: attach to kvblockd, offload / lookup / onboard blocks and verify the bytes"};
  std::string socket = kvb::client::default_socket_path();
  std::uint32_t blocks = 32;
  std::string layout = "layer_separate_block_outer";
  kvb::client::BlockShape shape;
  shape.num_layers = 4;
  shape.outer_dim = 2;
  shape.page_size = 16;
  shape.inner_dim = 128;
  shape.dtype = 2;  // bf16: 4 KiB chunks, 32 KiB blocks
  std::uint64_t salt = 0;
  int device = -1;
  std::string handles = "auto";
  bool per_region = false;
  std::uint32_t layerwise = 0;
  bool hold = false;
  bool no_baseline = false;
  std::uint32_t steady = 0;
  app.add_option("--socket", socket, "kvblockd's Unix socket")->capture_default_str();
  app.add_option("--blocks", blocks, "blocks to offload and onboard")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--layout", layout, "fully_contiguous | layer_separate_block_outer | layer_separate_outer_block")
      ->capture_default_str();
  app.add_option("--layers", shape.num_layers, "layers")->capture_default_str();
  app.add_option("--page-size", shape.page_size, "tokens per block")->capture_default_str();
  app.add_option("--inner-dim", shape.inner_dim, "num_kv_heads x head_dim")->capture_default_str();
  app.add_option("--outer-dim", shape.outer_dim, "2 = K,V; 1 = MLA")->capture_default_str()->check(CLI::Range(1, 2));
  app.add_option("--device", device, "CUDA device of the KV cache (-1: memfd host memory)")->capture_default_str();
  app.add_option("--handles", handles, "device memory: auto | ipc (cudaMalloc) | vmm (cuMemCreate)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "ipc", "vmm"}));
  app.add_flag("--per-region", per_region, "device memory: one allocation per region (default: one for all)");
  app.add_option("--layerwise", layerwise, "onboard layer by layer, N layers per group (0: one onboard)")
      ->capture_default_str();
  app.add_flag("--hold", hold, "stop after the offload and wait to be killed");
  app.add_flag("--no-baseline", no_baseline, "skip the memcpy of the same bytes printed beside the offload / onboard");
  app.add_option("--steady", steady,
                 "after the first offload / onboard, this many more rounds of the same bytes under fresh hashes, "
                 "each checked; their median beside memcpy between touched buffers (memfd host memory)")
      ->capture_default_str()
      ->check(CLI::Range(0U, 1000U));
  app.add_option("--salt", salt, "tenant salt (0: one from the clock)")->capture_default_str();
  bool print_hashes = false;
  app.add_flag("--print-hashes", print_hashes,
               "print the N block hashes of --salt (decimal, one line; e.g. for kvblockctl locate) and exit");
  std::string only;
  app.add_option("--only", only, "run one half: offload (then exit) or onboard (lookup, onboard, verify)")
      ->check(CLI::IsMember({"offload", "onboard"}));
  CLI11_PARSE(app, argc, argv);
  if ((!only.empty() || print_hashes) && salt == 0) {
    std::fprintf(stderr, "engine_sim: --only and --print-hashes need the --salt both halves use\n");
    return 2;
  }
  const bool do_offload = only != "onboard";
  const bool do_onboard = only != "offload";

  kvb::client::WireLayoutKind kind{};
  if (layout == "fully_contiguous") {
    kind = kvb::client::WireLayoutKind::fully_contiguous;
  } else if (layout == "layer_separate_block_outer") {
    kind = kvb::client::WireLayoutKind::layer_separate_block_outer;
  } else if (layout == "layer_separate_outer_block") {
    kind = kvb::client::WireLayoutKind::layer_separate_outer_block;
  } else {
    std::fprintf(stderr, "engine_sim: unknown --layout '%s'\n", layout.c_str());
    return 2;
  }
  if (salt == 0) salt = mix64(static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
  if (print_hashes) {
    for (const std::uint64_t hash : chained_hashes(salt, blocks))
      std::printf("%llu ", static_cast<unsigned long long>(hash));
    std::printf("\n");
    return 0;
  }

  auto fail = [](const char* step, const kvb::Error& e) {
    std::fprintf(stderr, "engine_sim: %s failed: %s\n", step, e.to_string().c_str());
    return 1;
  };

  // The KV cache: memfd regions, or device memory with a host mirror.
  std::optional<KvRegion> host_kv;
  std::optional<kvb::example::DeviceEngineKv> device_kv;
  KvRegion* region = nullptr;
  if (device >= 0) {
    kvb::example::DeviceEngineKvOptions options;
    options.device = device;
    options.handles = handles == "vmm"   ? kvb::client::DeviceHandles::cuda_vmm
                      : handles == "ipc" ? kvb::client::DeviceHandles::cuda_ipc
                                         : kvb::client::DeviceHandles::automatic;
    options.one_allocation = !per_region;
    auto made = kvb::example::DeviceEngineKv::create(shape, kind, 2 * blocks, options);
    if (!made) return fail("allocating the device KV cache", made.error());
    device_kv.emplace(std::move(*made));
    region = &device_kv->mirror();
  } else {
    auto made = KvRegion::create(shape, kind, 2 * blocks);
    if (!made) return fail("creating the KV region", made.error());
    host_kv.emplace(std::move(*made));
    region = &*host_kv;
  }
  auto connected = Client::connect(socket);
  if (!connected) return fail("connect", connected.error());
  Client& c = **connected;

  kvb::client::HelloParams hello;
  hello.client_name = "engine_sim";
  hello.tenant_salt = salt;
  hello.shape = shape;
  auto info = c.hello(hello);
  if (!info) return fail("hello", info.error());

  const std::vector<std::uint64_t> hashes = chained_hashes(salt, blocks);
  for (std::uint32_t b = 0; b < blocks; ++b)
    for (std::uint32_t l = 0; l < shape.num_layers; ++l)
      for (std::uint32_t o = 0; o < shape.outer_dim; ++o) fill_chunk(region->chunk(b, l, o), hashes[b], l, o);
  std::string memory = "memfd";
  if (device_kv) {
    if (auto st = device_kv->upload(); !st) return fail("uploading the blocks to the device", st.error());
    auto exported = kvb::client::DeviceKv::export_regions(device_kv->spec());
    if (!exported) return fail("exporting the device KV cache", exported.error());
    memory = fmt::format("device {} ({}, {} allocation{})", device,
                         exported->request().memory == kvb::proto::MemoryHandle::cuda_vmm ? "VMM fds" : "CUDA IPC",
                         exported->request().allocation_bytes.size(),
                         exported->request().allocation_bytes.size() == 1 ? "" : "s");
    if (auto st = c.register_device_kv(*exported); !st) return fail("register_kv (device)", st.error());
  } else {
    if (auto st = c.register_kv(*region); !st) return fail("register_kv", st.error());
  }

  std::vector<kvb::client::OffloadItem> offload(blocks);
  for (std::uint32_t b = 0; b < blocks; ++b) offload[b] = {kvb::BlockId{b}, hashes[b]};
  auto t0 = Clock::now();
  if (do_offload) {
    if (auto st = c.offload(offload); !st) return fail("offload", st.error());
  }
  const double offload_ms = ms_since(t0);
  const double mib = static_cast<double>(blocks) * static_cast<double>(kvb::client::block_bytes(shape)) / (1 << 20);
  if (!do_onboard) {
    (void)c.bye();
    std::printf("engine_sim: session %llu on kvblockd %s, %u blocks of %llu bytes (%.2f MiB), %s\n",
                static_cast<unsigned long long>(info->session_id.value()), info->server_version.c_str(), blocks,
                static_cast<unsigned long long>(kvb::client::block_bytes(shape)), mib, memory.c_str());
    std::printf("  offload  %8.2f ms  (%.0f MiB/s)\n", offload_ms, mib / (offload_ms / 1000.0));
    return 0;
  }
  if (hold) {
    std::printf("engine_sim: holding (pid %d, %s)\n", static_cast<int>(::getpid()), memory.c_str());
    std::fflush(stdout);
    for (;;) ::pause();  // until killed
  }

  t0 = Clock::now();
  auto found = c.lookup(hashes);
  const double lookup_ms = ms_since(t0);
  if (!found) return fail("lookup", found.error());
  if (found->prefix_blocks != blocks) {
    std::fprintf(stderr, "engine_sim: lookup matched %u blocks, expected %u\n", found->prefix_blocks, blocks);
    return 1;
  }

  std::vector<kvb::client::OnboardItem> onboard(blocks);
  for (std::uint32_t b = 0; b < blocks; ++b) onboard[b] = {hashes[b], kvb::BlockId{blocks + b}};
  t0 = Clock::now();
  std::uint32_t groups = 0, next_layer = 0;
  bool in_order = true;
  if (layerwise > 0) {
    auto st = c.onboard_layers(onboard, layerwise, [&](const kvb::client::LayerProgress& p) {
      in_order = in_order && p.layer_begin == next_layer && p.layer_end > p.layer_begin;
      next_layer = p.layer_end;
      ++groups;
    });
    if (!st) return fail("onboard_layers", st.error());
    if (!in_order || next_layer != shape.num_layers) {
      std::fprintf(stderr, "engine_sim: layer progress out of order or incomplete (%u groups, last layer %u)\n", groups,
                   next_layer);
      return 1;
    }
  } else if (auto st = c.onboard(onboard); !st) {
    return fail("onboard", st.error());
  }
  const double onboard_ms = ms_since(t0);
  if (device_kv) {
    if (auto st = device_kv->download(); !st) return fail("reading the blocks back from the device", st.error());
  }

  // Every chunk of every onboarded block must equal what was offloaded.
  std::uint64_t bad_chunks = 0;
  std::vector<std::byte> expect(kvb::client::chunk_bytes(shape));
  for (std::uint32_t b = 0; b < blocks; ++b)
    for (std::uint32_t l = 0; l < shape.num_layers; ++l)
      for (std::uint32_t o = 0; o < shape.outer_dim; ++o) {
        fill_chunk(expect, hashes[b], l, o);
        auto got = region->chunk(blocks + b, l, o);
        if (std::memcmp(got.data(), expect.data(), expect.size()) != 0) {
          if (bad_chunks == 0) std::fprintf(stderr, "engine_sim: block %u layer %u outer %u differs\n", b, l, o);
          ++bad_chunks;
        }
      }

  auto released = c.release();
  if (!released) return fail("release", released.error());

  // Steady state: more rounds of the same engine blocks under fresh hashes
  // (an offload of hashes already stored copies nothing), the destination
  // blocks zeroed before each onboard so that the check means something.
  std::vector<double> steady_offload_ms, steady_onboard_ms;
  for (std::uint32_t round = 1; round <= steady && !device_kv && do_offload && layerwise == 0; ++round) {
    const auto fresh = chained_hashes(salt ^ (0x9E3779B97F4A7C15ULL * round), blocks);
    for (std::uint32_t b = 0; b < blocks; ++b) offload[b] = {kvb::BlockId{b}, fresh[b]};
    t0 = Clock::now();
    if (auto st = c.offload(offload); !st) return fail("offload (steady)", st.error());
    steady_offload_ms.push_back(ms_since(t0));
    for (std::uint32_t b = 0; b < blocks; ++b) {
      onboard[b] = {fresh[b], kvb::BlockId{blocks + b}};
      for (std::uint32_t l = 0; l < shape.num_layers; ++l)
        for (std::uint32_t o = 0; o < shape.outer_dim; ++o) {
          auto chunk = region->chunk(blocks + b, l, o);
          std::memset(chunk.data(), 0, chunk.size());
        }
    }
    t0 = Clock::now();
    if (auto st = c.onboard(onboard); !st) return fail("onboard (steady)", st.error());
    steady_onboard_ms.push_back(ms_since(t0));
    for (std::uint32_t b = 0; b < blocks; ++b)
      for (std::uint32_t l = 0; l < shape.num_layers; ++l)
        for (std::uint32_t o = 0; o < shape.outer_dim; ++o) {
          fill_chunk(expect, hashes[b], l, o);  // the engine blocks still hold round 0's bytes
          if (std::memcmp(region->chunk(blocks + b, l, o).data(), expect.data(), expect.size()) != 0) {
            if (bad_chunks == 0)
              std::fprintf(stderr, "engine_sim: steady round %u: block %u layer %u outer %u differs\n", round, b, l, o);
            ++bad_chunks;
          }
        }
    if (auto r = c.release(); !r) return fail("release (steady)", r.error());
  }
  (void)c.bye();

  std::printf("engine_sim: session %llu on kvblockd %s, layout %s, %u blocks of %llu bytes (%.2f MiB), %s\n",
              static_cast<unsigned long long>(info->session_id.value()), info->server_version.c_str(), layout.c_str(),
              blocks, static_cast<unsigned long long>(kvb::client::block_bytes(shape)), mib, memory.c_str());
  if (do_offload) std::printf("  offload  %8.2f ms  (%.0f MiB/s)\n", offload_ms, mib / (offload_ms / 1000.0));
  std::printf("  lookup   %8.2f ms  prefix %u/%u\n", lookup_ms, found->prefix_blocks, blocks);
  std::printf("  onboard  %8.2f ms  (%.0f MiB/s)%s\n", onboard_ms, mib / (onboard_ms / 1000.0),
              layerwise > 0 ? fmt::format(", {} layer groups in order", groups).c_str() : "");
  std::printf("  verify   %s (%llu bad chunks)\n", bad_chunks == 0 ? "byte-exact" : "MISMATCH",
              static_cast<unsigned long long>(bad_chunks));
  const std::uint64_t total_bytes = static_cast<std::uint64_t>(blocks) * kvb::client::block_bytes(shape);
  constexpr std::uint64_t kCompareFrom = 64ULL << 20;
  if (!device_kv && !no_baseline && total_bytes < kCompareFrom) {
    // Under the last-level cache memcpy runs from cache, and one small
    // request is its round trip and (the first on a new block shape) the
    // host pool's set-up: a ratio would say nothing.
    std::printf(
        "  memcpy   not compared: %.2f MiB is under 64 MiB (kvblockd-bench daemon measures the path at 1 GiB)\n", mib);
  }
  if (!device_kv && !no_baseline && total_bytes >= kCompareFrom) {
    // The same bytes with memcpy, in this run: the offload's destination (a
    // host pool, prefaulted by default) is touched memory; the onboard's is
    // engine memory this program never wrote (its blocks N..2N-1).
    const auto [fresh, touched] = memcpy_baseline(total_bytes);
    if (fresh > 0) {
      std::printf("  memcpy   %.0f MiB/s into untouched memory, %.0f MiB/s touched (same bytes, this run)\n", fresh,
                  touched);
      if (do_offload) std::printf("  offload / memcpy touched   %.2fx\n", mib / (offload_ms / 1000.0) / touched);
      if (layerwise == 0) std::printf("  onboard / memcpy untouched %.2fx\n", mib / (onboard_ms / 1000.0) / fresh);
    }
  }
  if (!steady_offload_ms.empty()) {
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double off = mib / (median(steady_offload_ms) / 1000.0), on = mib / (median(steady_onboard_ms) / 1000.0);
    std::printf("  steady   %zu rounds: offload %.0f MiB/s, onboard %.0f MiB/s (medians), verify %s\n",
                steady_offload_ms.size(), off, on, bad_chunks == 0 ? "byte-exact" : "MISMATCH");
    if (!no_baseline && total_bytes >= kCompareFrom) {
      const auto [fresh, touched] = memcpy_baseline(total_bytes);
      if (touched > 0)
        std::printf("  steady / memcpy touched (%.0f MiB/s, this run): offload %.2fx, onboard %.2fx\n", touched,
                    off / touched, on / touched);
    } else if (!no_baseline) {
      std::printf("  steady   memcpy not compared: %.2f MiB is under 64 MiB\n", mib);
    }
  }
  return bad_chunks == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_sim: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "engine_sim: an unknown exception\n");
    return 1;
  }
}
