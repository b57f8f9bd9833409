// BulkWriter: the ActiveMessageManager's bulk writes by active message.
// Sending: every chunk of a call is issued at once, eager up to
// AmOptions::bulk_eager_max (the receiver copies it into place) and by
// rendezvous above (received straight into place), and completes as one
// batch. Receiving: a write lands only inside memory this side exposed;
// anything else is refused, logged and counted per sender, so that the
// notification that follows it can fail instead of running its handler.
// Threading: the worker's executor only (see am_manager.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/transport/am_types.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/memory.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

class BulkWriter {
 public:
  /// `token` names this side in its write headers.
  BulkWriter(Worker& worker, const AmOptions& options, std::uint32_t token);
  BulkWriter(const BulkWriter&) = delete;
  BulkWriter& operator=(const BulkWriter&) = delete;
  ~BulkWriter();

  /// Allows peers to write into `registration` (kept by address: unexpose
  /// it before it is destroyed).
  void expose(const MemoryRegistration& registration);
  void unexpose(const MemoryRegistration& registration);
  /// Allows peers to write into `ranges` of caller memory (not registered)
  /// until withdraw(); see ExposedRanges.
  [[nodiscard]] std::shared_ptr<ExposedRanges> expose_ranges(std::vector<ExposedRanges::Range> ranges);
  /// No write lands in `ranges` from now on; receives already started go
  /// on until UCX ends them (ranges.landing()).
  void withdraw(const ExposedRanges& ranges);

  /// Sends each chunk to the peer's exposed memory; completes when UCX
  /// finished every chunk (see ActiveMessageManager::write_chunks_am).
  asio::awaitable<Status> write(std::shared_ptr<Endpoint> ep, std::span<const RmaChunk> chunks,
                                std::chrono::milliseconds timeout);

  /// A write arrived (from the UCX receive callback): copies eager data into
  /// place, or starts receiving rendezvous data into place, when the target
  /// lies in an exposed registration; refuses it otherwise.
  void land(const void* header, std::size_t header_length, void* data, std::size_t length, bool rendezvous);

  /// Writes from the sender `token` refused since the last call for that
  /// sender (0 when none); resets its count.
  [[nodiscard]] std::uint64_t take_refused(std::uint32_t token);
  /// Every refused write so far, all senders (monotonic).
  [[nodiscard]] std::uint64_t rejected_writes() const noexcept { return rejected_writes_; }
  /// Rendezvous writes being received into place now (started, not ended).
  [[nodiscard]] std::uint64_t landing_writes() const noexcept { return landing_writes_; }

 private:
  void refused(std::uint32_t token);

  Worker& worker_;
  const AmOptions& options_;
  std::uint32_t token_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::vector<const MemoryRegistration*> exposed_;
  std::vector<std::shared_ptr<ExposedRanges>> ranges_;
  // Bulk writes refused since the sender's last after-writes notification.
  std::unordered_map<std::uint32_t, std::uint64_t> refused_by_token_;
  std::uint64_t rejected_writes_ = 0;
  std::uint64_t landing_writes_ = 0;
};

}  // namespace kvb::transport
