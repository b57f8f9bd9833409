// TransportTest: one fixture for every transport test body, parameterized by
// UCX_TLS and by where the peer runs (a second worker in this process, or the
// transport_test_peer process). The body is a coroutine run on the client's
// io_context with a bounded wall-clock budget.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "kvb/transport/am_manager.h"
#include "peer_service.h"

namespace kvb::transport::test {

enum class PeerMode { in_process, two_process };

struct TransportParam {
  std::string tls;
  PeerMode mode;
  // WorkerOptions::spin of this side's worker (and of an in-process peer's):
  // 0 = event driven; > 0 exercises the spinning loop's completion path.
  std::chrono::microseconds spin{0};
};

inline void PrintTo(const TransportParam& p, std::ostream* os) {
  *os << "UCX_TLS=" << p.tls << (p.mode == PeerMode::in_process ? ", peer in process" : ", peer process");
  if (p.spin.count() > 0) *os << ", workers spin " << p.spin.count() << " us";
}

std::string param_name(const testing::TestParamInfo<TransportParam>& info);

/// The peer's control side (what a test does to the peer outside UCX).
class Remote {
 public:
  virtual ~Remote() = default;
  virtual asio::awaitable<void> wait_parked(std::size_t n) = 0;
  virtual asio::awaitable<std::string> stats() = 0;
  virtual asio::awaitable<void> release() = 0;
  /// Abrupt loss: SIGKILL for a process, everything destroyed for a worker.
  virtual void kill() = 0;
  std::uint16_t port = 0;          // the peer's Listener (tcp)
  std::vector<std::byte> address;  // the peer's worker address (sm: UCX 1.13's
                                   // sockaddr connect needs a network transport)
};

/// Server limits every peer runs with.
inline constexpr std::size_t kPeerMaxConcurrent = 3;
inline constexpr std::size_t kPeerMaxQueued = 8;
inline const PeerId kPeer{1};

class TransportTest : public testing::TestWithParam<TransportParam> {
 protected:
  void SetUp() override;
  void TearDown() override;

  /// Runs `body` to completion or fails the test after `budget`.
  void run(std::function<asio::awaitable<void>()> body, std::chrono::seconds budget = std::chrono::seconds(20));

  asio::io_context io_;
  std::unique_ptr<Context> context_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<ActiveMessageManager> client_;
  std::unique_ptr<Remote> remote_;
};

/// fatal check inside a coroutine body
#define CO_ASSERT_TRUE(cond)                        \
  do {                                              \
    if (!(cond)) {                                  \
      ADD_FAILURE() << "CO_ASSERT_TRUE(" #cond ")"; \
      co_return;                                    \
    }                                               \
  } while (0)

}  // namespace kvb::transport::test
