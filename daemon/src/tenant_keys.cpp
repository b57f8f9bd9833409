#include "tenant_keys.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "kvb/common/unique_fd.h"

namespace kvb::daemon {
namespace {

/// Every byte of the file at `path` (at most 64 KiB: a key file is small).
Result<std::string> read_small_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail(Errc::io_error, "cannot read '{}': {}", path, std::strerror(errno));
  std::string out;
  std::array<char, 4096> chunk{};
  for (;;) {
    const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::io_error, "cannot read '{}': {}", path, std::strerror(errno));
    if (n == 0) break;
    out.append(chunk.data(), static_cast<std::size_t>(n));
    if (out.size() > std::size_t{64} * 1024)
      return fail(Errc::invalid_argument, "'{}' is over 64 KiB: not a key file", path);
  }
  return out;
}

Result<std::string> random_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail(Errc::io_error, "getrandom: {}", std::strerror(errno));
    got += static_cast<std::size_t>(r);
  }
  return out;
}

/// <disk.path>/tenant-secret: read, or created (0600, 32 random bytes) the first time.
Result<SipKey> disk_secret(const std::string& dir) {
  const std::string path = dir + "/" + TenantKeys::kDiskSecretName;
  if (::access(path.c_str(), F_OK) != 0) {
    auto bytes = random_bytes(32);
    if (!bytes) return tl::unexpected(bytes.error());
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd) {
      const bool written = ::write(fd.get(), bytes->data(), bytes->size()) == static_cast<ssize_t>(bytes->size()) &&
                           ::fsync(fd.get()) == 0;
      if (!written) {
        ::unlink(path.c_str());
        return fail(Errc::io_error, "cannot write '{}': {}", path, std::strerror(errno));
      }
      return TenantKeys::secret_from(path, std::move(*bytes));
    }
    if (errno != EEXIST) return fail(Errc::io_error, "cannot create '{}': {}", path, std::strerror(errno));
  }
  auto bytes = read_small_file(path);
  if (!bytes) return tl::unexpected(bytes.error());
  return TenantKeys::secret_from(path, std::move(*bytes));
}

}  // namespace

TenantKeys::TenantKeys(SipKey secret, std::string source, std::vector<std::uint32_t> shared_uids)
    : secret_(secret), source_(std::move(source)), shared_uids_(std::move(shared_uids)) {}

Result<SipKey> TenantKeys::secret_from(const std::string& what, std::string bytes) {
  while (!bytes.empty() &&
         (bytes.back() == '\n' || bytes.back() == '\r' || bytes.back() == ' ' || bytes.back() == '\t')) {
    bytes.pop_back();
  }
  if (bytes.size() < kMinSecretBytes) {
    return fail(Errc::invalid_argument, "{} holds {} bytes; a tenant secret needs at least {}", what, bytes.size(),
                kMinSecretBytes);
  }
  // The key: two SipHash words of the bytes (any length, text or raw) under fixed keys.
  const auto message = std::as_bytes(std::span<const char>(bytes.data(), bytes.size()));
  SipKey first{};
  SipKey second{};
  second[0] = 1;
  const std::uint64_t lo = siphash24(first, message);
  const std::uint64_t hi = siphash24(second, message);
  SipKey key{};
  for (std::size_t i = 0; i < 8; ++i) {
    key[i] = static_cast<std::uint8_t>(lo >> (8 * i));
    key[8 + i] = static_cast<std::uint8_t>(hi >> (8 * i));
  }
  return key;
}

Result<TenantKeys> TenantKeys::load(const DaemonConfig& config) {
  const auto& shared = config.tenants_shared_uids;
  if (!config.tenants_secret_file.empty()) {
    const std::string& path = config.tenants_secret_file;
    auto bytes = read_small_file(path);
    if (!bytes) return fail(bytes.error().code, "tenants.secret_file: {}", bytes.error().message);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      spdlog::warn("tenants.secret_file '{}' is readable by others (mode {:o}): chmod 600 it", path, st.st_mode & 0777);
    }
    auto key = secret_from("tenants.secret_file '" + path + "'", std::move(*bytes));
    if (!key) return tl::unexpected(key.error());
    return TenantKeys(*key, "tenants.secret_file '" + path + "'", shared);
  }
  if (!config.cluster_listen.empty()) {
    // Every worker must turn a hash into the same key; without a shared file
    // the cluster's name is what they have in common. Not secret: said at start.
    auto key = secret_from("cluster.name", "kvblockd tenant keys of cluster " + config.cluster_name);
    if (!key) return tl::unexpected(key.error());
    return TenantKeys(*key, "derived from cluster.name (set tenants.secret_file on every worker to keep it secret)",
                      shared);
  }
  if (!config.disk_path.empty()) {
    auto key = disk_secret(config.disk_path);
    if (key) return TenantKeys(*key, fmt::format("{}/{}", config.disk_path, kDiskSecretName), shared);
    // The disk tier's own start says what is wrong with its directory.
    spdlog::warn("tenant secret: {}; using a random one (disk blocks of earlier runs will not match)",
                 key.error().message);
  }
  auto bytes = random_bytes(32);
  if (!bytes) return fail(bytes.error().code, "tenant secret: {}", bytes.error().message);
  auto key = secret_from("random", std::move(*bytes));
  if (!key) return tl::unexpected(key.error());
  return TenantKeys(*key, "random at start", shared);
}

std::uint64_t TenantKeys::session_key(std::uint32_t uid, std::uint64_t salt) const noexcept {
  const bool shared = std::find(shared_uids_.begin(), shared_uids_.end(), uid) != shared_uids_.end();
  const std::uint64_t ns = shared ? kSharedNamespace : uid;
  std::array<std::byte, 16> message{};
  for (std::size_t i = 0; i < 8; ++i) {
    message[i] = static_cast<std::byte>((ns >> (8 * i)) & 0xFFU);
    message[8 + i] = static_cast<std::byte>((salt >> (8 * i)) & 0xFFU);
  }
  return siphash24(secret_, message);
}

}  // namespace kvb::daemon
