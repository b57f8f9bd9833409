// TenantKeys: which registry keys a session's hashes become (docs/operations.md,
// "Tenants").
//
// A session's hashes are xored with its tenant key before they reach any
// registry (G1-G3, the cluster index, the disk headers). The tenant key is
// SipHash-2-4, under a secret the daemon holds, of the session's namespace
// and the salt of its hello. The namespace comes from the peer's uid
// (SO_PEERCRED), never from the client: by default each uid is its own
// namespace, so a client that names another uid's salt reaches nothing of
// it; uids listed in `tenants.shared_uids` share one namespace. The secret
// keeps clients from computing another tenant's key (and so from choosing
// hashes that land on another tenant's keys):
//   tenants.secret_file, else (in a cluster, where every worker must agree)
//   one derived from cluster.name, else (with a disk tier, whose headers
//   outlive the process) <disk.path>/tenant-secret, created once, else a
//   random one per start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvb/common/error.h"
#include "kvb/daemon/config.h"
#include "siphash.h"

namespace kvb::daemon {

class TenantKeys {
 public:
  /// The namespace of tenants.shared_uids: above every uid (uids are u32).
  static constexpr std::uint64_t kSharedNamespace = std::uint64_t{1} << 32;
  /// Bytes a secret file must hold at least (after trailing whitespace).
  static constexpr std::size_t kMinSecretBytes = 16;
  /// The file a disk tier keeps its secret in, under disk.path.
  static constexpr const char* kDiskSecretName = "tenant-secret";

  TenantKeys(SipKey secret, std::string source, std::vector<std::uint32_t> shared_uids);

  /// The secret as the configuration says (see above); errors name the file.
  [[nodiscard]] static Result<TenantKeys> load(const DaemonConfig& config);

  /// What a session of `uid` whose hello says `salt` xors into its hashes.
  [[nodiscard]] std::uint64_t session_key(std::uint32_t uid, std::uint64_t salt) const noexcept;
  /// Where the secret came from, for the start-up log line.
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  /// A secret from a file's bytes (at least kMinSecretBytes after trailing
  /// whitespace: a raw key or e.g. `openssl rand -hex 32` output).
  [[nodiscard]] static Result<SipKey> secret_from(const std::string& what, std::string bytes);

 private:
  SipKey secret_;
  std::string source_;
  std::vector<std::uint32_t> shared_uids_;
};

}  // namespace kvb::daemon
