// Configuration: defaults, TOML keys, flags over the file, --print-config
// output that loads back, and errors that name the key.
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "config_values.h"
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
eviction_policy = "lru"
allowed_uids = [0, 1000]
)",
                            "test.toml");
  ASSERT_TRUE(applied) << applied.error().to_string();
  EXPECT_EQ(c.socket, "/tmp/x.sock");
  EXPECT_EQ(c.socket_mode, 0660U);
  EXPECT_EQ(c.request_timeout_ms, 1234U);
  EXPECT_EQ(c.metrics_port, 9400);
  EXPECT_EQ(c.allowed_uids, (std::vector<std::uint32_t>{0, 1000}));
  EXPECT_EQ(c.eviction_policy, "lru");
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
  auto policy = apply_toml(c, "eviction_policy = \"mru\"\n", "f.toml");
  ASSERT_FALSE(policy);
  EXPECT_NE(policy.error().message.find("eviction_policy"), std::string::npos) << policy.error().message;
  EXPECT_NE(policy.error().message.find("s3fifo"), std::string::npos) << "lists the valid names";
  auto syntax = apply_toml(c, "max_sessions = \n", "f.toml");
  ASSERT_FALSE(syntax);
  EXPECT_NE(syntax.error().message.find("f.toml"), std::string::npos);
}

// eviction_policy "auto" (the default) is prefix, alone and in a cluster
// (it was lru for a cluster worker before its prefix policy counted
// idleness in the worker's share of the traffic); a named policy is kept.
TEST(Config, AutoEvictionIsPrefixAloneAndInAClusterAndANamedPolicyIsKept) {
  DaemonConfig c;
  EXPECT_EQ(c.eviction_policy, "auto");
  EXPECT_EQ(c.effective_eviction_policy(), "prefix");
  ASSERT_TRUE(apply_toml(c, "[cluster]\nlisten = \"127.0.0.1:0\"\n", "f.toml"));
  EXPECT_EQ(c.effective_eviction_policy(), "prefix");
  ASSERT_TRUE(apply_toml(c, "eviction_policy = \"lru\"\n", "f.toml"));
  EXPECT_EQ(c.effective_eviction_policy(), "lru");
  ASSERT_TRUE(apply_toml(c, "eviction_policy = \"auto\"\n", "f.toml"));
  EXPECT_EQ(c.effective_eviction_policy(), "prefix");
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

TEST(Config, BadFlagsExitWithCode2AndAMessage) {
  auto bad = parse({"--max-sessions", "0"});
  ASSERT_TRUE(bad.exit_code);
  EXPECT_EQ(*bad.exit_code, kExitBadConfig);
  EXPECT_NE(bad.exit_text.find("max_sessions"), std::string::npos) << bad.exit_text;
  for (const auto& args : std::vector<std::vector<std::string>>{{"--no-such-flag"},
                                                                {"--max-inflight", "abc"},
                                                                {"--socket-mode", "999"},
                                                                {"--host-pool-bytes", "12 parsecs"},
                                                                {"--log-level", "loud"},
                                                                {"--eviction-policy", "mru"},
                                                                {"--max-inflight"}}) {
    auto refused = parse(args);
    ASSERT_TRUE(refused.exit_code) << args[0];
    EXPECT_EQ(*refused.exit_code, kExitBadConfig) << args[0] << ": " << refused.exit_text;
    EXPECT_FALSE(refused.exit_text.empty());
  }
  auto help = parse({"--help"});
  ASSERT_TRUE(help.exit_code);
  EXPECT_EQ(*help.exit_code, 0);
  EXPECT_NE(help.exit_text.find("--request-timeout-ms"), std::string::npos);
  auto print = parse({"--print-config", "--socket-mode", "0640"});
  ASSERT_FALSE(print.exit_code);
  EXPECT_TRUE(print.print_config);
  EXPECT_NE(print.config.to_toml().find("socket_mode = '0640'"), std::string::npos) << print.config.to_toml();
}

// disk.policy names an eviction policy: anything else is refused while the
// configuration is read (flag or file), with exit code 2 and the valid names.
TEST(Config, UnknownDiskPolicyIsRefusedWithTheValidNames) {
  auto refused = parse({"--disk-policy", "fifo"});
  ASSERT_TRUE(refused.exit_code);
  EXPECT_EQ(*refused.exit_code, kExitBadConfig);
  EXPECT_NE(refused.exit_text.find("disk.policy"), std::string::npos) << refused.exit_text;
  EXPECT_NE(refused.exit_text.find("'fifo'"), std::string::npos) << refused.exit_text;
  EXPECT_NE(refused.exit_text.find("lru, s3fifo"), std::string::npos) << refused.exit_text;
  DaemonConfig c;
  auto file = apply_toml(c, "[disk]\npolicy = \"clock\"\n", "f.toml");
  ASSERT_FALSE(file);
  EXPECT_NE(file.error().message.find("disk.policy"), std::string::npos) << file.error().message;
  c.disk_policy = "";
  EXPECT_FALSE(c.validate());
  for (const char* name : {"lru", "s3fifo"}) {
    auto accepted = parse({"--disk-policy", name});
    ASSERT_FALSE(accepted.exit_code) << name << ": " << accepted.exit_text;
    EXPECT_EQ(accepted.config.disk_policy, name);
  }
}

// The GPU keys: devices (ordinals; the flag repeats) and pin_host_pools.
TEST(Config, GpuKeysLoadFromFileAndFlags) {
  DaemonConfig c = parse({}).config;
  ASSERT_TRUE(apply_toml(c, "devices = [1, 0]\npin_host_pools = false\n", "gpu.toml"));
  EXPECT_EQ(c.devices, (std::vector<int>{1, 0}));
  EXPECT_FALSE(c.pin_host_pools);
  DaemonConfig again;
  auto printed = apply_toml(again, c.to_toml(), "printed");
  ASSERT_TRUE(printed) << printed.error().to_string() << "\n" << c.to_toml();
  EXPECT_EQ(again.devices, c.devices);
  EXPECT_FALSE(again.pin_host_pools);

  auto command = parse({"--device", "2", "--device", "3", "--pin-host-pools", "off"});
  ASSERT_FALSE(command.exit_code) << command.exit_text;
  EXPECT_EQ(command.config.devices, (std::vector<int>{2, 3}));
  EXPECT_FALSE(command.config.pin_host_pools);
  EXPECT_TRUE(DaemonConfig{}.pin_host_pools);
  EXPECT_TRUE(DaemonConfig{}.devices.empty());

  for (const char* bad : {"devices = [-1]\n", "devices = [4294967296]\n", "devices = 0\n", "pin_host_pools = 1\n"}) {
    DaemonConfig refused;
    auto applied = apply_toml(refused, bad, "gpu.toml");
    ASSERT_FALSE(applied) << bad;
    EXPECT_NE(applied.error().message.find(bad[0] == 'd' ? "devices" : "pin_host_pools"), std::string::npos)
        << applied.error().message;
  }
  auto flag = parse({"--device", "gpu0"});
  ASSERT_TRUE(flag.exit_code);
  EXPECT_EQ(*flag.exit_code, kExitBadConfig);
  EXPECT_NE(flag.exit_text.find("devices"), std::string::npos) << flag.exit_text;
}

TEST(Config, SizesTakeUnits) {
  using config_values::format_size;
  using config_values::parse_size;
  EXPECT_EQ(parse_size("4096").value(), 4096U);
  EXPECT_EQ(parse_size("8GiB").value(), 8ULL << 30);
  EXPECT_EQ(parse_size("8 GiB").value(), 8ULL << 30);
  EXPECT_EQ(parse_size("256MiB").value(), 256ULL << 20);
  EXPECT_EQ(parse_size("64k").value(), 64ULL << 10);
  EXPECT_EQ(parse_size("2G").value(), 2ULL << 30);
  EXPECT_EQ(parse_size("3MB").value(), 3'000'000U);
  EXPECT_EQ(parse_size("7b").value(), 7U);
  for (auto bad : {"", "GiB", "1.5GiB", "-1", "12 parsecs", "99999999999999999999", "20000000TiB"}) {
    EXPECT_FALSE(parse_size(bad)) << bad;
  }
  EXPECT_EQ(format_size(256ULL << 20), "256MiB");
  EXPECT_EQ(format_size(8ULL << 30), "8GiB");
  EXPECT_EQ(format_size(1000), "1000");

  DaemonConfig c;
  ASSERT_TRUE(apply_toml(c, "host_pool_bytes = \"8GiB\"\nmax_frame_bytes = \"1MiB\"\n", "f.toml"));
  EXPECT_EQ(c.host_pool_bytes, 8ULL << 30);
  EXPECT_EQ(c.max_frame_bytes, 1U << 20);
  EXPECT_NE(c.to_toml().find("host_pool_bytes = '8GiB'"), std::string::npos) << c.to_toml();
  auto too_big = apply_toml(c, "max_frame_bytes = \"8GiB\"\n", "f.toml");
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message.find("max_frame_bytes"), std::string::npos);
  auto flags = parse({"--host-pool-bytes", "1GiB"});
  ASSERT_FALSE(flags.exit_code) << flags.exit_text;
  EXPECT_EQ(flags.config.host_pool_bytes, 1ULL << 30);
}

TEST(Config, ValidateChecksWhatTheParsersCheck) {
  DaemonConfig c;
  c.socket = "/tmp/ok.sock";
  EXPECT_TRUE(c.validate());
  c.socket = std::string(200, 'x');
  ASSERT_FALSE(c.validate());
  EXPECT_NE(c.validate().error().message.find("socket"), std::string::npos);
  c.socket = "/tmp/ok.sock";
  c.log_level = "loud";
  EXPECT_FALSE(c.validate());
  c.log_level = "info";
  c.copy_slots = 0;
  EXPECT_FALSE(c.validate());
}

// Every key and flag the code knows is in docs/configuration.md, and every
// key row of the docs is a key the code knows.
TEST(Config, DocsListEveryKey) {
  std::ifstream in(KVB_SOURCE_DIR "/docs/configuration.md");
  ASSERT_TRUE(in) << "cannot read docs/configuration.md";
  std::stringstream text;
  text << in.rdbuf();
  const std::string docs = text.str();
  std::set<std::string> known;
  for (const auto& key : config_keys()) {
    known.insert(key.name);
    EXPECT_NE(docs.find("| `" + key.name + "` |"), std::string::npos) << key.name << " has no row in the docs";
    EXPECT_NE(docs.find("`" + key.flag), std::string::npos) << key.flag << " is not in the docs";
  }
  std::istringstream lines(docs);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("| `")) continue;
    const auto end = line.find('`', 3);
    const std::string name = line.substr(3, end - 3);
    EXPECT_TRUE(known.contains(name)) << "docs/configuration.md documents '" << name << "', which is not a key";
  }
}

}  // namespace
}  // namespace kvb::daemon
