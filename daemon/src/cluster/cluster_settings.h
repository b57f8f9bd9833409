// The cluster's settings ([cluster] in the configuration,
// docs/configuration.md and docs/cluster.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvb::daemon::cluster {

struct ClusterSettings {
  /// IP:PORT of this worker's bootstrap listener (port 0: any). Empty: the
  /// daemon runs alone (no UCX context at all).
  std::string listen;
  /// The cluster's name: workers of another cluster are refused, and the
  /// etcd keys live under /kvblockd/<name>/workers/.
  std::string name = "kvblockd";
  /// This worker's name; empty: <hostname>:<bound port>.
  std::string worker;
  /// Static peers: their cluster.listen addresses (HOST:PORT).
  std::vector<std::string> peers;
  /// etcd endpoint (http://HOST:PORT) for dynamic membership; empty: static only.
  std::string etcd;
  /// TTL of this worker's etcd lease: a worker that stops renewing leaves
  /// every other worker's index within it.
  std::uint32_t lease_ttl_s = 5;
  /// UCX_TLS for the daemon's UCX context ("tcp", "sm", ...); empty: UCX's choice.
  std::string tls;
  /// Progress spinning after work (microseconds; 0 = event driven).
  std::uint32_t spin_us = 0;
  /// Keep fetched blocks registered in the local G2 tier (a later onboard
  /// of the same prefix is local).
  bool cache_fetched = true;
  /// With cache_fetched: keep blocks from a same-host worker whose pool is
  /// mapped here too (a second copy in the same host's memory); false: the
  /// onboard reads them in place (docs/cluster.md, "Same-host mapped fetch").
  bool cache_same_host = false;
  /// Same host and a shared-memory transport in `tls`: fetch by mapping the
  /// holder's G2 pool memfd and copying (docs/cluster.md, "Same-host
  /// mapped fetch"); false: always by UCX.
  bool map_same_host = true;
  /// Always open UCX endpoints by worker address; false: by IP:PORT (a UCX
  /// listener beside `listen`) where opens_by_ip_port() says so
  /// (docs/cluster.md, "Connections").
  bool connect_by_address = false;
  /// An onboard fetches its remote blocks in parts of about this many bytes
  /// and copies each into the engine while the next one travels (0: the
  /// whole fetch, then the copy).
  std::uint64_t fetch_part_bytes = 32ULL << 20;
  /// Blocks not kept here (cache_fetched false): the holders write them
  /// straight into the engine's host memory, seen through a landing window
  /// and exposed only while the fetch waits, where the engine's layout
  /// (blocks of the pool's shape, whole pages) and the bulk protocol
  /// (am_rendezvous: writes land only where this side exposed) allow
  /// (docs/cluster.md, "Fetched straight into the engine").
  bool fetch_into_engine = true;
  /// Active-message handlers running at once, all types, and queued beyond.
  std::uint32_t max_concurrent = 16;
  std::uint32_t max_queued = 4096;
  /// Fetch handlers (serving other workers) running at once.
  std::uint32_t fetch_concurrency = 4;
  /// Index events are batched for at most this long before they are sent.
  std::uint32_t index_flush_ms = 2;
  /// The longest an onboard waits for blocks fetched from other workers
  /// (the daemon's request_timeout_ms).
  std::uint32_t fetch_timeout_ms = 30000;
};

}  // namespace kvb::daemon::cluster
