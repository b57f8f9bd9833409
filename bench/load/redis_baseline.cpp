#include "redis_baseline.h"

#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

extern char** environ;

namespace kvb::bench {

namespace {

/// Splits one CSV line of quoted fields.
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char ch : line) {
    if (ch == '"') {
      quoted = !quoted;
    } else if (ch == ',' && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else if (ch != '\r' && ch != '\n') {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

std::optional<RedisBaseline> run_redis_baseline(std::uint32_t clients, std::uint32_t requests, std::string& why) {
  char dir_template[] = "/tmp/kvb-redis-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    why = "mkdtemp failed";
    return std::nullopt;
  }
  const std::string dir = dir_template;
  const std::string sock = dir + "/redis.sock";
  std::vector<std::string> args = {"redis-server", "--port", "0",         "--unixsocket",    sock, "--save", "",
                                   "--dir",        dir,      "--logfile", dir + "/redis.log"};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
    why = "redis-server not found on PATH";
    std::filesystem::remove_all(dir);
    return std::nullopt;
  }
  auto stop_server = [&] {
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  };
  // Bounded wait for the socket (5 s).
  struct stat st {};
  bool up = false;
  for (int i = 0; i < 500 && !up; ++i) {
    up = ::stat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!up) {
    why = "redis-server did not create its socket within 5 s";
    stop_server();
    return std::nullopt;
  }
  RedisBaseline out;
  out.command = fmt::format("redis-benchmark -s {} -c {} -n {} -t get --csv", sock, clients, requests);
  std::FILE* p = ::popen((out.command + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) {
    why = "could not run redis-benchmark";
    stop_server();
    return std::nullopt;
  }
  char line[1024];
  bool found = false;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    auto f = csv_fields(line);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
    if (f.size() >= 7 && f[0] == "GET") {
      out.ops_per_s = std::strtod(f[1].c_str(), nullptr);
      out.p50_ms = std::strtod(f[4].c_str(), nullptr);
      out.p99_ms = std::strtod(f[6].c_str(), nullptr);
      found = true;
    }
  }
  const int rc = ::pclose(p);
  stop_server();
  if (!found || rc != 0) {
    why = fmt::format("redis-benchmark failed (exit {}) or printed no GET line", rc);
    return std::nullopt;
  }
  out.command = fmt::format("redis-benchmark -s SOCK -c {} -n {} -t get", clients, requests);
  return out;
}

}  // namespace kvb::bench
