// Helpers for the disk tier tests: real temp directories and files, block
// contents that name their block, waiting on completions with a timeout.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvb/blockmgr/block_manager.h"
#include "kvb/blockmgr/layout.h"
#include "kvb/storage/file_io.h"

namespace kvb::test {

/// A fresh directory under $TMPDIR (or /tmp), removed with its files.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvb-disk-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// 2 layers x K,V x 16 tokens x 64 bytes: 4096-byte blocks (O_DIRECT reads
/// go straight into an aligned destination).
inline LayoutSpec page_spec() {
  LayoutSpec spec;
  spec.num_layers = 2;
  spec.outer_dim = 2;
  spec.page_size = 16;
  spec.inner_dim = 64;
  spec.dtype = DType::u8;
  spec.alignment = 4096;
  return spec;
}

/// 1000-byte blocks: not a multiple of 4 KiB (reads go through a bounce buffer).
inline LayoutSpec odd_spec() {
  LayoutSpec spec;
  spec.num_layers = 1;
  spec.outer_dim = 1;
  spec.page_size = 10;
  spec.inner_dim = 100;
  spec.dtype = DType::u8;
  spec.alignment = 8;
  return spec;
}

/// Bytes that depend on `seed` and the position: any mix-up shows.
inline std::vector<std::byte> pattern(std::uint64_t seed, std::size_t bytes) {
  std::vector<std::byte> out(bytes);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return out;
}

/// A buffer of `bytes` aligned to 4 KiB (as G2 blocks are with a disk tier).
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t n)
      : data(static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))), size(n) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  [[nodiscard]] std::span<std::byte> span() const { return {data, size}; }
  std::byte* data;
  std::size_t size;
};

/// A completion a test waits on (bounded).
class Completion {
 public:
  CopyDone callback() {
    return [this](Status s) {
      std::lock_guard lock(mu_);
      status_ = std::move(s);
      done_ = true;
      cv_.notify_all();
    };
  }
  /// The status, or a timeout error after 20 s.
  Status wait() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return done_; }))
      return fail(Errc::timeout, "completion did not arrive in 20 s");
    return status_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

/// The owning thread's queue (what an event loop's post() is).
class EventQueue {
 public:
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  PostToOwner poster() {
    return [this](std::function<void()> fn) { post(std::move(fn)); };
  }
  /// Runs posted closures until `until()` holds; false after 20 s without it.
  bool run_until(const std::function<bool()>& until) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!until()) {
      std::unique_lock lock(mu_);
      if (!cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); })) return false;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

/// Overwrites one byte of a file (the test plays a bad disk), with O_SYNC.
inline void flip_byte(const std::string& path, std::uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR | O_SYNC);
  ASSERT_GE(fd, 0) << path;
  unsigned char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x5A;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

/// The backends to run a test body over: io_uring only where the kernel
/// allows it (else the test says it skipped and why).
inline std::vector<storage::IoBackend> backends() {
  return {storage::IoBackend::io_uring, storage::IoBackend::threads};
}

inline std::string backend_name(const testing::TestParamInfo<storage::IoBackend>& info) {
  return std::string(storage::to_string(info.param));
}

#define KVB_SKIP_WITHOUT_BACKEND(backend)                                                     \
  do {                                                                                        \
    if ((backend) == storage::IoBackend::io_uring && !storage::io_uring_available())          \
      GTEST_SKIP() << "io_uring is unavailable here (kernel or seccomp): covered by threads"; \
  } while (0)

}  // namespace kvb::test
