// make_copy_engines / select_engine / probe_cuda_device. On a machine with
// the CUDA libraries but no usable GPU (this CI) the factory must fall back
// to the host engine with exactly one log line.
#include "kvb/kernels/copy_engines.h"

#include <memory>

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
  CopyEngines engines = make_copy_engines();
  ASSERT_NE(engines.host, nullptr);
  EXPECT_FALSE(engines.has_cuda());
  EXPECT_EQ(engines.cuda_kernel, nullptr);
  EXPECT_EQ(engines.cuda_batch, nullptr);
  EXPECT_EQ(engines.cuda_memcpy, nullptr);
  EXPECT_EQ(engines.device.ordinal, -1);
  EXPECT_EQ(engines.cuda_unavailable, device.error().message);
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_NE(lines[0].find("no usable CUDA device"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(engines.cuda_unavailable), std::string::npos) << lines[0];

  // Host memory still works; device memory says why it cannot.
  auto host = select_engine(engines, MemoryKind::host, MemoryKind::host_pinned);
  ASSERT_TRUE(host);
  EXPECT_EQ((*host)->name(), "host");
  auto dev = select_engine(engines, MemoryKind::device, MemoryKind::host_pinned);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, Errc::unavailable);
  EXPECT_NE(dev.error().message.find(engines.cuda_unavailable), std::string::npos) << dev.error().message;
}

TEST(CopyEngines, DisabledCudaLogsNothingAndKeepsHost) {
  CapturedLog log;
  CopyEngineOptions options;
  options.use_cuda = false;
  options.host.workers = 3;
  CopyEngines engines = make_copy_engines(options);
  ASSERT_NE(engines.host, nullptr);
  EXPECT_EQ(engines.host->workers(), 3U);
  EXPECT_FALSE(engines.has_cuda());
  EXPECT_TRUE(log.lines().empty());
  EXPECT_EQ(engines.get(CopyEngineKind::host), engines.host.get());
  EXPECT_EQ(engines.get(CopyEngineKind::cuda_kernel), nullptr);
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

TEST(CopyEngines, SelectionRuleWithCudaEngines) {
  CopyEngines engines = make_copy_engines();
  if (!engines.has_cuda()) GTEST_SKIP() << "no CUDA device: " << engines.cuda_unavailable;
  const auto pick = [&](MemoryKind s, MemoryKind d) {
    auto e = select_engine(engines, s, d);
    return e ? std::string((*e)->name()) : e.error().to_string();
  };
  const std::string to_host = engines.cuda_staged ? "cuda-staged" : engines.cuda_batch ? "cuda-batch" : "cuda-kernel";
  EXPECT_EQ(pick(MemoryKind::device, MemoryKind::device), "cuda-kernel");
  EXPECT_EQ(pick(MemoryKind::device, MemoryKind::host_pinned), to_host);
  EXPECT_EQ(pick(MemoryKind::host_pinned, MemoryKind::device), to_host);
  EXPECT_EQ(pick(MemoryKind::host, MemoryKind::host), "host");
  EXPECT_NE(pick(MemoryKind::host, MemoryKind::device).find("unsupported"), std::string::npos);
}

}  // namespace
}  // namespace kvb
