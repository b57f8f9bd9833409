// EtcdMembership: this worker's presence in etcd and the other workers'.
// It holds a lease with a TTL (cluster.lease_ttl_s) on the key
// /kvblockd/<cluster>/workers/<worker> (value: {"worker", "bootstrap"}),
// renews it every TTL/3, and watches the prefix: a put announces a worker,
// a delete (revoked or expired: a worker that stopped renewing) drops it.
// When etcd is unreachable (killed, partitioned) nothing is dropped: the
// members stay as they are, one warning marks the outage (EtcdHealth, in
// stats), and every call is retried with a backoff (kRetryFirst doubling
// to kRetryMax). When etcd answers again: the lease is renewed, or, when
// etcd no longer knows it (a fresh etcd, or it expired), a new one is
// granted and the key put again; the prefix is listed again (listed()) and
// watched from there. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/etcd_client.h"

namespace kvb::daemon::cluster {

/// Whether etcd answers this worker, and since when it does not.
struct EtcdHealth {
  bool reachable = true;  // until a call fails
  std::chrono::steady_clock::time_point unreachable_since{};
  std::chrono::system_clock::time_point unreachable_since_wall{};  // for humans (stats)
  std::string last_error;                                          // of the latest failed call
  std::uint64_t outages = 0;                                       // times it became unreachable
  std::uint64_t failed_calls = 0;
};

class EtcdMembership {
 public:
  struct Callbacks {
    std::function<void(const std::string& worker, const std::string& bootstrap)> joined;
    std::function<void(const std::string& worker)> left;
    /// After each full listing of the prefix (at start and whenever the
    /// watch is re-established): every worker etcd holds a key of now.
    std::function<void(const std::set<std::string>& workers)> listed;
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
  [[nodiscard]] const EtcdHealth& health() const noexcept { return health_; }
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_text_; }

 private:
  boost::asio::awaitable<void> keep_registered(std::shared_ptr<bool> alive);
  boost::asio::awaitable<void> watch(std::shared_ptr<bool> alive);
  void on_event(const EtcdEvent& event);
  // Every etcd call's outcome: the outage's start and end are logged once.
  void call_succeeded();
  void call_failed(const Error& error);

  boost::asio::io_context& io_;
  EtcdClient client_;
  std::string endpoint_text_;
  std::string cluster_;
  std::string worker_;
  std::string bootstrap_;
  std::chrono::seconds ttl_;
  Callbacks callbacks_;
  std::int64_t lease_ = 0;
  bool registered_ = false;
  bool stopping_ = false;
  EtcdHealth health_;
  // One timer per loop: a timer's expires_after cancels its other waiter.
  boost::asio::steady_timer renew_timer_;
  boost::asio::steady_timer watch_timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace kvb::daemon::cluster
