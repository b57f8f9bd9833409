#include "cluster/etcd_membership.h"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

constexpr auto kRetry = std::chrono::milliseconds(500);

asio::awaitable<void> sleep_on(asio::steady_timer& timer, std::chrono::steady_clock::duration d) {
  timer.expires_after(d);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace

EtcdMembership::EtcdMembership(asio::io_context& io, EtcdEndpoint endpoint, std::string cluster, std::string worker,
                               std::string bootstrap, std::chrono::seconds ttl, Callbacks callbacks)
    : io_(io),
      client_(io.get_executor(), std::move(endpoint)),
      cluster_(std::move(cluster)),
      worker_(std::move(worker)),
      bootstrap_(std::move(bootstrap)),
      ttl_(ttl),
      callbacks_(std::move(callbacks)),
      renew_timer_(io),
      retry_timer_(io) {}

EtcdMembership::~EtcdMembership() {
  *alive_ = false;
  client_.cancel_watch();
}

std::string EtcdMembership::prefix() const { return fmt::format("/kvblockd/{}/workers/", cluster_); }

void EtcdMembership::start() {
  asio::co_spawn(io_, keep_registered(alive_), asio::detached);
  asio::co_spawn(io_, watch(alive_), asio::detached);
}

void EtcdMembership::stop(std::function<void()> done) {
  stopping_ = true;
  client_.cancel_watch();
  renew_timer_.cancel();
  retry_timer_.cancel();
  const std::int64_t lease = lease_;
  registered_ = false;
  asio::co_spawn(
      io_,
      [this, alive = alive_, lease, done = std::move(done)]() -> asio::awaitable<void> {
        if (lease != 0) {
          auto st = co_await client_.revoke(lease);
          if (!st && *alive) spdlog::warn("cluster: etcd lease revoke: {}", st.error().message);
        }
        if (done) done();
      },
      asio::detached);
}

asio::awaitable<void> EtcdMembership::keep_registered(std::shared_ptr<bool> alive) {
  const std::string key = prefix() + worker_;
  const std::string value = json{{"worker", worker_}, {"bootstrap", bootstrap_}}.dump();
  while (*alive && !stopping_) {
    if (!registered_) {
      auto lease = co_await client_.grant_lease(ttl_);
      if (!*alive || stopping_) co_return;
      Status put = lease ? co_await client_.put(key, value, *lease) : Status(tl::unexpected(lease.error()));
      if (!*alive || stopping_) co_return;
      if (!put) {
        spdlog::warn("cluster: etcd registration of {} failed: {} (retrying)", key, put.error().message);
        co_await sleep_on(retry_timer_, kRetry);
        continue;
      }
      lease_ = *lease;
      registered_ = true;
      spdlog::info("cluster: registered as {} in etcd (lease {:x}, TTL {} s)", key, lease_, ttl_.count());
    }
    co_await sleep_on(renew_timer_, std::max<std::chrono::milliseconds>(ttl_ / 3, std::chrono::milliseconds(200)));
    if (!*alive || stopping_) co_return;
    auto renewed = co_await client_.keep_alive(lease_);
    if (!*alive || stopping_) co_return;
    if (!renewed) {
      spdlog::warn("cluster: etcd lease renewal: {}", renewed.error().message);
      if (renewed.error().code == Errc::not_found) registered_ = false;  // expired: register again
    }
  }
}

asio::awaitable<void> EtcdMembership::watch(std::shared_ptr<bool> alive) {
  while (*alive && !stopping_) {
    auto range = co_await client_.get_prefix(prefix());
    if (!*alive || stopping_) co_return;
    if (!range) {
      spdlog::warn("cluster: etcd {}: {} (retrying)", prefix(), range.error().message);
      co_await sleep_on(retry_timer_, kRetry);
      continue;
    }
    for (const auto& kv : range->kvs) on_event(EtcdEvent{false, kv});
    auto ended = co_await client_.watch_prefix(prefix(), range->revision + 1,
                                               [this](const EtcdEvent& event) { on_event(event); });
    if (!*alive || stopping_) co_return;
    spdlog::warn("cluster: etcd watch ended: {} (restarting)", ended ? "closed" : ended.error().message);
    co_await sleep_on(retry_timer_, kRetry);
  }
}

void EtcdMembership::on_event(const EtcdEvent& event) {
  if (!event.kv.key.starts_with(prefix())) return;
  const std::string worker = event.kv.key.substr(prefix().size());
  if (worker == worker_) return;
  if (event.deleted) {
    if (callbacks_.left) callbacks_.left(worker);
    return;
  }
  const json value = json::parse(event.kv.value, nullptr, false);
  if (value.is_discarded() || !value.contains("bootstrap")) {
    spdlog::warn("cluster: etcd key {} has no bootstrap address", event.kv.key);
    return;
  }
  if (callbacks_.joined) callbacks_.joined(worker, value.value("bootstrap", std::string()));
}

}  // namespace kvb::daemon::cluster
