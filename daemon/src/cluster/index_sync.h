// IndexSync: keeps every member's view of what this worker holds, and this
// worker's view of theirs (the RemoteIndex), over active messages.
// Outgoing: local registry changes are batched (at most index_flush_ms)
// and sent to every joined member as one IndexBatch, numbered per member;
// a member that joins gets a snapshot first. Incoming: a batch whose
// number is not the next one (a batch was dropped, e.g. the receiver's
// queue was full) is ignored and the sender is asked for a snapshot
// (kvb.resync); nothing is applied out of order. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cluster/cluster_wire.h"
#include "cluster/members.h"
#include "cluster/remote_index.h"
#include "kvb/transport/am_manager.h"

namespace kvb::daemon::cluster {

struct IndexSyncStats {
  std::uint64_t events_out = 0;     // local changes queued
  std::uint64_t batches_out = 0;    // batches sent (all members)
  std::uint64_t snapshots_out = 0;  // snapshots sent
  std::uint64_t batches_in = 0;     // batches applied
  std::uint64_t gaps = 0;           // batches out of sequence (a resync followed)
  std::uint64_t send_failures = 0;  // batches UCX did not send
};

class IndexSync {
 public:
  /// Every entry this worker holds now (the snapshot a joining member gets).
  using Collect = std::function<std::vector<IndexEntry>()>;
  /// Entries per batch (a snapshot spans several).
  static constexpr std::size_t kMaxBatchEntries = 65536;

  IndexSync(boost::asio::io_context& io, transport::ActiveMessageManager& am, Members& members, RemoteIndex& index,
            Collect collect, std::chrono::milliseconds flush_every);
  ~IndexSync();
  /// kvb.index and kvb.resync (synchronous handlers).
  [[nodiscard]] Status register_handlers();

  /// A local registry change, sent to every joined member within flush_every.
  void local_change(const IndexEntry& entry);
  /// Sends member `i` everything this worker holds (it replaces what the
  /// member knew of us).
  void send_snapshot(WorkerIndex i);
  [[nodiscard]] const IndexSyncStats& stats() const noexcept { return stats_; }

 private:
  void flush();
  void send(WorkerIndex i, IndexBatch batch);
  Result<transport::Bytes> on_index(transport::IncomingMessage& message);
  Result<transport::Bytes> on_resync(transport::IncomingMessage& message);

  boost::asio::io_context& io_;
  transport::ActiveMessageManager& am_;
  Members& members_;
  RemoteIndex& index_;
  Collect collect_;
  std::chrono::milliseconds flush_every_;
  std::vector<IndexEntry> pending_;
  boost::asio::steady_timer flush_timer_;
  bool flush_armed_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  IndexSyncStats stats_;
};

}  // namespace kvb::daemon::cluster
