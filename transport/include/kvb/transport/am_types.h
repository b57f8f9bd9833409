// The vocabulary of active messages: what a handler receives and returns,
// the manager's options and counters, and a bulk chunk. Shared by the
// ActiveMessageManager and its parts (am_peer_directory.h,
// am_request_table.h, am_handler_pool.h, am_bulk_writer.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb::transport {

namespace asio = boost::asio;

using Bytes = std::vector<std::byte>;

struct IncomingMessage {
  PeerId peer;  // PeerId{0} when the sender is not a known peer
  std::string type;
  Bytes payload;
  std::optional<std::uint64_t> notification_id;
};

/// A handler returns the reply payload (may be empty) or an error; a thrown
/// exception is reported as err(<what>) with Errc::internal. The error's
/// code travels to the requester as a number. It may capture shared
/// resources.
using AmHandler = std::function<asio::awaitable<Result<Bytes>>(IncomingMessage message)>;
/// A handler that answers without waiting (a lookup, an echo): it runs to
/// completion on the executor right after the progress pass that received
/// the message, with no coroutine, and counts against the permits like any
/// handler. It may take the payload out of `message`. Work that waits (I/O,
/// copies, other requests) belongs in an AmHandler: a synchronous handler
/// holds the executor while it runs.
using AmSyncHandler = std::function<Result<Bytes>(IncomingMessage& message)>;

/// Per message type: how many of its handlers may hold a permit at once
/// (running, or assigned to run). 0 = only the manager's max_concurrent.
/// A message over its type's limit waits in its type's queue (counted in
/// AmStats::queued and bounded by max_queued with the rest).
struct AmTypeLimits {
  std::size_t max_concurrent = 0;
};

struct AmOptions {
  /// Handlers running at once, all types together; never exceeded.
  std::size_t max_concurrent = 8;
  /// Accepted messages waiting for a permit; beyond it new requests get
  /// err(busy: ...) and new fire-and-forget messages are dropped and counted.
  std::size_t max_queued = 256;
  /// Largest payload accepted for sending (refused before reaching UCX).
  std::size_t max_payload = std::size_t{1} << 30;
  /// write_chunks_am sends chunks up to this size eagerly (the receiver
  /// copies them into place once) and larger ones by rendezvous (received
  /// straight into place). Measured on tcp loopback (docs/transport.md):
  /// eager wins at 64-128 KiB (1.3x), rendezvous from 256 KiB (1.6x).
  std::size_t bulk_eager_max = std::size_t{128} << 10;
};

struct AmStats {
  std::size_t running = 0;
  std::size_t peak_running = 0;
  std::size_t queued = 0;  // behind the manager's permits or their type's limit
  std::size_t peak_queued = 0;
  std::uint64_t handled = 0;
  std::uint64_t handler_failures = 0;          // all failed handlers
  std::uint64_t fire_and_forget_failures = 0;  // failed handlers nobody hears about (logged)
  std::uint64_t busy_refusals = 0;             // requests answered err(busy: ...)
  std::uint64_t dropped = 0;                   // fire-and-forget refused with the queue full
  std::uint64_t rejected_writes = 0;           // bulk writes outside every exposed region
  std::uint64_t landing_writes = 0;            // rendezvous bulk writes being received now
};

/// One message type's share (ActiveMessageManager::type_stats).
struct AmTypeStats {
  std::size_t limit = 0;  // its max_concurrent (the manager's when it set none)
  std::size_t running = 0;
  std::size_t peak_running = 0;
  std::size_t queued = 0;  // waiting for its type's limit
  std::uint64_t handled = 0;
};

/// One bulk chunk: local bytes -> remote address (in the peer's registered
/// memory, rkey from the peer's MemoryRegistration).
/// Caller memory peers may write into with bulk AM writes for one exchange,
/// not registered with UCX (ActiveMessageManager::expose_ranges): byte
/// ranges, until withdrawn. Counts the rendezvous receives still landing in
/// it: after withdraw nothing new lands, but a receive UCX had already
/// started goes on writing until UCX ends it (landing() > 0 meanwhile).
/// Executor thread only, like the manager.
class ExposedRanges {
 public:
  struct Range {
    std::uint64_t address = 0;
    std::uint64_t bytes = 0;
  };
  explicit ExposedRanges(std::vector<Range> ranges);
  [[nodiscard]] bool contains(std::uint64_t address, std::uint64_t length) const noexcept;
  /// Rendezvous receives started into these ranges and not ended yet.
  [[nodiscard]] std::size_t landing() const noexcept { return landing_; }
  /// Sorted by address.
  [[nodiscard]] const std::vector<Range>& ranges() const noexcept { return ranges_; }

 private:
  friend class BulkWriter;
  std::vector<Range> ranges_;
  std::size_t landing_ = 0;
};

struct RmaChunk {
  std::byte* local = nullptr;
  std::uint64_t remote_address = 0;
  std::uint64_t length = 0;
};

}  // namespace kvb::transport
