#include "pool_prefault.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include "background_priority.h"
#include "kvb/common/page_populate.h"

namespace kvb::daemon {

PoolPrefault::PoolPrefault(boost::asio::io_context& io, std::byte* base, std::uint64_t bytes, std::string name)
    : io_(io), base_(base), bytes_(bytes), name_(std::move(name)) {
  thread_ = std::thread([this] { run(); });
}

PoolPrefault::~PoolPrefault() { stop(); }

void PoolPrefault::stop() noexcept {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void PoolPrefault::run() noexcept {
  lower_this_thread_priority();
  try {
    populate();
  } catch (const std::exception& e) {  // fmt or the post could not allocate: the copies fault the rest in
    finished_.store(true, std::memory_order_release);
    std::fprintf(stderr, "kvblockd: %s: prefault stopped: %s\n", name_.c_str(), e.what());
  } catch (...) {
    finished_.store(true, std::memory_order_release);
  }
}

void PoolPrefault::populate() {
  const auto start = std::chrono::steady_clock::now();
  PopulateMethod method = PopulateMethod::madvise;
  std::uint64_t done = 0;
  while (done < bytes_ && !stop_.load(std::memory_order_acquire)) {
    const std::uint64_t n = std::min(kChunkBytes, bytes_ - done);
    auto populated = populate_for_write(base_ + done, n);
    if (!populated) {
      auto line = fmt::format("{}: prefault stopped after {} of {} bytes: {}; the first copies fault the rest in",
                              name_, done, bytes_, populated.error().message);
      finished_.store(true, std::memory_order_release);
      boost::asio::post(io_, [line = std::move(line)] { spdlog::warn("{}", line); });
      return;
    }
    if (*populated == PopulateMethod::touch) method = PopulateMethod::touch;
    done += n;
    // The last chunk is published after the huge-page count below, so that
    // the stats say "ready" only once this thread stops using the CPU.
    if (done < bytes_) populated_.store(done, std::memory_order_release);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (done < bytes_) {
    // Shutdown or a reclaim: the loop may not run again.
    spdlog::info("{}: prefault stopped (pool reclaimed or daemon stopping) after {} of {} bytes ({:.2f} s)", name_,
                 done, bytes_, seconds);
    finished_.store(true, std::memory_order_release);
    return;
  }
  // /proc/self/smaps walks every page table of the process (~0.1 s of a
  // core for a 2 GiB pool and as much engine memory: it slowed the first
  // offload on 2 vCPUs, issue 13); without shmem huge pages there is none.
  const std::uint64_t huge = shmem_huge_pages().page_bytes != 0 ? huge_page_bytes_mapped(base_, bytes_) : 0;
  populated_.store(done, std::memory_order_release);
  auto line =
      fmt::format("{} ready: {} bytes populated in {:.2f} s ({:.1f} GB/s, {}), {} bytes in huge pages", name_, bytes_,
                  seconds, seconds > 0 ? static_cast<double>(bytes_) / seconds / 1e9 : 0.0, to_string(method), huge);
  finished_.store(true, std::memory_order_release);
  boost::asio::post(io_, [line = std::move(line)] { spdlog::info("{}", line); });
}

}  // namespace kvb::daemon
