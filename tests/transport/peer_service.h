// PeerService: the handlers a test peer serves (in this process or in the
// transport_test_peer helper process), so that one test body runs against
// either.
//   echo   -> the payload back
//   fail   -> throws std::runtime_error("handler failed on purpose")
//   park   -> parks on a gate until release(); counts parked handlers
//   alloc  -> u64 size: allocates, registers and exposes a buffer filled with
//             pattern(seed 7); replies u64 address + packed rkey
//   read   -> u64 offset, u64 length: the buffer's bytes
//   verify -> u64 offset, u64 length, u64 seed: ok iff the bytes equal pattern(seed)
//   park2  -> as park, at most kPark2Limit at once (AmTypeLimits)
//   fail_code  -> u16 Errc: fails with that code ("failed with code <n> on purpose")
//   write_back -> u64 address, u64 length, u64 seed: writes pattern(seed) to
//                 the sender's exposed memory (write_chunks_am), then answers
// and synchronous handlers (register_sync_handler):
//   echo_sync    -> the payload back
//   fail_sync    -> throws std::runtime_error("sync handler failed on purpose")
//   running_sync -> u64: the manager's stats().running while it runs
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/transport/am_manager.h"

namespace kvb::transport::test {

/// Deterministic byte pattern: byte i of a region filled with `seed`.
inline std::byte pattern_byte(std::uint64_t i, std::uint64_t seed) {
  return static_cast<std::byte>((i * 131 + seed * 7 + (i >> 11)) & 0xff);
}

/// Hex encoding of a worker address (the helper process prints it).
std::string to_hex(std::span<const std::byte> bytes);
std::vector<std::byte> from_hex(std::string_view hex);

/// AmTypeLimits::max_concurrent of "park2".
inline constexpr std::size_t kPark2Limit = 2;

class PeerService {
 public:
  PeerService(Context& context, ActiveMessageManager& manager);
  ~PeerService();

  /// Resumes once at least `n` park handlers are parked at the same time.
  asio::awaitable<void> wait_parked(std::size_t n);
  /// Opens the gate: every parked handler finishes.
  void release();
  /// "running=R peak=P queued=Q handled=H ff_failures=F busy=B park2: running=R peak=P queued=Q"
  [[nodiscard]] std::string stats_line() const;
  [[nodiscard]] std::size_t parked() const noexcept { return park_->parked; }

 private:
  // Shared with the park handlers: a handler still parked when the service
  // is destroyed (the in-process "kill") keeps it alive.
  struct Park {
    explicit Park(const asio::any_io_executor& ex) : gate(ex), changed(ex) {}
    AsyncEvent gate;
    AsyncEvent changed;
    std::size_t parked = 0;
  };
  Context& context_;
  ActiveMessageManager& manager_;
  std::shared_ptr<Park> park_;
  std::vector<std::byte> buffer_;
  std::unique_ptr<MemoryRegistration> registration_;
};

}  // namespace kvb::transport::test
