// UringFileIo: FileIo over one io_uring. One thread owns the ring: it takes
// submitted operations from a queue, keeps at most queue_depth of them in
// the kernel, and reaps completions, calling each `done` on that thread.
// Submitters wake it through an eventfd the ring polls, so the thread sleeps
// in io_uring_wait_cqe and never spins.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "kvb/storage/file_io.h"

struct io_uring;

namespace kvb::storage {

class UringFileIo final : public FileIo {
 public:
  /// A ring of `queue_depth` entries over `fd`. unavailable when the kernel
  /// (or a seccomp filter) refuses io_uring or its read/write/fsync ops.
  [[nodiscard]] static Result<std::unique_ptr<UringFileIo>> make(int fd, std::uint32_t queue_depth);
  ~UringFileIo() override;

  [[nodiscard]] std::string_view name() const noexcept override { return "io_uring"; }
  void read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) override;
  void write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) override;
  void datasync(IoDone done) override;
  [[nodiscard]] std::uint32_t in_flight() const noexcept override { return in_flight_.load(); }

 private:
  struct Op;
  UringFileIo(int fd, std::uint32_t queue_depth, std::unique_ptr<io_uring> ring, int event_fd);
  void enqueue(std::unique_ptr<Op> op);
  void run();
  bool arm_wakeup();
  bool submit_op(Op* op);

  int fd_;
  std::uint32_t queue_depth_;
  std::unique_ptr<io_uring> ring_;
  int event_fd_;
  std::mutex mu_;
  std::deque<std::unique_ptr<Op>> pending_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::atomic<std::uint32_t> in_flight_{0};
  std::thread thread_;
};

}  // namespace kvb::storage
