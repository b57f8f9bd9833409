#include "memcpy_baseline.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

namespace kvb::bench {

namespace {

using Clock = std::chrono::steady_clock;

/// An anonymous or memfd mapping, unmapped (and closed) at scope exit.
class Mapping {
 public:
  static std::optional<Mapping> anonymous(std::uint64_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return std::nullopt;
    return Mapping(static_cast<std::byte*>(p), bytes);
  }
  // Shared memfd pages, like an engine's KV region registered with kvblockd.
  static std::optional<Mapping> memfd(std::uint64_t bytes) {
    const int fd = ::memfd_create("kvb-load-memcpy", MFD_CLOEXEC);
    if (fd < 0) return std::nullopt;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      ::close(fd);
      return std::nullopt;
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return std::nullopt;
    return Mapping(static_cast<std::byte*>(p), bytes);
  }
  Mapping(Mapping&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(o.bytes_) {}
  Mapping& operator=(Mapping&&) = delete;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data_) ::munmap(data_, bytes_);
  }
  [[nodiscard]] std::byte* data() const noexcept { return data_; }

 private:
  Mapping(std::byte* d, std::uint64_t b) : data_(d), bytes_(b) {}
  std::byte* data_;
  std::uint64_t bytes_;
};

double gbps(std::uint64_t bytes, Clock::duration d) {
  const double s = std::chrono::duration<double>(d).count();
  return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0;
}

}  // namespace

std::optional<double> memcpy_cold_gbps(std::uint64_t bytes, std::uint64_t requests, unsigned threads,
                                       std::string& why) {
  threads = std::max(threads, 1U);
  const std::uint64_t total = bytes * requests;
  if (total == 0) {
    why = "nothing to copy";
    return std::nullopt;
  }
  auto src = Mapping::anonymous(total);
  auto dst = Mapping::memfd(total);
  if (!src || !dst) {
    why = "no memory for the cold memcpy";
    return std::nullopt;
  }
  std::memset(src->data(), 0x5A, total);
  std::memset(dst->data(), 0, total);  // its pages exist, as the engine's and the pool's do
  // One wave is short (tens of ms): the median of three.
  std::vector<double> runs;
  for (int run = 0; run < 3; ++run) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (std::uint64_t r = t; r < requests; r += threads)
          std::memcpy(dst->data() + r * bytes, src->data() + r * bytes, bytes);
      });
    for (auto& th : pool) th.join();
    runs.push_back(gbps(total, Clock::now() - t0));
  }
  std::sort(runs.begin(), runs.end());
  return runs[1];
}

std::optional<SteadyMemcpy> memcpy_steady_gbps(std::uint64_t chunk, std::uint64_t working_set, unsigned threads,
                                               unsigned passes, std::string& why) {
  threads = std::max(threads, 1U);
  chunk = std::max<std::uint64_t>(chunk, 64);
  // Each thread's share holds whole chunks, at least one.
  const std::uint64_t per_thread = std::max<std::uint64_t>(working_set / threads / chunk, 1) * chunk;
  std::vector<Mapping> src, dst;
  for (unsigned t = 0; t < threads; ++t) {
    auto s = Mapping::anonymous(per_thread);
    auto d = Mapping::memfd(per_thread);
    if (!s || !d) {
      why = "no memory for the steady memcpy's working set";
      return std::nullopt;
    }
    std::memset(s->data(), 0x3C, per_thread);  // both touched: steady state
    std::memset(d->data(), 0, per_thread);
    src.push_back(std::move(*s));
    dst.push_back(std::move(*d));
  }
  const std::uint64_t chunks = per_thread / chunk;
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (unsigned p = 0; p < passes; ++p)
        for (std::uint64_t c = 0; c < chunks; ++c)
          std::memcpy(dst[t].data() + c * chunk, src[t].data() + c * chunk, chunk);
    });
  for (auto& th : pool) th.join();
  SteadyMemcpy out;
  out.gbps = gbps(per_thread * threads * passes, Clock::now() - t0);
  out.working_set = per_thread * threads;
  out.threads = threads;
  return out;
}

}  // namespace kvb::bench
