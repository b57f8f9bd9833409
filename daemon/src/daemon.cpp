// run_daemon: builds the daemon's parts, listens, and shuts down gracefully.
#include "kvb/daemon/daemon.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "cluster/cluster_node.h"
#include "daemon_core.h"
#include "kvb/common/logging.h"
#include "kvb/kernels/copy_engines.h"
#include "kvb/kernels/cuda_regions.h"
#include "metrics_server.h"
#include "session.h"

namespace kvb::daemon {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;

std::uint64_t raise_fd_limit() noexcept {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

namespace {

/// How long shutdown waits for sessions to take their last answers before
/// closing them regardless.
constexpr auto kShutdownGrace = std::chrono::seconds(5);

/// ok when nothing listens on `path` (a stale socket file is removed);
/// unavailable when another daemon answers there.
Status claim_socket_path(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return kvb::ok();
  if (!S_ISSOCK(st.st_mode)) return fail(Errc::already_exists, "socket path '{}' exists and is not a socket", path);
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  const bool alive = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (probe >= 0) ::close(probe);
  if (alive) return fail(Errc::unavailable, "another kvblockd is already listening on '{}'", path);
  ::unlink(path.c_str());
  return kvb::ok();
}

/// Writes one error frame without waiting (a fresh socket has room) and closes.
void refuse_connection(Local::socket& socket, Errc code, const std::string& message) {
  auto frame = proto::encode_message(RequestId{0}, proto::ErrorFrame{code, message});
  if (frame) (void)::send(socket.native_handle(), frame->data(), frame->size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  boost::system::error_code ec;
  socket.close(ec);
}

BlockServiceOptions block_service_options(const DaemonConfig& config, const CopyEngines& engines, DiskSettings disk) {
  BlockServiceOptions options;
  options.host_pool_bytes = config.host_pool_bytes;
  options.max_layouts = config.max_layouts;
  options.max_pool_blocks = config.max_pool_blocks;
  options.disk = std::move(disk);
  options.check_host_blocks = config.integrity_check_host_blocks;
  options.eviction_policy = config.effective_eviction_policy();
  options.prefault = config.prefault;
  options.prefault_engine_regions = config.prefault_engine_regions;
  if (engines.has_cuda() && config.pin_host_pools) {
    options.pin = [](std::byte* base, std::uint64_t bytes) -> Result<std::unique_ptr<MemoryRegion>> {
      auto pinned = PinnedHostRegion::register_existing(base, bytes);
      if (!pinned) return tl::unexpected(pinned.error());
      return std::unique_ptr<MemoryRegion>(std::move(*pinned));
    };
  }
  return options;
}

class Daemon {
 public:
  Daemon(const DaemonConfig& config, asio::io_context& io, CopyEngines& engines, DiskSettings disk)
      : io_(io),
        blocks_(io, engines, block_service_options(config, engines, std::move(disk))),
        admission_(std::string(engines.host().name()), config.copy_slots, config.copy_queue),
        deadlines_(io),
        core_{config, io, blocks_, admission_, deadlines_, metrics_},
        acceptor_(io),
        signals_(io, SIGTERM, SIGINT),
        grace_(io),
        metrics_server_(io, [this] {
          std::string text = metrics_.render(core_);
          if (cluster_) text += cluster_->prometheus();  // per-peer gauges
          return text;
        }) {
    core_.gpu_present = engines.has_cuda();
    allowed_uids_ = config.allowed_uids;
    if (allowed_uids_.empty()) allowed_uids_.push_back(::getuid());
    core_.operator_uids = config.operator_uids;
    if (core_.operator_uids.empty()) core_.operator_uids.push_back(::getuid());
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
      core_.fd_limit = nofile.rlim_cur;
      if (config.max_sessions + DaemonCore::kReservedFds > core_.fd_limit) {
        spdlog::warn(
            "max_sessions {} does not fit the open file limit {} ({} kept for the daemon): connections "
            "past {} are refused; raise the hard nofile limit",
            config.max_sessions, core_.fd_limit, DaemonCore::kReservedFds,
            core_.fd_limit > DaemonCore::kReservedFds ? core_.fd_limit - DaemonCore::kReservedFds : 0);
      }
    }
  }

  Status start() {
    if (auto disk = blocks_.start_disk(); !disk) return disk;
    auto tenants = TenantKeys::load(core_.config);
    if (!tenants) return tl::unexpected(tenants.error());
    core_.tenants = std::move(*tenants);
    spdlog::info("tenant keys: one namespace per uid{}; secret {}",
                 core_.config.tenants_shared_uids.empty()
                     ? std::string()
                     : fmt::format(", uids {} share one", fmt::join(core_.config.tenants_shared_uids, ",")),
                 core_.tenants->source());
    const auto& path = core_.config.socket;
    if (auto claimed = claim_socket_path(path); !claimed) return claimed;
    boost::system::error_code ec;
    acceptor_.open(Local(), ec);
    if (!ec) acceptor_.bind(Local::endpoint(path), ec);
    if (!ec) acceptor_.listen(4096, ec);
    if (ec) return fail(Errc::io_error, "cannot listen on '{}': {}", path, ec.message());
    if (::chmod(path.c_str(), core_.config.socket_mode) != 0) {
      return fail(Errc::io_error, "chmod {:o} '{}': {}", core_.config.socket_mode, path, std::strerror(errno));
    }
    if (core_.config.metrics_port != 0) {
      if (auto started = metrics_server_.start(core_.config.metrics_port); !started) {
        ::unlink(path.c_str());
        return started;
      }
    }
    if (!core_.config.cluster_listen.empty()) {
      if (auto joined = start_cluster(); !joined) {
        ::unlink(path.c_str());
        return joined;
      }
    }
    signals_.async_wait([this](const boost::system::error_code& error, int signal) {
      if (error) return;
      spdlog::info("signal {} received: shutting down", signal);
      begin_shutdown();
    });
    asio::co_spawn(io_, accept_loop(), asio::detached);
    spdlog::info("kvblockd {} listening on {} (mode {:04o}, copy engine {}, eviction {}{}, metrics {})", KVB_VERSION,
                 path, core_.config.socket_mode, admission_.engine_name(), core_.config.effective_eviction_policy(),
                 core_.config.eviction_policy == "auto" ? " (auto)" : "",
                 core_.config.metrics_port != 0 ? fmt::format("http://127.0.0.1:{}/metrics", core_.config.metrics_port)
                                                : std::string("off"));
    return kvb::ok();
  }

  /// This daemon as a worker of a cluster (docs/cluster.md).
  Status start_cluster() {
    const DaemonConfig& c = core_.config;
    cluster_ = std::make_unique<cluster::ClusterNode>(
        io_, blocks_,
        cluster::ClusterSettings{.listen = c.cluster_listen,
                                 .name = c.cluster_name,
                                 .worker = c.cluster_worker,
                                 .peers = c.cluster_peers,
                                 .etcd = c.cluster_etcd,
                                 .lease_ttl_s = c.cluster_lease_ttl_s,
                                 .tls = c.cluster_tls,
                                 .spin_us = c.cluster_spin_us,
                                 .cache_fetched = c.cluster_cache_fetched,
                                 .cache_same_host = c.cluster_cache_same_host,
                                 .map_same_host = c.cluster_map_same_host,
                                 .connect_by_address = c.cluster_connect == "address",
                                 .fetch_part_bytes = c.cluster_fetch_part_bytes,
                                 .fetch_into_engine = c.cluster_fetch_into_engine,
                                 .max_concurrent = c.cluster_max_concurrent,
                                 .max_queued = c.cluster_max_queued,
                                 .fetch_concurrency = c.cluster_fetch_concurrency,
                                 .index_flush_ms = c.cluster_index_flush_ms,
                                 .fetch_timeout_ms = c.request_timeout_ms});
    if (auto started = cluster_->start(); !started) {
      cluster_.reset();
      return started;
    }
    // Worker names and etcd's errors come from other processes: text that is
    // not UTF-8 is replaced, not thrown on (it would fail every stats call).
    core_.cluster_stats = [this] {
      return cluster_->stats().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    return kvb::ok();
  }

  /// After io.run() returned: every lease has ended.
  void finish() {
    ::unlink(core_.config.socket.c_str());
    spdlog::info("kvblockd stopped");
  }

 private:
  asio::awaitable<void> accept_loop() {
    asio::steady_timer backoff(io_);
    while (acceptor_.is_open()) {
      boost::system::error_code ec;
      Local::socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (!acceptor_.is_open()) co_return;
      if (ec) {
        spdlog::warn("accept failed: {} (retrying in 50 ms)", ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      admit(std::move(socket));
    }
  }

  void admit(Local::socket socket) {
    ucred cred{};
    socklen_t length = sizeof(cred);
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
      metrics_.connection_refused("no_credentials");
      return refuse_connection(socket, Errc::permission_denied, "cannot read the peer's credentials");
    }
    if (std::find(allowed_uids_.begin(), allowed_uids_.end(), cred.uid) == allowed_uids_.end()) {
      spdlog::warn("refused a connection from uid {} pid {}: uid not allowed", cred.uid, cred.pid);
      metrics_.connection_refused("uid");
      return refuse_connection(socket, Errc::permission_denied,
                               fmt::format("uid {} is not allowed to attach (allowed_uids)", cred.uid));
    }
    if (core_.connections.size() >= core_.config.max_sessions) {
      metrics_.connection_refused("max_sessions");
      return refuse_connection(socket, Errc::out_of_capacity,
                               fmt::format("{} sessions are attached (max_sessions)", core_.connections.size()));
    }
    // A connection takes one fd for good: passed fds held by unfinished
    // frames make room first (the connection holding the most is closed).
    while (core_.fd_room() == 0 && core_.evict_biggest(/*fds=*/true, nullptr, 0, "a new connection needs an fd")) {
    }
    if (core_.fd_room() == 0) {
      metrics_.connection_refused("fds");
      return refuse_connection(
          socket, Errc::out_of_capacity,
          fmt::format("{} connections use the open file limit {} ({} kept for the daemon): raise the nofile limit",
                      core_.connections.size(), core_.fd_limit, DaemonCore::kReservedFds));
    }
    auto session = std::make_shared<Session>(core_, SessionId{core_.next_session_id++}, std::move(socket), cred.uid);
    session->start();
  }

  /// Stops accepting and ends every session (their pending requests answered
  /// err(shutting down)). The loop then runs until every connection has
  /// closed: each closes once its answers are flushed, or when the grace
  /// period is over, whichever comes first; the last close cancels the
  /// grace timer (DaemonCore::on_all_closed), and io.run() returns once the
  /// copies still running have finished.
  void begin_shutdown() {
    if (core_.shutting_down) return;
    core_.shutting_down = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    ::unlink(core_.config.socket.c_str());
    metrics_server_.stop();
    if (cluster_) cluster_->stop([] { spdlog::info("cluster: left"); });
    const auto before = core_.totals();
    spdlog::info("shutting down: {} sessions, {} connections, {} requests in flight, {} copies running",
                 before.sessions, core_.connections.size(), before.inflight_requests, blocks_.copies_in_flight());
    deadlines_.stop();
    if (close_each([](Session& session) { session.shutdown(); }) == 0) return;
    core_.on_all_closed = [this] { grace_.cancel(); };
    grace_.expires_after(kShutdownGrace);
    grace_.async_wait([this](const boost::system::error_code& error) {
      if (error) return;
      spdlog::warn("shutdown grace of {} s over: closing {} connections that have not taken their answers",
                   kShutdownGrace.count(), core_.connections.size());
      close_each([](Session& session) { session.force_close(); });
    });
  }

  /// Runs `action` on every registered connection (a snapshot: actions may
  /// close them); the connections still open afterwards.
  template <class Action>
  std::size_t close_each(Action action) {
    std::vector<std::shared_ptr<Session>> live;
    live.reserve(core_.connections.size());
    for (auto& [id, session] : core_.connections) live.push_back(session->shared_from_this());
    for (auto& session : live) action(*session);
    return core_.connections.size();
  }

  asio::io_context& io_;
  BlockService blocks_;
  CopyAdmission admission_;
  DeadlineQueue deadlines_;
  Metrics metrics_;
  DaemonCore core_;
  Local::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer grace_;
  MetricsServer metrics_server_;
  std::vector<std::uint32_t> allowed_uids_;
  std::unique_ptr<cluster::ClusterNode> cluster_;  // destroyed before blocks_
};

}  // namespace

int run_daemon(const DaemonConfig& config) {
  if (auto logging = setup_logging(config.log_level); !logging) {
    std::fprintf(stderr, "kvblockd: %s\n", logging.error().message.c_str());
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const auto fd_limit = raise_fd_limit();
  spdlog::info("open file limit: {}", fd_limit);
  CopyEngineOptions engine_options;
  engine_options.host.workers = config.copy_threads;
  engine_options.devices = config.devices;
  CopyEngines engines(engine_options);
  for (const int ordinal : config.devices) {
    if (engines.device(ordinal) == nullptr) {
      spdlog::critical("kvblockd cannot start: devices names CUDA device {}, which is not usable here ({})", ordinal,
                       engines.has_cuda() ? "see the copy engines line above" : engines.cuda_unavailable());
      return 1;
    }
  }
  // One thread runs the loop and starts every socket/timer operation; copy
  // engine threads only post() completions. So the reactor's per-descriptor
  // locks can go (the scheduler keeps its lock for those posts).
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO);
  auto disk = disk_settings(config);
  if (!disk) {
    spdlog::critical("kvblockd cannot start: {}", disk.error().to_string());
    return 2;
  }
  {
    Daemon daemon(config, io, engines, std::move(*disk));
    if (auto started = daemon.start(); !started) {
      spdlog::critical("kvblockd cannot start: {}", started.error().to_string());
      return 1;
    }
    io.run();
    daemon.finish();
  }
  return 0;
}

}  // namespace kvb::daemon
