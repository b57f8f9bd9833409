// The request-lifecycle parts: one-timer deadlines and copy admission.
#include <gtest/gtest.h>

#include <boost/asio/post.hpp>

#include "copy_admission.h"
#include "deadline_queue.h"

namespace kvb::daemon {
namespace {

using namespace std::chrono_literals;

TEST(DeadlineQueue, FiresInDeadlineOrderOnOneTimer) {
  boost::asio::io_context io;
  DeadlineQueue deadlines(io);
  std::vector<int> fired;
  const auto now = DeadlineQueue::Clock::now();
  deadlines.add(now + 30ms, [&] { fired.push_back(3); });
  deadlines.add(now + 10ms, [&] { fired.push_back(1); });
  deadlines.add(now + 20ms, [&] { fired.push_back(2); });
  deadlines.add(now + 20ms, [&] { fired.push_back(22); });  // same time: insertion order
  io.run_for(5s);                                           // returns as soon as every deadline has fired
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 22, 3}));
  EXPECT_EQ(deadlines.size(), 0U);
}

TEST(DeadlineQueue, CancelledEntriesNeverRunAndLeaveNothingBehind) {
  boost::asio::io_context io;
  DeadlineQueue deadlines(io);
  std::vector<int> fired;
  const auto now = DeadlineQueue::Clock::now();
  auto first = deadlines.add(now + 10ms, [&] { fired.push_back(1); });
  deadlines.add(now + 20ms, [&] { fired.push_back(2); });
  auto third = deadlines.add(now + 30ms, [&] { fired.push_back(3); });
  deadlines.cancel(first);
  deadlines.cancel(third);
  EXPECT_EQ(deadlines.size(), 1U);
  io.run_for(5s);
  EXPECT_EQ(fired, (std::vector<int>{2}));
  EXPECT_EQ(deadlines.size(), 0U);
}

TEST(DeadlineQueue, StopDropsEverythingAndLetsTheLoopEnd) {
  boost::asio::io_context io;
  DeadlineQueue deadlines(io);
  bool fired = false;
  deadlines.add(DeadlineQueue::Clock::now() + 1h, [&] { fired = true; });
  boost::asio::post(io, [&] { deadlines.stop(); });
  io.run_for(5s);
  EXPECT_FALSE(fired);
  EXPECT_TRUE(io.stopped());
  deadlines.add(DeadlineQueue::Clock::now(), [&] { fired = true; });  // ignored after stop
  EXPECT_EQ(deadlines.size(), 0U);
}

TEST(CopyAdmission, RunsUpToSlotsQueuesInOrderThenRefusesBusy) {
  CopyAdmission admission("host", 2, 2);
  std::vector<int> started;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(admission.admit([&, i] { started.push_back(i); }));
  EXPECT_EQ(started, (std::vector<int>{0, 1}));
  EXPECT_EQ(admission.running(), 2U);
  EXPECT_EQ(admission.queued(), 2U);
  auto refused = admission.admit([] {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_NE(refused.error().message.find("host"), std::string::npos);
  admission.release();
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2}));
  admission.release();
  admission.release();
  admission.release();
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(admission.running(), 0U);
}

TEST(CopyAdmission, AStartThatGivesItsSlotBackDoesNotRecurse) {
  CopyAdmission admission("host", 1, 100000);
  int ran = 0;
  ASSERT_TRUE(admission.admit([&] { ++ran; }));  // holds the only slot
  for (int i = 0; i < 50000; ++i) {
    ASSERT_TRUE(admission.admit([&] {
      ++ran;
      admission.release();  // a cancelled request: slot straight back
    }));
  }
  admission.release();
  EXPECT_EQ(ran, 50001);
  EXPECT_EQ(admission.running(), 0U);
  EXPECT_EQ(admission.queued(), 0U);
}

}  // namespace
}  // namespace kvb::daemon
