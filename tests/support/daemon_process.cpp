#include "support/daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string_view>

extern char** environ;

namespace kvb::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kLogCap = 4U << 20;

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int remaining_ms(Clock::time_point until) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

/// poll() on one fd for POLLIN until `until`; true when readable (or hung up).
bool wait_readable(int fd, Clock::time_point until) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, remaining_ms(until));
    if (n > 0) return true;
    if (n == 0 || errno != EINTR) return false;
  }
}

/// Whether `log` has the daemon's start-up line "kvblockd <v> listening on
/// <path>" (logged after listen()); its "another kvblockd is already
/// listening on" start-up error does not count.
bool has_listening_line(const std::string& log) {
  const std::string_view text(log);
  for (std::size_t at = text.find("listening on"); at != std::string_view::npos;
       at = text.find("listening on", at + 1)) {
    if (at < 8 || text.substr(at - 8, 8) != "already ") return true;
  }
  return false;
}

/// The exit code of a waitpid status: the exit status, or 128 + signal.
int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

/// posix_spawn with stdout/stderr redirected to the given fds (-1: inherit).
pid_t spawn(const std::vector<std::string>& args, int out_fd, int err_fd) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

}  // namespace

DaemonProcess::DaemonProcess(std::string binary, std::vector<std::string> extra_args,
                             std::chrono::milliseconds ready_timeout)
    : DaemonProcess(Launcher{}, std::move(binary), std::move(extra_args), ready_timeout) {}

DaemonProcess::DaemonProcess(Launcher launcher, std::string binary, std::vector<std::string> extra_args,
                             std::chrono::milliseconds ready_timeout) {
  char dir_template[] = "/tmp/kvbd-test-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return;
  dir_ = dir_template;
  socket_ = dir_ + "/kvblockd.sock";
  bool own_socket = false;  // a --socket in extra_args replaces the temp one
  for (std::size_t i = 0; i + 1 < extra_args.size(); ++i) {
    if (extra_args[i] == "--socket") {
      socket_ = extra_args[i + 1];
      own_socket = true;
    }
  }
  std::vector<std::string> args = std::move(launcher.argv);
  args.push_back(std::move(binary));
  if (!own_socket) {
    args.push_back("--socket");
    args.push_back(socket_);
  }
  for (auto& a : extra_args) args.push_back(std::move(a));
  launch(std::move(args), has_listening_line, ready_timeout);
}

DaemonProcess::DaemonProcess(Command command, std::chrono::milliseconds ready_timeout) {
  char dir_template[] = "/tmp/kvbd-test-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return;
  dir_ = dir_template;
  for (auto& arg : command.argv) {
    for (auto at = arg.find("{dir}"); at != std::string::npos; at = arg.find("{dir}", at + dir_.size())) {
      arg.replace(at, 5, dir_);
    }
  }
  const std::string ready_text = std::move(command.ready_text);
  launch(
      std::move(command.argv), [&](const std::string& log) { return log.find(ready_text) != std::string::npos; },
      ready_timeout);
}

void DaemonProcess::launch(std::vector<std::string> args, const std::function<bool(const std::string&)>& ready,
                           std::chrono::milliseconds ready_timeout) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return;
  pid_ = spawn(args, pipefd[1], pipefd[1]);
  ::close(pipefd[1]);
  output_fd_ = pipefd[0];
  if (pid_ < 0) return;
  pidfd_ = pidfd_open(pid_);
  if (pidfd_ < 0) {  // no bounded way to await the exit: give up at once
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_code_ = exit_code_of(status);
    log_ = "DaemonProcess: pidfd_open failed\n";
    return;
  }

  // Wait for the ready line in its log, bounded (kvblockd logs "listening on" after listen()).
  const auto until = Clock::now() + ready_timeout;
  std::string seen;
  char buf[4096];
  while (!ready_ && wait_readable(output_fd_, until)) {
    const ssize_t got = ::read(output_fd_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the daemon exited
    seen.append(buf, static_cast<std::size_t>(got));
    ready_ = ready(seen);
  }
  {
    std::lock_guard lock(log_mutex_);
    log_ = std::move(seen);
  }
  // Keeps the pipe drained (the daemon never blocks on its log); ends at EOF,
  // i.e. when the daemon exits.
  drain_ = std::thread([this] {
    char b[4096];
    for (;;) {
      const ssize_t got = ::read(output_fd_, b, sizeof b);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return;
      {
        std::lock_guard lock(log_mutex_);
        if (log_.size() < kLogCap) log_.append(b, static_cast<std::size_t>(got));
      }
      log_grew_.notify_all();
    }
  });
}

bool DaemonProcess::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const {
  return wait_for_log_lines([text](std::string_view line) { return line.find(text) != std::string_view::npos; }, 1,
                            timeout);
}

bool DaemonProcess::wait_for_log_lines(const std::function<bool(std::string_view)>& match, std::size_t count,
                                       std::chrono::milliseconds timeout) const {
  std::unique_lock lock(log_mutex_);
  return log_grew_.wait_for(lock, timeout, [&] {
    std::size_t found = 0;
    std::string_view rest(log_);
    while (!rest.empty() && found < count) {
      const auto end = std::min(rest.find('\n'), rest.size());
      if (match(rest.substr(0, end))) ++found;
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
    return found >= count;
  });
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0 && !exit_code_) (void)stop(SIGTERM, std::chrono::seconds(10));  // SIGKILLs on timeout
  finish_log();
  if (output_fd_ >= 0) ::close(output_fd_);
  if (pidfd_ >= 0) ::close(pidfd_);
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string DaemonProcess::log() const {
  std::lock_guard lock(log_mutex_);
  return log_;
}

bool DaemonProcess::alive() const {
  if (pid_ <= 0 || exit_code_) return false;
  pollfd p{pidfd_, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;  // the pidfd turns readable when the process exits
}

void DaemonProcess::signal(int sig) const {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, sig);
}

std::optional<int> DaemonProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || exit_code_) return exit_code_;
  if (!wait_readable(pidfd_, Clock::now() + timeout)) return std::nullopt;
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
  exit_code_ = exit_code_of(status);
  finish_log();  // everything it wrote is in log() once its exit is seen
  return exit_code_;
}

std::optional<int> DaemonProcess::stop(int sig, std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || exit_code_) return exit_code_;
  ::kill(pid_, SIGCONT);  // in case a test stopped it
  ::kill(pid_, sig);
  auto code = wait_exit(timeout);
  if (!code) kill();
  return code;
}

void DaemonProcess::kill() {
  if (pid_ <= 0 || exit_code_) return;
  ::kill(pid_, SIGKILL);
  (void)wait_exit(std::chrono::seconds(10));
}

void DaemonProcess::finish_log() {
  // The process has exited (or never started), so the drain reaches EOF.
  if (drain_.joinable()) drain_.join();
}

ChildProgram::ChildProgram(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return;
  pid_ = spawn(argv, pipefd[1], -1);
  ::close(pipefd[1]);
  out_fd_ = pipefd[0];
  if (pid_ > 0) pidfd_ = pidfd_open(pid_);
}

ChildProgram::~ChildProgram() {
  kill();
  if (out_fd_ >= 0) ::close(out_fd_);
}

bool ChildProgram::wait_for(const std::string& text, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  char buf[4096];
  while (out_.find(text) == std::string::npos) {
    if (out_fd_ < 0 || !wait_readable(out_fd_, until)) return false;
    const ssize_t got = ::read(out_fd_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out_.append(buf, static_cast<std::size_t>(got));
  }
  return true;
}

void ChildProgram::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  if (pidfd_ >= 0) {
    (void)wait_readable(pidfd_, Clock::now() + std::chrono::seconds(10));
    ::close(pidfd_);
    pidfd_ = -1;
  }
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::optional<ProgramResult> run_program(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return std::nullopt;
  const pid_t pid = spawn(argv, pipefd[1], -1);
  ::close(pipefd[1]);
  if (pid < 0) {
    ::close(pipefd[0]);
    return std::nullopt;
  }
  const int pidfd = pidfd_open(pid);
  ProgramResult result;
  const auto until = Clock::now() + timeout;
  char buf[4096];
  bool timed_out = pidfd < 0;  // no bounded way to await it: treat as a failure
  while (!timed_out) {         // read stdout to EOF, bounded
    if (!wait_readable(pipefd[0], until)) {
      timed_out = true;
      break;
    }
    const ssize_t got = ::read(pipefd[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    result.out.append(buf, static_cast<std::size_t>(got));
  }
  ::close(pipefd[0]);
  if (!timed_out) timed_out = !wait_readable(pidfd, until);
  if (timed_out) ::kill(pid, SIGKILL);
  ::waitpid(pid, &result.status, 0);
  if (pidfd >= 0) ::close(pidfd);
  if (timed_out) return std::nullopt;
  return result;
}

}  // namespace kvb::test
