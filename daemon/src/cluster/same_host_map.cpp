#include "cluster/same_host_map.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <span>

#include <fmt/format.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace kvb::daemon::cluster {

namespace {

/// Closes an fd on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) noexcept : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

/// Whether the comma-separated UCX_TLS list `tls` names one of `names`.
bool lists_any(std::string_view tls, std::span<const std::string_view> names) noexcept {
  while (!tls.empty()) {
    const auto comma = tls.find(',');
    if (std::find(names.begin(), names.end(), tls.substr(0, comma)) != names.end()) return true;
    tls = comma == std::string_view::npos ? std::string_view{} : tls.substr(comma + 1);
  }
  return false;
}

}  // namespace

PeerPoolMapping::~PeerPoolMapping() {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): munmap takes void*
  ::munmap(const_cast<std::byte*>(base_), bytes_);
}

bool tls_shares_memory(std::string_view tls) noexcept {
  static constexpr std::string_view kShared[] = {"sm", "shm", "posix", "sysv", "cma", "knem", "xpmem"};
  return lists_any(tls, kShared);
}

bool tls_listens_by_ip_port(std::string_view tls) noexcept {
  static constexpr std::string_view kNetwork[] = {"tcp",     "rc", "rc_v", "rc_x", "rc_verbs", "rc_mlx5", "dc", "dc_x",
                                                  "dc_mlx5", "ud", "ud_v", "ud_x", "ud_verbs", "ud_mlx5", "ib"};
  return tls.empty() || lists_any(tls, kNetwork);
}

bool opens_by_ip_port(std::string_view tls, bool peer_listens, bool same_host) noexcept {
  if (!peer_listens || !tls_listens_by_ip_port(tls)) return false;
  return !(same_host && (tls.empty() || tls_shares_memory(tls)));
}

const std::string& host_boot_id() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string line;
    std::getline(in, line);
    return line;
  }();
  return id;
}

void describe_for_mapping(PoolInfo& info, int fd, std::uint64_t block0_offset) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || host_boot_id().empty()) {
    info.map_fd = -1;
    return;
  }
  info.map_pid = static_cast<std::uint32_t>(::getpid());
  info.map_fd = fd;
  info.map_dev = st.st_dev;
  info.map_ino = st.st_ino;
  info.map_offset = block0_offset;
  info.boot_id = host_boot_id();
}

Result<std::shared_ptr<const PeerPoolMapping>> map_peer_pool(const PoolInfo& info) {
  if (info.map_fd < 0) return fail(Errc::unsupported, "its pool is not a shareable memfd");
  if (info.boot_id.empty() || info.boot_id != host_boot_id()) {
    return fail(Errc::unsupported, "another host (boot id {} here, {} there)", host_boot_id(), info.boot_id);
  }
  const Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(info.map_pid), 0)));
  if (pidfd.fd < 0) return fail(Errc::unavailable, "pidfd_open({}): {}", info.map_pid, std::strerror(errno));
  const Fd fd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.fd, info.map_fd, 0)));
  if (fd.fd < 0) {
    return fail(Errc::permission_denied, "pidfd_getfd(pid {}, fd {}): {}", info.map_pid, info.map_fd,
                std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return fail(Errc::io_error, "fstat: {}", std::strerror(errno));
  if (st.st_dev != info.map_dev || st.st_ino != info.map_ino) {
    return fail(Errc::unavailable, "fd {} of pid {} is not the announced pool (dev/ino {}/{}, announced {}/{})",
                info.map_fd, info.map_pid, st.st_dev, st.st_ino, info.map_dev, info.map_ino);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (info.map_offset > size || size - info.map_offset < info.bytes) {
    return fail(Errc::unavailable, "the pool file is {} bytes, under its announced {} from offset {}", size, info.bytes,
                info.map_offset);
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.fd, 0);
  if (base == MAP_FAILED) return fail(Errc::io_error, "mmap of {} bytes: {}", size, std::strerror(errno));
  return std::make_shared<const PeerPoolMapping>(static_cast<const std::byte*>(base), size, st.st_ino);
}

}  // namespace kvb::daemon::cluster
