// DaemonProcess: a real kvblockd process for integration tests.
//
// Spawns the given kvblockd binary on a socket in a fresh temp dir (or the
// one a `--socket` in the extra args names), waits bounded on its "listening
// on" log line (read through a pipe with poll(), no sleeping), keeps draining
// its stdout+stderr into log(), and awaits its exit through a pidfd with a
// bounded poll(). The destructor stops it (SIGTERM, then SIGKILL) if a test
// did not. Exit codes are the process's exit status, or 128 + signal number
// when a signal ended it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kvb::test {

class DaemonProcess {
 public:
  /// Starts `binary` with --socket <tmp>/kvblockd.sock (unless `extra_args`
  /// has its own --socket) plus `extra_args`; waits up to `ready_timeout` for
  /// it to listen. Check ready() (and log() on failure). Needs the default
  /// log level (info or lower): readiness is its "listening on" line.
  explicit DaemonProcess(std::string binary, std::vector<std::string> extra_args = {},
                         std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  /// As above, started through `launcher` (e.g. {"/usr/sbin/ip", "netns",
  /// "exec", "ns1"}: the daemon in a network namespace). The launcher must
  /// exec the daemon in its own process, so that signals and the pidfd
  /// reach the daemon itself.
  struct Launcher {
    std::vector<std::string> argv;
  };
  DaemonProcess(Launcher launcher, std::string binary, std::vector<std::string> extra_args,
                std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  /// Another long-running program (etcd, ...): `argv` as given (argv[0] a
  /// path; every "{dir}" in it becomes the fresh temp dir, removed by the
  /// destructor), ready once its stdout+stderr contain `ready_text`.
  struct Command {
    std::vector<std::string> argv;
    std::string ready_text;
  };
  explicit DaemonProcess(Command command, std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess();

  /// Whether the daemon logged that it listens (it accepts connections).
  [[nodiscard]] bool ready() const noexcept { return ready_; }
  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// The temp dir made for this process (removed by the destructor).
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
  /// Everything the daemon wrote to stdout/stderr so far (capped at 4 MiB).
  [[nodiscard]] std::string log() const;
  /// Waits (on the log's growth, bounded) until log() contains `text`; false
  /// on timeout. For events another process causes, e.g. "session 3 ended"
  /// at --log-level debug.
  [[nodiscard]] bool wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const;
  /// Waits (bounded) until `count` lines of log() satisfy `match`.
  [[nodiscard]] bool wait_for_log_lines(const std::function<bool(std::string_view)>& match, std::size_t count,
                                        std::chrono::milliseconds timeout) const;
  /// Whether the process is still running (not exited, not reaped).
  [[nodiscard]] bool alive() const;

  /// Sends `signal` (SIGSTOP, SIGCONT, ...) without waiting. No-op once reaped.
  void signal(int signal) const;
  /// SIGCONT (in case a test stopped it), then `signal`, then waits up to
  /// `timeout` for the exit; its exit code, or nullopt when it did not exit
  /// in time (it is then SIGKILLed and reaped). Idempotent: once reaped,
  /// returns the recorded exit code.
  std::optional<int> stop(int signal = SIGTERM, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  /// Waits up to `timeout` for the process to exit on its own; its exit code,
  /// or nullopt on timeout (it keeps running).
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  /// SIGKILL and reap (bounded). Idempotent.
  void kill();

 private:
  /// Spawns `args`, waits (bounded) until `ready` holds for its output so far.
  void launch(std::vector<std::string> args, const std::function<bool(const std::string&)>& ready,
              std::chrono::milliseconds ready_timeout);
  void finish_log();

  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool ready_ = false;
  std::optional<int> exit_code_;  // set once reaped
  int output_fd_ = -1;
  std::thread drain_;
  mutable std::mutex log_mutex_;
  mutable std::condition_variable log_grew_;
  std::string log_;
};

/// A child program that keeps running (an engine a test kills): its stdout is
/// read on demand. The destructor SIGKILLs and reaps it.
class ChildProgram {
 public:
  explicit ChildProgram(const std::vector<std::string>& argv);
  ChildProgram(const ChildProgram&) = delete;
  ChildProgram& operator=(const ChildProgram&) = delete;
  ~ChildProgram();

  /// Reads its stdout until it contains `text`; false at EOF or after `timeout`.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout);
  /// Its stdout so far.
  [[nodiscard]] const std::string& out() const noexcept { return out_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// SIGKILL and reap (bounded). Idempotent.
  void kill();

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int out_fd_ = -1;
  std::string out_;
};

/// A finished child program: `status` in waitpid form (use WIFEXITED /
/// WEXITSTATUS), `out` its whole stdout.
struct ProgramResult {
  int status = -1;
  std::string out;
};
/// Runs `argv` (argv[0] a path) to completion with a bounded timeout; its
/// result, or nullopt on timeout or spawn failure (it is then SIGKILLed).
[[nodiscard]] std::optional<ProgramResult> run_program(const std::vector<std::string>& argv,
                                                       std::chrono::milliseconds timeout);

}  // namespace kvb::test
