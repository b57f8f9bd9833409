// register_test_engine_kv: an engine KV cache for BlockService tests — the
// test layout (2 layers, K,V, 128-byte chunks) laid out layer separate over
// `blocks` blocks, backed by fresh memfds, registered with the service.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "block_service.h"

namespace kvb::daemon::test {

/// A memfd of `bytes` bytes sealed against shrinking (what kvblockd accepts
/// as an engine region); -1 on failure.
[[nodiscard]] inline UniqueFd sealed_memfd(std::uint64_t bytes) {
  UniqueFd fd(::memfd_create("kv", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0 || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return UniqueFd();
  }
  return fd;
}

/// 2 layers, outer 2, page 4, inner 32, u8: 128-byte chunks, 512-byte blocks.
inline constexpr proto::WireLayout kTestLayout{2, 2, 4, 32, 0, 256};

/// Attaches kTestLayout's pool (returned through `pool`) and registers an
/// engine KV cache of `blocks` blocks in two memfd regions.
[[nodiscard]] inline Result<std::shared_ptr<EngineKv>> register_test_engine_kv(BlockService& service, LayoutPool*& pool,
                                                                               std::uint32_t blocks) {
  auto attached = service.attach_layout(kTestLayout);
  if (!attached) return tl::unexpected(attached.error());
  pool = *attached;
  proto::RegisterKvRequest reg;
  reg.layout_kind = LayoutKind::layer_separate_block_outer;
  reg.num_blocks = blocks;
  reg.region_bytes = 128ULL * 2 * blocks;
  reg.fd_count = 2;
  std::vector<UniqueFd> fds;
  for (int l = 0; l < 2; ++l) {
    UniqueFd fd = sealed_memfd(reg.region_bytes);
    if (fd.get() < 0) return fail(Errc::io_error, "memfd for the test engine KV cache failed");
    fds.push_back(std::move(fd));
  }
  return service.register_kv(*pool, reg, std::move(fds));
}

}  // namespace kvb::daemon::test
