#include "transport_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <istream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace kvb::transport::test {

std::string param_name(const testing::TestParamInfo<TransportParam>& info) {
  return info.param.tls + (info.param.mode == PeerMode::in_process ? "_in_process" : "_two_process") +
         (info.param.spin.count() > 0 ? "_spinning" : "");
}

namespace {

class InProcessRemote : public Remote {
 public:
  InProcessRemote(asio::io_context& io, const std::string& tls, std::chrono::microseconds spin) {
    context_ = std::make_unique<Context>(ContextOptions{.tls = tls});
    worker_ = std::make_unique<Worker>(*context_, io.get_executor(), WorkerOptions{.spin = spin});
    worker_->start();
    manager_ = std::make_unique<ActiveMessageManager>(
        *worker_, AmOptions{.max_concurrent = kPeerMaxConcurrent, .max_queued = kPeerMaxQueued});
    service_ = std::make_unique<PeerService>(*context_, *manager_);
    auto p = manager_->listen("127.0.0.1", 0);
    if (!p) throw TransportError(p.error());
    port = *p;
    address = worker_->address();
  }
  ~InProcessRemote() override { kill(); }
  asio::awaitable<void> wait_parked(std::size_t n) override { co_await service_->wait_parked(n); }
  asio::awaitable<std::string> stats() override { co_return service_->stats_line(); }
  asio::awaitable<void> release() override {
    service_->release();
    co_return;
  }
  void kill() override {
    service_.reset();
    manager_.reset();  // force-closes the endpoints: the client sees the peer go
    worker_.reset();
    context_.reset();
  }

 private:
  std::unique_ptr<Context> context_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<ActiveMessageManager> manager_;
  std::unique_ptr<PeerService> service_;
};

/// Reads one line from `fd` within `timeout_ms` (blocking, before the loop runs).
std::string read_line_blocking(int fd, int timeout_ms) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) break;
    char c;
    if (::read(fd, &c, 1) != 1) break;
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line;
}

class ChildProcessRemote : public Remote {
 public:
  ChildProcessRemote(asio::io_context& io, const std::string& tls) : out_(io) {
    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    const std::string conc = std::to_string(kPeerMaxConcurrent);
    const std::string queued = std::to_string(kPeerMaxQueued);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(to_child[0], STDIN_FILENO);
      ::dup2(from_child[1], STDOUT_FILENO);
      const char* argv[] = {KVB_TEST_PEER_PATH, tls.c_str(), conc.c_str(), queued.c_str(), nullptr};
      ::execv(KVB_TEST_PEER_PATH, const_cast<char* const*>(argv));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    in_fd_ = to_child[1];
    const int out_fd = from_child[0];
    const std::string first = read_line_blocking(out_fd, 10000);
    if (!first.starts_with("port ")) {
      ::close(out_fd);
      reap();
      throw TransportError(
          Error{Errc::unavailable, fmt::format("transport_test_peer ({}) did not start: '{}'", tls, first)});
    }
    port = static_cast<std::uint16_t>(std::stoul(first.substr(5)));
    const std::string second = read_line_blocking(out_fd, 10000);
    if (!second.starts_with("address ")) {
      ::close(out_fd);
      reap();
      throw TransportError(
          Error{Errc::internal, fmt::format("transport_test_peer sent '{}', not its address", second)});
    }
    address = from_hex(second.substr(8));
    out_.assign(out_fd);
  }
  ~ChildProcessRemote() override {
    if (pid_ > 0) {
      const char quit[] = "quit\n";
      (void)!::write(in_fd_, quit, sizeof(quit) - 1);
      reap();
    }
    if (in_fd_ >= 0) ::close(in_fd_);
  }
  asio::awaitable<void> wait_parked(std::size_t n) override {
    const auto reply = co_await command(fmt::format("wait_parked {}", n));
    EXPECT_EQ(reply, "ok");
  }
  asio::awaitable<std::string> stats() override { co_return co_await command("stats"); }
  asio::awaitable<void> release() override {
    const auto reply = co_await command("release");
    EXPECT_EQ(reply, "ok");
  }
  void kill() override {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    reap();
  }

 private:
  asio::awaitable<std::string> command(std::string line) {
    line.push_back('\n');
    if (::write(in_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) co_return "write failed";
    boost::system::error_code ec;
    co_await asio::async_read_until(out_, buf_, '\n', asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return "read failed: " + ec.message();
    std::istream is(&buf_);
    std::string reply;
    std::getline(is, reply);
    co_return reply;
  }
  /// Waits (bounded, on a pidfd) for the child to exit, else SIGKILLs it.
  void reap() {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) ::kill(pid_, SIGKILL);
      ::close(pidfd);
    } else {
      ::kill(pid_, SIGKILL);
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int in_fd_ = -1;
  asio::posix::stream_descriptor out_;
  asio::streambuf buf_;
};

}  // namespace

void TransportTest::SetUp() {
  const auto& param = GetParam();
  try {
    context_ = std::make_unique<Context>(ContextOptions{.tls = param.tls});
    worker_ = std::make_unique<Worker>(*context_, io_.get_executor(), WorkerOptions{.spin = param.spin});
  } catch (const TransportError& e) {
    GTEST_SKIP() << "UCX_TLS=" << param.tls << " is not available here: " << e.what();
  }
  worker_->start();
  client_ = std::make_unique<ActiveMessageManager>(*worker_, AmOptions{.max_payload = std::size_t{64} << 20});
  try {
    if (param.mode == PeerMode::in_process) {
      remote_ = std::make_unique<InProcessRemote>(io_, param.tls, param.spin);
    } else {
      remote_ = std::make_unique<ChildProcessRemote>(io_, param.tls);
    }
  } catch (const TransportError& e) {
    if (e.error().code == Errc::unavailable) GTEST_SKIP() << "UCX_TLS=" << param.tls << ": " << e.what();
    FAIL() << "peer setup: " << e.what();
  }
  auto st = param.tls == "sm" ? client_->connect_address(kPeer, remote_->address)
                              : client_->connect(kPeer, "127.0.0.1", remote_->port);
  ASSERT_TRUE(st) << st.error().to_string();
}

void TransportTest::TearDown() {
  remote_.reset();
  client_.reset();
  worker_.reset();
  context_.reset();
}

void TransportTest::run(std::function<asio::awaitable<void>()> body, std::chrono::seconds budget) {
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io_, body(), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  const auto deadline = std::chrono::steady_clock::now() + budget;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io_.run_one_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(done) << "test body did not finish within " << budget.count() << " s";
  if (error) std::rethrow_exception(error);
}

}  // namespace kvb::transport::test
