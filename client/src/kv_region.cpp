#include "kvb/client/kv_region.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

namespace kvb::client {

std::uint32_t wire_dtype_size(std::uint8_t dtype) noexcept {
  switch (dtype) {
    case 0:            // u8
    case 4:            // fp8_e4m3
    case 5: return 1;  // fp8_e5m2
    case 1:            // f16
    case 2: return 2;  // bf16
    case 3: return 4;  // f32
    default: return 0;
  }
}

std::uint64_t chunk_bytes(const BlockShape& s) noexcept {
  return static_cast<std::uint64_t>(s.page_size) * s.inner_dim * wire_dtype_size(s.dtype);
}

std::uint64_t block_bytes(const BlockShape& s) noexcept {
  return static_cast<std::uint64_t>(s.num_layers) * s.outer_dim * chunk_bytes(s);
}

namespace {

constexpr std::uint64_t kMaxRegionBytes = std::uint64_t{1} << 40;  // 1 TiB: far beyond a test or an engine region

Status validate(const BlockShape& s, WireLayoutKind kind, std::uint32_t num_blocks) {
  if (s.num_layers == 0 || s.num_layers > 4096)
    return fail(Errc::invalid_argument, "kv region: num_layers must be in [1, 4096] (got {})", s.num_layers);
  if (s.outer_dim != 1 && s.outer_dim != 2)
    return fail(Errc::invalid_argument, "kv region: outer_dim must be 1 or 2 (got {})", s.outer_dim);
  if (s.page_size == 0) return fail(Errc::invalid_argument, "kv region: page_size must be > 0 (got 0)");
  if (s.inner_dim == 0) return fail(Errc::invalid_argument, "kv region: inner_dim must be > 0 (got 0)");
  if (wire_dtype_size(s.dtype) == 0)
    return fail(Errc::invalid_argument, "kv region: unknown dtype {}", static_cast<int>(s.dtype));
  if (s.alignment == 0 || !std::has_single_bit(s.alignment) || s.alignment > (2U << 20))
    return fail(Errc::invalid_argument, "kv region: alignment must be a power of two <= 2 MiB (got {})", s.alignment);
  if (static_cast<std::uint8_t>(kind) > 2)
    return fail(Errc::invalid_argument, "kv region: unknown layout kind {}", static_cast<int>(kind));
  if (num_blocks == 0) return fail(Errc::invalid_argument, "kv region: num_blocks must be > 0 (got 0)");
  return ok();
}

}  // namespace

Result<std::uint64_t> KvRegion::region_bytes_for(const BlockShape& shape, WireLayoutKind kind,
                                                 std::uint32_t num_blocks) {
  if (auto st = validate(shape, kind, num_blocks); !st) return tl::unexpected(st.error());
  const std::uint64_t align = shape.alignment;
  const std::uint64_t stride = (block_bytes(shape) + align - 1) / align * align;
  const std::uint64_t bytes = kind == WireLayoutKind::fully_contiguous
                                  ? static_cast<std::uint64_t>(num_blocks) * stride
                                  : static_cast<std::uint64_t>(num_blocks) * shape.outer_dim * chunk_bytes(shape);
  if (bytes > kMaxRegionBytes)
    return fail(Errc::invalid_argument, "kv region: {} bytes per region is over the 1 TiB limit", bytes);
  return bytes;
}

Result<KvRegion> KvRegion::create(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks) {
  auto bytes = region_bytes_for(shape, kind, num_blocks);
  if (!bytes) return tl::unexpected(bytes.error());
  const std::uint32_t regions = kind == WireLayoutKind::fully_contiguous ? 1U : shape.num_layers;
  std::vector<int> fds;
  fds.reserve(regions);
  for (std::uint32_t i = 0; i < regions; ++i) {
    const int fd = ::memfd_create("kvb-engine-kv", MFD_CLOEXEC);
    if (fd < 0) {
      for (int f : fds) ::close(f);
      return fail(Errc::io_error, "memfd_create for kv region {}: {}", i, std::strerror(errno));
    }
    fds.push_back(fd);
    if (::ftruncate(fd, static_cast<off_t>(*bytes)) != 0) {
      const int err = errno;
      for (int f : fds) ::close(f);
      return fail(Errc::io_error, "ftruncate kv region {} to {} bytes: {}", i, *bytes, std::strerror(err));
    }
  }
  return adopt_memfds(shape, kind, num_blocks, std::move(fds));
}

Result<KvRegion> KvRegion::adopt_memfds(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks,
                                        std::vector<int> fds) {
  KvRegion r;
  r.fds_ = std::move(fds);  // owned from here: r's destructor closes them on every error below
  auto bytes = region_bytes_for(shape, kind, num_blocks);
  if (!bytes) return tl::unexpected(bytes.error());
  const std::uint32_t regions = kind == WireLayoutKind::fully_contiguous ? 1U : shape.num_layers;
  if (r.fds_.size() != regions)
    return fail(Errc::invalid_argument, "kv region: {} fds for {} layout regions", r.fds_.size(), regions);
  r.shape_ = shape;
  r.kind_ = kind;
  r.num_blocks_ = num_blocks;
  const std::uint64_t align = shape.alignment;
  r.block_stride_ = (block_bytes(shape) + align - 1) / align * align;
  r.region_bytes_ = *bytes;
  r.maps_.reserve(regions);
  for (std::uint32_t i = 0; i < regions; ++i) {
    struct stat st {};
    if (::fstat(r.fds_[i], &st) != 0) return fail(Errc::io_error, "fstat of kv region {}: {}", i, std::strerror(errno));
    if (static_cast<std::uint64_t>(st.st_size) < r.region_bytes_)
      return fail(Errc::invalid_argument, "kv region {} holds {} bytes, the layout needs {}", i, st.st_size,
                  r.region_bytes_);
    void* p = ::mmap(nullptr, r.region_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, r.fds_[i], 0);
    if (p == MAP_FAILED)
      return fail(Errc::io_error, "mmap kv region {} ({} bytes): {}", i, r.region_bytes_, std::strerror(errno));
    r.maps_.push_back(static_cast<std::byte*>(p));
  }
  return r;
}

KvRegion::KvRegion(KvRegion&& o) noexcept
    : shape_(o.shape_),
      kind_(o.kind_),
      num_blocks_(o.num_blocks_),
      region_bytes_(o.region_bytes_),
      block_stride_(o.block_stride_),
      fds_(std::move(o.fds_)),
      maps_(std::move(o.maps_)) {
  o.fds_.clear();
  o.maps_.clear();
}

KvRegion& KvRegion::operator=(KvRegion&& o) noexcept {
  if (this != &o) {
    reset();
    shape_ = o.shape_;
    kind_ = o.kind_;
    num_blocks_ = o.num_blocks_;
    region_bytes_ = o.region_bytes_;
    block_stride_ = o.block_stride_;
    fds_ = std::move(o.fds_);
    maps_ = std::move(o.maps_);
    o.fds_.clear();
    o.maps_.clear();
  }
  return *this;
}

KvRegion::~KvRegion() { reset(); }

void KvRegion::close_fds() noexcept {
  for (int fd : fds_) ::close(fd);
  fds_.clear();
}

void KvRegion::reset() noexcept {
  for (auto* p : maps_) ::munmap(p, region_bytes_);
  for (int fd : fds_) ::close(fd);
  maps_.clear();
  fds_.clear();
}

ChunkPlace KvRegion::place(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) const noexcept {
  const std::uint64_t chunk = chunk_bytes(shape_);
  switch (kind_) {
    case WireLayoutKind::fully_contiguous:
      return {0, static_cast<std::uint64_t>(block) * block_stride_ +
                     (static_cast<std::uint64_t>(layer) * shape_.outer_dim + outer) * chunk};
    case WireLayoutKind::layer_separate_block_outer:
      return {layer, (static_cast<std::uint64_t>(block) * shape_.outer_dim + outer) * chunk};
    case WireLayoutKind::layer_separate_outer_block:
      return {layer, (static_cast<std::uint64_t>(outer) * num_blocks_ + block) * chunk};
  }
  return {};
}

std::span<std::byte> KvRegion::chunk(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) const noexcept {
  const ChunkPlace p = place(block, layer, outer);
  return {maps_[p.region] + p.offset, static_cast<std::size_t>(chunk_bytes(shape_))};
}

}  // namespace kvb::client
