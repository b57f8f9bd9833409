#include "worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

extern char** environ;

namespace kvb::bench {

namespace {

using Clock = std::chrono::steady_clock;

/// kvblockd's start-up line "kvblockd <v> listening on <path>" (not its
/// "another kvblockd is already listening on" error).
bool has_listening_line(const std::string& log) {
  for (auto at = log.find("listening on"); at != std::string::npos; at = log.find("listening on", at + 1)) {
    if (at < 8 || log.compare(at - 8, 8, "already ") != 0) return true;
  }
  return false;
}

std::string bootstrap_in(const std::string& log) {
  static const std::regex line(R"(cluster: worker \S+ of cluster '[^']*' on (\S+:\d+))");
  std::smatch match;
  return std::regex_search(log, match, line) ? match[1].str() : std::string();
}

}  // namespace

WorkerProcess::~WorkerProcess() {
  stop();
  if (!dir_.empty() && std::getenv("KVB_BENCH_KEEP") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Status WorkerProcess::start(const std::string& binary, std::vector<std::string> args,
                            std::chrono::milliseconds timeout) {
  char dir_template[] = "/tmp/kvb-bench-cluster-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return fail(Errc::io_error, "mkdtemp failed");
  dir_ = dir_template;
  socket_ = dir_ + "/kvblockd.sock";
  log_path_ = dir_ + "/kvblockd.log";
  const bool cluster = std::find(args.begin(), args.end(), "--cluster-listen") != args.end();
  args.insert(args.begin(), {binary, "--socket", socket_});

  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) return fail(Errc::io_error, "cannot create {}", log_path_);
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
  const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(log_fd);
  if (rc != 0) {
    pid_ = -1;
    return fail(Errc::io_error, "cannot start {}: {}", binary, std::strerror(rc));
  }
  const auto until = Clock::now() + timeout;
  for (;;) {
    const std::string text = log();
    if (has_listening_line(text) && (!cluster || !(bootstrap_ = bootstrap_in(text)).empty())) return ok();
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return fail(Errc::unavailable, "kvblockd exited at start:\n{}", log_tail());
    }
    if (Clock::now() > until) return fail(Errc::timeout, "kvblockd did not start in time:\n{}", log_tail());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool WorkerProcess::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const {
  const auto until = Clock::now() + timeout;
  for (;;) {
    if (log().find(text) != std::string::npos) return true;
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void WorkerProcess::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  const auto until = Clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() > until) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
}

std::string WorkerProcess::log() const {
  std::ifstream in(log_path_);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string WorkerProcess::log_tail(std::size_t lines) const {
  std::string text = log();
  std::size_t at = text.size();
  for (std::size_t n = 0; n <= lines && at > 0; ++n) {
    const auto nl = text.rfind('\n', at - 1);
    if (nl == std::string::npos) return text;
    at = nl;
  }
  return text.substr(at);
}

Result<BenchEngine> attach_engine(const std::string& socket, const client::BlockShape& shape, std::uint64_t salt,
                                  std::uint32_t blocks, std::chrono::milliseconds timeout) {
  auto c = client::Client::connect(socket);
  if (!c) return tl::unexpected(c.error());
  (*c)->set_timeout(timeout);
  client::HelloParams hello;
  hello.client_name = "kvblockd-bench-cluster";
  hello.tenant_salt = salt;
  hello.shape = shape;
  if (auto h = (*c)->hello(hello); !h) return tl::unexpected(h.error());
  auto region = client::KvRegion::create(shape, client::WireLayoutKind::fully_contiguous, blocks);
  if (!region) return tl::unexpected(region.error());
  BenchEngine e{std::move(*c), std::make_unique<client::KvRegion>(std::move(*region))};
  if (auto st = e.client->register_kv(*e.region); !st) return tl::unexpected(st.error());
  return e;
}

}  // namespace kvb::bench
