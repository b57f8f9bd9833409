// RequestTable: the ActiveMessageManager's requests waiting for answers,
// with their deadlines. A request's state (Pending) lives in the frame of
// the caller's asynchronous operation; the table only points at it, by an
// id that needs no hashing or allocation: (serial << 24 | slot), so a stale
// or forged id never matches a later request in the same slot. Deadlines
// share one timer armed at the earliest one (no timer per request: each
// would reprogram the reactor's timerfd).
// Threading: the worker's executor only (see am_manager.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/transport/am_types.h"
#include "kvb/transport/completion.h"
#include "kvb/transport/worker.h"

namespace kvb::transport {

class RequestTable {
 public:
  /// A request waiting for its answer. Lives in the frame of the caller's
  /// asynchronous operation until the caller resumes; the table lists it
  /// until it has a result.
  struct Pending {
    Pending() = default;
    Pending(Pending&&) noexcept = default;  // only before it is listed
    Pending& operator=(Pending&&) = delete;
    ~Pending() {
      if (listed && !table_gone) table->erase(id);
    }
    RequestTable* table = nullptr;
    std::uint64_t id = 0;
    bool listed = false;
    bool table_gone = false;  // set by ~RequestTable: touch nothing of it
    PeerId peer;
    std::optional<Result<Bytes>> result;
    Completion waiter;  // resumes the caller with *result
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout{0};
    std::string type;
    /// The answer may follow bulk writes into our exposed memory: an ok
    /// answer is turned into an error if any write was refused meanwhile.
    std::optional<std::uint64_t> refused_writes_at_send;
  };
  static constexpr std::size_t kMaxSlots = std::size_t{1} << 24;

  explicit RequestTable(Worker& worker);
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;
  /// Ends every listed request with `cancelled` (the manager is going).
  ~RequestTable();

  /// Lists `pending` and gives it its id; false when kMaxSlots requests are
  /// in flight already.
  [[nodiscard]] bool insert(Pending& pending);
  [[nodiscard]] Pending* find(std::uint64_t id) const {
    const auto slot = static_cast<std::size_t>(id & (kMaxSlots - 1));
    return slot < slots_.size() && slots_[slot].first == id ? slots_[slot].second : nullptr;
  }
  /// Sets the result (once), unlists the request and resumes its caller
  /// through the worker.
  void finish(Pending& pending, Result<Bytes> result);
  /// Sets the request's deadline (now + its timeout, read from the coarse
  /// clock: never early, at most one tick late) and arms the timer for it.
  void start_deadline(Pending& pending);
  /// Ends every request waiting on `peer` with err(peer lost: <peer>).
  void fail_peer(PeerId peer);
  /// Requests waiting for answers.
  [[nodiscard]] std::size_t size() const noexcept { return slots_.size() - free_.size(); }

 private:
  void erase(std::uint64_t id);
  template <class F>
  void for_each(F&& f) {
    for (auto& [id, p] : slots_)
      if (p != nullptr) f(id, *p);
  }
  void arm(std::chrono::steady_clock::time_point deadline);
  void expire();

  Worker& worker_;
  std::vector<std::pair<std::uint64_t, Pending*>> slots_;
  std::vector<std::uint32_t> free_;
  std::uint64_t serial_ = 1;
  boost::asio::steady_timer timer_;
  std::optional<std::chrono::steady_clock::time_point> armed_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace kvb::transport
