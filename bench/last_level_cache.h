// The size of the last-level cache, for benchmarks that must cycle over a
// working set several times larger (kvblockd-bench transport and copy).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace kvb::bench {

/// Bytes of cpu0's highest-level cache from sysfs
/// (/sys/devices/system/cpu/cpu0/cache/index*/{level,size}); sysconf's
/// _SC_LEVEL3_CACHE_SIZE when sysfs has none (it can be off: 320 MiB for a
/// 32 MiB L3 on this project's VM); 0 when neither knows.
inline std::uint64_t last_level_cache_bytes() {
  int best_level = 0;
  std::uint64_t best = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    std::uint64_t bytes = 0;
    try {
      bytes = std::stoull(size);
    } catch (const std::exception&) {
      continue;
    }
    if (size.back() == 'K') bytes <<= 10;
    if (size.back() == 'M') bytes <<= 20;
    if (level > best_level || (level == best_level && bytes > best)) best_level = level, best = bytes;
  }
  if (best > 0) return best;
  const long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<std::uint64_t>(l3) : 0;
}

}  // namespace kvb::bench
