// FileIo: asynchronous positioned reads, writes and fdatasync on one open
// file: the I/O engine under the disk tier. Backends:
//   UringFileIo       io_uring (liburing), one ring and one reaper thread
//   ThreadPoolFileIo  blocking pread/pwrite/fdatasync on a few threads, for
//                     kernels or sandboxes without io_uring
//   FaultInjectingFileIo  wraps a real one and fails or delays operations on
//                     demand (ENOSPC, EIO, slow I/O): tests and drills only
// make_file_io() picks io_uring when it works and logs once when it falls
// back to threads.
//
// Contract: every operation calls its `done` exactly once, on a backend
// thread (never inline in the call): with the bytes moved (always the whole
// request: short transfers are resumed inside the backend) or an io_error
// naming the call and errno. Buffers must stay valid until done. For a file
// opened with O_DIRECT, offsets, lengths and buffer addresses must be
// multiples of kDirectIoAlignment. Submitting is safe from any thread. The
// destructor waits until every submitted operation has called its done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "kvb/common/error.h"

namespace kvb::storage {

/// Offsets, lengths and buffers of O_DIRECT I/O are multiples of this.
inline constexpr std::uint64_t kDirectIoAlignment = 4096;

using IoDone = std::function<void(Result<std::size_t>)>;

class FileIo {
 public:
  FileIo() = default;
  FileIo(const FileIo&) = delete;
  FileIo& operator=(const FileIo&) = delete;
  virtual ~FileIo() = default;

  /// "io_uring", "threads", "fault-injecting(io_uring)".
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Reads `dst.size()` bytes at `offset`. Reading past the end of the file
  /// is an io_error (a slot file is never shorter than its slots).
  virtual void read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) = 0;
  virtual void write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) = 0;
  /// fdatasync: every write that completed before this call is durable
  /// when done(ok) runs.
  virtual void datasync(IoDone done) = 0;
  /// Operations submitted and not yet done.
  [[nodiscard]] virtual std::uint32_t in_flight() const noexcept = 0;
};

enum class IoBackend : std::uint8_t { automatic = 0, io_uring = 1, threads = 2 };
[[nodiscard]] std::string_view to_string(IoBackend backend) noexcept;
/// "auto", "io_uring", "threads".
[[nodiscard]] Result<IoBackend> parse_io_backend(std::string_view name);

/// The backend for `fd` (not owned; must outlive the FileIo). automatic
/// tries io_uring and falls back to threads (logged once per process);
/// io_uring fails (unavailable, with the reason) when the kernel refuses it.
/// `queue_depth`: operations the backend keeps in the kernel at once (ring
/// size, or thread count for threads, capped at 16).
[[nodiscard]] Result<std::unique_ptr<FileIo>> make_file_io(int fd, IoBackend backend, std::uint32_t queue_depth);

/// Whether io_uring works in this process (probed once).
[[nodiscard]] bool io_uring_available() noexcept;

}  // namespace kvb::storage
