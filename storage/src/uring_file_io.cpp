#include "uring_file_io.h"

#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace kvb::storage {

struct UringFileIo::Op {
  enum class Kind : std::uint8_t { read, write, sync } kind = Kind::read;
  std::uint64_t offset = 0;
  std::byte* buf = nullptr;
  std::size_t len = 0;
  std::size_t moved = 0;  // bytes already transferred (short transfers resume)
  IoDone done;
  std::string error;  // set when the operation failed
};

namespace {

constexpr std::uint64_t kWakeupTag = 1;  // user_data of the eventfd poll; ops are pointers (never 1)

template <class Kind>
std::string_view op_name(Kind kind) {
  return kind == Kind::read ? "read" : kind == Kind::write ? "write" : "fdatasync";
}

}  // namespace

Result<std::unique_ptr<UringFileIo>> UringFileIo::make(int fd, std::uint32_t queue_depth) {
  queue_depth = std::max<std::uint32_t>(2, std::min<std::uint32_t>(queue_depth, 4096));
  auto ring = std::make_unique<io_uring>();
  // +1 entry for the eventfd poll that wakes the thread.
  if (const int rc = io_uring_queue_init(queue_depth + 1, ring.get(), 0); rc < 0)
    return fail(Errc::unavailable, "io_uring_queue_init: {}", std::strerror(-rc));
  io_uring_probe* probe = io_uring_get_probe_ring(ring.get());
  const bool ops_ok = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_READ) &&
                      io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                      io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
                      io_uring_opcode_supported(probe, IORING_OP_POLL_ADD);
  if (probe != nullptr) io_uring_free_probe(probe);
  if (!ops_ok) {
    io_uring_queue_exit(ring.get());
    return fail(Errc::unavailable, "io_uring lacks read/write/fsync/poll operations (kernel older than 5.6?)");
  }
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    io_uring_queue_exit(ring.get());
    return fail(Errc::io_error, "eventfd: {}", std::strerror(errno));
  }
  return std::unique_ptr<UringFileIo>(new UringFileIo(fd, queue_depth, std::move(ring), efd));
}

UringFileIo::UringFileIo(int fd, std::uint32_t queue_depth, std::unique_ptr<io_uring> ring, int event_fd)
    : fd_(fd), queue_depth_(queue_depth), ring_(std::move(ring)), event_fd_(event_fd) {
  thread_ = std::thread([this] { run(); });
}

UringFileIo::~UringFileIo() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  (void)::eventfd_write(event_fd_, 1);
  thread_.join();
  io_uring_queue_exit(ring_.get());
  ::close(event_fd_);
}

void UringFileIo::read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) {
  enqueue(std::unique_ptr<Op>(new Op{Op::Kind::read, offset, dst.data(), dst.size(), 0, std::move(done)}));
}

void UringFileIo::write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) {
  enqueue(std::unique_ptr<Op>(
      new Op{Op::Kind::write, offset, const_cast<std::byte*>(src.data()), src.size(), 0, std::move(done)}));
}

void UringFileIo::datasync(IoDone done) {
  enqueue(std::unique_ptr<Op>(new Op{Op::Kind::sync, 0, nullptr, 0, 0, std::move(done)}));
}

void UringFileIo::enqueue(std::unique_ptr<Op> op) {
  in_flight_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    pending_.push_back(std::move(op));
  }
  (void)::eventfd_write(event_fd_, 1);
}

bool UringFileIo::arm_wakeup() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) return false;
  io_uring_prep_poll_add(sqe, event_fd_, POLLIN);
  io_uring_sqe_set_data64(sqe, kWakeupTag);
  return true;
}

bool UringFileIo::submit_op(Op* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) return false;
  switch (op->kind) {
    case Op::Kind::read:
      io_uring_prep_read(sqe, fd_, op->buf + op->moved, static_cast<unsigned>(op->len - op->moved),
                         op->offset + op->moved);
      break;
    case Op::Kind::write:
      io_uring_prep_write(sqe, fd_, op->buf + op->moved, static_cast<unsigned>(op->len - op->moved),
                          op->offset + op->moved);
      break;
    case Op::Kind::sync: io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC); break;
  }
  io_uring_sqe_set_data(sqe, op);
  return true;
}

void UringFileIo::run() {
  std::uint32_t in_kernel = 0;  // ops (not the wakeup poll) the kernel holds
  bool wakeup_armed = arm_wakeup();
  std::vector<std::unique_ptr<Op>> finished;
  std::deque<std::unique_ptr<Op>> ready;  // taken from pending_, not yet in the kernel
  for (;;) {
    bool stop = false;
    {
      std::lock_guard lock(mu_);
      while (!pending_.empty()) {
        ready.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      stop = stopping_;
    }
    if (!wakeup_armed) wakeup_armed = arm_wakeup();
    while (!ready.empty() && in_kernel < queue_depth_ && submit_op(ready.front().get())) {
      (void)ready.front().release();  // owned by the ring until its completion
      ready.pop_front();
      ++in_kernel;
    }
    if (stop && ready.empty() && in_kernel == 0) break;
    io_uring_submit(ring_.get());
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe(ring_.get(), &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) continue;  // nothing to reap yet; retry
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      ++seen;
      if (io_uring_cqe_get_data64(cqe) == kWakeupTag) {
        eventfd_t value = 0;
        (void)::eventfd_read(event_fd_, &value);
        wakeup_armed = false;
        continue;
      }
      std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
      --in_kernel;
      const int res = cqe->res;
      if (res == -EINTR || res == -EAGAIN) {
        ready.push_front(std::move(op));  // retry as is
        continue;
      }
      if (res < 0) {
        op->error =
            fmt::format("io_uring {} at offset {}: {}", op_name(op->kind), op->offset + op->moved, std::strerror(-res));
        finished.push_back(std::move(op));
        continue;
      }
      if (op->kind != Op::Kind::sync) {
        if (res == 0) {
          op->error = fmt::format("io_uring {} at offset {}: no progress (end of file?)", op_name(op->kind),
                                  op->offset + op->moved);
          finished.push_back(std::move(op));
          continue;
        }
        op->moved += static_cast<std::size_t>(res);
        if (op->moved < op->len) {
          ready.push_front(std::move(op));  // short transfer: resume the rest
          continue;
        }
      }
      finished.push_back(std::move(op));
    }
    io_uring_cq_advance(ring_.get(), seen);
    // Callbacks run outside the reaping loop; they may submit more work.
    for (auto& op : finished) {
      auto done = std::move(op->done);
      Result<std::size_t> result = op->moved;
      if (!op->error.empty()) result = make_error(Errc::io_error, std::move(op->error));
      op.reset();
      in_flight_.fetch_sub(1);
      done(std::move(result));
    }
    finished.clear();
  }
}

}  // namespace kvb::storage
