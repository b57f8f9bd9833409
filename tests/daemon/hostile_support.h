// Helpers of the hostile-client suite (tests/daemon/hostile_*): what the
// daemon process costs (RSS, open fds, read from /proc) and whether a fresh
// client still gets its stats answered within a bound.
//
// KVB_TEST_KVBLOCKD=/path/to/kvblockd runs the suite against another build
// (e.g. one without a fix, to see its test fail).
#pragma once

#include <dirent.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "raw_client.h"
#include "support/daemon_process.h"
#include "test_engine.h"

namespace kvb::test {

/// The kvblockd under test: $KVB_TEST_KVBLOCKD, else the one built here.
inline std::string kvblockd_under_test() {
  const char* other = std::getenv("KVB_TEST_KVBLOCKD");
  return other != nullptr && *other != '\0' ? std::string(other) : std::string(KVBLOCKD_PATH);
}

/// What the daemon process costs right now.
struct ProcessUsage {
  long long rss_kib = -1;  // VmRSS
  int fds = -1;            // entries of /proc/<pid>/fd
};

inline ProcessUsage usage_of(pid_t pid) {
  ProcessUsage usage;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) usage.rss_kib = std::stoll(line.substr(6));
  }
  if (DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    usage.fds = 0;
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') ++usage.fds;
    }
    ::closedir(dir);
  }
  return usage;
}

/// A fresh connection's stats reply within `bound` (the daemon is alive and
/// not stalled); nullopt when none came.
inline std::optional<std::string> fresh_stats(const std::string& socket,
                                              std::chrono::milliseconds bound = std::chrono::seconds(5)) {
  RawClient client(socket);
  if (!client.connected()) return std::nullopt;
  if (!client.send(RequestId{1}, proto::StatsRequest{})) return std::nullopt;
  auto reply = client.reply_to(RequestId{1}, bound);
  if (!reply) return std::nullopt;
  auto body = proto::decode_reply_body<proto::StatsReply>(*reply);
  if (!body) return std::nullopt;
  return body->json;
}

/// Asks stats (bounded) until `key` reads `value`; the last value read. For
/// what has no event a client can wait on (a killed peer's EOF being
/// processed); each round trip is one more pass of the daemon's loop.
inline long long await_stat(const std::string& socket, const std::string& key, long long value,
                            std::chrono::milliseconds bound = std::chrono::seconds(10)) {
  RawClient client(socket);
  long long last = -1;
  const auto deadline = std::chrono::steady_clock::now() + bound;
  for (std::uint64_t id = 1; std::chrono::steady_clock::now() < deadline; ++id) {
    auto stats = client.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{});
    if (!stats) return last;
    last = stat_of(stats->json, key);
    if (last == value) return last;
  }
  return last;
}

/// Waits (bounded) until the daemon has read every byte `client` sent
/// (SIOCOUTQ: bytes the peer has not consumed), pacing each check with a
/// stats round trip on another connection; false on timeout.
inline bool await_all_read(RawClient& client, const std::string& socket,
                           std::chrono::milliseconds bound = std::chrono::seconds(30)) {
  RawClient pacer(socket);
  const auto deadline = std::chrono::steady_clock::now() + bound;
  for (std::uint64_t id = 1; std::chrono::steady_clock::now() < deadline; ++id) {
    int unread = 0;
    if (::ioctl(client.fd(), SIOCOUTQ, &unread) != 0 || unread == 0) return true;
    if (!pacer.call_body<proto::StatsReply>(RequestId{id}, proto::StatsRequest{})) return false;
  }
  return false;
}

/// Spawns the daemon with RLIMIT_NOFILE lowered to `nofile` (the daemon
/// raises its soft limit to this hard limit); the test's own limit is
/// restored afterwards (root may raise it again).
inline std::unique_ptr<DaemonProcess> daemon_with_fd_limit(rlim_t nofile, std::vector<std::string> args) {
  rlimit saved{};
  ::getrlimit(RLIMIT_NOFILE, &saved);
  rlimit low{nofile, nofile};
  ::setrlimit(RLIMIT_NOFILE, &low);
  auto daemon = std::make_unique<DaemonProcess>(kvblockd_under_test(), std::move(args));
  ::setrlimit(RLIMIT_NOFILE, &saved);
  return daemon;
}

}  // namespace kvb::test
