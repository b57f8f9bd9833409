// FetchService, the holder's side: peers' kvb.fetch (serve: lease, read
// disk-only blocks into G2, write them into the requester's pool, answer
// with the sums), kvb.pin and kvb.unpin (same host: blocks leased for a
// peer that reads them out of its mapping of our pool). The requester's
// side is fetch_service.cpp. Event-loop thread only.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "cluster/fetch_service.h"
#include "kvb/storage/slot_format.h"

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using transport::Bytes;
using transport::IncomingMessage;
using Clock = std::chrono::steady_clock;

namespace {

/// The most a holder spends writing one request.
constexpr std::uint32_t kMaxServeMs = 60'000;
/// Pins one peer may hold here at once (a buggy or hostile peer cannot
/// lease the pool away); beyond it a pin request is refused busy and the
/// peer fetches by UCX.
constexpr std::size_t kMaxPinsPerPeer = 32;

}  // namespace

/// BlockManager::promote as an awaitable: per block, its G2 lease or the
/// read's error. Runs on the manager's thread (the event loop). The wait is
/// a timer cancelled by promote's done (which never runs inside promote()):
/// no object with a destructor lives in the co_await expression itself
/// (GCC 12 destroys such temporaries twice: docs/transport.md, "Fixed").
asio::awaitable<std::vector<Result<BlockLease>>> FetchService::promote(BlockManager& manager, BlockLeases g3) {
  struct Wait {
    explicit Wait(asio::io_context& io) : timer(io, asio::steady_timer::time_point::max()) {}
    asio::steady_timer timer;
    std::optional<std::vector<Result<BlockLease>>> out;
  };
  auto wait = std::make_shared<Wait>(io_);
  // `g3` stays in this frame until done ran: promote() reads the blocks it leases.
  auto started = manager.promote(g3.view(), [wait](std::vector<Result<BlockLease>> r) {
    wait->out = std::move(r);
    wait->timer.cancel();
  });
  if (!started) {
    std::vector<Result<BlockLease>> failed;
    for (std::size_t k = 0; k < g3.size(); ++k) failed.emplace_back(tl::unexpected(started.error()));
    co_return failed;
  }
  while (!wait->out) {
    boost::system::error_code ec;
    co_await wait->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return std::move(*wait->out);
}

Result<Bytes> FetchService::pin(IncomingMessage& message) {
  auto request = decode<PinRequest>(message.payload);
  if (!request) return tl::unexpected(request.error());
  auto mi = members_.by_peer(message.peer);
  if (!mi || !members_[*mi].joined)
    return fail(Errc::wrong_state, "pin from peer {}: not a joined member", message.peer);
  Member& member = members_[*mi];
  const LocalPools::Entry* local = pools_.find(request->layout_key);
  if (local == nullptr) return fail(Errc::not_found, "not_found: no pool of block shape {:#x}", request->layout_key);
  if (local->info.map_fd < 0)
    return fail(Errc::unsupported, "the pool of block shape {:#x} is not mappable", request->layout_key);
  auto& table = pins_[*mi];
  if (table.size() >= kMaxPinsPerPeer) {
    ++stats_.pins_refused;
    return fail(Errc::busy, "worker {} holds {} pins here already", member.worker, table.size());
  }
  BlockManager& manager = *local->pool->manager;
  const Pool& g2 = manager.pool(Tier::g2);
  const auto file_base = reinterpret_cast<std::uint64_t>(g2.block_data(BlockId{0})) - local->info.map_offset;
  PinReply reply;
  BlockLeases leases;
  leases.reserve(request->keys.size());
  reply.offsets.reserve(request->keys.size());
  for (std::uint64_t key : request->keys) {
    BlockLease lease = manager.find(Tier::g2, SequenceHash{key});
    if (!lease && manager.registered(Tier::g3, SequenceHash{key})) {
      // On disk only: a pin maps G2 blocks, so the requester fetches these
      // by UCX (busy), and serve() reads them into G2 first.
      ++stats_.pins_on_disk;
      return fail(Errc::busy, "{:#018x} is on disk here: fetch it", key);
    }
    if (!lease) {
      ++stats_.not_found;
      return fail(Errc::not_found, "not_found: {:#018x}", key);
    }
    reply.offsets.push_back(reinterpret_cast<std::uint64_t>(g2.block_data(lease.block())) - file_base);
    if (!local->pool->host_sums.empty()) reply.sums.push_back(sum_of(*local->pool, lease, key, false));
    leases.push_back(std::move(lease));
  }
  reply.pin_id = next_pin_++;
  reply.ttl_ms = std::min(request->timeout_ms, kMaxServeMs);
  reply.map_ino = local->info.map_ino;
  auto payload = encode(reply);
  if (!payload) return payload;
  // Leased until kvb.unpin, the peer's loss, or ttl_ms from now: the
  // requester counts the ttl from before it sent the request, so its copy
  // ends before the leases go.
  auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(reply.ttl_ms));
  timer->async_wait([this, alive = alive_, worker = *mi, id = reply.pin_id](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    auto it = pins_.find(worker);
    if (it != pins_.end() && it->second.erase(id) > 0) ++stats_.pins_expired;
  });
  table.emplace(reply.pin_id, Pin{std::move(leases), std::move(timer)});
  ++stats_.pins_served;
  stats_.blocks_out += request->keys.size();
  ++member.metrics.fetches_served;
  member.metrics.bytes_out += request->keys.size() * local->info.block_bytes;
  return payload;
}

Result<Bytes> FetchService::unpin(IncomingMessage& message) {
  auto release = decode<PinRelease>(message.payload);
  if (!release) return tl::unexpected(release.error());
  auto mi = members_.by_peer(message.peer);
  if (!mi) return fail(Errc::wrong_state, "unpin from peer {}: not a member", message.peer);
  if (auto it = pins_.find(*mi); it != pins_.end()) {
    if (auto pin = it->second.find(release->pin_id); pin != it->second.end()) {
      pin->second.expiry->cancel();
      it->second.erase(pin);
    }
  }
  return Bytes{};
}

void FetchService::drop_pins(WorkerIndex worker) {
  auto it = pins_.find(worker);
  if (it == pins_.end()) return;
  for (auto& [id, pin] : it->second) pin.expiry->cancel();
  pins_.erase(it);
}

asio::awaitable<Result<Bytes>> FetchService::serve(IncomingMessage message) {
  auto alive = alive_;
  auto request = decode<FetchRequest>(message.payload);
  if (!request) co_return tl::unexpected(request.error());
  auto mi = members_.by_peer(message.peer);
  if (!mi || !members_[*mi].joined) {
    co_return fail(Errc::wrong_state, "fetch from peer {}: not a joined member", message.peer);
  }
  Member& member = members_[*mi];
  const LocalPools::Entry* local = pools_.find(request->layout_key);
  if (local == nullptr) co_return fail(Errc::not_found, "not_found: no pool of block shape {:#x}", request->layout_key);
  auto dst = member.pools.find(request->layout_key);
  if (dst == member.pools.end()) {
    co_return fail(Errc::unavailable, "worker {} announced no pool of block shape {:#x}", member.worker,
                   request->layout_key);
  }
  const PoolInfo& to = dst->second;
  const std::uint64_t block_bytes = local->info.block_bytes;
  if (to.block_bytes != block_bytes) {
    co_return fail(Errc::invalid_argument, "worker {}'s blocks are {} bytes, ours {}", member.worker, to.block_bytes,
                   block_bytes);
  }
  // Into memory the requester exposed for this fetch (its engine's): only
  // an AM write can land there, and the requester checks where it lands.
  if (request->into_exposed && protocol_ != transport::BulkProtocol::am_rendezvous) {
    co_return fail(Errc::unsupported, "fetch into exposed memory: this worker writes by {}, not am_rendezvous",
                   transport::to_string(protocol_));
  }
  BlockManager& manager = *local->pool->manager;
  const auto timeout = std::chrono::milliseconds(std::min(request->timeout_ms, kMaxServeMs));
  const auto started = Clock::now();
  BlockLeases leases;
  leases.reserve(request->items.size());
  std::vector<std::size_t> on_disk;  // items held in G3 only: read into G2 first
  std::vector<bool> from_disk(request->items.size());
  BlockLeases g3;
  for (std::size_t i = 0; i < request->items.size(); ++i) {
    const auto& item = request->items[i];
    if (!request->into_exposed && (item.address < to.base || item.address - to.base > to.bytes - block_bytes ||
                                   (item.address - to.base) % to.stride != 0)) {
      co_return fail(Errc::invalid_argument, "fetch: destination {:#x} is not a block of worker {}'s pool",
                     item.address, member.worker);
    }
    leases.push_back(manager.find(Tier::g2, SequenceHash{item.key}));
    if (leases[i]) continue;
    BlockLease disk = manager.find(Tier::g3, SequenceHash{item.key});
    if (!disk) {
      ++stats_.not_found;
      co_return fail(Errc::not_found, "not_found: {:#018x}", item.key);
    }
    on_disk.push_back(i);
    from_disk[i] = true;
    g3.push_back(std::move(disk));
  }
  if (!on_disk.empty()) {
    auto promoted = co_await promote(manager, std::move(g3));
    if (!*alive) co_return fail(Errc::cancelled, "fetch cancelled: the cluster is stopping");
    for (std::size_t k = 0; k < on_disk.size(); ++k) {
      if (!promoted[k]) {
        // Its read failed (I/O, or a check: then G3 dropped it, and the
        // index event that it is gone is on its way).
        ++stats_.not_found;
        co_return fail(Errc::not_found, "not_found: {:#018x} (its read from disk failed: {})",
                       request->items[on_disk[k]].key, promoted[k].error().message);
      }
      leases[on_disk[k]] = std::move(*promoted[k]);
    }
    stats_.disk_blocks_out += on_disk.size();
  }
  const Pool& g2 = manager.pool(Tier::g2);
  std::vector<transport::RmaChunk> chunks;
  chunks.reserve(request->items.size());
  for (std::size_t i = 0; i < request->items.size(); ++i)
    chunks.push_back({g2.block_data(leases[i].block()), request->items[i].address, block_bytes});
  // With integrity.check_host_blocks, the sums taken when the blocks entered
  // G2 go back with the answer: the requester checks what it got.
  FetchReply answer;
  if (!local->pool->host_sums.empty()) {
    answer.sums.reserve(request->items.size());
    for (std::size_t i = 0; i < request->items.size(); ++i)
      answer.sums.push_back(sum_of(*local->pool, leases[i], request->items[i].key, from_disk[i]));
  }
  if (inject_serve_delay_.count() > 0) {
    // Fault injection (tests): a holder that writes late (its clock stood
    // still meanwhile: it writes after the requester stopped waiting).
    asio::steady_timer delay(io_, inject_serve_delay_);
    boost::system::error_code ec;
    co_await delay.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!*alive) co_return fail(Errc::cancelled, "fetch cancelled: the cluster is stopping");
  }
  const auto left =
      timeout + inject_serve_delay_ - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  if (left <= std::chrono::milliseconds(0))
    co_return fail(Errc::timeout, "fetch: reading {} blocks from disk took the request's {} ms", on_disk.size(),
                   timeout.count());
  Status moved = kvb::ok();
  if (protocol_ == transport::BulkProtocol::rma_put) {
    auto ep = am_.endpoint(message.peer);
    if (!ep) co_return tl::unexpected(ep.error());
    auto& rkey = member.rkeys[{message.peer, request->layout_key}];
    if (!rkey) {
      auto unpacked = transport::RemoteKey::unpack(**ep, to.rkey);
      if (!unpacked) co_return tl::unexpected(unpacked.error());
      rkey = std::move(*unpacked);
    }
    moved = co_await transport::put_chunks(**ep, *rkey, chunks, left, local->registration.get());
  } else {
    moved = co_await am_.write_chunks_am(message.peer, chunks, left);
  }
  if (!*alive) co_return fail(Errc::cancelled, "fetch cancelled: the cluster is stopping");
  if (!moved) co_return tl::unexpected(moved.error());
  ++stats_.served;
  stats_.blocks_out += chunks.size();
  ++member.metrics.fetches_served;
  member.metrics.bytes_out += chunks.size() * block_bytes;
  member.metrics.serve_us +=
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count());
  if (answer.sums.empty()) co_return Bytes{};
  co_return encode(answer);
}

BlockSum FetchService::sum_of(const LayoutPool& pool, const BlockLease& lease, std::uint64_t key, bool fresh) {
  const LayoutPool::HostSum& entry = pool.host_sums[lease.block().value()];
  if (entry.set && entry.hash.value() == key) return BlockSum{true, entry.sum};
  if (!fresh) return BlockSum{};
  // Read from disk just now and checked there against its own sums.
  const Pool& g2 = pool.manager->pool(Tier::g2);
  return BlockSum{true, storage::payload_checksum({g2.block_data(lease.block()), g2.layout().block_bytes()})};
}

}  // namespace kvb::daemon::cluster
