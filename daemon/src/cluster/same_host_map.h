// Same-host mapped fetch (docs/cluster.md, "Same-host mapped fetch"): when
// two workers share a host and the cluster's transports include shared
// memory, the requester maps the holder's G2 pool memfd read-only and
// copies pinned blocks out of it with memcpy instead of a UCX transfer.
// The holder announces what it takes to find the memfd (PoolInfo: pid, fd
// number, st_dev/st_ino, offset of block 0, boot id); the requester takes
// the fd with pidfd_open + pidfd_getfd, checks the boot id and the file's
// identity, and mmaps it PROT_READ, MAP_SHARED.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/cluster_wire.h"
#include "kvb/common/error.h"

namespace kvb::daemon::cluster {

/// A peer's G2 pool memfd mapped read-only here; unmapped when the last
/// reference (the member's, or a copy in flight) goes.
class PeerPoolMapping {
 public:
  PeerPoolMapping(const std::byte* base, std::uint64_t bytes, std::uint64_t ino) noexcept
      : base_(base), bytes_(bytes), ino_(ino) {}
  ~PeerPoolMapping();
  PeerPoolMapping(const PeerPoolMapping&) = delete;
  PeerPoolMapping& operator=(const PeerPoolMapping&) = delete;

  [[nodiscard]] const std::byte* base() const noexcept { return base_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::uint64_t ino() const noexcept { return ino_; }

 private:
  const std::byte* base_;
  std::uint64_t bytes_;
  std::uint64_t ino_;
};

/// Whether the comma-separated UCX_TLS list names a shared-memory transport
/// (sm, shm, posix, sysv, cma, knem, xpmem): only then are peers tried for
/// a same-host mapping (tcp-only clusters stay on UCX).
[[nodiscard]] bool tls_shares_memory(std::string_view tls) noexcept;
/// Whether UCX_TLS `tls` reaches peers over the network (a network transport
/// is listed, or UCX chooses: empty): then a worker also listens for UCX
/// endpoints opened by IP:PORT (UCX's sockaddr connection manager).
[[nodiscard]] bool tls_listens_by_ip_port(std::string_view tls) noexcept;
/// Whether to open the endpoint to a peer by IP:PORT rather than by worker
/// address: the peer listens (`peer_listens`) and it is not a peer on this
/// host that shared memory reaches (`tls` empty or listing a shared-memory
/// transport: an endpoint opened by IP:PORT gets network lanes only). Over
/// tcp an endpoint opened by address with peer error handling gets no
/// zero-copy lanes: AM rendezvous data then arrives in fragments the
/// receiver copies into place (docs/transport.md, "Connecting by address
/// or by IP:PORT").
[[nodiscard]] bool opens_by_ip_port(std::string_view tls, bool peer_listens, bool same_host) noexcept;

/// This host's boot id (/proc/sys/kernel/random/boot_id), "" if unreadable.
[[nodiscard]] const std::string& host_boot_id();

/// Fills `info`'s same-host fields for a pool whose memory is memfd `fd`
/// (block 0 at `block0_offset` in it); fd < 0: announced as not mappable.
void describe_for_mapping(PoolInfo& info, int fd, std::uint64_t block0_offset);

/// Maps a peer's announced pool read-only. Errors say why (another host,
/// not announced, pidfd_getfd refused, the file is not the announced one).
[[nodiscard]] Result<std::shared_ptr<const PeerPoolMapping>> map_peer_pool(const PoolInfo& info);

}  // namespace kvb::daemon::cluster
