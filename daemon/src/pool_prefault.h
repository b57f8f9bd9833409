// PoolPrefault: populates one G2 host pool's pages in the background when the
// pool is created (config key `prefault`), so that the first offload into a
// fresh pool copies at memory speed instead of faulting in (and zeroing) a
// 4 KiB page at a time.
//
// One thread per pool walks the pool in chunks with populate_for_write()
// (MADV_POPULATE_WRITE, or a touch that keeps every byte), counting the bytes
// done in an atomic that the stats read. The pool is usable at once: copies
// may run into pages the thread has not reached (they fault them in as
// before) or has already populated (no change to their bytes). When it ends
// the thread posts one log line to the loop (the pool is ready, or why it
// stopped); stopped at shutdown, it logs from itself. The destructor
// stops it between chunks and joins, so it must run before the pool memory
// is unmapped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>

namespace kvb::daemon {

class PoolPrefault {
 public:
  /// Starts populating [base, base + bytes) (page aligned) at once; the
  /// "ready" line is posted to `io`.
  PoolPrefault(boost::asio::io_context& io, std::byte* base, std::uint64_t bytes, std::string name);
  /// Stops between chunks and joins.
  ~PoolPrefault();
  PoolPrefault(const PoolPrefault&) = delete;
  PoolPrefault& operator=(const PoolPrefault&) = delete;

  /// Asks the thread to stop after its current chunk and waits for it.
  void stop() noexcept;

  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  /// Bytes populated so far (bytes() once ready).
  [[nodiscard]] std::uint64_t populated() const noexcept { return populated_.load(std::memory_order_acquire); }
  /// The thread has ended (ready, failed or stopped).
  [[nodiscard]] bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

  /// Bytes populated per populate_for_write call: small enough that a stop
  /// waits at most a few milliseconds, and so does the event loop for the
  /// process's mmap lock (MADV_POPULATE_WRITE holds it for the whole call;
  /// a new pool's mmap needs it: 64 MiB chunks stalled hellos ~50 ms).
  static constexpr std::uint64_t kChunkBytes = std::uint64_t{4} << 20;

 private:
  void run() noexcept;
  /// run()'s body (may throw: fmt and the loop's post allocate).
  void populate();

  boost::asio::io_context& io_;
  std::byte* base_;
  std::uint64_t bytes_;
  std::string name_;
  std::atomic<std::uint64_t> populated_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace kvb::daemon
