#include "cluster/etcd_membership.h"

#include <algorithm>
#include <set>

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

using std::chrono::milliseconds;

// Retries of a failing etcd: the first after kRetryFirst, each next one
// twice as late, at most kRetryMax apart (etcd back: noticed within it).
constexpr milliseconds kRetryFirst{250};
constexpr milliseconds kRetryMax{2000};

milliseconds next_backoff(milliseconds current) { return std::min(current * 2, kRetryMax); }

asio::awaitable<void> sleep_on(asio::steady_timer& timer, std::chrono::steady_clock::duration d) {
  timer.expires_after(d);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace

EtcdMembership::EtcdMembership(asio::io_context& io, EtcdEndpoint endpoint, std::string cluster, std::string worker,
                               std::string bootstrap, std::chrono::seconds ttl, Callbacks callbacks)
    : io_(io),
      client_(io.get_executor(), endpoint),
      endpoint_text_(fmt::format("http://{}:{}", endpoint.host, endpoint.port)),
      cluster_(std::move(cluster)),
      worker_(std::move(worker)),
      bootstrap_(std::move(bootstrap)),
      ttl_(ttl),
      callbacks_(std::move(callbacks)),
      renew_timer_(io),
      watch_timer_(io) {}

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
  watch_timer_.cancel();
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
  const milliseconds renew_every = std::max<milliseconds>(ttl_ / 3, milliseconds(200));
  milliseconds backoff = kRetryFirst;
  while (*alive && !stopping_) {
    if (!registered_) {
      auto lease = co_await client_.grant_lease(ttl_);
      if (!*alive || stopping_) co_return;
      // (No co_await inside a conditional expression: GCC 12 frees the
      // awaited coroutine's frame early there, e.g. the path its error names.)
      Status put = lease ? Status(kvb::ok()) : Status(tl::unexpected(lease.error()));
      if (lease) put = co_await client_.put(key, value, *lease);
      if (!*alive || stopping_) co_return;
      if (!put) {
        call_failed(put.error());
        spdlog::debug("cluster: etcd registration of {} failed: {} (retrying in {} ms)", key, put.error().message,
                      backoff.count());
        co_await sleep_on(renew_timer_, backoff);
        backoff = next_backoff(backoff);
        continue;
      }
      call_succeeded();
      backoff = kRetryFirst;
      lease_ = *lease;
      registered_ = true;
      spdlog::info("cluster: registered as {} in etcd (lease {:x}, TTL {} s)", key, lease_, ttl_.count());
    }
    // While etcd is away the renewals back off (but never wait longer than
    // a renewal period: the lease must outlive a short outage).
    co_await sleep_on(renew_timer_, health_.reachable ? renew_every : std::min(backoff, renew_every));
    if (!*alive || stopping_) co_return;
    auto renewed = co_await client_.keep_alive(lease_);
    if (!*alive || stopping_) co_return;
    if (renewed) {
      call_succeeded();
      backoff = kRetryFirst;
    } else if (renewed.error().code == Errc::not_found) {
      // etcd answered but no longer knows the lease (it expired during an
      // outage, or this is a fresh etcd): take a new one, put the key again.
      call_succeeded();
      spdlog::warn("cluster: {}; registering again", renewed.error().message);
      registered_ = false;
    } else {
      call_failed(renewed.error());
      backoff = next_backoff(backoff);
    }
  }
}

asio::awaitable<void> EtcdMembership::watch(std::shared_ptr<bool> alive) {
  milliseconds backoff = kRetryFirst;
  while (*alive && !stopping_) {
    auto range = co_await client_.get_prefix(prefix());
    if (!*alive || stopping_) co_return;
    if (!range) {
      call_failed(range.error());
      co_await sleep_on(watch_timer_, backoff);
      backoff = next_backoff(backoff);
      continue;
    }
    call_succeeded();
    backoff = kRetryFirst;
    std::set<std::string> workers;
    for (const auto& kv : range->kvs) {
      if (kv.key.starts_with(prefix())) workers.insert(kv.key.substr(prefix().size()));
      on_event(EtcdEvent{false, kv});
    }
    if (callbacks_.listed) callbacks_.listed(workers);
    auto ended = co_await client_.watch_prefix(prefix(), range->revision + 1,
                                               [this](const EtcdEvent& event) { on_event(event); });
    if (!*alive || stopping_) co_return;
    if (ended || ended.error().code == Errc::cancelled) {
      spdlog::warn("cluster: etcd watch ended: {} (restarting)", ended ? "closed" : ended.error().message);
    } else {
      call_failed(ended.error());
    }
    co_await sleep_on(watch_timer_, backoff);
    backoff = next_backoff(backoff);
  }
}

void EtcdMembership::call_succeeded() {
  if (health_.reachable) return;
  health_.reachable = true;
  const auto down = std::chrono::duration<double>(std::chrono::steady_clock::now() - health_.unreachable_since);
  spdlog::warn("cluster: etcd {} answers again after {:.1f} s unreachable", endpoint_text_, down.count());
}

void EtcdMembership::call_failed(const Error& error) {
  ++health_.failed_calls;
  health_.last_error = error.message;
  if (!health_.reachable) {
    spdlog::debug("cluster: etcd still unreachable: {}", error.message);
    return;
  }
  health_.reachable = false;
  health_.unreachable_since = std::chrono::steady_clock::now();
  health_.unreachable_since_wall = std::chrono::system_clock::now();
  ++health_.outages;
  spdlog::warn("cluster: etcd {} unreachable ({}): keeping the current members, serving on, retrying every {}-{} ms",
               endpoint_text_, error.message, kRetryFirst.count(), kRetryMax.count());
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
