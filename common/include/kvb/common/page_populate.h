// Page population: fault memory in before the first copy needs it, without
// changing a byte, and what the system offers for huge pages of shared memory.
//
// A fresh memfd's pages are allocated (and zeroed) by the first write to each
// 4 KiB page; a second process mapping the same memfd takes one minor fault
// per page on its first touch. On the copy path both cost more than the copy
// itself (a fresh 2 GiB pool filled at 1.8 GB/s against memcpy at 10-12).
// populate_for_write() does that work up front, in one system call per range
// (MADV_POPULATE_WRITE, Linux >= 5.14), or, on older kernels, by touching
// every page with an atomic add of zero (the value is unchanged, so it may
// run while others write the same memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvb/common/error.h"

namespace kvb {

/// How populate_for_write() faulted the pages in.
enum class PopulateMethod : std::uint8_t {
  madvise,  // MADV_POPULATE_WRITE
  touch,    // an atomic add of 0 per page (kernels without MADV_POPULATE_WRITE)
};

[[nodiscard]] std::string_view to_string(PopulateMethod method) noexcept;

/// Faults [addr, addr + bytes) in for writing (allocating the pages of a
/// shared mapping's file where they do not exist yet) without changing its
/// contents. `addr` must be page aligned; `bytes` is rounded up to pages.
/// Errors: the range is not mapped writable or lies beyond the file's end
/// (invalid_argument / io_error with the errno text), no memory
/// (out_of_capacity). The fallback touch path needs the whole range mapped
/// writable by the caller for the duration of the call.
[[nodiscard]] Result<PopulateMethod> populate_for_write(std::byte* addr, std::uint64_t bytes);

/// Like populate_for_write, but only for the pages of a shared file mapping
/// whose file already holds them (mincore): maps memory another process
/// allocated without allocating anything new. Returns the bytes populated.
[[nodiscard]] Result<std::uint64_t> populate_resident_for_write(std::byte* addr, std::uint64_t bytes);

/// Bytes of the pages mapped at [addr, addr + bytes) that are backed by huge
/// pages (PMD-mapped shmem THP or hugetlb), from /proc/self/smaps; 0 when it
/// cannot be read.
[[nodiscard]] std::uint64_t huge_page_bytes_mapped(const std::byte* addr, std::uint64_t bytes);

/// What the kernel's transparent huge page settings give a memfd mapping
/// that asks for them with MADV_HUGEPAGE.
struct ShmemHugePages {
  std::uint64_t page_bytes = 0;  // largest THP size shared memory may get (0: none)
  std::string settings;          // the sysfs values it was read from, for the log
};

/// Reads /sys/kernel/mm/transparent_hugepage/shmem_enabled and the per-size
/// hugepages-<N>kB/shmem_enabled files (kernels >= 6.11). A missing file
/// counts as "never".
[[nodiscard]] ShmemHugePages shmem_huge_pages();

/// The same decision from the file contents (tests): `top` is the text of
/// shmem_enabled, `per_size` pairs a THP size in bytes with its file's text.
[[nodiscard]] ShmemHugePages shmem_huge_pages_from(std::string_view top,
                                                   const std::vector<std::pair<std::uint64_t, std::string>>& per_size);

}  // namespace kvb
