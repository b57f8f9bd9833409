#include "cluster/cluster_node.h"

#include <unistd.h>

#include <cstdlib>

#include <fmt/chrono.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <nlohmann/json.hpp>

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using transport::Bytes;
using transport::IncomingMessage;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

/// The tier byte of an index entry: 2 for G2, 3 for G3 (informational:
/// a peer fetches either the same way).
std::uint8_t wire_tier(Tier tier) noexcept { return static_cast<std::uint8_t>(static_cast<unsigned>(tier) + 1); }

/// Calls fn(tier, hash) once for every block the manager holds in G2 or G3
/// (G2 first; a block in both is reported once, as G2's).
template <class Fn>
void for_each_held(const BlockManager& manager, Fn&& fn) {
  manager.for_each_registered(Tier::g2, [&](SequenceHash hash) { fn(Tier::g2, hash); });
  manager.for_each_registered(Tier::g3, [&](SequenceHash hash) {
    if (!manager.registered(Tier::g2, hash)) fn(Tier::g3, hash);
  });
}

constexpr auto kReconcileEvery = 500ms;  // connect attempts to wanted peers
constexpr std::uint64_t kPingEveryTicks = 4;
constexpr auto kConnectTimeout = 3s;

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

}  // namespace

ClusterNode::ClusterNode(asio::io_context& io, BlockService& blocks, ClusterSettings settings)
    : io_(io), blocks_(blocks), settings_(std::move(settings)), bootstrap_(io), reconcile_timer_(io) {}

ClusterNode::~ClusterNode() {
  *alive_ = false;
  blocks_.set_remote(nullptr);
  blocks_.set_observer({});
  fetch_.reset();
  index_sync_.reset();
  if (am_) pools_.remove_all(*am_);
  am_.reset();
  if (ucx_worker_) ucx_worker_->stop();
  ucx_worker_.reset();
  context_.reset();
}

Status ClusterNode::start() {
  auto listen = HostPort::parse(settings_.listen, true);
  if (!listen) return fail(Errc::invalid_argument, "cluster.listen: {}", listen.error().message);
  auto context = transport::Context::create(transport::ContextOptions{.tls = settings_.tls});
  if (!context) return fail(context.error().code, "cluster.tls '{}': {}", settings_.tls, context.error().message);
  context_ = std::move(*context);
  // Peers write into our G2 pools, memfd mappings UCX did not allocate:
  // tcp (and UCX's default, which reaches peers over the network here) and
  // sm move bulk data by AM rendezvous (on sm a CMA read by the receiver; a
  // put would be emulated over AM fragments), RDMA by one-sided put.
  protocol_ =
      transport::protocol_for_tls(settings_.tls.empty() ? "tcp" : settings_.tls, transport::Destination::caller_memory);
  // Same host over shared memory: the requester maps the holder's pool and
  // copies (a memcpy, no per-page kernel copy); tcp-only clusters stay on UCX.
  map_same_host_ = settings_.map_same_host && tls_shares_memory(settings_.tls);
  try {
    ucx_worker_ = std::make_unique<transport::Worker>(
        *context_, io_.get_executor(), transport::WorkerOptions{.spin = std::chrono::microseconds(settings_.spin_us)});
    am_ = std::make_unique<transport::ActiveMessageManager>(
        *ucx_worker_,
        transport::AmOptions{.max_concurrent = settings_.max_concurrent, .max_queued = settings_.max_queued});
  } catch (const transport::TransportError& e) {
    return tl::unexpected(e.error());
  }
  ucx_worker_->start();
  am_->on_peer_lost([this](PeerId peer, const Error& error) { peer_lost(peer, error); });
  index_sync_ = std::make_unique<IndexSync>(
      io_, *am_, members_, index_, [this] { return collect_index(); },
      std::chrono::milliseconds(settings_.index_flush_ms));
  fetch_ = std::make_unique<FetchService>(io_, *am_, members_, index_, pools_, protocol_,
                                          FetchService::Caching{.fetched = settings_.cache_fetched,
                                                                .same_host = settings_.cache_same_host,
                                                                .into_engine = settings_.fetch_into_engine},
                                          settings_.fetch_concurrency, map_same_host_);
  for (auto st : {am_->register_sync_handler(kJoinType, [this](IncomingMessage& m) { return on_join(m); }),
                  am_->register_sync_handler(kPoolType, [this](IncomingMessage& m) { return on_pool(m); }),
                  am_->register_sync_handler(kPoolGoneType, [this](IncomingMessage& m) { return on_pool_gone(m); }),
                  am_->register_sync_handler(kPingType, [](IncomingMessage&) -> Result<Bytes> { return Bytes{}; }),
                  index_sync_->register_handlers(), fetch_->register_handler()}) {
    if (!st) return st;
  }
  // Pools that exist already, then every later one, join the cluster.
  for (const auto& pool : blocks_.pools()) pool_created(*pool);
  blocks_.set_observer(
      BlockService::Observer{.pool_created = [this](LayoutPool& pool) { pool_created(pool); },
                             .pool_retiring = [this](LayoutPool& pool) { pool_retiring(pool); },
                             .registry_changed = [this](const LayoutPool& pool, Tier tier, SequenceHash key,
                                                        bool stored) { registry_changed(pool, tier, key, stored); }});
  blocks_.set_remote(this, std::chrono::milliseconds(settings_.fetch_timeout_ms), settings_.fetch_part_bytes);

  if (auto st = bootstrap_.bind(*listen); !st) return st;
  worker_ = settings_.worker.empty() ? fmt::format("{}:{}", host_name(), bootstrap_.bound().port) : settings_.worker;
  // Network transports only: a UCX listener beside the bootstrap one, so
  // peers open their endpoints by IP:PORT (over tcp, an endpoint opened by
  // worker address gets no zero-copy lanes: docs/transport.md).
  if (!settings_.connect_by_address && tls_listens_by_ip_port(settings_.tls)) {
    if (auto port = am_->listen(listen->host, 0); port) {
      ucx_port_ = *port;
      // Fault injection (tests): announce a port nobody listens on.
      if (const char* injected = std::getenv("KVB_INJECT_UCX_PORT"); injected != nullptr) {
        ucx_port_ = static_cast<std::uint16_t>(std::strtoul(injected, nullptr, 10));
      }
    } else {
      spdlog::warn("cluster: no UCX listener on {} ({}): peers connect by worker address", listen->host,
                   port.error().message);
    }
  }
  bootstrap_.serve(PeerIdentity{settings_.name, worker_, {}, ucx_worker_->address(), ucx_port_, host_boot_id()});
  for (const auto& peer : settings_.peers) {
    auto hp = HostPort::parse(peer, false);
    if (!hp) return fail(Errc::invalid_argument, "cluster.peers: {}", hp.error().message);
    wanted_.emplace(hp->to_string(), "");
    static_peers_.insert(hp->to_string());
  }
  if (!settings_.etcd.empty()) {
    auto endpoint = EtcdEndpoint::parse(settings_.etcd);
    if (!endpoint) return fail(Errc::invalid_argument, "cluster.etcd: {}", endpoint.error().message);
    etcd_ = std::make_unique<EtcdMembership>(
        io_, *endpoint, settings_.name, worker_, bootstrap_.bound().to_string(),
        std::chrono::seconds(std::max<std::uint32_t>(settings_.lease_ttl_s, 1)),
        EtcdMembership::Callbacks{[this](const std::string& worker, const std::string& bootstrap) {
                                    spdlog::debug("cluster: etcd names worker {} at {}", worker, bootstrap);
                                    wanted_[bootstrap] = worker;
                                    reconcile();
                                  },
                                  [this](const std::string& worker) {
                                    spdlog::info("cluster: worker {}'s etcd key is gone", worker);
                                    std::erase_if(wanted_, [&](const auto& kv) {
                                      return kv.second == worker && !static_peers_.contains(kv.first);
                                    });
                                    member_left(worker, "its etcd lease ended");
                                  },
                                  [this](const std::set<std::string>& workers) { etcd_listed(workers); }});
    etcd_->start();
  }
  spdlog::info(
      "cluster: worker {} of cluster '{}' on {} (UCX_TLS {}, bulk by {}{}, {} static peers{}; endpoints by {})",
      worker_, settings_.name, bootstrap_.bound().to_string(), settings_.tls.empty() ? "default" : settings_.tls,
      transport::to_string(protocol_), map_same_host_ ? "; mapped (same host) where a peer's pool maps" : "",
      settings_.peers.size(), etcd_ ? fmt::format(", etcd {}", settings_.etcd) : std::string(),
      ucx_port_ != 0 ? fmt::format("IP:PORT, UCX listener on port {}", ucx_port_) : std::string("worker address"));
  reconcile();
  return kvb::ok();
}

void ClusterNode::stop(std::function<void()> done) {
  if (stopping_) return done();
  stopping_ = true;
  reconcile_timer_.cancel();
  bootstrap_.stop();
  blocks_.set_remote(nullptr);
  // Peers without UCX failure detection hear a goodbye; our waiting
  // requests end (cancelled) and their blocks are released.
  fetch_.reset();
  index_sync_.reset();
  if (am_) pools_.remove_all(*am_);
  am_.reset();
  if (ucx_worker_) ucx_worker_->stop();
  if (etcd_) return etcd_->stop(std::move(done));
  done();
}

void ClusterNode::pool_created(LayoutPool& pool) {
  tell_traffic_share(pool);
  auto entry = pools_.add(*context_, *am_, pool);
  if (!entry) {
    spdlog::error("cluster: pool of {} could not be registered with UCX: {}", pool.spec.block_bytes(),
                  entry.error().to_string());
    return;
  }
  if (auto payload = encode((*entry)->info)) send_to_joined(kPoolType, *payload);
}

void ClusterNode::send_to_joined(const char* type, const Bytes& payload) {
  for (WorkerIndex i = 0; i < members_.size(); ++i) {
    if (!members_[i].joined || !members_[i].send_peer) continue;
    asio::co_spawn(
        io_,
        [am = am_.get(), peer = *members_[i].send_peer, type, payload = Bytes(payload)]() mutable
        -> asio::awaitable<void> { (void)co_await am->send(peer, type, std::move(payload)); },
        asio::detached);
  }
}

void ClusterNode::pool_retiring(LayoutPool& pool) {
  const std::uint64_t key = block_shape_key(pool.spec);
  // Its G2 blocks leave every peer's index (the registry drops them without
  // events when the pool goes), then the pool itself: peers forget its
  // address and rkey, and its UCX registration is released before BlockService
  // unmaps the memory. Nothing of ours is in flight into it or served from it
  // (BlockService::reclaimable: no lease, no block in transfer).
  std::size_t blocks = 0;
  if (index_sync_) {
    for_each_held(*pool.manager, [&](Tier tier, SequenceHash hash) {
      index_sync_->local_change(IndexEntry{IndexOp::removed, wire_tier(tier), key, hash.value()});
      ++blocks;
    });
  }
  if (!am_ || !pools_.remove(key, *am_)) return;
  if (auto payload = encode(PoolGone{key})) send_to_joined(kPoolGoneType, *payload);
  spdlog::info("cluster: host pool {} withdrawn from peers ({} blocks left the index)", pool.number, blocks);
}

void ClusterNode::registry_changed(const LayoutPool& pool, Tier tier, SequenceHash key, bool stored) {
  // Peers fetch from G2 and from G3 (read into G2 first): a worker holds a
  // block while either tier has it, so only entering or leaving both is an
  // index event. (A manager still being built has no G2 blocks yet: its
  // recovered G3 blocks are events.)
  if (!index_sync_ || (tier != Tier::g2 && tier != Tier::g3)) return;
  const Tier other = tier == Tier::g2 ? Tier::g3 : Tier::g2;
  if (pool.manager && pool.manager->registered(other, key)) return;
  index_sync_->local_change(IndexEntry{stored ? IndexOp::stored : IndexOp::removed, wire_tier(tier),
                                       block_shape_key(pool.spec), key.value()});
}

std::vector<IndexEntry> ClusterNode::collect_index() const {
  std::vector<IndexEntry> out;
  for (const auto& pool : blocks_.pools()) {
    const std::uint64_t layout = block_shape_key(pool->spec);
    for_each_held(*pool->manager, [&](Tier tier, SequenceHash key) {
      out.push_back(IndexEntry{IndexOp::stored, wire_tier(tier), layout, key.value()});
    });
  }
  return out;
}

JoinMessage ClusterNode::join_message() const {
  return JoinMessage{settings_.name, worker_, bootstrap_.bound().to_string(), pools_.infos()};
}

WorkerIndex ClusterNode::admit(const JoinMessage& join, PeerId peer, bool ours) {
  const WorkerIndex i = members_.index_of(join.worker);
  Member& m = members_[i];
  members_.attach(i, peer, ours);
  m.bootstrap = join.bootstrap;
  m.pools.clear();
  m.mapped.clear();
  for (const auto& p : join.pools) {
    m.pools[p.layout_key] = p;
    map_pool(m, p);
  }
  m.rkeys.clear();
  m.dropped_alive = false;
  if (!m.joined) {
    m.joined = true;
    m.joined_at = std::chrono::steady_clock::now();
    spdlog::info("cluster: worker {} joined (bootstrap {}, {} pools)", m.worker, m.bootstrap, m.pools.size());
    share_traffic();
  }
  return i;
}

Result<Bytes> ClusterNode::on_join(IncomingMessage& message) {
  auto join = decode<JoinMessage>(message.payload);
  if (!join) return tl::unexpected(join.error());
  if (join->cluster != settings_.name) {
    return fail(Errc::permission_denied, "worker {} belongs to cluster '{}'; this is '{}'", join->worker, join->cluster,
                settings_.name);
  }
  if (message.peer == PeerId{0}) return fail(Errc::wrong_state, "join from a sender without a hello");
  if (join->worker == worker_) return fail(Errc::already_exists, "worker name {} is taken by this worker", worker_);
  admit(*join, message.peer, false);
  // The joiner asks for our snapshot and sends its own once it has our answer.
  return encode(join_message());
}

Result<Bytes> ClusterNode::on_pool(IncomingMessage& message) {
  auto i = members_.by_peer(message.peer);
  if (!i) return fail(Errc::wrong_state, "pool from peer {}: not a member", message.peer);
  auto info = decode<PoolInfo>(message.payload);
  if (!info) return tl::unexpected(info.error());
  Member& m = members_[*i];
  std::erase_if(m.rkeys, [&](const auto& kv) { return kv.first.second == info->layout_key; });
  map_pool(m, *info);
  m.pools[info->layout_key] = std::move(*info);
  return Bytes{};
}

void ClusterNode::map_pool(Member& m, const PoolInfo& info) {
  m.mapped.erase(info.layout_key);
  if (!map_same_host_) return;
  auto mapping = map_peer_pool(info);
  if (!mapping) {
    if (!m.map_refusal_logged) {
      spdlog::info("cluster: worker {}'s pool is not mapped ({}): bulk by {}", m.worker, mapping.error().message,
                   transport::to_string(protocol_));
      m.map_refusal_logged = true;
    }
    return;
  }
  spdlog::info("cluster: worker {}'s pool {:#x} mapped read-only ({} MiB): bulk by mapped (same host)", m.worker,
               info.layout_key, (*mapping)->bytes() >> 20);
  m.mapped[info.layout_key] = std::move(*mapping);
}

Result<Bytes> ClusterNode::on_pool_gone(IncomingMessage& message) {
  auto i = members_.by_peer(message.peer);
  if (!i) return fail(Errc::wrong_state, "pool_gone from peer {}: not a member", message.peer);
  auto gone = decode<PoolGone>(message.payload);
  if (!gone) return tl::unexpected(gone.error());
  Member& m = members_[*i];
  std::erase_if(m.rkeys, [&](const auto& kv) { return kv.first.second == gone->layout_key; });
  m.pools.erase(gone->layout_key);
  m.mapped.erase(gone->layout_key);  // copies in flight keep their reference
  return Bytes{};
}

void ClusterNode::peer_lost(PeerId peer, const Error& error) {
  auto detached = members_.detach(peer);
  if (!detached) return;
  const auto [i, gone] = *detached;
  if (!gone) return;
  const std::size_t dropped = index_.size_of(i);
  index_.clear(i);
  members_[i].mapped.clear();
  if (fetch_) fetch_->drop_pins(i);
  spdlog::warn("cluster: worker {} lost ({}); {} of its blocks left the index", members_[i].worker, error.message,
               dropped);
  share_traffic();
}

void ClusterNode::share_traffic() {
  std::size_t workers = 1;
  for (WorkerIndex i = 0; i < members_.size(); ++i) workers += members_[i].joined ? 1 : 0;
  if (workers == sharing_workers_) return;
  sharing_workers_ = workers;
  for (const auto& pool : blocks_.pools()) tell_traffic_share(*pool);
  spdlog::info("cluster: {} worker(s) share the traffic: host pools count idleness at 1/{} of it (eviction)", workers,
               workers);
}

void ClusterNode::tell_traffic_share(LayoutPool& pool) const {
  pool.manager->set_traffic_share(Tier::g2, 1.0 / static_cast<double>(sharing_workers_));
}

void ClusterNode::member_left(const std::string& worker, const std::string& why) {
  auto i = members_.find(worker);
  if (!i) return;
  members_[*i].dropped_alive = true;
  const auto peers = members_[*i].peer_ids;
  for (PeerId p : peers) am_->disconnect(p, fmt::format("worker {} left the cluster: {}", worker, why));
}

void ClusterNode::etcd_listed(const std::set<std::string>& workers) {
  // A listing after an outage has no deletes for the keys that went away
  // meanwhile (a fresh etcd has none of the old keys). Members still joined
  // stay (etcd's loss drops nobody; a live worker puts its key again);
  // addresses of workers that are neither listed nor joined (died during
  // the outage: UCX dropped them) are no longer tried.
  std::erase_if(wanted_, [&](const auto& kv) {
    const auto& [address, worker] = kv;
    if (static_peers_.contains(address) || worker.empty() || workers.contains(worker)) return false;
    const auto i = members_.find(worker);
    const bool joined = i && members_[*i].joined;
    if (!joined) spdlog::info("cluster: worker {} ({}) is gone from etcd and unreachable: forgotten", worker, address);
    return !joined;
  });
}

void ClusterNode::reconcile() {
  if (stopping_ || !am_) return;
  for (const auto& [address, worker] : wanted_) {
    if (connecting_.contains(address)) continue;
    bool linked = false;
    for (WorkerIndex i = 0; i < members_.size() && !linked; ++i) {
      const Member& m = members_[i];
      linked = m.joined && (m.bootstrap == address || (!worker.empty() && m.worker == worker));
    }
    if (!linked) asio::co_spawn(io_, connect_to(address), asio::detached);
  }
  if (++ticks_ % kPingEveryTicks == 0) {
    for (WorkerIndex i = 0; i < members_.size(); ++i) {
      if (members_[i].joined) asio::co_spawn(io_, ping(i), asio::detached);
    }
  }
  reconcile_timer_.expires_after(kReconcileEvery);
  reconcile_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) reconcile();
  });
}

asio::awaitable<void> ClusterNode::connect_to(std::string address) {
  auto alive = alive_;
  connecting_.insert(address);
  struct Done {
    ClusterNode* self;
    std::shared_ptr<bool> alive;
    std::string address;
    ~Done() {
      if (*alive) self->connecting_.erase(address);
    }
  } done{this, alive, address};
  auto at = HostPort::parse(address, false);
  if (!at) co_return;
  auto identity = co_await read_identity(io_.get_executor(), *at, kConnectTimeout);
  if (!*alive || stopping_) co_return;
  if (!identity) {
    spdlog::debug("cluster: {}: {}", address, identity.error().message);
    co_return;
  }
  if (identity->cluster != settings_.name) {
    spdlog::warn("cluster: {} is worker {} of cluster '{}', not '{}': not joining", address, identity->worker,
                 identity->cluster, settings_.name);
    co_return;
  }
  if (identity->worker == worker_) co_return;  // ourselves
  const PeerId peer{next_peer_++};
  // By IP:PORT where both sides can (the peer announced a UCX listener) and
  // shared memory does not reach it; by worker address otherwise, or when
  // that fails.
  bool by_port = false;
  if (!settings_.connect_by_address && !address_only_.contains(address) &&
      opens_by_ip_port(settings_.tls, identity->ucx_port != 0,
                       !identity->boot_id.empty() && identity->boot_id == host_boot_id())) {
    auto st = am_->connect(peer, at->host, identity->ucx_port);
    by_port = st.has_value();
    if (!st) {
      spdlog::warn("cluster: connecting to worker {} at {}:{}: {}; by worker address instead", identity->worker,
                   at->host, identity->ucx_port, st.error().message);
    }
  }
  if (!by_port) {
    if (auto st = am_->connect_address(peer, identity->ucx_address); !st) {
      spdlog::warn("cluster: connecting to worker {}: {}", identity->worker, st.error().message);
      co_return;
    }
  }
  spdlog::debug("cluster: endpoint to worker {} opened by {}", identity->worker,
                by_port ? fmt::format("{}:{}", at->host, identity->ucx_port) : std::string("worker address"));
  auto payload = encode(join_message());
  Result<Bytes> reply = fail(Errc::internal, "join not sent");
  if (auto hello = co_await am_->wait_hello_answered(peer, kConnectTimeout); !hello) {
    reply = tl::unexpected(hello.error());
  } else if (!*alive || stopping_) {
    co_return;  // stopped meanwhile: am_ is gone
  } else if (payload) {
    reply = co_await am_->send_request(peer, kJoinType, std::move(*payload), kConnectTimeout);
  }
  if (!*alive || stopping_) co_return;
  auto join = reply ? decode<JoinMessage>(*reply) : Result<JoinMessage>(tl::unexpected(reply.error()));
  if (!join) {
    spdlog::warn("cluster: joining worker {} at {}: {}{}", identity->worker, address, join.error().message,
                 by_port ? fmt::format(" (endpoint by {}:{}; the next attempt opens it by worker address)", at->host,
                                       identity->ucx_port)
                         : std::string());
    if (by_port) address_only_.insert(address);
    am_->disconnect(peer, "its join failed");
    co_return;
  }
  const WorkerIndex i = admit(*join, peer, true);
  wanted_[address] = join->worker;
  // Each side's snapshot to the other, now that both know each other.
  index_sync_->send_snapshot(i);
  members_[i].resync_requested = true;
  members_[i].expected_seq_in.reset();
  (void)co_await am_->send(peer, kResyncType, {});
}

asio::awaitable<void> ClusterNode::ping(WorkerIndex i) {
  auto alive = alive_;
  if (!members_[i].send_peer) co_return;
  const auto sent = std::chrono::steady_clock::now();
  auto reply = co_await am_->send_request(*members_[i].send_peer, kPingType, {}, 2s);
  if (!*alive || !reply) co_return;
  members_[i].metrics.rtt_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - sent).count();
}

std::uint32_t ClusterNode::remote_prefix(const LayoutPool& pool, std::span<const SequenceHash> keys) const {
  const std::uint64_t layout = block_shape_key(pool.spec);
  std::uint32_t n = 0;
  for (const SequenceHash& key : keys) {
    bool held = false;
    for (WorkerIndex h : index_.holders(BlockKey{layout, key.value()})) held = held || members_[h].joined;
    if (!held) break;
    ++n;
  }
  return n;
}

void ClusterNode::fetch(LayoutPool& pool, std::vector<SequenceHash> keys,
                        std::chrono::steady_clock::time_point deadline, FetchDone done, bool by_transport) {
  if (!fetch_) {
    asio::post(io_, [done = std::move(done)] { done(fail(Errc::shutting_down, "the cluster is stopping")); });
    return;
  }
  fetch_->fetch(pool, std::move(keys), deadline, std::move(done), by_transport);
}

bool ClusterNode::can_borrow(const LayoutPool& pool, std::span<const SequenceHash> keys) const {
  return fetch_ && fetch_->can_borrow(pool, keys);
}

bool ClusterNode::can_fetch_into(const LayoutPool& pool) const { return fetch_ && fetch_->can_fetch_into(pool); }

std::function<void()> ClusterNode::fetch_into(LayoutPool& pool, std::vector<SequenceHash> keys,
                                              std::vector<std::byte*> destinations,
                                              std::chrono::steady_clock::time_point deadline, Detach detach,
                                              IntoDone done) {
  if (!fetch_) {
    asio::post(io_, [done = std::move(done)] { done(fail(Errc::shutting_down, "the cluster is stopping")); });
    return [] {};
  }
  return fetch_->fetch_into(pool, std::move(keys), std::move(destinations), deadline, std::move(detach),
                            std::move(done));
}

void ClusterNode::borrow(LayoutPool& pool, std::vector<SequenceHash> keys,
                         std::chrono::steady_clock::time_point deadline, BorrowDone done) {
  if (!fetch_) {
    asio::post(io_, [done = std::move(done)] { done(fail(Errc::shutting_down, "the cluster is stopping")); });
    return;
  }
  fetch_->borrow(pool, std::move(keys), deadline, std::move(done));
}

std::vector<proto::WorkerPrefix> ClusterNode::member_prefixes(const LayoutPool& pool,
                                                              std::span<const SequenceHash> keys) const {
  std::vector<proto::WorkerPrefix> out;
  std::vector<std::uint64_t> raw;
  raw.reserve(keys.size());
  for (const auto& k : keys) raw.push_back(k.value());
  const std::uint64_t layout = block_shape_key(pool.spec);
  for (WorkerIndex i = 0; i < members_.size(); ++i) {
    if (members_[i].joined) out.push_back({members_[i].worker, index_.prefix_of(i, layout, raw)});
  }
  return out;
}

json ClusterNode::stats() const {
  json members = json::array();
  for (WorkerIndex i = 0; i < members_.size(); ++i) {
    const Member& m = members_[i];
    const PeerMetrics& p = m.metrics;
    members.push_back({{"worker", m.worker},
                       {"bootstrap", m.bootstrap},
                       {"state", m.joined ? "joined" : "lost"},
                       {"index_blocks", index_.size_of(i)},
                       {"bytes_in", p.bytes_in},
                       {"bytes_out", p.bytes_out},
                       {"fetches_requested", p.fetches_requested},
                       {"fetches_served", p.fetches_served},
                       {"fetch_errors", p.fetch_errors},
                       {"fetch_us", p.fetch_us},
                       {"serve_us", p.serve_us},
                       {"index_events_in", p.index_events_in},
                       {"index_events_out", p.index_events_out},
                       {"resyncs", p.resyncs},
                       {"losses", p.losses},
                       {"rtt_us", p.rtt_us},
                       {"endpoint", !m.send_peer                          ? "none"
                                    : am_->peer_by_sockaddr(*m.send_peer) ? "ip_port"
                                                                          : "address"},
                       {"bulk", m.mapped.empty() ? std::string(transport::to_string(protocol_))
                                                 : std::string("mapped (same host)")}});
  }
  json out{{"name", settings_.name},
           {"worker", worker_},
           {"listen", bootstrap_.bound().to_string()},
           {"tls", settings_.tls.empty() ? "default" : settings_.tls},
           {"bulk_protocol", transport::to_string(protocol_)},
           {"ucx_listen_port", ucx_port_},
           {"map_same_host", map_same_host_},
           {"traffic_shared_by", sharing_workers_},
           {"membership", etcd_ ? "etcd" : "static"},
           {"members", members},
           {"index_blocks", index_.size()}};
  if (etcd_) {
    const EtcdHealth& h = etcd_->health();
    json etcd{{"endpoint", etcd_->endpoint()},     {"state", h.reachable ? "reachable" : "unreachable"},
              {"registered", etcd_->registered()}, {"outages", h.outages},
              {"failed_calls", h.failed_calls},    {"last_error", h.last_error}};
    if (!h.reachable) {
      etcd["unreachable_since"] =
          fmt::format("{:%FT%TZ}", fmt::gmtime(std::chrono::system_clock::to_time_t(h.unreachable_since_wall)));
      etcd["unreachable_ms"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - h.unreachable_since)
              .count();
    }
    out["etcd"] = std::move(etcd);
  }
  if (fetch_) {
    const FetchStats& f = fetch_->stats();
    out["fetch"] = {{"requests", f.requests},
                    {"blocks_in", f.blocks_in},
                    {"failures", f.failures},
                    {"served", f.served},
                    {"blocks_out", f.blocks_out},
                    {"not_found", f.not_found},
                    {"quarantined", f.quarantined},
                    {"mapped_requests", f.mapped_requests},
                    {"mapped_blocks", f.mapped_blocks},
                    {"pins_served", f.pins_served},
                    {"pins_expired", f.pins_expired},
                    {"pins_refused", f.pins_refused},
                    {"pins_on_disk", f.pins_on_disk},
                    {"disk_blocks_out", f.disk_blocks_out},
                    {"sums_checked", f.sums_checked},
                    {"sum_mismatches", f.sum_mismatches},
                    {"direct_requests", f.direct_requests},
                    {"direct_blocks", f.direct_blocks},
                    {"into_engine_requests", f.into_engine_requests},
                    {"into_engine_blocks", f.into_engine_blocks},
                    {"late_writes_detached", f.late_writes_detached}};
  }
  if (am_) {
    const auto s = am_->stats();
    out["handlers"] = {
        {"running", s.running}, {"peak_running", s.peak_running},       {"queued", s.queued},
        {"handled", s.handled}, {"failures", s.handler_failures},       {"busy", s.busy_refusals},
        {"dropped", s.dropped}, {"rejected_writes", s.rejected_writes}, {"landing_writes", s.landing_writes}};
    if (auto t = am_->type_stats(kFetchType)) {
      out["fetch_handlers"] = {{"limit", t->limit},
                               {"running", t->running},
                               {"peak_running", t->peak_running},
                               {"queued", t->queued},
                               {"handled", t->handled}};
    }
  }
  if (index_sync_) {
    const auto& x = index_sync_->stats();
    out["index_sync"] = {{"events_out", x.events_out},
                         {"batches_out", x.batches_out},
                         {"snapshots_out", x.snapshots_out},
                         {"batches_in", x.batches_in},
                         {"gaps", x.gaps},
                         {"send_failures", x.send_failures}};
  }
  return out;
}

std::string ClusterNode::prometheus() const {
  // Worker names come from other processes: escaped as label values.
  auto label = [](const std::string& worker) {
    std::string out;
    for (char c : worker) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  };
  std::string out;
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help, auto value_of) {
    out +=
        fmt::format("# HELP kvblockd_cluster_peer_{} {}\n# TYPE kvblockd_cluster_peer_{} {}\n", name, help, name, type);
    for (WorkerIndex i = 0; i < members_.size(); ++i) {
      out += fmt::format("kvblockd_cluster_peer_{}{{worker=\"{}\"}} {}\n", name, label(members_[i].worker),
                         value_of(i, members_[i]));
    }
  };
  metric("bytes_in_total", "counter", "Bytes fetched from the worker.",
         [](WorkerIndex, const Member& m) { return m.metrics.bytes_in; });
  metric("bytes_out_total", "counter", "Bytes served to the worker.",
         [](WorkerIndex, const Member& m) { return m.metrics.bytes_out; });
  metric("fetches_total", "counter", "Fetch requests sent to the worker.",
         [](WorkerIndex, const Member& m) { return m.metrics.fetches_requested; });
  metric("fetches_served_total", "counter", "Fetch requests of the worker answered ok.",
         [](WorkerIndex, const Member& m) { return m.metrics.fetches_served; });
  metric("fetch_errors_total", "counter", "Fetches from the worker that failed.",
         [](WorkerIndex, const Member& m) { return m.metrics.fetch_errors; });
  metric("fetch_seconds_total", "counter", "Time fetches from the worker that ended ok took, request to answer.",
         [](WorkerIndex, const Member& m) { return static_cast<double>(m.metrics.fetch_us) / 1e6; });
  metric("serve_seconds_total", "counter", "Time the worker's fetches answered ok took here, request to answer.",
         [](WorkerIndex, const Member& m) { return static_cast<double>(m.metrics.serve_us) / 1e6; });
  metric("rtt_seconds", "gauge", "Last ping round trip to the worker.",
         [](WorkerIndex, const Member& m) { return m.metrics.rtt_us / 1e6; });
  metric("index_blocks", "gauge", "Blocks the worker holds, as this worker's index knows.",
         [this](WorkerIndex i, const Member&) { return index_.size_of(i); });
  metric("up", "gauge", "1 while the worker is joined.", [](WorkerIndex, const Member& m) { return m.joined ? 1 : 0; });
  return out;
}

}  // namespace kvb::daemon::cluster
