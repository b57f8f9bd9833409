#include "daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

extern char** environ;

namespace kvb::test {

namespace {

using Clock = std::chrono::steady_clock;

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int remaining_ms(Clock::time_point until) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

/// posix_spawn with stdout/stderr redirected to the given fds (-1: inherit).
pid_t spawn(const std::vector<std::string>& args, int out_fd, int err_fd) {
  std::vector<char*> argv;
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
                             std::chrono::milliseconds ready_timeout) {
  char dir_template[] = "/tmp/kvb-client-test-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return;
  dir_ = dir_template;
  socket_ = dir_ + "/kvblockd.sock";
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return;
  std::vector<std::string> args = {std::move(binary), "--socket", socket_};
  for (auto& a : extra_args) args.push_back(std::move(a));
  pid_ = spawn(args, -1, pipefd[1]);
  ::close(pipefd[1]);
  stderr_fd_ = pipefd[0];
  if (pid_ < 0) return;
  pidfd_ = pidfd_open(pid_);

  // Wait for "listening on" in its log, bounded; the daemon logs it after listen().
  const auto until = Clock::now() + ready_timeout;
  std::string seen;
  char buf[4096];
  while (!ready_) {
    pollfd p{stderr_fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, remaining_ms(until));
    if (n <= 0) break;  // timeout
    const ssize_t got = ::read(stderr_fd_, buf, sizeof buf);
    if (got <= 0) break;  // the daemon exited
    seen.append(buf, static_cast<std::size_t>(got));
    ready_ = seen.find("listening on") != std::string::npos;
  }
  {
    std::lock_guard lock(log_mutex_);
    log_ = std::move(seen);
  }
  drain_ = std::thread([this] {
    char b[4096];
    for (;;) {
      const ssize_t got = ::read(stderr_fd_, b, sizeof b);
      if (got <= 0) return;
      std::lock_guard lock(log_mutex_);
      if (log_.size() < (4U << 20)) log_.append(b, static_cast<std::size_t>(got));
    }
  });
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0 && !reaped_) {
    if (!stop(std::chrono::seconds(10))) kill();
  }
  if (drain_.joinable()) drain_.join();
  if (stderr_fd_ >= 0) ::close(stderr_fd_);
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

void DaemonProcess::signal(int sig) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

std::optional<int> DaemonProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (reaped_ || pid_ <= 0) return std::nullopt;
  if (pidfd_ >= 0) {
    pollfd p{pidfd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  }
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
  reaped_ = true;
  return status;
}

std::optional<int> DaemonProcess::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || reaped_) return std::nullopt;
  ::kill(pid_, SIGCONT);  // in case a test stopped it
  ::kill(pid_, SIGTERM);
  auto status = wait_exit(timeout);
  if (!status) kill();
  return status;
}

void DaemonProcess::kill() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, SIGKILL);
  (void)wait_exit(std::chrono::seconds(10));
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
  bool timed_out = false;
  for (;;) {  // read stdout to EOF, bounded
    pollfd p{pipefd[0], POLLIN, 0};
    const int n = ::poll(&p, 1, remaining_ms(until));
    if (n <= 0) {
      timed_out = true;
      break;
    }
    const ssize_t got = ::read(pipefd[0], buf, sizeof buf);
    if (got <= 0) break;
    result.out.append(buf, static_cast<std::size_t>(got));
  }
  ::close(pipefd[0]);
  if (!timed_out && pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    timed_out = ::poll(&p, 1, remaining_ms(until)) <= 0;
  }
  if (timed_out) ::kill(pid, SIGKILL);
  ::waitpid(pid, &result.status, 0);
  if (pidfd >= 0) ::close(pidfd);
  if (timed_out) return std::nullopt;
  return result;
}

}  // namespace kvb::test
