// ReplayDisk: the disk tier (G3) of a replay: a real SlotStore in a fresh
// temp dir (on /dev/shm when it is writable: the replay measures placement,
// not the device), and the owner-thread queue its completions are posted to.
// The replay pumps that queue until every write-back has ended after each
// request, so a run is deterministic.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "kvb/blockmgr/block_manager.h"
#include "kvb/storage/slot_store.h"

namespace kvb::bench {

class ReplayDisk {
 public:
  /// A store of `slots` blocks of `spec` in a new directory under `dir`
  /// (empty: /dev/shm if writable, else $TMPDIR).
  [[nodiscard]] static Result<std::unique_ptr<ReplayDisk>> make(const LayoutSpec& spec, std::uint32_t slots,
                                                                const std::string& dir);
  ~ReplayDisk();

  [[nodiscard]] storage::SlotStore& store() { return *store_; }
  [[nodiscard]] PostToOwner poster();
  /// Runs posted completions until `done()` holds (bounded: 60 s).
  [[nodiscard]] Status pump_until(const std::function<bool()>& done);

 private:
  ReplayDisk() = default;
  std::string dir_;
  std::unique_ptr<storage::SlotStore> store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace kvb::bench
