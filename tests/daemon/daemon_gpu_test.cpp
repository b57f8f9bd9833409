// kvblockd on a GPU (label gpu; every test skips with the reason without a
// usable CUDA device): engines' device KV caches registered over CUDA IPC and
// VMM fds, offloaded / onboarded byte-exact through a real kvblockd for all
// three layouts and MLA (engine_sim --device), layer-wise progress in order,
// the daemon's checks against the real allocations, a SIGKILLed engine's
// device memory released (cudaMemGetInfo), two GPUs sharing blocks through G2.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "device_engine_kv.h"
#include "kvb/client/client.h"
#include "kvb/client/device_kv.h"
#include "kvb/kernels/copy_engines.h"
#include "kvb/kernels/device_memory.h"
#include "raw_client.h"
#include "support/daemon_process.h"

namespace kvb::test {
namespace {

using namespace std::chrono_literals;

/// The binaries under test: this build's, unless KVB_KVBLOCKD / KVB_ENGINE_SIM
/// name others (scripts/gpu-check.sh runs a packed copy on another machine).
std::string binary(const char* env, const char* built) {
  const char* path = std::getenv(env);
  return path != nullptr && *path != '\0' ? path : built;
}
const std::string kKvblockd = binary("KVB_KVBLOCKD", KVBLOCKD_PATH);
const std::string kEngineSim = binary("KVB_ENGINE_SIM", ENGINE_SIM_PATH);

/// Skips the test without a usable CUDA device.
#define KVB_REQUIRE_GPU()                                                      \
  do {                                                                         \
    auto device = probe_cuda_device(0);                                        \
    if (!device) GTEST_SKIP() << "no CUDA device: " << device.error().message; \
  } while (0)

std::string stats_of(client::Client& c) {
  auto json = c.stats();
  return json ? *json : std::string();
}

std::string stats_of(RawClient& raw, std::uint64_t id) {
  auto stats = raw.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
  return stats ? stats->json : std::string();
}

/// A counter of the stats JSON ("key":number), or -1.
long long stat(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::stoll(json.substr(at + key.size() + 3));
}

struct SimCase {
  std::string layout;
  std::string handles;
  std::uint32_t outer = 2;
  bool per_region = false;
};

class DaemonGpuRoundTrip : public ::testing::TestWithParam<SimCase> {};

// engine_sim on device 0: register, offload, lookup, onboard, verify every byte.
TEST_P(DaemonGpuRoundTrip, EngineSimIsByteExact) {
  KVB_REQUIRE_GPU();
  DaemonProcess daemon(kKvblockd, {"--host-pool-bytes", "536870912"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const SimCase& c = GetParam();
  std::vector<std::string> argv{kEngineSim,
                                "--socket",
                                daemon.socket_path(),
                                "--device",
                                "0",
                                "--layout",
                                c.layout,
                                "--handles",
                                c.handles,
                                "--blocks",
                                "24",
                                "--outer-dim",
                                std::to_string(c.outer)};
  if (c.per_region) argv.push_back("--per-region");
  auto out = run_program(argv, 120s);
  ASSERT_TRUE(out) << "engine_sim timed out\n" << daemon.log();
  EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out << "\n" << daemon.log();
  EXPECT_NE(out->out.find("byte-exact"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find(c.handles == "vmm" ? "VMM fds" : "CUDA IPC"), std::string::npos) << out->out;
  // The daemon moved the blocks with its CUDA engines between device memory and a pinned pool.
  auto ctl = client::Client::connect(daemon.socket_path());
  ASSERT_TRUE(ctl);
  const std::string json = stats_of(**ctl);
  EXPECT_NE(json.find("cuda-staged@0"), std::string::npos) << json;
  EXPECT_GE(stat(json, "pinned_host_pools"), 1) << json;
  EXPECT_EQ(stat(json, "host_pool_pin_failures"), 0) << json;
}

INSTANTIATE_TEST_SUITE_P(
    LayoutsAndHandles, DaemonGpuRoundTrip,
    ::testing::Values(SimCase{"fully_contiguous", "ipc"}, SimCase{"layer_separate_block_outer", "ipc"},
                      SimCase{"layer_separate_outer_block", "ipc"}, SimCase{"fully_contiguous", "vmm"},
                      SimCase{"layer_separate_block_outer", "vmm"}, SimCase{"layer_separate_outer_block", "vmm"},
                      SimCase{"layer_separate_block_outer", "ipc", 1},        // MLA
                      SimCase{"layer_separate_outer_block", "vmm", 1},        // MLA
                      SimCase{"layer_separate_block_outer", "ipc", 2, true},  // one cudaMalloc per layer
                      SimCase{"layer_separate_block_outer", "vmm", 2, true}),
    [](const auto& info) {
      return info.param.layout + "_" + info.param.handles + (info.param.outer == 1 ? "_mla" : "") +
             (info.param.per_region ? "_per_region" : "");
    });

TEST(DaemonGpu, LayerwiseOnboardProgressArrivesInOrder) {
  KVB_REQUIRE_GPU();
  DaemonProcess daemon(kKvblockd);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  for (const char* handles : {"ipc", "vmm"}) {
    auto out = run_program({kEngineSim, "--socket", daemon.socket_path(), "--device", "0", "--layers", "7",
                            "--layerwise", "2", "--handles", handles, "--blocks", "16"},
                           120s);
    ASSERT_TRUE(out) << daemon.log();
    EXPECT_TRUE(WIFEXITED(out->status) && WEXITSTATUS(out->status) == 0) << out->out << "\n" << daemon.log();
    EXPECT_NE(out->out.find("4 layer groups in order"), std::string::npos) << out->out;
    EXPECT_NE(out->out.find("byte-exact"), std::string::npos) << out->out;
  }
}

// The daemon checks what the engine declares against the real allocations.
TEST(DaemonGpu, DeclaredSizesAreCheckedAgainstTheRealAllocation) {
  KVB_REQUIRE_GPU();
  DaemonProcess daemon(kKvblockd);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const client::BlockShape shape{4, 2, 16, 64, 2, 256};
  for (auto handles : {client::DeviceHandles::cuda_ipc, client::DeviceHandles::cuda_vmm}) {
    example::DeviceEngineKvOptions options;
    options.handles = handles;
    auto kv = example::DeviceEngineKv::create(shape, client::WireLayoutKind::layer_separate_block_outer, 8, options);
    ASSERT_TRUE(kv) << kv.error().to_string();
    auto exported = client::DeviceKv::export_regions(kv->spec());
    ASSERT_TRUE(exported) << exported.error().to_string();
    RawClient raw(daemon.socket_path());
    ASSERT_TRUE(raw.connected());
    auto hello = raw.call(RequestId{1}, proto::HelloRequest{1, 1, "gpu-test", 0, shape});
    ASSERT_TRUE(hello && hello->code == Errc::ok);
    // 1. An allocation claimed 64 MiB larger than it is.
    proto::RegisterKvRequest big = exported->request();
    big.allocation_bytes[0] += 64ULL << 20;
    auto refused = raw.call(RequestId{2}, big, exported->fds());
    ASSERT_TRUE(refused) << daemon.log();
    EXPECT_EQ(refused->code, Errc::invalid_argument) << refused->message;
    // 2. A device this daemon does not have.
    proto::RegisterKvRequest elsewhere = exported->request();
    elsewhere.device_uuid.assign(16, std::byte{0xEE});
    auto unknown = raw.call(RequestId{3}, elsewhere, exported->fds());
    ASSERT_TRUE(unknown);
    EXPECT_EQ(unknown->code, Errc::unavailable) << unknown->message;
    EXPECT_NE(unknown->message.find("not a device of this daemon"), std::string::npos) << unknown->message;
    // 3. The real one is accepted, and its mapping ends with the session.
    auto accepted = raw.call(RequestId{4}, exported->request(), exported->fds());
    ASSERT_TRUE(accepted);
    EXPECT_EQ(accepted->code, Errc::ok) << accepted->message;
    EXPECT_EQ(stat(stats_of(raw, 5), "device_kv_allocations"), 1);
    ASSERT_TRUE(raw.call(RequestId{6}, proto::ByeRequest{}));
    ASSERT_TRUE(raw.wait_closed());
    RawClient observer(daemon.socket_path());
    bool released = false;
    for (std::uint64_t id = 10; id < 100000 && !released; ++id)  // bounded: each stats call is a round trip
      released = stat(stats_of(observer, id), "device_kv_allocations") == 0;
    EXPECT_TRUE(released) << daemon.log();
  }
}

// A SIGKILLed engine's device memory comes back: the daemon ends its session
// at EOF and unmaps its imports (VMM: the daemon's mapping was keeping the
// memory; IPC: the daemon closes the handle).
TEST(DaemonGpu, AKilledEnginesDeviceMemoryIsReleased) {
  KVB_REQUIRE_GPU();
  DaemonProcess daemon(kKvblockd, {"--host-pool-bytes", "536870912"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  // Warm up: the daemon's context, engines and staging buffers exist before the baseline.
  auto warm = run_program({kEngineSim, "--socket", daemon.socket_path(), "--device", "0", "--blocks", "4"}, 120s);
  ASSERT_TRUE(warm && WIFEXITED(warm->status) && WEXITSTATUS(warm->status) == 0) << daemon.log();
  for (const char* handles : {"ipc", "vmm"}) {
    auto before = device_memory_info(0);
    ASSERT_TRUE(before) << before.error().to_string();
    // 2 x 96 blocks of 2 MiB (Llama-3-8B shape): 384 MiB of device KV cache.
    ChildProgram engine({kEngineSim, "--socket", daemon.socket_path(), "--device", "0", "--handles", handles,
                         "--blocks", "96", "--layers", "32", "--inner-dim", "1024", "--hold"});
    ASSERT_TRUE(engine.wait_for("holding", 120s)) << engine.out() << "\n" << daemon.log();
    auto holding = device_memory_info(0);
    ASSERT_TRUE(holding);
    EXPECT_GE(before->free - holding->free, 384ULL << 20) << "the engine's KV cache is not in device memory?";
    RawClient observer(daemon.socket_path());
    EXPECT_EQ(stat(stats_of(observer, 1), "device_kv_allocations"), 1);
    engine.kill();
    bool unmapped = false;
    for (std::uint64_t id = 10; id < 100000 && !unmapped; ++id)
      unmapped = stat(stats_of(observer, id), "device_kv_allocations") == 0;
    EXPECT_TRUE(unmapped) << daemon.log();
    // The memory is back (within what the daemon may grow by: 64 MiB).
    bool back = false;
    std::uint64_t free_now = 0;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (!back && std::chrono::steady_clock::now() < until) {
      auto now = device_memory_info(0);
      ASSERT_TRUE(now);
      free_now = now->free;
      back = free_now + (64ULL << 20) >= before->free;
      if (!back) (void)stats_of(observer, 500000);  // paces the loop with a daemon round trip
    }
    EXPECT_TRUE(back) << handles << ": free " << (free_now >> 20) << " MiB, before the engine " << (before->free >> 20)
                      << " MiB\n"
                      << daemon.log();
  }
}

// Two engines on two GPUs share blocks through the daemon's G2 pool.
TEST(DaemonGpu, TwoGpusShareBlocksThroughG2) {
  KVB_REQUIRE_GPU();
  auto devices = list_cuda_devices();
  if (!devices || devices->size() < 2) GTEST_SKIP() << "needs two CUDA devices";
  DaemonProcess daemon(kKvblockd);
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const client::BlockShape shape{4, 2, 16, 128, 2, 256};
  std::vector<std::optional<example::DeviceEngineKv>> kvs(2);
  std::vector<std::unique_ptr<client::Client>> clients;
  for (int d = 0; d < 2; ++d) {
    example::DeviceEngineKvOptions options;
    options.device = (*devices)[d].ordinal;
    auto kv = example::DeviceEngineKv::create(shape, client::WireLayoutKind::layer_separate_block_outer, 8, options);
    ASSERT_TRUE(kv) << kv.error().to_string();
    kvs[d].emplace(std::move(*kv));
    auto c = client::Client::connect(daemon.socket_path());
    ASSERT_TRUE(c);
    client::HelloParams hello;
    hello.tenant_salt = 99;  // one tenant: they share blocks
    hello.shape = shape;
    ASSERT_TRUE((*c)->hello(hello));
    auto exported = client::DeviceKv::export_regions(kvs[d]->spec());
    ASSERT_TRUE(exported) << exported.error().to_string();
    ASSERT_TRUE((*c)->register_device_kv(*exported));
    clients.push_back(std::move(*c));
  }
  auto& mirror = kvs[0]->mirror();
  for (std::uint32_t l = 0; l < 4; ++l)
    for (std::uint32_t o = 0; o < 2; ++o) {
      auto chunk = mirror.chunk(1, l, o);
      for (std::size_t i = 0; i < chunk.size(); ++i)
        chunk[i] = static_cast<std::byte>((i + std::size_t{l} * 3 + o) & 0xFF);
    }
  ASSERT_TRUE(kvs[0]->upload());
  const client::OffloadItem off{BlockId{1}, 4242};
  ASSERT_TRUE(clients[0]->offload(std::span(&off, 1)));
  const client::OnboardItem on{4242, BlockId{5}};
  ASSERT_TRUE(clients[1]->onboard(std::span(&on, 1)));
  ASSERT_TRUE(kvs[1]->download());
  for (std::uint32_t l = 0; l < 4; ++l)
    for (std::uint32_t o = 0; o < 2; ++o) {
      auto want = mirror.chunk(1, l, o), got = kvs[1]->mirror().chunk(5, l, o);
      EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size()), 0) << "layer " << l << " outer " << o;
    }
  const std::string json = stats_of(*clients[0]);
  EXPECT_NE(json.find(fmt::format("@{}", (*devices)[1].ordinal)), std::string::npos) << json;
}

}  // namespace
}  // namespace kvb::test
