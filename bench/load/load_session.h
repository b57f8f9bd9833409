// LoadSession: one simulated engine of `kvblockd-bench load`.
//
// connect -> hello -> register_kv (a small memfd region) -> [session 0 seeds
// the shared prefix] -> ready; then one request at a time (closed loop, or
// paced by a timer to the configured rate) until the run stops; then bye.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "kvb/client/kv_region.h"
#include "kvb/client/session.h"
#include "latency_histogram.h"
#include "load_config.h"

namespace kvb::bench {

/// What a thread's sessions share: config, counters, that thread's histogram.
struct LoadContext {
  const LoadConfig* config = nullptr;
  LoadCounters* counters = nullptr;
  const std::vector<std::uint64_t>* prefix = nullptr;
  const std::vector<std::vector<std::uint64_t>>* trace = nullptr;
  LatencyHistogram histogram;  // only touched by this context's thread
  // Each session's first offload or onboard of the measured window (the
  // first time kvblockd moves that engine's blocks): bytes and when it ended.
  struct FirstMove {
    std::uint64_t bytes = 0;
    std::chrono::steady_clock::time_point ended;
  };
  std::vector<FirstMove> first_moves;
  std::uint64_t first_error_logged = 0;
};

/// Blocks of each session's KV region: its onboards' and offloads' blocks,
/// and the shared prefix up to kMaxPrefixRegionBlocks (session 0 seeds a
/// longer prefix that many blocks at a time), plus one.
inline constexpr std::uint32_t kMaxPrefixRegionBlocks = 64;
[[nodiscard]] std::uint32_t region_blocks(const LoadConfig& cfg);

class LoadSession : public std::enable_shared_from_this<LoadSession> {
 public:
  using Clock = std::chrono::steady_clock;

  LoadSession(boost::asio::io_context& io, LoadContext& ctx, std::uint32_t index);

  /// Starts the setup; `setup_done(ok)` runs once on the io thread.
  void start(std::function<void(bool)> setup_done);
  /// Starts issuing requests (after every session's setup).
  void run();
  /// Sends bye and closes (after the run stopped and the last answer came).
  void finish();
  [[nodiscard]] bool idle() const noexcept { return !outstanding_; }

 private:
  void setup_failed(const char* step, const Error& e);
  void seed(std::uint32_t first);
  void schedule_next();
  void issue();
  enum class Moved : std::uint8_t { none, offload, onboard };
  void completed(Clock::time_point sent, const Status& result, const char* op, Moved moved = Moved::none,
                 std::uint64_t bytes = 0);

  boost::asio::io_context& io_;
  LoadContext& ctx_;
  std::uint32_t index_;
  std::shared_ptr<client::Session> session_;
  std::optional<client::KvRegion> region_;
  boost::asio::steady_timer timer_;
  std::function<void(bool)> setup_done_;
  std::mt19937_64 rng_;
  Clock::time_point next_send_{};
  Clock::duration interval_{};
  std::uint64_t counter_ = 0;
  std::uint64_t onboards_ = 0;
  bool outstanding_ = false;
  bool moved_ = false;  // a measured offload or onboard ended well: the next ones are not the first
};

}  // namespace kvb::bench
