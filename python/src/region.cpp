#include "region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "connection.h"
#include "kvb/common/block_shape.h"

namespace nb = nanobind;

namespace kvbpy {

using kvb::Errc;
using kvb::client::BlockShape;
using kvb::client::KvRegion;
using kvb::client::WireLayoutKind;

namespace {

[[noreturn]] void raise(Errc code, std::string message) { throw Failure{{code, std::move(message)}}; }

template <class T>
T value_or_raise(kvb::Result<T> r) {
  if (!r) throw Failure{r.error()};
  return std::move(*r);
}

/// The DLPack dtype of a wire dtype (u8 and the fp8 kinds as raw uint8).
nb::dlpack::dtype dlpack_dtype(std::uint8_t wire) {
  switch (kvb::dtype_from_wire(wire).value_or(kvb::DType::u8)) {
    case kvb::DType::f16: return nb::dlpack::dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
    case kvb::DType::bf16: return nb::dlpack::dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
    case kvb::DType::f32: return nb::dtype<float>();
    case kvb::DType::u8:
    case kvb::DType::fp8_e4m3:
    case kvb::DType::fp8_e5m2: return nb::dtype<std::uint8_t>();
  }
  return nb::dtype<std::uint8_t>();
}

}  // namespace

// Names and values are common's (block_shape.h): the same tables the daemon uses.
std::uint8_t dtype_from_name(const std::string& name) {
  return static_cast<std::uint8_t>(value_or_raise(kvb::parse_dtype(name)));
}

std::string dtype_name(std::uint8_t dtype) {
  const auto known = kvb::dtype_from_wire(dtype);
  return known ? std::string(kvb::to_string(*known)) : fmt::format("dtype{}", dtype);
}

WireLayoutKind kind_from_name(const std::string& name) { return value_or_raise(kvb::parse_layout_kind(name)); }

std::string kind_name(WireLayoutKind kind) { return std::string(kvb::to_string(kind)); }

int share_in_place(std::uintptr_t addr, std::uint64_t nbytes) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  if (nbytes == 0) raise(Errc::invalid_argument, "share_in_place: empty range");
  if (addr % page != 0 || nbytes % page != 0)
    raise(
        Errc::invalid_argument,
        fmt::format("share_in_place: [{:#x}, +{}) is not page aligned at both ends ({} B pages)", addr, nbytes, page));
  const int fd = ::memfd_create("kvb-engine-kv-inplace", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) raise(Errc::io_error, fmt::format("memfd_create: {}", std::strerror(errno)));
  auto fail_errno = [fd](const char* what) {
    const int err = errno;
    ::close(fd);
    raise(Errc::io_error, fmt::format("share_in_place: {}: {}", what, std::strerror(err)));
  };
  if (::ftruncate(fd, static_cast<off_t>(nbytes)) != 0) fail_errno("ftruncate");
  const auto* src = reinterpret_cast<const char*>(addr);
  for (std::uint64_t done = 0; done < nbytes;) {
    const ssize_t n = ::pwrite(fd, src + done, nbytes - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_errno("copying the pages into the memfd");
    done += static_cast<std::uint64_t>(n);
  }
  void* p = ::mmap(reinterpret_cast<void*>(addr), nbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) fail_errno("mapping the memfd over the range");
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail_errno("sealing the memfd");
  return fd;
}

namespace {

/// A typed view of region r: the layout's natural shape, strides in elements.
nb::ndarray<nb::array_api> region_tensor(nb::handle self, std::uint32_t r) {
  const auto& reg = nb::cast<const KvRegion&>(self);
  if (r >= reg.num_regions())
    raise(Errc::invalid_argument, fmt::format("region {} out of range ({} regions)", r, reg.num_regions()));
  const BlockShape& s = reg.shape();
  const std::uint64_t es = kvb::dtype_size(static_cast<kvb::DType>(s.dtype));
  std::vector<std::size_t> shape;
  std::vector<std::int64_t> strides;
  const std::int64_t inner = s.inner_dim;
  const std::int64_t chunk = static_cast<std::int64_t>(s.page_size) * inner;
  switch (reg.kind()) {
    case WireLayoutKind::fully_contiguous: {
      const auto stride = static_cast<std::int64_t>(reg.geometry().block_stride / es);
      shape = {reg.num_blocks(), s.num_layers, s.outer_dim, s.page_size, s.inner_dim};
      strides = {stride, chunk * s.outer_dim, chunk, inner, 1};
      break;
    }
    case WireLayoutKind::layer_separate_block_outer:
      shape = {reg.num_blocks(), s.outer_dim, s.page_size, s.inner_dim};
      strides = {chunk * s.outer_dim, chunk, inner, 1};
      break;
    case WireLayoutKind::layer_separate_outer_block:
      shape = {s.outer_dim, reg.num_blocks(), s.page_size, s.inner_dim};
      strides = {chunk * reg.num_blocks(), chunk, inner, 1};
      break;
  }
  return nb::ndarray<nb::array_api>(reg.region_data(r), shape.size(), shape.data(), self, strides.data(),
                                    dlpack_dtype(s.dtype), nb::device::cpu::value);
}

nb::ndarray<nb::memview, std::uint8_t, nb::ndim<1>, nb::c_contig> bytes_view(nb::handle self, std::byte* data,
                                                                             std::size_t n) {
  const std::size_t shape[1] = {n};
  return {data, 1, shape, self};
}

}  // namespace

void bind_region(nb::module_& m) {
  nb::class_<BlockShape>(m, "BlockShape",
                         "The model's KV block shape: num_layers x outer_dim (2 = K,V; 1 = MLA) x page_size tokens x "
                         "inner_dim (num_kv_heads x head_dim) elements of dtype.")
      .def(
          "__init__",
          [](BlockShape* self, std::uint32_t num_layers, std::uint32_t page_size, std::uint32_t inner_dim,
             std::uint32_t outer_dim, const std::string& dtype, std::uint32_t alignment) {
            new (self) BlockShape{num_layers, outer_dim, page_size, inner_dim, dtype_from_name(dtype), alignment};
          },
          nb::arg("num_layers"), nb::arg("page_size"), nb::arg("inner_dim"), nb::arg("outer_dim") = 2,
          nb::arg("dtype") = "bf16", nb::arg("alignment") = 256)
      .def_ro("num_layers", &BlockShape::num_layers)
      .def_ro("outer_dim", &BlockShape::outer_dim)
      .def_ro("page_size", &BlockShape::page_size)
      .def_ro("inner_dim", &BlockShape::inner_dim)
      .def_ro("alignment", &BlockShape::alignment)
      .def_prop_ro("dtype", [](const BlockShape& s) { return dtype_name(s.dtype); })
      .def_prop_ro("dtype_size", [](const BlockShape& s) { return kvb::dtype_size(static_cast<kvb::DType>(s.dtype)); })
      .def_prop_ro(
          "chunk_bytes", [](const BlockShape& s) { return kvb::client::chunk_bytes(s); },
          "Bytes of one (block, layer, outer) chunk.")
      .def_prop_ro(
          "block_bytes", [](const BlockShape& s) { return kvb::client::block_bytes(s); },
          "Bytes of one block's payload.")
      .def("__eq__", [](const BlockShape& a, const BlockShape& b) { return a == b; })
      .def("__repr__", [](const BlockShape& s) {
        return fmt::format(
            "BlockShape(num_layers={}, page_size={}, inner_dim={}, outer_dim={}, dtype='{}', alignment={})",
            s.num_layers, s.page_size, s.inner_dim, s.outer_dim, dtype_name(s.dtype), s.alignment);
      });

  nb::class_<KvRegion>(m, "KvRegion",
                       "num_blocks KV blocks of one shape, arranged one way, on memfd regions the daemon maps.")
      .def_static(
          "create",
          [](const BlockShape& shape, const std::string& kind, std::uint32_t num_blocks) {
            return value_or_raise(KvRegion::create(shape, kind_from_name(kind), num_blocks));
          },
          nb::arg("shape"), nb::arg("kind"), nb::arg("num_blocks"),
          "New zeroed memfd regions: one for fully_contiguous, num_layers for the layer separate kinds.")
      .def_static(
          "adopt_memfds",
          [](const BlockShape& shape, const std::string& kind, std::uint32_t num_blocks, std::vector<int> fds) {
            return value_or_raise(KvRegion::adopt_memfds(shape, kind_from_name(kind), num_blocks, std::move(fds)));
          },
          nb::arg("shape"), nb::arg("kind"), nb::arg("num_blocks"), nb::arg("fds"),
          "Region over memfds made elsewhere (one per layout region); takes ownership of the fds, also on error.")
      .def_static(
          "region_bytes_for",
          [](const BlockShape& shape, const std::string& kind, std::uint32_t num_blocks) {
            return value_or_raise(KvRegion::region_bytes_for(shape, kind_from_name(kind), num_blocks));
          },
          nb::arg("shape"), nb::arg("kind"), nb::arg("num_blocks"))
      .def_prop_ro("shape", &KvRegion::shape)
      .def_prop_ro("kind", [](const KvRegion& r) { return kind_name(r.kind()); })
      .def_prop_ro("num_blocks", &KvRegion::num_blocks)
      .def_prop_ro("num_regions", &KvRegion::num_regions)
      .def_prop_ro("region_bytes", &KvRegion::region_bytes)
      .def(
          "place",
          [](const KvRegion& r, std::uint32_t block, std::uint32_t layer, std::uint32_t outer) {
            if (block >= r.num_blocks() || layer >= r.shape().num_layers || outer >= r.shape().outer_dim)
              raise(Errc::invalid_argument, fmt::format("chunk ({}, {}, {}) out of range", block, layer, outer));
            const auto p = r.place(block, layer, outer);
            return std::make_pair(p.region, p.offset);
          },
          nb::arg("block"), nb::arg("layer"), nb::arg("outer"), "(region, byte offset) of chunk (block, layer, outer).")
      .def(
          "buffer",
          [](nb::handle self, std::uint32_t r) {
            const auto& reg = nb::cast<const KvRegion&>(self);
            if (r >= reg.num_regions())
              raise(Errc::invalid_argument, fmt::format("region {} out of range ({} regions)", r, reg.num_regions()));
            return bytes_view(self, reg.region_data(r), reg.region_bytes());
          },
          nb::arg("region") = 0, "The bytes of region r, without a copy (buffer protocol and DLPack).")
      .def("tensor", &region_tensor, nb::arg("region") = 0,
           "Region r typed and shaped by the layout, without a copy (DLPack: torch.from_dlpack; numpy for "
           "f16/f32/u8).")
      .def(
          "chunk",
          [](nb::handle self, std::uint32_t block, std::uint32_t layer, std::uint32_t outer) {
            const auto& r = nb::cast<const KvRegion&>(self);
            if (block >= r.num_blocks() || layer >= r.shape().num_layers || outer >= r.shape().outer_dim)
              raise(Errc::invalid_argument, fmt::format("chunk ({}, {}, {}) out of range", block, layer, outer));
            auto span = r.chunk(block, layer, outer);
            return bytes_view(self, span.data(), span.size());
          },
          nb::arg("block"), nb::arg("layer"), nb::arg("outer"), "The bytes of one chunk, without a copy.");

  m.def("share_in_place", &share_in_place, nb::arg("addr"), nb::arg("nbytes"),
        "Move the pages [addr, addr+nbytes) onto a new sealed memfd in place (same addresses, same bytes); "
        "returns the memfd (owned by the caller). Page aligned at both ends; nothing may write the range meanwhile.");
}

}  // namespace kvbpy
