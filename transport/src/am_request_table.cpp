#include "kvb/transport/am_request_table.h"

#include <time.h>

namespace kvb::transport {

namespace {

// now + timeout, never early, at most one coarse clock tick (~1-4 ms) late:
// CLOCK_MONOTONIC_COARSE (steady_clock's clock, at tick resolution) costs a
// few ns where a precise read costs ~25 ns on every request.
std::chrono::steady_clock::time_point coarse_deadline(std::chrono::milliseconds timeout) {
  static const std::chrono::nanoseconds tick = [] {
    timespec res{};
    ::clock_getres(CLOCK_MONOTONIC_COARSE, &res);
    return std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec);
  }();
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  const auto coarse =
      std::chrono::steady_clock::time_point(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec)));
  return coarse + tick + timeout;
}

}  // namespace

RequestTable::RequestTable(Worker& worker) : worker_(worker), timer_(worker.executor()) {}

RequestTable::~RequestTable() {
  *alive_ = false;
  for_each([this](std::uint64_t id, Pending& p) {
    p.table_gone = true;
    finish(p, fail(Errc::cancelled, "request {} cancelled: the manager is shutting down", id));
  });
}

bool RequestTable::insert(Pending& pending) {
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else if (slots_.size() < kMaxSlots) {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back(0, nullptr);
  } else {
    return false;
  }
  pending.table = this;
  pending.id = (serial_++ << 24) | slot;
  pending.listed = true;
  slots_[slot] = {pending.id, &pending};
  return true;
}

void RequestTable::erase(std::uint64_t id) {
  const auto slot = static_cast<std::uint32_t>(id & (kMaxSlots - 1));
  if (slot >= slots_.size() || slots_[slot].first != id) return;
  slots_[slot] = {0, nullptr};
  free_.push_back(slot);
}

void RequestTable::finish(Pending& pending, Result<Bytes> result) {
  if (pending.result) return;
  pending.result = std::move(result);
  if (pending.listed && !pending.table_gone) {
    erase(pending.id);  // a late answer finds nothing
    pending.listed = false;
  }
  worker_.complete_soon(std::move(pending.waiter));
}

void RequestTable::start_deadline(Pending& pending) {
  pending.deadline = coarse_deadline(pending.timeout);
  arm(pending.deadline);
}

void RequestTable::arm(std::chrono::steady_clock::time_point deadline) {
  if (armed_ && *armed_ <= deadline) return;  // an earlier wake will re-arm
  armed_ = deadline;
  timer_.expires_at(deadline);  // cancels the later wait, if any
  timer_.async_wait([this, alive = alive_, deadline](const boost::system::error_code& ec) {
    if (!*alive || ec == boost::asio::error::operation_aborted || armed_ != deadline) return;
    armed_.reset();
    expire();
  });
}

void RequestTable::expire() {
  const auto now = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> next;
  for_each([&](std::uint64_t id, Pending& p) {
    if (p.result) return;
    if (p.deadline <= now) {
      finish(p, fail(Errc::timeout, "timeout: no answer to request {} ('{:.40}') from peer {} within {} ms", id, p.type,
                     p.peer, p.timeout.count()));
    } else if (!next || p.deadline < *next) {
      next = p.deadline;
    }
  });
  if (next) arm(*next);
}

void RequestTable::fail_peer(PeerId peer) {
  for_each([&](std::uint64_t, Pending& p) {
    if (p.peer == peer) finish(p, fail(Errc::peer_lost, "peer lost: {}", peer));
  });
}

}  // namespace kvb::transport
