// Configuration: defaults, TOML keys, flags over the file, --print-config
// output that loads back, and errors that name the key.
#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "kvb/daemon/config.h"

namespace kvb::daemon {
namespace {

CommandLine parse(std::vector<std::string> args) {
  args.insert(args.begin(), "kvblockd");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

TEST(Config, ZeroConfigDefaultsAreValid) {
  auto command = parse({});
  ASSERT_FALSE(command.exit_code) << command.exit_text;
  const auto& c = command.config;
  EXPECT_EQ(c.socket, default_socket_path());
  EXPECT_EQ(c.socket_mode, 0600U);
  EXPECT_EQ(c.metrics_port, 0);
  EXPECT_EQ(c.host_pool_bytes, 256ULL << 20);
  EXPECT_TRUE(c.allowed_uids.empty());
  EXPECT_TRUE(c.validate());
}

TEST(Config, DefaultSocketFollowsXdgRuntimeDir) {
  const char* saved = std::getenv("XDG_RUNTIME_DIR");
  const std::string keep = saved ? saved : "";
  ::setenv("XDG_RUNTIME_DIR", "/tmp", 1);
  EXPECT_EQ(default_socket_path(), "/tmp/kvblockd.sock");
  ::setenv("XDG_RUNTIME_DIR", "/nonexistent-kvb-dir", 1);
  EXPECT_TRUE(default_socket_path().starts_with("/tmp/kvblockd-"));
  if (saved)
    ::setenv("XDG_RUNTIME_DIR", keep.c_str(), 1);
  else
    ::unsetenv("XDG_RUNTIME_DIR");
}

TEST(Config, EveryKeyLoadsFromTomlAndPrintsBack) {
  DaemonConfig c;
  auto applied = apply_toml(c, R"(
socket = "/tmp/x.sock"
socket_mode = "0660"
log_level = "debug"
max_frame_bytes = 65536
max_sessions = 10
max_inflight = 3
copy_slots = 2
copy_queue = 5
copy_threads = 1
request_timeout_ms = 1234
status_history = 7
metrics_port = 9400
host_pool_bytes = 1048576
max_layouts = 2
allowed_uids = [0, 1000]
)",
                            "test.toml");
  ASSERT_TRUE(applied) << applied.error().to_string();
  EXPECT_EQ(c.socket, "/tmp/x.sock");
  EXPECT_EQ(c.socket_mode, 0660U);
  EXPECT_EQ(c.request_timeout_ms, 1234U);
  EXPECT_EQ(c.metrics_port, 9400);
  EXPECT_EQ(c.allowed_uids, (std::vector<std::uint32_t>{0, 1000}));
  DaemonConfig again;
  ASSERT_TRUE(apply_toml(again, c.to_toml(), "printed"));
  EXPECT_EQ(again.to_toml(), c.to_toml());
  EXPECT_EQ(again.max_layouts, 2U);
}

TEST(Config, ErrorsNameTheKey) {
  DaemonConfig c;
  auto unknown = apply_toml(c, "sockett = \"/x\"\n", "f.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("sockett"), std::string::npos);
  auto type = apply_toml(c, "max_sessions = \"many\"\n", "f.toml");
  ASSERT_FALSE(type);
  EXPECT_NE(type.error().message.find("max_sessions"), std::string::npos);
  auto range = apply_toml(c, "metrics_port = 70000\n", "f.toml");
  ASSERT_FALSE(range);
  EXPECT_NE(range.error().message.find("metrics_port"), std::string::npos);
  auto mode = apply_toml(c, "socket_mode = \"0999\"\n", "f.toml");
  ASSERT_FALSE(mode);
  auto syntax = apply_toml(c, "max_sessions = \n", "f.toml");
  ASSERT_FALSE(syntax);
  EXPECT_NE(syntax.error().message.find("f.toml"), std::string::npos);
}

TEST(Config, FlagsOverrideTheFileWhichOverridesDefaults) {
  char path[] = "/tmp/kvb-config-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << "max_sessions = 77\nmax_inflight = 9\n";
  }
  auto command = parse({"--config", path, "--max-inflight", "12", "--allowed-uid", "5", "--allowed-uid", "6"});
  std::remove(path);
  ASSERT_FALSE(command.exit_code) << command.exit_text;
  EXPECT_EQ(command.config.max_sessions, 77U);
  EXPECT_EQ(command.config.max_inflight, 12U);
  EXPECT_EQ(command.config.allowed_uids, (std::vector<std::uint32_t>{5, 6}));
  EXPECT_EQ(command.config.copy_slots, DaemonConfig{}.copy_slots);
}

TEST(Config, BadFlagsExitWithAMessage) {
  auto bad = parse({"--max-sessions", "0"});
  ASSERT_TRUE(bad.exit_code);
  EXPECT_NE(*bad.exit_code, 0);
  EXPECT_NE(bad.exit_text.find("max_sessions"), std::string::npos) << bad.exit_text;
  auto unknown = parse({"--no-such-flag"});
  ASSERT_TRUE(unknown.exit_code);
  EXPECT_NE(*unknown.exit_code, 0);
  auto help = parse({"--help"});
  ASSERT_TRUE(help.exit_code);
  EXPECT_EQ(*help.exit_code, 0);
  EXPECT_NE(help.exit_text.find("--request-timeout-ms"), std::string::npos);
  auto print = parse({"--print-config", "--socket-mode", "0640"});
  ASSERT_FALSE(print.exit_code);
  EXPECT_TRUE(print.print_config);
  EXPECT_NE(print.config.to_toml().find("socket_mode = '0640'"), std::string::npos) << print.config.to_toml();
}

}  // namespace
}  // namespace kvb::daemon
