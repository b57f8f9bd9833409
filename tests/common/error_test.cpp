#include <gtest/gtest.h>

#include "kvb/common/error.h"
#include "kvb/common/logging.h"

namespace kvb {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return fail(Errc::invalid_argument, "value must be > 0 (got {})", v);
  return v;
}

TEST(Error, FailFormatsMessageAndCode) {
  auto r = parse_positive(-3);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  EXPECT_EQ(r.error().message, "value must be > 0 (got -3)");
  EXPECT_EQ(r.error().to_string(), "invalid_argument: value must be > 0 (got -3)");
  EXPECT_EQ(*parse_positive(4), 4);
}

TEST(Error, EveryCodeHasAStableName) {
  EXPECT_EQ(to_string(Errc::timeout), "timeout");
  EXPECT_EQ(to_string(Errc::peer_lost), "peer_lost");
  EXPECT_EQ(to_string(Errc::wrong_state), "wrong_state");
  EXPECT_EQ(to_string(static_cast<Errc>(999)), "unknown");
  EXPECT_EQ(fmt::format("{}", Errc::busy), "busy");
}

TEST(Logging, RejectsUnknownLevelAndAcceptsKnownOnesTwice) {
  auto bad = setup_logging("loud");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("loud"), std::string::npos);
  EXPECT_TRUE(setup_logging("warn"));
  EXPECT_TRUE(setup_logging("off"));
}

}  // namespace
}  // namespace kvb
