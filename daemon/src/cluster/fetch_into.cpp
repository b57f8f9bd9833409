// FetchService, straight into the engine (docs/cluster.md, "Fetched
// straight into the engine"): blocks not kept here are written by their
// holders into the engine's host memory (seen through its landing window)
// instead of fresh G2 blocks and a copy. The destinations take bulk writes
// only while the fetch waits for their holder: exposed (ExposedRanges) when
// the request goes out, withdrawn when its answer comes (or the request
// ends first: abort). A write UCX already started when they are withdrawn
// may go on landing; those destinations are detached (the caller maps
// anonymous memory over them in the window) before anyone is told the
// fetch ended, so no late byte reaches the engine. Event-loop thread only.
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "cluster/fetch_service.h"

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using transport::Bytes;
using Clock = std::chrono::steady_clock;

struct FetchService::Into {
  std::uint64_t layout_key = 0;
  std::uint64_t block_bytes = 0;
  std::vector<SequenceHash> keys;
  std::vector<std::byte*> destinations;  // same order as keys
  Clock::time_point deadline;
  RemoteTier::Detach detach;
  RemoteTier::IntoDone done;
  std::size_t outstanding = 0;
  std::optional<Error> error;
  // Exposed for a holder still writing (removed once settled).
  std::vector<std::shared_ptr<transport::ExposedRanges>> exposed;
};

bool FetchService::can_fetch_into(const LayoutPool& pool) const {
  return caching_.into_engine && !caching_.fetched && protocol_ == transport::BulkProtocol::am_rendezvous &&
         pools_.find(block_shape_key(pool.spec)) != nullptr;
}

std::function<void()> FetchService::fetch_into(LayoutPool& pool, std::vector<SequenceHash> keys,
                                               std::vector<std::byte*> destinations, Clock::time_point deadline,
                                               RemoteTier::Detach detach, RemoteTier::IntoDone done) {
  auto finish_later = [this, &done](Error error) {
    ++stats_.failures;
    asio::post(io_, [done = std::move(done), error = std::move(error)] { done(tl::unexpected(error)); });
    return [] {};
  };
  ++stats_.requests;
  if (!can_fetch_into(pool)) return finish_later(Error{Errc::unsupported, "fetch into the engine: not here"});
  if (destinations.size() != keys.size()) {
    return finish_later(Error{Errc::invalid_argument, "fetch into the engine: a destination per key"});
  }
  const std::uint64_t layout_key = block_shape_key(pool.spec);
  auto groups = start_groups(layout_key, keys, deadline, /*mapped_only=*/false);
  if (!groups) return finish_later(groups.error());
  auto into = std::make_shared<Into>();
  into->layout_key = layout_key;
  into->block_bytes = pool.manager->pool(Tier::g2).layout().block_bytes();
  into->keys = std::move(keys);
  into->destinations = std::move(destinations);
  into->deadline = deadline;
  into->detach = std::move(detach);
  into->done = std::move(done);
  into->outstanding = groups->size();
  for (auto& [holder, items] : *groups) {
    std::vector<transport::ExposedRanges::Range> ranges;
    ranges.reserve(items.size());
    for (std::size_t j : items)
      ranges.push_back({reinterpret_cast<std::uint64_t>(into->destinations[j]), into->block_bytes});
    auto exposure = am_.expose_ranges(std::move(ranges));
    into->exposed.push_back(exposure);
    asio::co_spawn(io_, ask_into(into, holder, std::move(items), std::move(exposure)), asio::detached);
  }
  return [this, alive = alive_, weak = std::weak_ptr<Into>(into)] {
    if (!*alive) return;
    if (auto p = weak.lock()) settle(*p, nullptr);
  };
}

bool FetchService::settle(Into& into, const transport::ExposedRanges* exposure) {
  bool late = false;
  std::erase_if(into.exposed, [&](const std::shared_ptr<transport::ExposedRanges>& e) {
    if (exposure != nullptr && e.get() != exposure) return false;
    am_.withdraw(*e);  // nothing new lands from now on
    if (e->landing() == 0) return true;
    // A write UCX started goes on: its destinations leave the engine first.
    late = true;
    for (const auto& range : e->ranges()) {
      ++stats_.late_writes_detached;
      into.detach(reinterpret_cast<std::byte*>(range.address), range.bytes, [e] { return e->landing() > 0; });
    }
    spdlog::warn("cluster: {} engine block(s) detached from the fetch's landing window: a write may still land",
                 e->ranges().size());
    return true;
  });
  return late;
}

asio::awaitable<void> FetchService::ask_into(std::shared_ptr<Into> into, WorkerIndex holder,
                                             std::vector<std::size_t> items,
                                             std::shared_ptr<transport::ExposedRanges> exposure) {
  auto alive = alive_;
  FetchRequest message;
  message.layout_key = into->layout_key;
  message.into_exposed = true;
  for (std::size_t j : items)
    message.items.push_back({into->keys[j].value(), reinterpret_cast<std::uint64_t>(into->destinations[j])});
  Result<Bytes> reply = fail(Errc::peer_lost, "peer lost: {}", members_[holder].worker);
  const auto sent = Clock::now();
  if (members_[holder].send_peer) {
    reply = co_await send_fetch(holder, std::move(message), into->deadline, " (into the engine)");
    if (!*alive) co_return;
  }
  Member& member = members_[holder];
  // This holder's part ended: nothing lands from now on (already so when
  // the request was aborted).
  if (settle(*into, exposure.get()) && reply) {
    reply = fail(Errc::internal, "worker {} answered ok while its writes were still landing", member.worker);
  }
  const BytesOf in_engine = [&into](std::size_t j) -> std::span<const std::byte> {
    return {into->destinations[j], into->block_bytes};
  };
  if (auto checked = check_reply(holder, reply, into->keys, items, in_engine); !checked) {
    reply = tl::unexpected(checked.error());
  } else if (reply) {
    member.metrics.bytes_in += items.size() * into->block_bytes;
    member.metrics.fetch_us +=
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent).count());
    ++stats_.into_engine_requests;
    stats_.into_engine_blocks += items.size();
  } else {
    ++member.metrics.fetch_errors;
    if (reply.error().code == Errc::peer_lost) reply = fail(Errc::peer_lost, "peer lost: {}", member.worker);
  }
  if (!reply && !into->error) into->error = reply.error();
  if (--into->outstanding > 0) co_return;
  if (into->error) {
    ++stats_.failures;
    into->done(tl::unexpected(std::move(*into->error)));
  } else {
    into->done(kvb::ok());
  }
}

}  // namespace kvb::daemon::cluster
