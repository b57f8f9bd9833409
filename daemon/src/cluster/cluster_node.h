// ClusterNode: this kvblockd as one worker of a cluster (docs/cluster.md).
// It owns the daemon's UCX context, worker (progressed from the daemon's
// event loop: event driven, or spinning when cluster.spin_us > 0) and
// active-message manager; the bootstrap listener on cluster.listen; the
// membership (static cluster.peers, or etcd); the members and the index of
// what they hold; and the fetch service. To the BlockService it is the
// RemoteTier (G4). Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "block_service.h"
#include "cluster/bootstrap.h"
#include "cluster/cluster_settings.h"
#include "cluster/etcd_membership.h"
#include "cluster/fetch_service.h"
#include "cluster/index_sync.h"
#include "cluster/members.h"
#include "cluster/remote_index.h"
#include "kvb/transport/am_manager.h"
#include "kvb/transport/context.h"
#include "kvb/transport/worker.h"
#include "remote_tier.h"

namespace kvb::daemon::cluster {

class ClusterNode final : public RemoteTier {
 public:
  ClusterNode(boost::asio::io_context& io, BlockService& blocks, ClusterSettings settings);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  /// Opens UCX, listens on cluster.listen, starts the membership. Errors
  /// name the setting (a bad address, a UCX_TLS UCX refuses, a busy port).
  [[nodiscard]] Status start();
  /// Leaves the cluster (etcd lease revoked, peers told), stops listening
  /// and progressing; `done` runs once nothing of the cluster is pending.
  void stop(std::function<void()> done);

  // RemoteTier
  [[nodiscard]] std::uint32_t remote_prefix(const LayoutPool& pool, std::span<const SequenceHash> keys) const override;
  void fetch(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
             FetchDone done, bool by_transport = false) override;
  [[nodiscard]] bool can_borrow(const LayoutPool& pool, std::span<const SequenceHash> keys) const override;
  [[nodiscard]] bool can_fetch_into(const LayoutPool& pool) const override;
  [[nodiscard]] std::function<void()> fetch_into(LayoutPool& pool, std::vector<SequenceHash> keys,
                                                 std::vector<std::byte*> destinations,
                                                 std::chrono::steady_clock::time_point deadline, Detach detach,
                                                 IntoDone done) override;
  void borrow(LayoutPool& pool, std::vector<SequenceHash> keys, std::chrono::steady_clock::time_point deadline,
              BorrowDone done) override;

  [[nodiscard]] std::vector<proto::WorkerPrefix> member_prefixes(const LayoutPool& pool,
                                                                 std::span<const SequenceHash> keys) const override;
  [[nodiscard]] const std::string& worker_name() const noexcept override { return worker_; }
  /// The "cluster" object of the stats reply (docs/operations.md).
  [[nodiscard]] nlohmann::json stats() const;
  /// Prometheus lines of the per-peer metrics.
  [[nodiscard]] std::string prometheus() const;

 private:
  void pool_created(LayoutPool& pool);
  void pool_retiring(LayoutPool& pool);
  /// Sends a fire-and-forget message to every joined member.
  void send_to_joined(const char* type, const transport::Bytes& payload);
  Result<transport::Bytes> on_pool_gone(transport::IncomingMessage& message);
  void registry_changed(const LayoutPool& pool, Tier tier, SequenceHash key, bool stored);
  std::vector<IndexEntry> collect_index() const;
  [[nodiscard]] JoinMessage join_message() const;
  WorkerIndex admit(const JoinMessage& join, PeerId peer, bool ours);
  Result<transport::Bytes> on_join(transport::IncomingMessage& message);
  Result<transport::Bytes> on_pool(transport::IncomingMessage& message);
  /// Maps member `m`'s pool `info` read-only when it is on this host (or
  /// logs once why not); the pool's previous mapping is dropped.
  void map_pool(Member& m, const PoolInfo& info);
  void peer_lost(PeerId peer, const Error& error);
  /// The host pools' eviction counts idleness in their own uses: about 1/N
  /// of the cluster's with N workers joined (this one included). Tells
  /// their policies when N changed (EvictionPolicy::set_traffic_share).
  void share_traffic();
  /// Gives `pool`'s G2 policy the share of the traffic: 1 / sharing_workers_.
  void tell_traffic_share(LayoutPool& pool) const;
  void member_left(const std::string& worker, const std::string& why);
  void etcd_listed(const std::set<std::string>& workers);
  void reconcile();
  boost::asio::awaitable<void> connect_to(std::string address);
  boost::asio::awaitable<void> ping(WorkerIndex i);

  boost::asio::io_context& io_;
  BlockService& blocks_;
  ClusterSettings settings_;
  std::string worker_;
  std::unique_ptr<transport::Context> context_;
  std::unique_ptr<transport::Worker> ucx_worker_;
  std::unique_ptr<transport::ActiveMessageManager> am_;
  transport::BulkProtocol protocol_ = transport::BulkProtocol::am_rendezvous;
  bool map_same_host_ = false;       // cluster.map_same_host and a shared-memory transport
  std::uint16_t ucx_port_ = 0;       // our UCX listener (0: none; peers connect by address)
  std::size_t sharing_workers_ = 1;  // workers the traffic is shared by, as last told to the pools
  BootstrapListener bootstrap_;
  std::unique_ptr<EtcdMembership> etcd_;
  Members members_;
  RemoteIndex index_;
  LocalPools pools_;
  std::unique_ptr<IndexSync> index_sync_;
  std::unique_ptr<FetchService> fetch_;
  // Bootstrap addresses this worker keeps connecting to (static peers, etcd
  // members), and the ones being tried now.
  std::map<std::string, std::string> wanted_;  // address -> worker ("" until known)
  std::set<std::string> connecting_;
  std::set<std::string> static_peers_;  // cluster.peers: wanted for good
  // Bootstrap addresses whose endpoint opened by IP:PORT did not join: by
  // worker address from then on.
  std::set<std::string> address_only_;
  std::uint32_t next_peer_ = 1;
  boost::asio::steady_timer reconcile_timer_;
  std::uint64_t ticks_ = 0;
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace kvb::daemon::cluster
