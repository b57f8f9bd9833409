// DaemonProcess: the real kvblockd binary, spawned on a temporary socket for
// one test, and stopped (SIGTERM, exit code checked by the caller) after it.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kvb::test {

class DaemonProcess {
 public:
  /// Spawns kvblockd with `extra_args` on a socket in a fresh temp dir and
  /// waits (bounded) until it accepts connections. Check ready() after.
  explicit DaemonProcess(std::vector<std::string> extra_args = {}) {
    char pattern[] = "/tmp/kvbd-test-XXXXXX";
    dir_ = ::mkdtemp(pattern);
    socket_ = dir_ + "/kvblockd.sock";
    log_ = dir_ + "/kvblockd.log";
    // A --socket in extra_args replaces the temp socket.
    for (std::size_t i = 0; i + 1 < extra_args.size(); ++i) {
      if (extra_args[i] == "--socket") socket_ = extra_args[i + 1];
    }
    std::vector<std::string> args = {KVBLOCKD_PATH, "--log-level", "info"};
    if (std::find(extra_args.begin(), extra_args.end(), "--socket") == extra_args.end()) {
      args.push_back("--socket");
      args.push_back(socket_);
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (::posix_spawn(&pid_, KVBLOCKD_PATH, &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ready_ = pid_ > 0 && wait_ready(std::chrono::seconds(20));
  }

  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  ~DaemonProcess() {
    if (pid_ > 0 && !exit_code_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  [[nodiscard]] bool ready() const noexcept { return ready_; }
  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] std::string log() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  /// Sends `signal` and waits up to `timeout` for the exit; the exit code
  /// (128 + signal when killed by one), or nullopt on timeout.
  std::optional<int> stop(int signal = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return std::nullopt;
    if (!exit_code_) ::kill(pid_, signal);
    return wait_exit(timeout);
  }

  /// Waits up to `timeout` for the process to exit on its own; its exit code.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    if (exit_code_ || pid_ <= 0) return exit_code_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // bounded poll of waitpid
    }
    return std::nullopt;
  }

  /// Whether the process is still running.
  [[nodiscard]] bool alive() const { return pid_ > 0 && !exit_code_ && ::kill(pid_, 0) == 0; }

 private:
  bool wait_ready(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
      const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      ::close(fd);
      if (ok) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // died during start-up
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // bounded poll of connect()
    }
    return false;
  }

  std::string dir_;
  std::string socket_;
  std::string log_;
  pid_t pid_ = -1;
  bool ready_ = false;
  std::optional<int> exit_code_;
};

}  // namespace kvb::test
