#include "cluster/index_sync.h"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
using transport::Bytes;
using transport::IncomingMessage;

IndexSync::IndexSync(asio::io_context& io, transport::ActiveMessageManager& am, Members& members, RemoteIndex& index,
                     Collect collect, std::chrono::milliseconds flush_every)
    : io_(io),
      am_(am),
      members_(members),
      index_(index),
      collect_(std::move(collect)),
      flush_every_(flush_every),
      flush_timer_(io) {}

IndexSync::~IndexSync() { *alive_ = false; }

Status IndexSync::register_handlers() {
  if (auto st = am_.register_sync_handler(kIndexType, [this](IncomingMessage& m) { return on_index(m); }); !st) {
    return st;
  }
  return am_.register_sync_handler(kResyncType, [this](IncomingMessage& m) { return on_resync(m); });
}

void IndexSync::local_change(const IndexEntry& entry) {
  ++stats_.events_out;
  pending_.push_back(entry);
  if (flush_armed_) return;
  flush_armed_ = true;
  flush_timer_.expires_after(flush_every_);
  flush_timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    flush_armed_ = false;
    flush();
  });
}

void IndexSync::flush() {
  if (pending_.empty()) return;
  std::vector<IndexEntry> events;
  events.swap(pending_);
  for (WorkerIndex i = 0; i < members_.size(); ++i) {
    if (!members_[i].joined || !members_[i].send_peer) continue;
    for (std::size_t at = 0; at < events.size(); at += kMaxBatchEntries) {
      IndexBatch batch;
      const auto end = std::min(events.size(), at + kMaxBatchEntries);
      batch.entries.assign(events.begin() + static_cast<std::ptrdiff_t>(at),
                           events.begin() + static_cast<std::ptrdiff_t>(end));
      send(i, std::move(batch));
    }
  }
}

void IndexSync::send_snapshot(WorkerIndex i) {
  // What is pending went into the state we collect now; sending it again
  // after the snapshot is harmless (each key ends in its current state).
  std::vector<IndexEntry> all = collect_();
  ++stats_.snapshots_out;
  std::size_t at = 0;
  do {
    IndexBatch batch;
    const auto end = std::min(all.size(), at + kMaxBatchEntries);
    batch.flags = at == 0 ? IndexBatch::kSnapshotStart : 0;
    if (end == all.size()) batch.flags |= IndexBatch::kSnapshotEnd;
    batch.entries.assign(all.begin() + static_cast<std::ptrdiff_t>(at), all.begin() + static_cast<std::ptrdiff_t>(end));
    send(i, std::move(batch));
    at = end;
  } while (at < all.size());
}

void IndexSync::send(WorkerIndex i, IndexBatch batch) {
  Member& m = members_[i];
  if (!m.send_peer) return;
  batch.seq = m.next_seq_out++;
  m.metrics.index_events_out += batch.entries.size();
  ++stats_.batches_out;
  auto payload = encode(batch);
  if (!payload) {
    spdlog::error("cluster: index batch for {}: {}", m.worker, payload.error().to_string());
    return;
  }
  // Spawned coroutines start in order, and sends on one endpoint keep it.
  asio::co_spawn(
      io_,
      [this, alive = alive_, peer = *m.send_peer, worker = m.worker,
       payload = std::move(*payload)]() mutable -> asio::awaitable<void> {
        auto st = co_await am_.send(peer, kIndexType, std::move(payload));
        if (!*alive || st) co_return;
        ++stats_.send_failures;
        spdlog::warn("cluster: index batch to {} not sent: {}", worker, st.error().message);
      },
      asio::detached);
}

Result<Bytes> IndexSync::on_index(IncomingMessage& message) {
  auto i = members_.by_peer(message.peer);
  if (!i || !members_[*i].joined)
    return fail(Errc::wrong_state, "index batch from peer {}: not a joined member", message.peer);
  auto batch = decode<IndexBatch>(message.payload);
  if (!batch) return tl::unexpected(batch.error());
  Member& m = members_[*i];
  if (batch->flags & IndexBatch::kSnapshotStart) {
    index_.clear(*i);
    m.resync_requested = false;
  } else if (!m.expected_seq_in || batch->seq != *m.expected_seq_in) {
    // A batch was lost (or came out of order): apply nothing until a snapshot.
    ++stats_.gaps;
    if (!m.resync_requested && m.send_peer) {
      m.resync_requested = true;
      ++m.metrics.resyncs;
      spdlog::info("cluster: index batch {} from {} (expected {}): asking for a snapshot", batch->seq, m.worker,
                   m.expected_seq_in ? fmt::format("{}", *m.expected_seq_in) : std::string("a snapshot"));
      m.expected_seq_in.reset();
      asio::co_spawn(
          io_,
          [this, peer = *m.send_peer]() -> asio::awaitable<void> { (void)co_await am_.send(peer, kResyncType, {}); },
          asio::detached);
    }
    return Bytes{};
  }
  m.expected_seq_in = batch->seq + 1;
  ++stats_.batches_in;
  m.metrics.index_events_in += batch->entries.size();
  std::size_t stored = 0;
  for (const auto& e : batch->entries) {
    const BlockKey key{e.layout_key, e.key};
    if (e.op == IndexOp::stored) {
      index_.add(*i, key);
      ++stored;
    } else {
      index_.remove(*i, key);
    }
  }
  spdlog::debug("cluster: index batch {} from {}: {} stored, {} removed; {} holds {} blocks", batch->seq, m.worker,
                stored, batch->entries.size() - stored, m.worker, index_.size_of(*i));
  return Bytes{};
}

Result<Bytes> IndexSync::on_resync(IncomingMessage& message) {
  auto i = members_.by_peer(message.peer);
  if (!i || !members_[*i].joined)
    return fail(Errc::wrong_state, "resync from peer {}: not a joined member", message.peer);
  send_snapshot(*i);
  return Bytes{};
}

}  // namespace kvb::daemon::cluster
