// DaemonProcess: a real kvblockd process for integration tests.
//
// Spawns the kvblockd binary of this build with a socket in a fresh temp
// dir, waits (bounded, on its log line — no sleeping) until it listens, keeps
// draining its stderr, and stops it with SIGTERM (or kills it) on request or
// in the destructor. Exit is awaited through a pidfd with a bounded timeout.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kvb::test {

class DaemonProcess {
 public:
  /// Starts `binary` with --socket <tmp>/kvblockd.sock plus `extra_args`.
  /// Check ready() (and log() on failure).
  explicit DaemonProcess(std::string binary, std::vector<std::string> extra_args = {},
                         std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess();

  [[nodiscard]] bool ready() const noexcept { return ready_; }
  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// Everything the daemon wrote to stderr so far.
  [[nodiscard]] std::string log() const;

  /// Sends `signal` (SIGSTOP, SIGCONT, SIGKILL, ...).
  void signal(int signal) const;
  /// SIGTERM, then waits for the exit; the exit status (as from waitpid), or
  /// nullopt when it did not exit within `timeout` (it is then SIGKILLed).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// SIGKILL and reap.
  void kill();

 private:
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool ready_ = false;
  bool reaped_ = false;
  int stderr_fd_ = -1;
  std::thread drain_;
  mutable std::mutex log_mutex_;
  std::string log_;
};

/// Runs `argv` to completion with a bounded timeout; returns its exit status
/// (waitpid form) and stdout, or nullopt on timeout (it is then killed).
struct ProgramResult {
  int status = -1;
  std::string out;
};
[[nodiscard]] std::optional<ProgramResult> run_program(const std::vector<std::string>& argv,
                                                       std::chrono::milliseconds timeout);

}  // namespace kvb::test
