// AsyncSemaphore / AsyncEvent: the limit holds, FIFO hand-over, timeouts.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "kvb/transport/async_sync.h"

namespace kvb::transport {
namespace {

using namespace std::chrono_literals;

TEST(AsyncSemaphore, HoldersNeverExceedPermitsAndWaitersGoInOrder) {
  asio::io_context io;
  AsyncSemaphore sem(io.get_executor(), 2);
  AsyncEvent gate(io.get_executor());
  int holding = 0;
  int peak = 0;
  std::vector<int> order;
  for (int i = 0; i < 6; ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          co_await sem.acquire();
          order.push_back(i);
          peak = std::max(peak, ++holding);
          co_await gate.wait();
          --holding;
          sem.release();
        },
        asio::detached);
  }
  io.poll();
  EXPECT_EQ(holding, 2);
  EXPECT_EQ(sem.waiting(), 4u);
  gate.set();
  io.poll();
  EXPECT_EQ(holding, 0);
  EXPECT_EQ(peak, 2);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(sem.available(), 2u);
}

TEST(AsyncEvent, WaitForReturnsFalseOnTimeoutAndTrueWhenSet) {
  asio::io_context io;
  AsyncEvent ev(io.get_executor());
  std::optional<bool> first;
  std::optional<bool> second;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { first = co_await ev.wait_for(1ms); }, asio::detached);
  io.run_for(2s);
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(*first);
  io.restart();
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { second = co_await ev.wait_for(10s); }, asio::detached);
  io.poll();
  EXPECT_FALSE(second.has_value());
  ev.set();
  io.run_for(2s);
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(*second);
}

}  // namespace
}  // namespace kvb::transport
