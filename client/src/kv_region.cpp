#include "kvb/client/kv_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace kvb::client {

namespace {

/// The wire shape as a spec without validation (sizes of an invalid shape are 0).
LayoutSpec unchecked_spec(const BlockShape& s) noexcept {
  return LayoutSpec{s.num_layers, s.outer_dim, s.page_size, s.inner_dim, static_cast<DType>(s.dtype), s.alignment};
}

}  // namespace

std::uint64_t chunk_bytes(const BlockShape& s) noexcept { return unchecked_spec(s).chunk_bytes(); }

std::uint64_t block_bytes(const BlockShape& s) noexcept { return unchecked_spec(s).block_bytes(); }

namespace {

/// The validated geometry of a region set (errors name the field, prefixed "kv region").
Result<LayoutGeometry> geometry_of(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks) {
  auto spec = proto::to_spec(shape);
  if (!spec) return fail(spec.error().code, "kv region: {}", spec.error().message);
  auto geometry = make_geometry(*spec, kind, num_blocks);
  if (!geometry) return fail(geometry.error().code, "kv region: {}", geometry.error().message);
  return *geometry;
}

}  // namespace

Result<std::uint64_t> KvRegion::region_bytes_for(const BlockShape& shape, WireLayoutKind kind,
                                                 std::uint32_t num_blocks) {
  auto geometry = geometry_of(shape, kind, num_blocks);
  if (!geometry) return tl::unexpected(geometry.error());
  return kvb::region_bytes(*geometry);
}

Result<KvRegion> KvRegion::create(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks) {
  auto geometry = geometry_of(shape, kind, num_blocks);
  if (!geometry) return tl::unexpected(geometry.error());
  const std::uint32_t regions = region_count(*geometry);
  const std::uint64_t bytes = kvb::region_bytes(*geometry);
  std::vector<int> fds;
  fds.reserve(regions);
  for (std::uint32_t i = 0; i < regions; ++i) {
    const int fd = ::memfd_create("kvb-engine-kv", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
      for (int f : fds) ::close(f);
      return fail(Errc::io_error, "memfd_create for kv region {}: {}", i, std::strerror(errno));
    }
    fds.push_back(fd);
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int err = errno;
      for (int f : fds) ::close(f);
      return fail(Errc::io_error, "ftruncate kv region {} to {} bytes: {}", i, bytes, std::strerror(err));
    }
  }
  return adopt_memfds(shape, kind, num_blocks, std::move(fds));
}

Result<KvRegion> KvRegion::adopt_memfds(const BlockShape& shape, WireLayoutKind kind, std::uint32_t num_blocks,
                                        std::vector<int> fds) {
  KvRegion r;
  r.fds_ = std::move(fds);  // owned from here: r's destructor closes them on every error below
  auto geometry = geometry_of(shape, kind, num_blocks);
  if (!geometry) return tl::unexpected(geometry.error());
  const std::uint32_t regions = region_count(*geometry);
  if (r.fds_.size() != regions)
    return fail(Errc::invalid_argument, "kv region: {} fds for {} layout regions", r.fds_.size(), regions);
  r.shape_ = shape;
  r.geometry_ = *geometry;
  const std::uint64_t bytes = r.region_bytes();
  r.maps_.reserve(regions);
  for (std::uint32_t i = 0; i < regions; ++i) {
    // kvblockd maps only regions that cannot shrink under its copies: seal
    // the memfd against shrinking now unless it is already.
    const int seals = ::fcntl(r.fds_[i], F_GET_SEALS);
    if (seals < 0)
      return fail(Errc::invalid_argument, "kv region {}: not a sealable memfd (F_GET_SEALS: {})", i,
                  std::strerror(errno));
    if ((seals & F_SEAL_SHRINK) == 0 && ::fcntl(r.fds_[i], F_ADD_SEALS, F_SEAL_SHRINK) != 0)
      return fail(Errc::invalid_argument,
                  "kv region {}: the memfd cannot be sealed against shrinking (make it with MFD_ALLOW_SEALING): {}", i,
                  std::strerror(errno));
    struct stat st {};
    if (::fstat(r.fds_[i], &st) != 0) return fail(Errc::io_error, "fstat of kv region {}: {}", i, std::strerror(errno));
    if (static_cast<std::uint64_t>(st.st_size) < bytes)
      return fail(Errc::invalid_argument, "kv region {} holds {} bytes, the layout needs {}", i, st.st_size, bytes);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r.fds_[i], 0);
    if (p == MAP_FAILED)
      return fail(Errc::io_error, "mmap kv region {} ({} bytes): {}", i, bytes, std::strerror(errno));
    r.maps_.push_back(static_cast<std::byte*>(p));
  }
  return r;
}

KvRegion::KvRegion(KvRegion&& o) noexcept
    : shape_(o.shape_), geometry_(o.geometry_), fds_(std::move(o.fds_)), maps_(std::move(o.maps_)) {
  o.fds_.clear();
  o.maps_.clear();
}

KvRegion& KvRegion::operator=(KvRegion&& o) noexcept {
  if (this != &o) {
    reset();
    shape_ = o.shape_;
    geometry_ = o.geometry_;
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
  for (auto* p : maps_) ::munmap(p, region_bytes());
  for (int fd : fds_) ::close(fd);
  maps_.clear();
  fds_.clear();
}

ChunkLocation KvRegion::place(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) const noexcept {
  return chunk_location(geometry_, block, layer, outer);
}

std::span<std::byte> KvRegion::chunk(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) const noexcept {
  const ChunkLocation p = place(block, layer, outer);
  return {maps_[p.region] + p.offset, static_cast<std::size_t>(geometry_.chunk_bytes)};
}

}  // namespace kvb::client
