// Hostile clients, case 8: trust boundaries. (a) Tenants: the peer's uid,
// not the salt a client names in hello, picks its tenant namespace, so a
// client that claims another uid's salt reaches none of its blocks
// (tenants.shared_uids lets uids share). (b) Operator requests: any allowed
// client may connect, but only an operator uid (operator_uids, default the
// daemon's own) may drain the daemon or read its configuration.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hostile_support.h"

namespace kvb::test {
namespace {

// Before the fix: any connected client, even without a hello, drained the
// daemon until restart (every later offload/onboard of every session was
// refused unavailable).
TEST(HostileTrust, DrainAndConfigNeedAnOperatorUid) {
  const auto other = ::getuid() + 12345;
  DaemonProcess daemon(kvblockd_under_test(), {"--operator-uid", std::to_string(other)});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto drain = client.call(RequestId{1}, proto::DrainRequest{});
  ASSERT_TRUE(drain);
  EXPECT_EQ(drain->code, Errc::permission_denied) << drain->message;
  EXPECT_NE(drain->message.find("operator_uids"), std::string::npos) << drain->message;
  auto config = client.call(RequestId{2}, proto::ConfigRequest{});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->code, Errc::permission_denied) << config->message;

  // Nothing was drained: an engine's offload is still accepted and done.
  TestEngine engine(daemon.socket_path(), 8);
  ASSERT_TRUE(engine.attach());
  auto offload = engine.client().call(RequestId{50}, proto::OffloadRequest{{{BlockId{0}, 5}}});
  ASSERT_TRUE(offload);
  EXPECT_EQ(offload->code, Errc::ok) << offload->message;
  auto done = engine.client().notification_of(RequestId{50});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->code, Errc::ok);
  auto stats = fresh_stats(daemon.socket_path());
  ASSERT_TRUE(stats);
  EXPECT_NE(stats->find("\"draining\":false"), std::string::npos) << *stats;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

constexpr const char* kSetpriv = "/usr/bin/setpriv";
constexpr const char* kOtherUid = "23456";

/// engine_sim's half `half` (offload | onboard) of 4 blocks under `salt`,
/// run as `uid` (setpriv) or, with an empty uid, as this process's uid; its
/// stderr joins its stdout.
std::optional<ProgramResult> engine_half(const std::string& socket, const std::string& uid, const std::string& half,
                                         const std::string& salt) {
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"};
  if (!uid.empty()) {
    for (const std::string& a : {std::string(kSetpriv), std::string("--reuid"), uid, std::string("--regid"), uid,
                                 std::string("--clear-groups")}) {
      argv.push_back(a);
    }
  }
  for (const std::string& a : {std::string(ENGINE_SIM_PATH), std::string("--socket"), socket, std::string("--blocks"),
                               std::string("4"), std::string("--salt"), salt, std::string("--only"), half}) {
    argv.push_back(a);
  }
  return run_program(argv, std::chrono::seconds(60));
}

bool exited_zero(const std::optional<ProgramResult>& r) {
  return r && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

/// A daemon that uid 0 and kOtherUid may both reach (socket 0666, its
/// directory searchable), with `more` flags.
class TwoUidDaemon {
 public:
  explicit TwoUidDaemon(std::vector<std::string> more) : daemon_(kvblockd_under_test(), args(std::move(more))) {
    if (daemon_.ready()) {
      ::chmod(std::filesystem::path(daemon_.socket_path()).parent_path().c_str(), 0711);
    }
  }
  DaemonProcess& operator*() { return daemon_; }
  DaemonProcess* operator->() { return &daemon_; }

 private:
  static std::vector<std::string> args(std::vector<std::string> more) {
    std::vector<std::string> a{"--allowed-uid", "0", "--allowed-uid", kOtherUid, "--socket-mode", "0666"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
  DaemonProcess daemon_;
};

// Before the fix the salt alone named the tenant: a client of any allowed
// uid that said hello with another engine's salt looked up and onboarded
// that engine's blocks. Now a uid is a namespace of its own.
TEST(HostileTrust, ATenantIsBoundToItsUidNotToTheSaltItNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the test runs one client as another uid (setpriv)";
  if (::access(kSetpriv, X_OK) != 0) GTEST_SKIP() << kSetpriv << " (util-linux) is not installed";
  TwoUidDaemon daemon({});
  ASSERT_TRUE(daemon->ready()) << daemon->log();
  auto stored = engine_half(daemon->socket_path(), kOtherUid, "offload", "77");
  ASSERT_TRUE(exited_zero(stored)) << (stored ? stored->out : "timeout") << daemon->log();

  // Root names uid 23456's salt: a miss, nothing onboarded.
  auto claimed = engine_half(daemon->socket_path(), "", "onboard", "77");
  ASSERT_TRUE(claimed);
  EXPECT_FALSE(exited_zero(claimed)) << claimed->out;
  EXPECT_NE(claimed->out.find("lookup matched 0 blocks"), std::string::npos) << claimed->out;
  // The owner's uid with its salt still finds every block, byte-exact.
  auto owner = engine_half(daemon->socket_path(), kOtherUid, "onboard", "77");
  EXPECT_TRUE(exited_zero(owner)) << (owner ? owner->out : "timeout");
  EXPECT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
}

// tenants.shared_uids: the listed uids share one namespace (where the salt
// names the tenant, as between two sessions of one uid).
TEST(HostileTrust, SharedUidsShareTenantsBySalt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the test runs one client as another uid (setpriv)";
  if (::access(kSetpriv, X_OK) != 0) GTEST_SKIP() << kSetpriv << " (util-linux) is not installed";
  TwoUidDaemon daemon({"--tenant-shared-uid", "0", "--tenant-shared-uid", kOtherUid});
  ASSERT_TRUE(daemon->ready()) << daemon->log();
  auto stored = engine_half(daemon->socket_path(), kOtherUid, "offload", "78");
  ASSERT_TRUE(exited_zero(stored)) << (stored ? stored->out : "timeout") << daemon->log();
  auto shared = engine_half(daemon->socket_path(), "", "onboard", "78");
  EXPECT_TRUE(exited_zero(shared)) << (shared ? shared->out : "timeout");
  EXPECT_EQ(daemon->stop(SIGTERM), 0) << daemon->log();
}

// The daemon's own uid is the default operator: kvblockctl drain works.
TEST(HostileTrust, TheDaemonsUidIsTheDefaultOperator) {
  DaemonProcess daemon(kvblockd_under_test());
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  RawClient client(daemon.socket_path());
  auto config = client.call(RequestId{1}, proto::ConfigRequest{});
  ASSERT_TRUE(config);
  EXPECT_EQ(config->code, Errc::ok) << config->message;
  auto drain = client.call(RequestId{2}, proto::DrainRequest{});
  ASSERT_TRUE(drain);
  EXPECT_EQ(drain->code, Errc::ok) << drain->message;
  EXPECT_EQ(daemon.stop(SIGTERM), 0) << daemon.log();
}

}  // namespace
}  // namespace kvb::test
