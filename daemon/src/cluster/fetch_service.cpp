#include "cluster/fetch_service.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "kvb/storage/slot_format.h"

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using transport::Bytes;
using transport::IncomingMessage;
using Clock = std::chrono::steady_clock;

namespace {

/// How long blocks of an unanswered fetch stay out of use beyond the
/// holder's own deadline (its last write may still be in flight).
constexpr auto kQuarantineGrace = std::chrono::seconds(5);

std::chrono::milliseconds env_ms(const char* name) {
  const char* v = std::getenv(name);
  return std::chrono::milliseconds(v == nullptr ? 0 : std::strtoul(v, nullptr, 10));
}

/// The blocks of one mapped fetch being copied on the copy threads: the
/// last copy posts `done` to the loop.
struct CopyBatch {
  std::atomic<std::size_t> left{0};
  std::function<void()> done;
  asio::io_context* io = nullptr;
  std::shared_ptr<const PeerPoolMapping> mapping;  // mapped until the last copy ended
};

std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  return h ^ (h >> 31);
}

}  // namespace

std::uint64_t block_shape_key(const LayoutSpec& spec) noexcept {
  std::uint64_t h = 0x6b76622d736861ULL;  // "kvb-sha"
  for (std::uint64_t v : {std::uint64_t{spec.num_layers}, std::uint64_t{spec.outer_dim}, std::uint64_t{spec.page_size},
                          std::uint64_t{spec.inner_dim}, static_cast<std::uint64_t>(spec.dtype)}) {
    h = mix(h, v);
  }
  return h;
}

Result<const LocalPools::Entry*> LocalPools::add(transport::Context& context, transport::ActiveMessageManager& am,
                                                 LayoutPool& pool) {
  const std::uint64_t key = block_shape_key(pool.spec);
  if (auto it = entries_.find(key); it != entries_.end()) return &it->second;
  const Pool& g2 = pool.manager->pool(Tier::g2);
  const RegionSpan region = RegionSpan::of(g2.region());
  auto registration = transport::MemoryRegistration::create(context, region.base, region.size);
  if (!registration) return tl::unexpected(registration.error());
  Entry entry;
  entry.pool = &pool;
  entry.info.layout_key = key;
  entry.info.base = reinterpret_cast<std::uint64_t>(g2.block_data(BlockId{0}));
  entry.info.bytes = region.size - (entry.info.base - reinterpret_cast<std::uint64_t>(region.base));
  entry.info.block_bytes = g2.layout().block_bytes();
  entry.info.stride = g2.capacity() > 1 ? reinterpret_cast<std::uint64_t>(g2.block_data(BlockId{1})) - entry.info.base
                                        : entry.info.block_bytes;
  entry.info.rkey = (*registration)->packed_rkey();
  describe_for_mapping(entry.info, g2.region().shareable_fd(),
                       entry.info.base - reinterpret_cast<std::uint64_t>(region.base));
  entry.registration = std::move(*registration);
  am.expose(*entry.registration);
  return &entries_.emplace(key, std::move(entry)).first->second;
}

bool LocalPools::remove(std::uint64_t layout_key, transport::ActiveMessageManager& am) {
  auto it = entries_.find(layout_key);
  if (it == entries_.end()) return false;
  am.unexpose(*it->second.registration);
  entries_.erase(it);
  return true;
}

void LocalPools::remove_all(transport::ActiveMessageManager& am) {
  for (auto& [key, entry] : entries_) am.unexpose(*entry.registration);
  entries_.clear();
}

const LocalPools::Entry* LocalPools::find(std::uint64_t layout_key) const {
  auto it = entries_.find(layout_key);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<PoolInfo> LocalPools::infos() const {
  std::vector<PoolInfo> out;
  for (const auto& [key, entry] : entries_) out.push_back(entry.info);
  return out;
}

// One engine onboard's remote blocks: fresh G2 blocks, one request per holder.
struct FetchService::Request {
  LayoutPool* pool = nullptr;
  std::uint64_t layout_key = 0;
  std::vector<SequenceHash> keys;
  BlockLeases blocks;  // destinations, same order as keys
  Clock::time_point deadline;
  RemoteTier::FetchDone done;
  std::size_t outstanding = 0;
  std::optional<Error> error;
  bool unanswered = false;      // a holder may still be writing into `blocks`
  std::vector<bool> same_host;  // per key: its holder's pool is mapped here
};

FetchService::FetchService(asio::io_context& io, transport::ActiveMessageManager& am, Members& members,
                           const RemoteIndex& index, LocalPools& pools, transport::BulkProtocol protocol,
                           Caching caching, std::size_t serve_concurrency, bool map_same_host)
    : io_(io),
      am_(am),
      members_(members),
      index_(index),
      pools_(pools),
      protocol_(protocol),
      caching_(caching),
      serve_concurrency_(serve_concurrency),
      quarantine_timer_(io),
      map_same_host_(map_same_host),
      inject_copy_delay_(env_ms("KVB_INJECT_MAPPED_COPY_DELAY_MS")),
      inject_serve_delay_(env_ms("KVB_INJECT_SERVE_DELAY_MS")) {}

FetchService::~FetchService() {
  *alive_ = false;
  copy_threads_.join();  // copies in flight end; their completions find alive_ false
}

Status FetchService::register_handler() {
  if (auto st = am_.register_sync_handler(kPinType, [this](IncomingMessage& m) { return pin(m); }); !st) return st;
  if (auto st = am_.register_sync_handler(kUnpinType, [this](IncomingMessage& m) { return unpin(m); }); !st) {
    return st;
  }
  return am_.register_handler(
      kFetchType, [this](IncomingMessage m) { return serve(std::move(m)); },
      transport::AmTypeLimits{.max_concurrent = serve_concurrency_});
}

Status FetchService::check_sums(WorkerIndex holder, std::span<const SequenceHash> keys,
                                std::span<const std::size_t> items, std::span<const BlockSum> sums,
                                const BytesOf& bytes_of) {
  Member& member = members_[holder];
  if (sums.empty()) return kvb::ok();  // the holder keeps none
  if (sums.size() != items.size()) {
    ++member.metrics.fetch_errors;
    return fail(Errc::protocol_error, "worker {} sent {} checksums for {} blocks", member.worker, sums.size(),
                items.size());
  }
  for (std::size_t k = 0; k < items.size(); ++k) {
    auto checked = check_sum(holder, keys[items[k]], bytes_of(items[k]), sums[k]);
    if (!checked) return checked;
  }
  return kvb::ok();
}

Status FetchService::check_reply(WorkerIndex holder, const Result<Bytes>& reply, std::span<const SequenceHash> keys,
                                 std::span<const std::size_t> items, const BytesOf& bytes_of) {
  if (!reply || reply->empty()) return kvb::ok();
  auto answer = decode<FetchReply>(*reply);
  if (!answer) {
    ++members_[holder].metrics.fetch_errors;
    return tl::unexpected(answer.error());
  }
  return check_sums(holder, keys, items, answer->sums, bytes_of);
}

FetchService::BytesOf FetchService::g2_bytes(const Request& request) {
  return [&request](std::size_t j) -> std::span<const std::byte> {
    const Pool& g2 = request.pool->manager->pool(Tier::g2);
    return {g2.block_data(request.blocks[j].block()), g2.layout().block_bytes()};
  };
}

asio::awaitable<Result<Bytes>> FetchService::send_fetch(WorkerIndex holder, FetchRequest message,
                                                        Clock::time_point deadline, const char* how) {
  Member& member = members_[holder];
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  message.timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(1, left.count()));
  ++member.metrics.fetches_requested;
  auto payload = encode(message);
  if (!payload) co_return tl::unexpected(payload.error());
  spdlog::debug("cluster: fetch of {} blocks from {} sent{}", message.items.size(), member.worker, how);
  co_return co_await am_.send_request_receiving_writes(*member.send_peer, kFetchType, std::move(*payload),
                                                       std::chrono::milliseconds(message.timeout_ms));
}

Status FetchService::check_sum(WorkerIndex holder, SequenceHash key, std::span<const std::byte> bytes,
                               const BlockSum& sum) {
  if (!sum.known) return kvb::ok();
  Member& member = members_[holder];
  if (storage::payload_checksum(bytes) != sum.sum) {
    ++stats_.sum_mismatches;
    ++member.metrics.fetch_errors;
    spdlog::warn("cluster: block {:#018x} from {} does not match the checksum {} took when it stored it: not used",
                 key.value(), member.worker, member.worker);
    return fail(Errc::not_found, "not_found: {:#018x} (its bytes from {} do not match their checksum)", key.value(),
                member.worker);
  }
  ++stats_.sums_checked;
  return kvb::ok();
}

void FetchService::fetch(LayoutPool& pool, std::vector<SequenceHash> keys, Clock::time_point deadline,
                         RemoteTier::FetchDone done, bool by_transport) {
  auto finish_later = [this, &done](Error error) {
    ++stats_.failures;
    asio::post(io_, [done = std::move(done), error = std::move(error)] { done(tl::unexpected(error)); });
  };
  ++stats_.requests;
  const std::uint64_t layout_key = block_shape_key(pool.spec);
  auto groups = start_groups(layout_key, keys, deadline, /*mapped_only=*/false);
  if (!groups) return finish_later(groups.error());
  auto blocks = pool.manager->allocate(Tier::g2, static_cast<std::uint32_t>(keys.size()));
  if (!blocks) return finish_later(blocks.error());
  auto request = std::make_shared<Request>();
  request->pool = &pool;
  request->layout_key = layout_key;
  request->keys = std::move(keys);
  request->blocks = std::move(*blocks);
  request->deadline = deadline;
  request->done = std::move(done);
  request->outstanding = groups->size();
  request->same_host.assign(request->keys.size(), false);
  for (auto& [holder, items] : *groups) {
    const auto mapped = members_[holder].mapped.find(layout_key);
    if (mapped != members_[holder].mapped.end()) {
      for (std::size_t j : items) request->same_host[j] = true;
    }
    if (map_same_host_ && !by_transport && mapped != members_[holder].mapped.end()) {
      asio::co_spawn(io_, ask_mapped(request, holder, std::move(items), mapped->second), asio::detached);
    } else {
      asio::co_spawn(io_, ask(request, holder, std::move(items)), asio::detached);
    }
  }
}

Result<std::map<WorkerIndex, std::vector<std::size_t>>> FetchService::pick_holders(std::uint64_t layout_key,
                                                                                   std::span<const SequenceHash> keys,
                                                                                   bool mapped_only) const {
  std::map<WorkerIndex, std::vector<std::size_t>> groups;
  std::optional<WorkerIndex> previous;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    const auto holders = index_.holders(BlockKey{layout_key, keys[j].value()});
    std::optional<WorkerIndex> pick;
    for (WorkerIndex h : holders) {
      if (!members_[h].joined || !members_[h].send_peer) continue;
      if (mapped_only && !mappable(h, layout_key)) continue;
      if (!pick || h == previous) pick = h;
    }
    if (!pick) {
      return fail(Errc::not_found, "not_found: {:#018x} is held by no {}worker", keys[j].value(),
                  mapped_only ? "same-host " : "");
    }
    groups[*pick].push_back(j);
    previous = pick;
  }
  return groups;
}

Result<std::map<WorkerIndex, std::vector<std::size_t>>> FetchService::start_groups(std::uint64_t layout_key,
                                                                                   std::span<const SequenceHash> keys,
                                                                                   Clock::time_point deadline,
                                                                                   bool mapped_only) const {
  if (pools_.find(layout_key) == nullptr) {
    return fail(Errc::unavailable, "this worker's pool is not registered with the cluster");
  }
  auto groups = pick_holders(layout_key, keys, mapped_only);
  if (!groups) return groups;
  if (deadline <= Clock::now()) return fail(Errc::timeout, "timeout before the remote fetch started");
  return groups;
}

bool FetchService::mappable(WorkerIndex holder, std::uint64_t layout_key) const {
  const Member& m = members_[holder];
  const LocalPools::Entry* local = pools_.find(layout_key);
  const auto info = m.pools.find(layout_key);
  return local != nullptr && m.mapped.contains(layout_key) && info != m.pools.end() &&
         info->second.stride == local->info.stride && info->second.block_bytes == local->info.block_bytes;
}

asio::awaitable<Result<FetchService::Pinned>> FetchService::pin_at(WorkerIndex holder, std::uint64_t layout_key,
                                                                   std::vector<std::uint64_t> keys,
                                                                   Clock::time_point deadline,
                                                                   const PeerPoolMapping& mapping,
                                                                   std::uint64_t block_bytes) {
  auto alive = alive_;
  PinRequest message;
  message.layout_key = layout_key;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  message.timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(1, left.count()));
  const std::size_t n = keys.size();
  message.keys = std::move(keys);
  if (!members_[holder].send_peer) co_return fail(Errc::peer_lost, "peer lost: {}", members_[holder].worker);
  auto payload = encode(message);
  if (!payload) co_return tl::unexpected(payload.error());
  const PeerId peer = *members_[holder].send_peer;
  ++members_[holder].metrics.fetches_requested;
  spdlog::debug("cluster: fetch of {} blocks from {} sent (mapped)", n, members_[holder].worker);
  const auto sent = Clock::now();
  auto reply =
      co_await am_.send_request(peer, kPinType, std::move(*payload), std::chrono::milliseconds(message.timeout_ms));
  if (!*alive) co_return fail(Errc::cancelled, "fetch cancelled: the cluster is stopping");
  Member& member = members_[holder];
  if (!reply && reply.error().code == Errc::busy) {
    --member.metrics.fetches_requested;  // not asked after all: it goes by UCX
    co_return tl::unexpected(reply.error());
  }
  if (!reply) {
    ++member.metrics.fetch_errors;
    if (reply.error().code == Errc::peer_lost) co_return fail(Errc::peer_lost, "peer lost: {}", member.worker);
    co_return tl::unexpected(reply.error());
  }
  auto pinned = decode<PinReply>(*reply);
  if (!pinned) {
    ++member.metrics.fetch_errors;
    co_return tl::unexpected(pinned.error());
  }
  Status valid = kvb::ok();
  if (pinned->offsets.size() != n || pinned->map_ino != mapping.ino()) {
    valid = fail(Errc::protocol_error, "worker {} pinned {} blocks of file {}, asked {} of file {}", member.worker,
                 pinned->offsets.size(), pinned->map_ino, n, mapping.ino());
  }
  for (std::size_t k = 0; valid && k < pinned->offsets.size(); ++k) {
    const std::uint64_t offset = pinned->offsets[k];
    if (offset > mapping.bytes() || mapping.bytes() - offset < block_bytes) {
      valid = fail(Errc::protocol_error, "worker {} pinned a block at {:#x}, outside its {}-byte pool file",
                   member.worker, offset, mapping.bytes());
    }
  }
  if (!valid) {
    unpin_at(peer, pinned->pin_id);
    ++member.metrics.fetch_errors;
    co_return tl::unexpected(valid.error());
  }
  co_return Pinned{peer, pinned->pin_id, std::move(pinned->offsets), sent + std::chrono::milliseconds(pinned->ttl_ms),
                   std::move(pinned->sums)};
}

void FetchService::unpin_at(PeerId peer, std::uint64_t pin_id) {
  if (!*alive_) return;
  auto bytes = encode(PinRelease{pin_id});
  if (!bytes) return;
  asio::co_spawn(
      io_,
      [am = &am_, peer, bytes = std::move(*bytes)]() mutable -> asio::awaitable<void> {
        (void)co_await am->send(peer, kUnpinType, std::move(bytes));
      },
      asio::detached);
}

asio::awaitable<void> FetchService::ask_mapped(std::shared_ptr<Request> request, WorkerIndex holder,
                                               std::vector<std::size_t> items,
                                               std::shared_ptr<const PeerPoolMapping> mapping) {
  auto alive = alive_;
  const Pool& g2 = request->pool->manager->pool(Tier::g2);
  const std::uint64_t block_bytes = g2.layout().block_bytes();
  std::vector<std::uint64_t> keys;
  keys.reserve(items.size());
  for (std::size_t j : items) keys.push_back(request->keys[j].value());
  const auto asked = Clock::now();
  auto pinned = co_await pin_at(holder, request->layout_key, std::move(keys), request->deadline, *mapping, block_bytes);
  if (!*alive) co_return;
  if (!pinned && pinned.error().code == Errc::busy) {
    // The holder's pin table for us is full: this part goes by UCX.
    co_await ask(std::move(request), holder, std::move(items));
    co_return;
  }
  if (!pinned) {
    // As ask(): no answer, or a holder dropped alive, holds the blocks back
    // (nothing writes into them here, but the rule stays one rule).
    const Errc code = pinned.error().code;
    if (code == Errc::timeout || code == Errc::cancelled || members_[holder].dropped_alive) request->unanswered = true;
    co_return holder_done(*request, tl::unexpected(pinned.error()));
  }
  auto batch = std::make_shared<CopyBatch>();
  batch->left = items.size();
  batch->io = &io_;
  batch->mapping = mapping;
  batch->done = [this, alive, request, holder, items, sums = std::move(pinned->sums), n = items.size(), block_bytes,
                 valid_until = pinned->valid_until, peer = pinned->peer, id = pinned->pin_id, asked]() {
    if (!*alive) return;
    // The leases were held until at least valid_until: every byte copied
    // before it is the block as it was pinned.
    const bool in_time = Clock::now() < valid_until;
    unpin_at(peer, id);
    Member& m = members_[holder];
    if (!in_time) {
      ++m.metrics.fetch_errors;
      return holder_done(*request, fail(Errc::timeout,
                                        "timeout: the pin of {} blocks on {} expired before the copy "
                                        "ended",
                                        n, m.worker));
    }
    if (auto checked = check_sums(holder, request->keys, items, sums, g2_bytes(*request)); !checked) {
      return holder_done(*request, tl::unexpected(checked.error()));
    }
    m.metrics.bytes_in += n * block_bytes;
    m.metrics.fetch_us +=
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - asked).count());
    ++stats_.mapped_requests;
    stats_.mapped_blocks += n;
    holder_done(*request, Bytes{});
  };
  for (std::size_t k = 0; k < items.size(); ++k) {
    std::byte* dst = g2.block_data(request->blocks[items[k]].block());
    const std::byte* src = mapping->base() + pinned->offsets[k];
    asio::post(copy_threads_, [batch, dst, src, block_bytes, delay = inject_copy_delay_] {
      if (delay.count() > 0) std::this_thread::sleep_for(delay);  // fault injection (tests)
      std::memcpy(dst, src, block_bytes);
      if (batch->left.fetch_sub(1) == 1) asio::post(*batch->io, std::move(batch->done));
    });
  }
}

// One engine onboard's remote blocks read in place: a pin per holder.
struct FetchService::Borrow {
  std::uint64_t layout_key = 0;
  Layout layout;  // of this worker's G2 pool (the holders' have the same shape and stride)
  std::vector<SequenceHash> keys;
  Clock::time_point deadline;
  RemoteTier::BorrowDone done;
  std::size_t outstanding = 0;
  std::optional<Error> error;
  std::unique_ptr<BorrowedBlocks> out = std::make_unique<BorrowedBlocks>();
  std::vector<std::pair<PeerId, std::uint64_t>> pins;
  std::vector<std::shared_ptr<const PeerPoolMapping>> mappings;
  std::uint64_t bytes_in = 0;
  std::size_t holders = 0;
};

bool FetchService::can_borrow(const LayoutPool& pool, std::span<const SequenceHash> keys) const {
  if (!map_same_host_ || (caching_.fetched && caching_.same_host) || keys.empty()) return false;
  return pick_holders(block_shape_key(pool.spec), keys, /*mapped_only=*/true).has_value();
}

void FetchService::borrow(LayoutPool& pool, std::vector<SequenceHash> keys, Clock::time_point deadline,
                          RemoteTier::BorrowDone done) {
  auto finish_later = [this, &done](Error error) {
    ++stats_.failures;
    asio::post(io_, [done = std::move(done), error = std::move(error)] { done(tl::unexpected(error)); });
  };
  ++stats_.requests;
  const std::uint64_t layout_key = block_shape_key(pool.spec);
  auto groups = start_groups(layout_key, keys, deadline, /*mapped_only=*/true);
  if (!groups) return finish_later(groups.error());
  auto borrow = std::make_shared<Borrow>(Borrow{.layout_key = layout_key,
                                                .layout = pool.manager->pool(Tier::g2).layout(),
                                                .keys = std::move(keys),
                                                .deadline = deadline,
                                                .done = std::move(done)});
  borrow->outstanding = groups->size();
  borrow->out->valid_until = Clock::time_point::max();
  for (auto& [holder, items] : *groups) {
    asio::co_spawn(io_, borrow_from(borrow, holder, std::move(items)), asio::detached);
  }
}

asio::awaitable<void> FetchService::borrow_from(std::shared_ptr<Borrow> borrow, WorkerIndex holder,
                                                std::vector<std::size_t> items) {
  auto alive = alive_;
  const std::uint64_t block_bytes = borrow->layout.block_bytes();
  auto mapping = members_[holder].mapped.at(borrow->layout_key);
  const PoolInfo info = members_[holder].pools.at(borrow->layout_key);
  std::vector<std::uint64_t> keys;
  keys.reserve(items.size());
  for (std::size_t j : items) keys.push_back(borrow->keys[j].value());
  auto pinned = co_await pin_at(holder, borrow->layout_key, std::move(keys), borrow->deadline, *mapping, block_bytes);
  if (!*alive) co_return;
  if (pinned) {
    borrow->pins.emplace_back(pinned->peer, pinned->pin_id);
    borrow->out->valid_until = std::min(borrow->out->valid_until, pinned->valid_until);
    // The holder's pool over the mapping: our layout (same shape and
    // stride, checked by mappable()) over its blocks.
    const auto blocks = static_cast<std::uint32_t>(std::min<std::uint64_t>(info.bytes / info.stride, UINT32_MAX));
    auto layout = Layout::make(borrow->layout.spec(), LayoutKind::fully_contiguous, blocks);
    const std::uint64_t first = layout ? layout->chunk(BlockId{0}, 0, 0).offset : 0;
    if (!layout || info.map_offset < first || info.map_offset - first > mapping->bytes() ||
        mapping->bytes() - (info.map_offset - first) < layout->region_bytes()) {
      borrow->error = Error{Errc::protocol_error, fmt::format("worker {}'s pool does not fit its file ({} bytes)",
                                                              members_[holder].worker, mapping->bytes())};
    } else {
      // Read only: the plan's source region is never written.
      BorrowedBlocks::Source source{
          BlockSpace{*layout,
                     {RegionSpan{const_cast<std::byte*>(mapping->base() + info.map_offset - first),
                                 layout->region_bytes(), MemoryKind::host}}},
          {},
          {}};
      if (!pinned->sums.empty() && pinned->sums.size() != items.size()) {
        borrow->error =
            Error{Errc::protocol_error, fmt::format("worker {} sent {} checksums for {} blocks",
                                                    members_[holder].worker, pinned->sums.size(), items.size())};
      }
      for (std::size_t k = 0; k < items.size() && !borrow->error; ++k) {
        const std::uint64_t at = pinned->offsets[k] - info.map_offset;
        if (pinned->offsets[k] < info.map_offset || at % info.stride != 0 || at / info.stride >= blocks) {
          borrow->error = Error{Errc::protocol_error, fmt::format("worker {} pinned a block at {:#x}, not a block of "
                                                                  "its pool",
                                                                  members_[holder].worker, pinned->offsets[k])};
          break;
        }
        // The holder keeps sums: the pinned bytes (leased: they stay as
        // they are until the copy into the engine ends) must match them.
        if (!pinned->sums.empty()) {
          auto checked =
              check_sum(holder, borrow->keys[items[k]],
                        {mapping->base() + pinned->offsets[k], static_cast<std::size_t>(block_bytes)}, pinned->sums[k]);
          if (!checked) {
            borrow->error = checked.error();
            break;
          }
        }
        source.items.push_back(items[k]);
        source.blocks.push_back(BlockId{static_cast<std::uint32_t>(at / info.stride)});
      }
      borrow->out->sources.push_back(std::move(source));
      borrow->mappings.push_back(std::move(mapping));
      borrow->bytes_in += items.size() * block_bytes;
      ++borrow->holders;
      members_[holder].metrics.bytes_in += items.size() * block_bytes;
    }
  } else if (!borrow->error) {
    borrow->error = pinned.error();
  }
  if (--borrow->outstanding == 0) borrow_done(*borrow);
}

void FetchService::borrow_done(Borrow& borrow) {
  auto pins = std::move(borrow.pins);
  auto release = [this, alive = alive_, pins, mappings = std::move(borrow.mappings)]() {
    if (!*alive) return;
    for (const auto& [peer, id] : pins) unpin_at(peer, id);
  };
  if (borrow.error) {
    release();
    if (borrow.error->code == Errc::busy) {
      --stats_.requests;  // not this way after all: the onboard fetches them, counted there
    } else {
      ++stats_.failures;
    }
    return borrow.done(tl::unexpected(std::move(*borrow.error)));
  }
  borrow.out->release = std::move(release);
  stats_.direct_requests += borrow.holders;
  stats_.direct_blocks += borrow.keys.size();
  if (inject_copy_delay_.count() > 0) {
    // Fault injection (tests): the copy starts as late as the two copy
    // threads' per-block hold-back would end it, the pins held meanwhile.
    auto timer = std::make_shared<asio::steady_timer>(io_, inject_copy_delay_ * ((borrow.keys.size() + 1) / 2));
    timer->async_wait([timer, done = std::move(borrow.done), out = std::move(borrow.out)](
                          const boost::system::error_code&) mutable { done(std::move(out)); });
    return;
  }
  borrow.done(std::move(borrow.out));
}

void FetchService::holder_done(Request& request, Result<Bytes> reply) {
  if (!reply && !request.error) request.error = reply.error();
  if (--request.outstanding == 0) finish(request);
}

asio::awaitable<void> FetchService::ask(std::shared_ptr<Request> request, WorkerIndex holder,
                                        std::vector<std::size_t> items) {
  auto alive = alive_;
  if (!members_[holder].send_peer) {
    holder_done(*request, fail(Errc::peer_lost, "peer lost: {}", members_[holder].worker));
    co_return;
  }
  const Pool& g2 = request->pool->manager->pool(Tier::g2);
  FetchRequest message;
  message.layout_key = request->layout_key;
  for (std::size_t j : items) {
    message.items.push_back(
        {request->keys[j].value(), reinterpret_cast<std::uint64_t>(g2.block_data(request->blocks[j].block()))});
  }
  const auto sent = Clock::now();
  Result<Bytes> reply = co_await send_fetch(holder, std::move(message), request->deadline, "");
  if (!*alive) co_return;
  Member& member = members_[holder];
  // A failed check is the holder's answer: nothing writes into them now.
  if (auto checked = check_reply(holder, reply, request->keys, items, g2_bytes(*request)); !checked) {
    reply = tl::unexpected(checked.error());
  } else if (reply) {
    member.metrics.bytes_in += items.size() * g2.layout().block_bytes();
    member.metrics.fetch_us +=
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent).count());
  } else {
    const Errc code = reply.error().code;
    // No answer: the holder may still write into the blocks. A peer
    // that died can no longer write; one the membership dropped while
    // its process may run (a lapsed etcd lease) still could.
    if (code == Errc::timeout || code == Errc::cancelled || member.dropped_alive) request->unanswered = true;
    if (code == Errc::peer_lost) reply = fail(Errc::peer_lost, "peer lost: {}", member.worker);
    ++member.metrics.fetch_errors;
  }
  holder_done(*request, std::move(reply));
}

void FetchService::finish(Request& request) {
  if (request.error) {
    ++stats_.failures;
    if (request.unanswered) {
      stats_.quarantined += request.blocks.size();
      quarantine(std::move(request.blocks), request.deadline + (request.deadline - Clock::now()) + kQuarantineGrace);
    }
    request.blocks.release();  // free: nothing was written, or the holder said it is done
    return request.done(tl::unexpected(std::move(*request.error)));
  }
  BlockManager& manager = *request.pool->manager;
  for (std::size_t j = 0; j < request.keys.size(); ++j) {
    if (auto st = manager.mark_complete(request.blocks[j]); !st) {
      spdlog::error("cluster: fetched block: {}", st.error().to_string());
      return request.done(tl::unexpected(st.error()));
    }
    if (caching_.fetched && (caching_.same_host || !request.same_host[j])) {
      auto registered = manager.register_block(request.blocks[j], request.keys[j]);
      if (!registered && registered.error().code != Errc::already_exists) {
        return request.done(tl::unexpected(registered.error()));
      }
    }
  }
  stats_.blocks_in += request.keys.size();
  request.done(std::move(request.blocks));
}

void FetchService::quarantine(BlockLeases leases, Clock::time_point until) {
  quarantine_.emplace_back(until, std::move(leases));
  if (quarantine_.size() > 1) return;  // the timer runs for the oldest
  auto next = [this, alive = alive_](auto& self) -> void {
    quarantine_timer_.expires_at(quarantine_.front().first);
    quarantine_timer_.async_wait([this, alive, self](const boost::system::error_code& ec) mutable {
      if (ec || !*alive) return;
      while (!quarantine_.empty() && quarantine_.front().first <= Clock::now()) quarantine_.pop_front();
      if (!quarantine_.empty()) self(self);
    });
  };
  next(next);
}

}  // namespace kvb::daemon::cluster
