// The BlockService's remote onboards (docs/cluster.md, "The states of a
// fetch"): blocks other workers hold are fetched in parts, each part copied
// into the engine while the next travels, or borrowed in place from a
// same-host holder; then the local and disk items are copied as usual.
#include <algorithm>
#include <utility>

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "block_service.h"
#include "block_service_remote.h"
#include "remote_tier.h"

namespace kvb::daemon {

void BlockService::fetch_then_copy(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op, bool by_transport) {
  const std::uint64_t block_bytes = pool.manager->pool(Tier::g2).layout().block_bytes();
  const std::size_t n = op->missing.size();
  op->part_blocks = fetch_part_bytes_ == 0
                        ? n
                        : std::clamp<std::size_t>(fetch_part_bytes_ / std::max<std::uint64_t>(block_bytes, 1), 1,
                                                  std::max<std::size_t>(n, 1));
  op->deadline = std::chrono::steady_clock::now() + fetch_timeout_;
  op->by_transport = by_transport;
  fetch_part(pool, std::move(op), 0);
}

void BlockService::fetch_part(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op, std::size_t first) {
  const std::size_t last = std::min(first + op->part_blocks, op->missing.size());
  std::vector<SequenceHash> keys(op->missing_keys.begin() + static_cast<std::ptrdiff_t>(first),
                                 op->missing_keys.begin() + static_cast<std::ptrdiff_t>(last));
  const bool by_transport = op->by_transport;
  const auto deadline = op->deadline;
  remote_->fetch(
      pool, std::move(keys), deadline,
      [this, &pool, op = std::move(op), first, last](Result<BlockLeases> fetched) {
        if (!fetched || op->control->cancelled || op->error) {  // op->error: an earlier part's copy failed
          if (!fetched && !op->error) op->error = fetched.error();
          if (!op->error) op->error = Error{Errc::cancelled, "onboard cancelled"};
          if (fetched) fetched->release();
          op->fetches_ended = true;
          return parts_settled(pool, op);
        }
        for (std::size_t k = first; k < last; ++k) {
          BlockLease& lease = (*fetched)[k - first];
          op->pairs[op->missing[k]].src = lease.block();
          if (integrity_.enabled) sum_host_block(pool, lease);  // summed as it enters G2
          (*op->held)[op->missing[k]] = std::move(lease);
        }
        if (last == op->missing.size()) {
          op->fetches_ended = true;
          return parts_settled(pool, op);
        }
        // The next part travels while this one is copied into the engine.
        fetch_part(pool, op, last);
        copy_part(pool, op, first, last);
      },
      by_transport);
}

void BlockService::copy_part(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op, std::size_t first,
                             std::size_t last) {
  std::vector<BlockPair> pairs;
  pairs.reserve(last - first);
  for (std::size_t k = first; k < last; ++k) pairs.push_back(op->pairs[op->missing[k]]);
  auto plan = TransferPlan::build(pool.manager->pool(Tier::g2).space(), op->kv->space(), pairs);
  if (!plan) {
    if (!op->error) op->error = plan.error();
    return;  // its leases stay held: the end releases them
  }
  const std::uint64_t bytes = plan->total_bytes();
  ++op->copies_running;
  submit(std::move(*plan), op->kv->device, [this, &pool, op, first, last, bytes](const Status& status) {
    --op->copies_running;
    if (!status) {
      if (!op->error)
        op->error = Error{status.error().code, fmt::format("onboard copy failed: {}", status.error().message)};
    } else {
      moved_.onboard += bytes;
      // In the engine now: copy_to_engine skips items without a lease.
      for (std::size_t k = first; k < last; ++k) (*op->held)[op->missing[k]] = BlockLease{};
    }
    parts_settled(pool, op);
  });
}

void BlockService::parts_settled(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op) {
  if (!op->fetches_ended || op->copies_running > 0) return;
  if (!op->error && op->control->cancelled) op->error = Error{Errc::cancelled, "onboard cancelled"};
  if (op->error) {
    op->held->release();
    return op->done(tl::unexpected(std::move(*op->error)));
  }
  read_disk_then_copy(pool, std::move(op->kv), std::move(op->held), std::move(op->pairs), std::move(op->items),
                      std::move(op->on_disk), std::move(op->progress), std::move(op->control), std::move(op->done));
}

bool BlockService::fetch_into_engine(LayoutPool& pool, const std::shared_ptr<RemoteOnboard>& op) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  EngineKv& kv = *op->kv;
  const Layout& g2 = pool.manager->pool(Tier::g2).layout();
  const std::uint64_t block_bytes = g2.block_bytes();
  // A block of the engine is then the pool's block byte for byte, in whole
  // pages (a late write is detached by the page).
  if (op->control->cancelled || kv.device >= 0 || kv.regions.size() != 1 ||
      kv.layout.kind() != LayoutKind::fully_contiguous || !kv.layout.spec().same_block_shape(g2.spec()) ||
      block_bytes % page != 0 || kv.layout.geometry().block_stride % page != 0 || !remote_->can_fetch_into(pool)) {
    return false;
  }
  if (!kv.window) {
    auto window = LandingWindow::create(kv.regions[0]->data(), kv.regions[0]->size());
    if (!window) {
      spdlog::debug("onboard: no landing window ({}): fetched through the pool", window.error().message);
      return false;
    }
    kv.window = std::move(*window);
  }
  std::vector<std::byte*> destinations;
  destinations.reserve(op->missing.size());
  // Each destination written by this fetch alone while it waits (not by
  // another fetch in flight, nor twice by this one).
  auto release = [kv = op->kv, block_bytes](std::span<std::byte* const> claimed) {
    for (std::byte* at : claimed) kv->window->release(kv->window->offset_of(at), block_bytes);
  };
  for (std::size_t i : op->missing) {
    // (An engine block out of range is not usable: the copy path says why.)
    const std::uint64_t offset = kv.layout.chunk(op->pairs[i].dst, 0, 0).offset;
    if (op->pairs[i].dst.value() >= kv.layout.num_blocks() || !kv.window->usable(offset, block_bytes) ||
        !kv.window->claim(offset, block_bytes)) {
      release(destinations);
      return false;
    }
    destinations.push_back(kv.window->at(offset));
  }
  auto detach = [kv = op->kv](std::byte* at, std::uint64_t bytes, std::function<bool()> landing) {
    if (auto st = kv->window->detach(kv->window->offset_of(at), bytes, std::move(landing)); !st) {
      spdlog::error("onboard: a late write may reach the engine's memory: {}", st.error().to_string());
    }
  };
  auto claimed = destinations;
  const std::uint64_t bytes = block_bytes * op->missing.size();
  op->control->on_cancel = remote_->fetch_into(
      pool, op->missing_keys, std::move(destinations), std::chrono::steady_clock::now() + fetch_timeout_,
      std::move(detach), [this, &pool, op, bytes, release, claimed = std::move(claimed)](const Status& fetched) {
        op->control->on_cancel = nullptr;  // every write into the engine stopped
        release(claimed);
        if (!fetched && fetched.error().code == Errc::unsupported && !op->control->cancelled) {
          spdlog::debug("onboard: {}; fetched through the pool", fetched.error().message);
          return fetch_then_copy(pool, op);
        }
        if (!fetched || op->control->cancelled) {
          op->held->release();
          if (!fetched) return op->done(fetched);
          return op->done(fail(Errc::cancelled, "onboard cancelled"));
        }
        moved_.onboard += bytes;
        // In the engine now: copy_to_engine skips the missing items (no lease).
        read_disk_then_copy(pool, std::move(op->kv), std::move(op->held), std::move(op->pairs), std::move(op->items),
                            std::move(op->on_disk), std::move(op->progress), std::move(op->control),
                            std::move(op->done));
      });
  return true;
}

void BlockService::borrow_then_copy(LayoutPool& pool, std::shared_ptr<RemoteOnboard> op) {
  auto keys = op->missing_keys;
  remote_->borrow(pool, std::move(keys), std::chrono::steady_clock::now() + fetch_timeout_,
                  [this, &pool, op = std::move(op)](Result<std::unique_ptr<BorrowedBlocks>> borrowed) mutable {
                    // A holder with no pin left for us: fetched by UCX instead.
                    if (!borrowed && borrowed.error().code == Errc::busy)
                      return fetch_then_copy(pool, std::move(op), true);
                    if (!borrowed) {
                      op->held->release();
                      return op->done(tl::unexpected(borrowed.error()));
                    }
                    if (op->control->cancelled) {
                      op->held->release();
                      return op->done(fail(Errc::cancelled, "onboard cancelled"));  // the pins end with *borrowed
                    }
                    auto sources = std::make_shared<Borrowed>();
                    for (const auto& source : (*borrowed)->sources) {
                      auto& pairs = sources->pairs.emplace_back();
                      for (std::size_t k = 0; k < source.items.size(); ++k)
                        pairs.push_back(BlockPair{source.blocks[k], op->pairs[op->missing[source.items[k]]].dst});
                    }
                    sources->blocks = std::move(*borrowed);
                    read_disk_then_copy(pool, std::move(op->kv), std::move(op->held), std::move(op->pairs),
                                        std::move(op->items), std::move(op->on_disk), std::move(op->progress),
                                        std::move(op->control), std::move(op->done), std::move(sources));
                  });
}

}  // namespace kvb::daemon
