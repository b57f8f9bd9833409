#include "kvb/storage/file_io.h"

#include <spdlog/spdlog.h>

#include <mutex>

#include "thread_pool_file_io.h"
#ifdef KVB_HAVE_IO_URING
#include "uring_file_io.h"
#endif

namespace kvb::storage {

std::string_view to_string(IoBackend backend) noexcept {
  switch (backend) {
    case IoBackend::automatic: return "auto";
    case IoBackend::io_uring: return "io_uring";
    case IoBackend::threads: return "threads";
  }
  return "unknown";
}

Result<IoBackend> parse_io_backend(std::string_view name) {
  if (name == "auto") return IoBackend::automatic;
  if (name == "io_uring") return IoBackend::io_uring;
  if (name == "threads") return IoBackend::threads;
  return fail(Errc::invalid_argument, "I/O backend '{}' is not one of auto, io_uring, threads", name);
}

namespace {

// Why io_uring cannot be used here (empty when it can), probed once.
const std::string& io_uring_refusal() {
  static const std::string reason = [] {
#ifdef KVB_HAVE_IO_URING
    auto probe = UringFileIo::make(-1, 2);
    return probe ? std::string{} : probe.error().message;
#else
    return std::string{"this kvblockd was built without liburing (KVB_IO_URING=OFF)"};
#endif
  }();
  return reason;
}

}  // namespace

bool io_uring_available() noexcept { return io_uring_refusal().empty(); }

Result<std::unique_ptr<FileIo>> make_file_io(int fd, IoBackend backend, std::uint32_t queue_depth) {
  if (backend != IoBackend::threads) {
    const std::string& refusal = io_uring_refusal();
    if (refusal.empty()) {
#ifdef KVB_HAVE_IO_URING
      auto ring = UringFileIo::make(fd, queue_depth);
      if (ring) return std::unique_ptr<FileIo>(std::move(*ring));
      if (backend == IoBackend::io_uring) return tl::unexpected(ring.error());
      spdlog::warn("disk: io_uring ring failed ({}); this file uses the thread-pool backend", ring.error().message);
#endif
    } else {
      if (backend == IoBackend::io_uring)
        return fail(Errc::unavailable, "disk I/O backend io_uring is unavailable: {}", refusal);
      static std::once_flag logged;
      std::call_once(logged, [&] {
        spdlog::warn("disk: io_uring is unavailable ({}); using the thread-pool pread/pwrite backend", refusal);
      });
    }
  }
  return std::unique_ptr<FileIo>(std::make_unique<ThreadPoolFileIo>(fd, std::min<std::uint32_t>(queue_depth, 16)));
}

}  // namespace kvb::storage
