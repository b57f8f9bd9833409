// ThreadPoolFileIo: FileIo by blocking pread/pwrite/fdatasync on a few
// worker threads: the fallback where io_uring is unavailable (old kernels,
// containers whose seccomp filter blocks it). Operations start in
// submission order; up to `threads` run at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "kvb/storage/file_io.h"

namespace kvb::storage {

class ThreadPoolFileIo final : public FileIo {
 public:
  ThreadPoolFileIo(int fd, std::uint32_t threads);
  ~ThreadPoolFileIo() override;

  [[nodiscard]] std::string_view name() const noexcept override { return "threads"; }
  void read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) override;
  void write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) override;
  void datasync(IoDone done) override;
  [[nodiscard]] std::uint32_t in_flight() const noexcept override { return in_flight_.load(); }

 private:
  struct Op {
    enum class Kind : std::uint8_t { read, write, sync } kind = Kind::read;
    std::uint64_t offset = 0;
    std::byte* buf = nullptr;
    std::size_t len = 0;
    IoDone done;
  };
  void enqueue(Op op);
  void work();
  Result<std::size_t> perform(const Op& op) const;

  int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::atomic<std::uint32_t> in_flight_{0};
  std::vector<std::thread> threads_;
};

}  // namespace kvb::storage
