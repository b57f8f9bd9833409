// Connection: the extension's handle on one kvblockd session.
//
// It owns an io_context run by ONE background thread and a
// kvb::client::Session on it (the C++ client library: the wire protocol is
// defined there, once). Python never runs on that thread and it never takes
// the GIL: every request is submitted with a ticket, and its outcome (decoded
// reply or notification, or the error) is parked in one of two places:
//  - blocking tickets in a map, with a condition variable, for take()/ready();
//  - asyncio tickets in a queue, and an eventfd is made readable: the asyncio
//    loop watches that fd (loop.add_reader) and drains the queue. No polling
//    and no thread or task per request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "kvb/client/kv_region.h"
#include "kvb/client/session.h"
#include "kvb/common/error.h"

namespace boost::asio {
class io_context;
}

namespace kvbpy {

/// A failure raised to Python as the kvblockd.errors class of its Errc.
struct Failure {
  kvb::Error error;
};

/// What a finished request produced.
using Value = std::variant<std::monostate, kvb::client::HelloInfo, kvb::client::LookupResult, std::uint32_t,
                           kvb::client::RequestStatus, std::string, std::vector<kvb::client::WorkerPrefix>>;

struct Outcome {
  std::uint64_t ticket = 0;
  kvb::Errc code = kvb::Errc::ok;
  std::string message;
  Value value;
};

class Connection {
 public:
  /// Connects to the Unix socket `path`; throws Failure (io_error naming the path).
  explicit Connection(const std::string& path);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  /// Closes the session (pending requests end cancelled) and joins the thread.
  ~Connection();

  // Each submit returns a ticket; `async` picks where its outcome goes (above).
  // The daemon-side request id of the last submit is request_id_of(ticket).
  std::uint64_t hello(const std::string& name, std::uint64_t salt, const kvb::client::BlockShape& shape, bool async);
  std::uint64_t register_kv(const kvb::client::KvRegion& region, bool async);
  std::uint64_t lookup(std::vector<std::uint64_t> hashes, bool pin, bool async);
  std::uint64_t locate(std::vector<std::uint64_t> hashes, bool async);
  std::uint64_t offload(const std::vector<std::uint32_t>& blocks, const std::vector<std::uint64_t>& hashes, bool async);
  std::uint64_t onboard(const std::vector<std::uint32_t>& blocks, const std::vector<std::uint64_t>& hashes, bool async);
  std::uint64_t release(std::vector<std::uint64_t> hashes, bool async);
  std::uint64_t status(std::uint64_t request_id, bool async);
  std::uint64_t wait(std::uint64_t request_id, std::uint32_t timeout_ms, bool async);
  std::uint64_t stats(bool async);
  std::uint64_t config(bool async);
  std::uint64_t drain(bool async);
  std::uint64_t bye(bool async);

  /// The daemon request id a ticket was sent with (0 when it never left).
  [[nodiscard]] std::uint64_t request_id_of(std::uint64_t ticket) const;

  // ---- blocking tickets ----
  /// Whether the outcome of a blocking ticket has arrived. Never blocks.
  [[nodiscard]] bool ready(std::uint64_t ticket);
  /// Waits up to `timeout_s` (negative: no limit) for a blocking ticket's
  /// outcome and removes it. `interrupted` is called every 100 ms while
  /// waiting (Python checks its signals there); when it returns true, or the
  /// time is up, the ticket is abandoned and an error outcome returned.
  template <class Interrupted>
  Outcome take(std::uint64_t ticket, double timeout_s, Interrupted interrupted);

  // ---- asyncio tickets ----
  /// The eventfd that is readable while asyncio outcomes wait in the queue.
  [[nodiscard]] int event_fd() const noexcept { return event_fd_; }
  /// Every asyncio outcome that arrived (and resets the eventfd). Never blocks.
  std::vector<Outcome> drain_async();

  /// Closes the connection: every pending request ends with `cancelled`. Idempotent.
  void close();
  [[nodiscard]] bool is_open() const noexcept { return session_ && session_->is_open(); }
  [[nodiscard]] std::size_t pending() const noexcept { return session_ ? session_->pending() : 0; }

 private:
  template <class T>
  kvb::client::Callback<T> completion(std::uint64_t ticket, bool async);
  void finish(Outcome outcome, bool async);
  std::uint64_t new_ticket() { return next_ticket_.fetch_add(1, std::memory_order_relaxed); }
  void note_request(std::uint64_t ticket, kvb::RequestId id);

  std::unique_ptr<boost::asio::io_context> io_;
  std::shared_ptr<kvb::client::Session> session_;
  std::thread thread_;
  int event_fd_ = -1;
  std::atomic<std::uint64_t> next_ticket_{1};

  mutable std::mutex mutex_;
  std::condition_variable arrived_;
  std::unordered_map<std::uint64_t, Outcome> done_;               // blocking tickets
  std::unordered_set<std::uint64_t> abandoned_;                   // blocking tickets nobody waits for any more
  std::deque<Outcome> queue_;                                     // asyncio tickets
  std::unordered_map<std::uint64_t, std::uint64_t> request_ids_;  // ticket -> daemon request id
};

template <class Interrupted>
Outcome Connection::take(std::uint64_t ticket, double timeout_s, Interrupted interrupted) {
  using Clock = std::chrono::steady_clock;
  const auto deadline =
      timeout_s < 0
          ? Clock::time_point::max()
          : Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  std::unique_lock lock(mutex_);
  for (;;) {
    if (auto it = done_.find(ticket); it != done_.end()) {
      Outcome out = std::move(it->second);
      done_.erase(it);
      request_ids_.erase(ticket);
      return out;
    }
    const auto now = Clock::now();
    Outcome fail_out{ticket, kvb::Errc::timeout, {}, {}};
    if (now >= deadline) {
      fail_out.message = fmt::format("no answer from kvblockd within {} s", timeout_s);
    } else {
      arrived_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
      if (done_.contains(ticket)) continue;
      lock.unlock();
      const bool stop = interrupted();
      lock.lock();
      if (!stop) continue;
      fail_out.code = kvb::Errc::cancelled;
      fail_out.message = "interrupted while waiting for kvblockd";
    }
    if (done_.contains(ticket)) continue;
    abandoned_.insert(ticket);
    request_ids_.erase(ticket);
    return fail_out;
  }
}

}  // namespace kvbpy
