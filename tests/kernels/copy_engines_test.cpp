// CopyEngines / engine_preference / select_engine / probe_cuda_device. On a
// machine with the CUDA libraries but no usable GPU (this CI) the engines
// must fall back to the host engine with exactly one log line.
#include "kvb/kernels/copy_engines.h"

#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

namespace kvb {
namespace {

// Routes the default logger into a ring buffer for the test's lifetime.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)), old_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", sink_);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(old_); }
  [[nodiscard]] std::vector<std::string> lines() const { return sink_->last_formatted(); }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> old_;
};

TEST(CopyEngines, FallsBackToHostWithOneLogLineWithoutUsableGpu) {
  auto device = probe_cuda_device(0);
  if (device) GTEST_SKIP() << "a usable CUDA device is present (" << device->name << "): no fallback to test";
  EXPECT_EQ(device.error().code, Errc::unavailable);
  EXPECT_FALSE(device.error().message.empty());

  CapturedLog log;
  CopyEngines engines;
  EXPECT_FALSE(engines.has_cuda());
  EXPECT_TRUE(engines.devices().empty());
  EXPECT_EQ(engines.device(0), nullptr);
  for (auto kind : {CopyEngineKind::cuda_kernel, CopyEngineKind::cuda_batch, CopyEngineKind::cuda_memcpy,
                    CopyEngineKind::cuda_staged}) {
    auto engine = engines.get(kind);
    ASSERT_FALSE(engine) << to_string(kind);
    EXPECT_EQ(engine.error().code, Errc::unavailable);
  }
  EXPECT_EQ(engines.built(), std::vector<std::string>{"host"});
  EXPECT_FALSE(engines.cuda_unavailable().empty());
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_NE(lines[0].find("no usable CUDA device"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(engines.cuda_unavailable()), std::string::npos) << lines[0];

  // Host memory still works; device memory says why it cannot.
  auto host = select_engine(engines, MemoryKind::host, MemoryKind::host_pinned);
  ASSERT_TRUE(host);
  EXPECT_EQ((*host)->name(), "host");
  auto dev = select_engine(engines, MemoryKind::device, MemoryKind::host_pinned);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, Errc::unavailable);
  EXPECT_NE(dev.error().message.find(engines.cuda_unavailable()), std::string::npos) << dev.error().message;
  // Pageable host memory (a pool whose pinning failed) is no different here.
  auto pageable = select_engine(engines, MemoryKind::host, MemoryKind::device);
  ASSERT_FALSE(pageable);
  EXPECT_EQ(pageable.error().code, Errc::unavailable);
}

TEST(CopyEngines, DisabledCudaLogsNothingAndKeepsHost) {
  CapturedLog log;
  CopyEngineOptions options;
  options.use_cuda = false;
  options.host.workers = 3;
  CopyEngines engines(options);
  EXPECT_EQ(engines.host().workers(), 3U);
  EXPECT_FALSE(engines.has_cuda());
  EXPECT_TRUE(log.lines().empty());
  auto host = engines.get(CopyEngineKind::host);
  ASSERT_TRUE(host);
  EXPECT_EQ(*host, &engines.host());
  auto kernel = engines.get(CopyEngineKind::cuda_kernel);
  ASSERT_FALSE(kernel);
  EXPECT_NE(kernel.error().message.find("CUDA disabled by configuration"), std::string::npos) << kernel.error().message;
}

TEST(CopyEngines, ProbeOfABadOrdinalIsAnErrorNotACrash) {
  auto device = probe_cuda_device(-1);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::unavailable);
  EXPECT_FALSE(probe_cuda_device(1 << 20));
}

TEST(CopyEngines, EngineNamesRoundTrip) {
  for (auto kind : {CopyEngineKind::host, CopyEngineKind::cuda_kernel, CopyEngineKind::cuda_batch,
                    CopyEngineKind::cuda_memcpy, CopyEngineKind::cuda_staged}) {
    auto parsed = parse_copy_engine_kind(to_string(kind));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, kind);
  }
  auto bad = parse_copy_engine_kind("gpu");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("'gpu'"), std::string::npos);
}

// The rule itself, on every machine: which engine kinds a plan between two
// kinds of memory tries, in order.
TEST(CopyEngines, SelectionRule) {
  using K = CopyEngineKind;
  using M = MemoryKind;
  const auto kinds = [](M s, M d) {
    const auto span = engine_preference(s, d);
    return std::vector<K>(span.begin(), span.end());
  };
  for (auto s : {M::host, M::host_pinned})
    for (auto d : {M::host, M::host_pinned}) EXPECT_EQ(kinds(s, d), std::vector<K>{K::host});
  EXPECT_EQ(kinds(M::device, M::device), std::vector<K>{K::cuda_kernel});
  const std::vector<K> pinned{K::cuda_staged, K::cuda_batch, K::cuda_kernel};
  EXPECT_EQ(kinds(M::device, M::host_pinned), pinned);
  EXPECT_EQ(kinds(M::host_pinned, M::device), pinned);
  // Pageable host memory (pinning failed): only the staged engine, which
  // bounces it through pinned memory of its own; never the mapped kernel.
  EXPECT_EQ(kinds(M::device, M::host), std::vector<K>{K::cuda_staged});
  EXPECT_EQ(kinds(M::host, M::device), std::vector<K>{K::cuda_staged});
}

// With a GPU: engines start lazily, one per (device, kind) a path needs.
TEST(CopyEngines, SelectionBuildsEnginesLazily) {
  CopyEngines engines;
  if (!engines.has_cuda()) GTEST_SKIP() << "no CUDA device: " << engines.cuda_unavailable();
  EXPECT_EQ(engines.built(), std::vector<std::string>{"host"}) << "no CUDA engine before a copy needs one";
  const int ordinal = engines.devices().front().ordinal;
  const auto pick = [&](MemoryKind s, MemoryKind d) {
    auto e = select_engine(engines, s, d, ordinal);
    return e ? std::string((*e)->name()) : e.error().to_string();
  };
  EXPECT_EQ(pick(MemoryKind::host, MemoryKind::host), "host");
  EXPECT_EQ(engines.built().size(), 1U);
  EXPECT_EQ(pick(MemoryKind::device, MemoryKind::device), "cuda-kernel");
  EXPECT_EQ(engines.built(), (std::vector<std::string>{"host", fmt::format("cuda-kernel@{}", ordinal)}));
  EXPECT_EQ(pick(MemoryKind::device, MemoryKind::host_pinned), "cuda-staged");
  EXPECT_EQ(pick(MemoryKind::host_pinned, MemoryKind::device), "cuda-staged");
  EXPECT_EQ(pick(MemoryKind::host, MemoryKind::device), "cuda-staged");
  EXPECT_EQ(engines.built().size(), 3U);
  auto missing = engines.get(CopyEngineKind::cuda_kernel, 1 << 20);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::unavailable);
}

}  // namespace
}  // namespace kvb
