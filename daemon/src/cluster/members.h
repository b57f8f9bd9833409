// Members: the other workers this one knows, by name. A member is reached
// through one or more UCX peers (the endpoint we opened to it, the one it
// opened to us); messages go out on one of them (send_peer). Each member
// carries its pools (where it lets us write fetched blocks), the index
// stream's sequence numbers and its metrics. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/cluster_wire.h"
#include "cluster/remote_index.h"
#include "cluster/same_host_map.h"
#include "kvb/common/ids.h"
#include "kvb/transport/memory.h"

namespace kvb::daemon::cluster {

struct PeerMetrics {
  std::uint64_t bytes_in = 0;           // fetched from it
  std::uint64_t bytes_out = 0;          // served to it
  std::uint64_t fetches_requested = 0;  // fetch requests we sent it
  std::uint64_t fetches_served = 0;     // its fetch requests we answered ok
  std::uint64_t fetch_errors = 0;       // our fetches from it that failed
  std::uint64_t fetch_us = 0;           // our fetches from it that ended ok: request sent to answer, summed
  std::uint64_t serve_us = 0;           // its fetches we answered ok: request in to answer out, summed
  std::uint64_t index_events_in = 0;
  std::uint64_t index_events_out = 0;
  std::uint64_t resyncs = 0;  // snapshots we asked it for after a gap
  double rtt_us = 0;          // last ping round trip
  std::uint64_t losses = 0;   // times it was lost
};

struct Member {
  std::string worker;
  std::string bootstrap;            // HOST:PORT it reports
  std::vector<PeerId> peer_ids;     // live endpoints to it
  std::optional<PeerId> send_peer;  // the one we send on
  bool joined = false;              // pools exchanged; it is in the index
  // Dropped by the membership (etcd) while its process may still run: it
  // could still write into blocks it was asked to fill (FetchService holds
  // them back). Cleared when it joins again.
  bool dropped_alive = false;
  std::map<std::uint64_t, PoolInfo> pools;  // by layout key
  // Its rkeys unpacked for one of our endpoints, by (peer, layout key).
  std::map<std::pair<PeerId, std::uint64_t>, std::unique_ptr<transport::RemoteKey>> rkeys;
  // Its pools mapped read-only here (same host), by layout key: fetched
  // from by memcpy under a pin (FetchService). Dropped with the pool.
  std::map<std::uint64_t, std::shared_ptr<const PeerPoolMapping>> mapped;
  bool map_refusal_logged = false;  // why its pools are not mapped: logged once
  // The index streams: ours to it, and its to us.
  std::uint64_t next_seq_out = 1;
  std::optional<std::uint64_t> expected_seq_in;  // nullopt: waiting for a snapshot
  bool resync_requested = false;                 // since the last snapshot from it
  PeerMetrics metrics;
  std::chrono::steady_clock::time_point joined_at;
};

class Members {
 public:
  /// The member called `worker`, created on first use.
  WorkerIndex index_of(const std::string& worker);
  [[nodiscard]] std::optional<WorkerIndex> find(const std::string& worker) const;
  [[nodiscard]] std::optional<WorkerIndex> by_peer(PeerId peer) const;
  Member& operator[](WorkerIndex i) { return *members_[i]; }
  const Member& operator[](WorkerIndex i) const { return *members_[i]; }
  [[nodiscard]] std::size_t size() const noexcept { return members_.size(); }

  /// `peer` reaches member `i`; it becomes the send peer when `ours` (the
  /// endpoint we opened) or when the member has none.
  void attach(WorkerIndex i, PeerId peer, bool ours);
  /// `peer` is gone; returns its member and whether that member has no
  /// endpoint left (then it is no longer joined).
  std::optional<std::pair<WorkerIndex, bool>> detach(PeerId peer);
  /// "peer lost: <worker>" for a transport PeerId (its number when unknown).
  [[nodiscard]] std::string name_of(PeerId peer) const;

 private:
  std::vector<std::unique_ptr<Member>> members_;
  std::unordered_map<std::string, WorkerIndex> by_name_;
  std::map<PeerId, WorkerIndex> by_peer_;
  std::map<PeerId, bool> ours_;
  // Every peer's worker, kept after it is gone (a failed request names its
  // worker after the loss was handled). PeerIds are never reused.
  std::map<PeerId, std::string> names_;
};

}  // namespace kvb::daemon::cluster
