#include "thread_pool_file_io.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kvb::storage {

ThreadPoolFileIo::ThreadPoolFileIo(int fd, std::uint32_t threads) : fd_(fd) {
  threads = std::clamp<std::uint32_t>(threads, 1, 16);
  threads_.reserve(threads);
  for (std::uint32_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

ThreadPoolFileIo::~ThreadPoolFileIo() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPoolFileIo::read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) {
  enqueue(Op{Op::Kind::read, offset, dst.data(), dst.size(), std::move(done)});
}

void ThreadPoolFileIo::write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) {
  enqueue(Op{Op::Kind::write, offset, const_cast<std::byte*>(src.data()), src.size(), std::move(done)});
}

void ThreadPoolFileIo::datasync(IoDone done) { enqueue(Op{Op::Kind::sync, 0, nullptr, 0, std::move(done)}); }

void ThreadPoolFileIo::enqueue(Op op) {
  in_flight_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

Result<std::size_t> ThreadPoolFileIo::perform(const Op& op) const {
  if (op.kind == Op::Kind::sync) {
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) return fail(Errc::io_error, "fdatasync: {}", std::strerror(errno));
    }
    return std::size_t{0};
  }
  std::size_t moved = 0;
  while (moved < op.len) {
    const auto off = static_cast<off_t>(op.offset + moved);
    const ssize_t n = op.kind == Op::Kind::read ? ::pread(fd_, op.buf + moved, op.len - moved, off)
                                                : ::pwrite(fd_, op.buf + moved, op.len - moved, off);
    const char* what = op.kind == Op::Kind::read ? "pread" : "pwrite";
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Errc::io_error, "{} at offset {}: {}", what, op.offset + moved, std::strerror(errno));
    }
    if (n == 0) return fail(Errc::io_error, "{} at offset {}: no progress (end of file?)", what, op.offset + moved);
    moved += static_cast<std::size_t>(n);
  }
  return moved;
}

void ThreadPoolFileIo::work() {
  for (;;) {
    Op op;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      op = std::move(queue_.front());
      queue_.pop_front();
    }
    auto result = perform(op);
    in_flight_.fetch_sub(1);
    op.done(std::move(result));
  }
}

}  // namespace kvb::storage
