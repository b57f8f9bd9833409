// EtcdMembership: this worker's presence in etcd and the other workers'.
// It holds a lease with a TTL (cluster.lease_ttl_s) on the key
// /kvblockd/<cluster>/workers/<worker> (value: {"worker", "bootstrap"}),
// renews it every TTL/3, and watches the prefix: a put announces a worker,
// a delete (revoked or expired: a worker that stopped renewing) drops it.
// When etcd is unreachable it retries; when its own lease expired it takes
// a new one and puts its key again. Event-loop thread only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/etcd_client.h"

namespace kvb::daemon::cluster {

class EtcdMembership {
 public:
  struct Callbacks {
    std::function<void(const std::string& worker, const std::string& bootstrap)> joined;
    std::function<void(const std::string& worker)> left;
  };

  EtcdMembership(boost::asio::io_context& io, EtcdEndpoint endpoint, std::string cluster, std::string worker,
                 std::string bootstrap, std::chrono::seconds ttl, Callbacks callbacks);
  ~EtcdMembership();

  /// Starts the lease, the key and the watch (in the background; errors are
  /// logged and retried).
  void start();
  /// Revokes the lease (peers drop this worker at once) and stops. The
  /// revoke finishes in the background; `done` runs after it (or its failure).
  void stop(std::function<void()> done);

  /// The etcd key prefix of this cluster's workers.
  [[nodiscard]] std::string prefix() const;
  [[nodiscard]] std::int64_t lease() const noexcept { return lease_; }
  [[nodiscard]] bool registered() const noexcept { return registered_; }

 private:
  boost::asio::awaitable<void> keep_registered(std::shared_ptr<bool> alive);
  boost::asio::awaitable<void> watch(std::shared_ptr<bool> alive);
  void on_event(const EtcdEvent& event);

  boost::asio::io_context& io_;
  EtcdClient client_;
  std::string cluster_;
  std::string worker_;
  std::string bootstrap_;
  std::chrono::seconds ttl_;
  Callbacks callbacks_;
  std::int64_t lease_ = 0;
  bool registered_ = false;
  bool stopping_ = false;
  boost::asio::steady_timer renew_timer_;
  boost::asio::steady_timer retry_timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace kvb::daemon::cluster
