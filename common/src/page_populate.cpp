#include "kvb/common/page_populate.h"

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14 uapi value, for older headers
#endif

namespace kvb {
namespace {

std::uint64_t page_bytes() noexcept {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

Error errno_error(int err, std::uint64_t addr, std::uint64_t bytes) {
  const Errc code = err == ENOMEM || err == EAGAIN   ? Errc::out_of_capacity
                    : err == EINVAL || err == EFAULT ? Errc::invalid_argument
                                                     : Errc::io_error;
  return Error{code, fmt::format("populating {} bytes at {:#x}: {} (errno {})", bytes, addr, std::strerror(err), err)};
}

/// The fallback: one atomic add of zero per page (a write fault that keeps the value).
void touch_pages(std::byte* addr, std::uint64_t bytes) noexcept {
  const std::uint64_t page = page_bytes();
  for (std::uint64_t off = 0; off < bytes; off += page) {
    __atomic_fetch_add(reinterpret_cast<unsigned char*>(addr + off), static_cast<unsigned char>(0), __ATOMIC_RELAXED);
  }
}

/// The bracketed choice of a sysfs THP file ("always [never] ..." -> "never").
std::string chosen(std::string_view text) {
  const auto open = text.find('[');
  const auto close = text.find(']', open == std::string_view::npos ? 0 : open);
  if (open != std::string_view::npos && close != std::string_view::npos) {
    return std::string(text.substr(open + 1, close - open - 1));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return text.empty() ? std::string("never") : std::string(text);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string size_name(std::uint64_t bytes) {
  if (bytes >= (std::uint64_t{1} << 20) && bytes % (std::uint64_t{1} << 20) == 0) {
    return fmt::format("{}MiB", bytes >> 20);
  }
  return fmt::format("{}KiB", bytes >> 10);
}

}  // namespace

std::string_view to_string(PopulateMethod method) noexcept {
  return method == PopulateMethod::madvise ? "MADV_POPULATE_WRITE" : "page touch";
}

Result<PopulateMethod> populate_for_write(std::byte* addr, std::uint64_t bytes) {
  if (bytes == 0) return PopulateMethod::madvise;
  const std::uint64_t page = page_bytes();
  const auto a = reinterpret_cast<std::uint64_t>(addr);
  if (a % page != 0) {
    return fail(Errc::invalid_argument, "populate: address {:#x} is not page aligned", a);
  }
  const std::uint64_t len = (bytes + page - 1) / page * page;
  if (::madvise(addr, len, MADV_POPULATE_WRITE) == 0) return PopulateMethod::madvise;
  const int err = errno;
  // EINVAL from a kernel that does not know the advice: touch the pages.
  // (An unmapped range is ENOMEM, a hole past the file's end EFAULT.)
  if (err == EINVAL) {
    touch_pages(addr, len);
    return PopulateMethod::touch;
  }
  return tl::unexpected(errno_error(err, a, len));
}

Result<std::uint64_t> populate_resident_for_write(std::byte* addr, std::uint64_t bytes) {
  const std::uint64_t page = page_bytes();
  const auto a = reinterpret_cast<std::uint64_t>(addr);
  if (a % page != 0) {
    return fail(Errc::invalid_argument, "populate: address {:#x} is not page aligned", a);
  }
  const std::uint64_t pages = (bytes + page - 1) / page;
  constexpr std::uint64_t kWindowPages = 16384;  // 64 MiB of 4 KiB pages per mincore call
  std::vector<unsigned char> resident(static_cast<std::size_t>(std::min(pages, kWindowPages)));
  std::uint64_t populated = 0;
  for (std::uint64_t first = 0; first < pages; first += kWindowPages) {
    const std::uint64_t n = std::min(kWindowPages, pages - first);
    std::byte* window = addr + first * page;
    if (::mincore(window, n * page, resident.data()) != 0) {
      return tl::unexpected(errno_error(errno, reinterpret_cast<std::uint64_t>(window), n * page));
    }
    for (std::uint64_t i = 0; i < n;) {
      if ((resident[i] & 1U) == 0) {
        ++i;
        continue;
      }
      std::uint64_t end = i + 1;
      while (end < n && (resident[end] & 1U) != 0) ++end;
      auto done = populate_for_write(window + i * page, (end - i) * page);
      if (!done) return tl::unexpected(done.error());
      populated += (end - i) * page;
      i = end;
    }
  }
  return populated;
}

std::uint64_t huge_page_bytes_mapped(const std::byte* addr, std::uint64_t bytes) {
  std::ifstream in("/proc/self/smaps");
  if (!in) return 0;
  const auto lo = reinterpret_cast<std::uint64_t>(addr);
  const auto hi = lo + bytes;
  std::uint64_t kib = 0;
  bool inside = false;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long start = 0, end = 0;
    // A VMA header: "start-end perms offset dev inode path".
    if (std::sscanf(line.c_str(), "%llx-%llx ", &start, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = start < hi && end > lo;
      continue;
    }
    if (!inside) continue;
    for (const char* field : {"ShmemPmdMapped:", "FilePmdMapped:", "Shared_Hugetlb:", "Private_Hugetlb:"}) {
      if (line.rfind(field, 0) == 0) kib += std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
    }
  }
  return kib * 1024;
}

ShmemHugePages shmem_huge_pages_from(std::string_view top_text,
                                     const std::vector<std::pair<std::uint64_t, std::string>>& per_size) {
  const std::string top = chosen(top_text);
  ShmemHugePages out;
  out.settings = "shmem_enabled=" + top;
  for (const auto& [size, text] : per_size) {
    const std::string own = chosen(text);
    // Only the sizes that do not say "never" (a kernel lists a dozen).
    if (own != "never") out.settings += fmt::format(", hugepages-{}kB/shmem_enabled={}", size >> 10, own);
    std::string effective = own == "inherit" ? top : own;
    if (top == "deny") effective = "never";
    if (top == "force") effective = "always";
    if (effective == "always" || effective == "within_size" || effective == "advise") {
      out.page_bytes = std::max(out.page_bytes, size);
    }
  }
  if (per_size.empty() && (top == "always" || top == "within_size" || top == "advise" || top == "force")) {
    out.page_bytes = std::uint64_t{2} << 20;  // kernels before per-size THP: PMD pages only
  }
  if (out.page_bytes != 0) out.settings += fmt::format(" (THP up to {})", size_name(out.page_bytes));
  return out;
}

ShmemHugePages shmem_huge_pages() {
  const std::string base = "/sys/kernel/mm/transparent_hugepage";
  const std::string top = read_file(base + "/shmem_enabled");
  std::vector<std::pair<std::uint64_t, std::string>> per_size;
  if (DIR* dir = ::opendir(base.c_str())) {
    while (const dirent* entry = ::readdir(dir)) {
      unsigned long long kib = 0;
      if (std::sscanf(entry->d_name, "hugepages-%llukB", &kib) != 1) continue;
      std::string text = read_file(base + "/" + entry->d_name + "/shmem_enabled");
      if (!text.empty()) per_size.emplace_back(kib << 10, std::move(text));
    }
    ::closedir(dir);
  }
  std::sort(per_size.begin(), per_size.end());
  return shmem_huge_pages_from(top.empty() ? std::string_view("never") : std::string_view(top), per_size);
}

}  // namespace kvb
