// EtcdClient: the few etcd v3 calls the cluster's membership needs (lease
// grant / keep-alive / revoke, put, prefix range, prefix watch), spoken to
// etcd's HTTP/JSON gateway (`POST /v3/...`) with Boost.Beast. Keys and
// values travel base64-encoded and 64-bit numbers as strings, as the
// gateway wants. One TCP connection per call (membership calls are seconds
// apart); a watch holds its own connection and reads the gateway's stream
// of newline-separated JSON objects until it is cancelled or fails.
// Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"

namespace kvb::daemon::cluster {

struct EtcdKeyValue {
  std::string key;
  std::string value;
  std::int64_t mod_revision = 0;
};

struct EtcdRange {
  std::vector<EtcdKeyValue> kvs;
  std::int64_t revision = 0;  // the store's revision when it answered
};

struct EtcdEvent {
  bool deleted = false;  // a delete (or a lease expiry); else a put
  EtcdKeyValue kv;
};

/// "http://HOST:PORT" or "HOST:PORT" -> host and port; invalid_argument otherwise.
struct EtcdEndpoint {
  std::string host;
  std::uint16_t port = 0;
  [[nodiscard]] static Result<EtcdEndpoint> parse(std::string_view url);
};

class EtcdClient {
 public:
  EtcdClient(boost::asio::any_io_executor executor, EtcdEndpoint endpoint,
             std::chrono::milliseconds call_timeout = std::chrono::milliseconds(2000));
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  /// A new lease of `ttl`; its id.
  boost::asio::awaitable<Result<std::int64_t>> grant_lease(std::chrono::seconds ttl);
  /// Renews `lease` once; not_found when etcd no longer has it (expired).
  boost::asio::awaitable<Status> keep_alive(std::int64_t lease);
  /// Ends `lease`; its keys are deleted (watchers see the deletes).
  boost::asio::awaitable<Status> revoke(std::int64_t lease);
  /// Puts `key` = `value`, attached to `lease` (0: none).
  boost::asio::awaitable<Status> put(const std::string& key, const std::string& value, std::int64_t lease);
  /// Every key under `prefix`, and the revision of that view.
  boost::asio::awaitable<Result<EtcdRange>> get_prefix(const std::string& prefix);
  /// Watches `prefix` from `start_revision` (0: from now): `on_event` runs
  /// for each put and delete, in order, on the executor. Returns when the
  /// stream ends: cancelled (cancel_watch() or the client destroyed), or
  /// the connection failed (io_error / unavailable).
  boost::asio::awaitable<Status> watch_prefix(const std::string& prefix, std::int64_t start_revision,
                                              std::function<void(const EtcdEvent&)> on_event);
  /// Ends a running watch_prefix (it returns cancelled). Idempotent.
  void cancel_watch();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with calls in flight
};

/// Base64 as etcd's gateway encodes keys and values (exposed for tests).
[[nodiscard]] std::string base64_encode(std::string_view bytes);
[[nodiscard]] Result<std::string> base64_decode(std::string_view text);

}  // namespace kvb::daemon::cluster
