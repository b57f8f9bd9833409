// kvblockd-bench transport: block-transfer GB/s and active-message round
// trips per second between two processes over loopback, beside ucx_perftest
// measured in the same run.
//   kvblockd-bench transport --tls tcp|sm --size BYTES --iters N [--repeat R]
// The parent re-executes itself with the hidden `--role server`; the server
// allocates and registers a destination, the client moves `iters` blocks of
// `size` bytes into it (batches of --window, complete = in the peer's memory,
// then one notification), then times --am-iters sequential 64-byte requests.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <nlohmann/json.hpp>

#include "kvb/common/logging.h"
#include "kvb/transport/block_transfer.h"
#include "subcommands.h"
#include "transport/perftest_baseline.h"

namespace kvb::bench {
namespace {

namespace asio = boost::asio;
using namespace kvb::transport;
using clock_type = std::chrono::steady_clock;

struct Flags {
  std::string tls = "tcp";
  std::size_t size = 1 << 20;
  std::size_t iters = 200;
  std::size_t am_iters = 20000;
  std::size_t am_window = 16;
  std::size_t window = 0;  // 0: enough blocks for >= 64 MiB per batch (16..1024)
  int spin_us = 50;
  bool baseline = true;
  bool pin = true;
  int repeat = 1;
  bool err_baseline = true;
  std::string role = "client";
};

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)::sched_setaffinity(0, sizeof(set), &set);
}

std::string hex(std::span<const std::byte> bytes) {
  std::string out;
  for (auto b : bytes) out += fmt::format("{:02x}", std::to_integer<unsigned>(b));
  return out;
}

std::vector<std::byte> unhex(std::string_view s) {
  std::vector<std::byte> out(s.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(std::stoul(std::string(s.substr(2 * i, 2)), nullptr, 16));
  }
  return out;
}

// ---- server ---------------------------------------------------------------

int run_server(const Flags& f) {
  asio::io_context io;
  Context context(ContextOptions{.tls = f.tls});
  Worker worker(context, io.get_executor(), WorkerOptions{.spin = std::chrono::microseconds(f.spin_us)});
  worker.start();
  ActiveMessageManager manager(worker, AmOptions{.max_concurrent = 64, .max_queued = 4096});
  std::unique_ptr<MemoryRegistration> reg;
  auto check = [](Status st) {
    if (!st) throw TransportError(st.error());
  };
  check(manager.register_handler("alloc", [&](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    std::uint64_t size = 0;
    if (m.payload.size() == 8) std::memcpy(&size, m.payload.data(), 8);
    if (reg) manager.unexpose(*reg);
    reg.reset();
    auto r = MemoryRegistration::allocate(context, size);
    if (!r) co_return tl::unexpected(r.error());
    reg = std::move(*r);
    std::memset(reg->address(), 0, size);
    manager.expose(*reg);
    const auto address = reinterpret_cast<std::uint64_t>(reg->address());
    Bytes reply(8 + reg->packed_rkey().size());
    std::memcpy(reply.data(), &address, 8);
    std::memcpy(reply.data() + 8, reg->packed_rkey().data(), reg->packed_rkey().size());
    co_return reply;
  }));
  check(manager.register_handler(
      "ping", [](IncomingMessage m) -> asio::awaitable<Result<Bytes>> { co_return std::move(m.payload); }));
  // The same echo from a synchronous handler (no coroutine on this side);
  // "echo" has the length of "ping", so both messages are the same size.
  check(
      manager.register_sync_handler("echo", [](IncomingMessage& m) -> Result<Bytes> { return std::move(m.payload); }));
  check(manager.register_handler("done", [](IncomingMessage) -> asio::awaitable<Result<Bytes>> { co_return Bytes{}; }));
  auto port = manager.listen("127.0.0.1", 0);
  if (!port) throw TransportError(port.error());
  std::printf("port %u\naddress %s\n", *port, hex(worker.address()).c_str());
  std::fflush(stdout);
  // Runs until the client closes our stdin.
  asio::posix::stream_descriptor in(io, ::dup(STDIN_FILENO));
  std::array<char, 64> sink;
  std::function<void(boost::system::error_code, std::size_t)> on_read = [&](boost::system::error_code ec, std::size_t) {
    if (ec) return io.stop();
    in.async_read_some(asio::buffer(sink), on_read);
  };
  in.async_read_some(asio::buffer(sink), on_read);
  io.run();
  if (reg) manager.unexpose(*reg);
  return 0;
}

// ---- client ---------------------------------------------------------------

struct ServerProcess {
  pid_t pid = -1;
  int to_child = -1;
  int from_child = -1;
  ~ServerProcess() {
    if (to_child >= 0) ::close(to_child);  // EOF: the server exits
    if (from_child >= 0) ::close(from_child);
    if (pid > 0) {
      int status = 0;
      for (int i = 0; i < 50 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::poll(nullptr, 0, 100);
      if (::waitpid(pid, &status, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
      }
    }
  }
};

std::string read_line(int fd, int timeout_ms) {
  std::string line;
  const auto deadline = clock_type::now() + std::chrono::milliseconds(timeout_ms);
  while (clock_type::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char c;
    if (::read(fd, &c, 1) != 1) break;
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line;
}

void start_server(const Flags& f, ServerProcess& server) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const std::string spin = std::to_string(f.spin_us);
  server.pid = ::fork();
  if (server.pid < 0) throw std::runtime_error("fork failed");
  if (server.pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    if (f.pin) pin_to(0);
    const char* argv[] = {"kvblockd-bench", "transport", "--role",     "server", "--tls",
                          f.tls.c_str(),    "--spin-us", spin.c_str(), nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  server.to_child = in[1];
  server.from_child = out[0];
}

struct Figures {
  double gbps = 0;
  double am_roundtrips_per_s = 0;       // coroutine handler on the server
  double am_sync_roundtrips_per_s = 0;  // synchronous handler on the server
  std::string protocol;
  double am_windowed_per_s = 0;  // with --am-window requesters in flight
};

// What moved the blocks: rma_put, or AM writes sent eager or by rendezvous
// depending on the size (AmOptions::bulk_eager_max).
std::string protocol_label(BulkProtocol protocol, std::size_t size, const AmOptions& options) {
  if (protocol == BulkProtocol::rma_put) return "rma_put";
  return size <= options.bulk_eager_max ? "am_eager" : "am_rendezvous";
}

asio::awaitable<Result<Figures>> measure(const Flags& f, ActiveMessageManager& client, Context& context) {
  const PeerId peer{1};
  Bytes request(8);
  const std::uint64_t size = f.size;
  std::memcpy(request.data(), &size, 8);
  auto reply = co_await client.send_request(peer, "alloc", std::move(request), std::chrono::seconds(30));
  if (!reply) co_return tl::unexpected(reply.error());
  std::uint64_t remote = 0;
  std::memcpy(&remote, reply->data(), 8);
  auto ep = client.endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  auto rkey = RemoteKey::unpack(**ep, std::span<const std::byte>(*reply).subspan(8));
  if (!rkey) co_return tl::unexpected(rkey.error());
  auto reg = MemoryRegistration::allocate(context, f.size);
  if (!reg) co_return tl::unexpected(reg.error());
  std::memset((*reg)->address(), 0x5a, f.size);

  const BulkProtocol protocol = protocol_for_tls(f.tls, Destination::ucx_allocated);
  std::vector<RmaChunk> batch(std::max<std::size_t>(1, std::min(f.window, f.iters)),
                              RmaChunk{(*reg)->address(), remote, f.size});
  const auto timeout = std::chrono::milliseconds(120000);
  // Warm-up: one batch.
  auto warm = co_await write_then_notify(client, peer, protocol, rkey->get(), batch, "done", {}, timeout);
  if (!warm) co_return tl::unexpected(warm.error());

  const auto t0 = clock_type::now();
  std::size_t sent = 0;
  while (sent < f.iters) {
    const std::size_t n = std::min(batch.size(), f.iters - sent);
    std::span<const RmaChunk> chunks(batch.data(), n);
    Status st = protocol == BulkProtocol::rma_put ? co_await put_chunks(**ep, **rkey, chunks, timeout, reg->get())
                                                  : co_await client.write_chunks_am(peer, chunks, timeout);
    if (!st) co_return tl::unexpected(st.error());
    sent += n;
  }
  auto notified = co_await client.send_request(peer, "done", {}, timeout);
  if (!notified) co_return tl::unexpected(notified.error());
  const double transfer_s = std::chrono::duration<double>(clock_type::now() - t0).count();

  // `count` sequential 64-byte requests; the echo comes back as the next
  // request's payload (no copy per call) and carries its sequence number,
  // checked on return.
  auto pings = [&](std::size_t count, std::uint64_t first, const char* type = "ping") -> asio::awaitable<Status> {
    Bytes ping(64, std::byte{1});
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t seq = first + i;
      std::memcpy(ping.data(), &seq, sizeof(seq));
      auto r = co_await client.send_request(peer, type, std::move(ping), timeout);
      if (!r) co_return tl::unexpected(r.error());
      std::uint64_t echoed = ~seq;
      if (r->size() == 64) std::memcpy(&echoed, r->data(), sizeof(echoed));
      if (echoed != seq) co_return fail(Errc::protocol_error, "ping {}: wrong echo ({} bytes)", seq, r->size());
      ping = std::move(*r);
    }
    co_return ok();
  };
  // 1000 warm-up round trips, then am_iters timed: seconds.
  auto timed_pings = [&](const char* type) -> asio::awaitable<Result<double>> {
    if (auto st = co_await pings(1000, 0, type); !st) co_return tl::unexpected(st.error());
    const auto start = clock_type::now();
    if (auto st = co_await pings(f.am_iters, 0, type); !st) co_return tl::unexpected(st.error());
    co_return std::chrono::duration<double>(clock_type::now() - start).count();
  };
  const auto am_s = co_await timed_pings("ping");
  if (!am_s) co_return tl::unexpected(am_s.error());
  const auto am_sync_s = co_await timed_pings("echo");
  if (!am_sync_s) co_return tl::unexpected(am_sync_s.error());

  // The same with --am-window requesters at once (throughput, not latency).
  double windowed = 0;
  if (f.am_window > 1) {
    const std::size_t each = std::max<std::size_t>(1, f.am_iters / f.am_window);
    std::size_t left = f.am_window;
    Status first_error = ok();
    AsyncEvent all(co_await asio::this_coro::executor);
    const auto t1 = clock_type::now();
    for (std::size_t w = 0; w < f.am_window; ++w) {
      asio::co_spawn(
          co_await asio::this_coro::executor,
          [&, w]() -> asio::awaitable<void> {
            auto st = co_await pings(each, w * each);
            if (!st && first_error) first_error = st;
            if (--left == 0) all.set();
          },
          asio::detached);
    }
    co_await all.wait();
    if (!first_error) co_return tl::unexpected(first_error.error());
    windowed = static_cast<double>(each * f.am_window) / std::chrono::duration<double>(clock_type::now() - t1).count();
  }
  co_return Figures{static_cast<double>(f.iters) * static_cast<double>(f.size) / transfer_s / 1e9,
                    static_cast<double>(f.am_iters) / *am_s, static_cast<double>(f.am_iters) / *am_sync_s,
                    protocol_label(protocol, f.size, client.options()), windowed};
}

// One client/server pair: block transfer, then AM round trips.
Result<Figures> measure_once(const Flags& f) {
  ServerProcess server;
  start_server(f, server);
  if (f.pin) pin_to(1);
  // UCX may print warnings on the server's stdout first: skip to our lines.
  std::string port_line;
  for (int i = 0; i < 50 && !port_line.starts_with("port "); ++i) port_line = read_line(server.from_child, 20000);
  const std::string address_line = read_line(server.from_child, 5000);
  if (!port_line.starts_with("port ") || !address_line.starts_with("address ")) {
    return fail(Errc::unavailable, "the server did not start ('{}')", port_line);
  }
  asio::io_context io;
  Context context(ContextOptions{.tls = f.tls});
  Worker worker(context, io.get_executor(), WorkerOptions{.spin = std::chrono::microseconds(f.spin_us)});
  worker.start();
  std::optional<Result<Figures>> result;
  {
    ActiveMessageManager client(worker);
    // sm: UCX 1.13's sockaddr connect needs a network transport; use the address.
    Status st = f.tls == "sm" ? client.connect_address(PeerId{1}, unhex(address_line.substr(8)))
                              : client.connect(PeerId{1}, "127.0.0.1",
                                               static_cast<std::uint16_t>(std::stoul(port_line.substr(5))));
    if (!st) return fail(st.error().code, "connect: {}", st.error().message);
    // io.run() until the measurement ends or a 300 s watchdog fires (no
    // run_one_for loop: it reads the clock around every handler).
    asio::steady_timer watchdog(io, std::chrono::seconds(300));
    watchdog.async_wait([&](boost::system::error_code ec) {
      if (!ec) io.stop();
    });
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          result = co_await measure(f, client, context);
          watchdog.cancel();
          io.stop();
        },
        asio::detached);
    io.run();
  }
  if (!result) return fail(Errc::timeout, "timed out after 300 s");
  return std::move(*result);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int run_client(const Flags& f) {
  // Each repetition: our figures, then ucx_perftest at the same transport
  // and size, so a machine that gets busier or quieter moves both; the
  // ratios are of the medians.
  const char* bw_tests[] = {"ucp_put_bw", "ucp_am_bw", "tag_bw"};
  std::vector<double> gbps, am_rate, am_sync_rate, am_lat, am_windowed;
  // Per run: ours / the perftest figure of the same repetition.
  std::vector<double> bw_paired, am_paired, am_sync_paired;
  std::vector<std::vector<double>> bw_base(std::size(bw_tests));
  // Like for like: the same tests with -e (UCP_ERR_HANDLING_MODE_PEER, which
  // kvblockd's endpoints use; on tcp UCX then drops its zero-copy RMA lanes).
  const char* err_tests[] = {"ucp_am_bw", "tag_bw"};
  std::vector<std::vector<double>> err_base(std::size(err_tests));
  std::string protocol;
  int port = 20000 + static_cast<int>(::getpid() % 20000);
  for (int rep = 0; rep < f.repeat; ++rep) {
    auto fig = measure_once(f);
    if (!fig) {
      std::fprintf(stderr, "transport: %s\n", fig.error().to_string().c_str());
      return 1;
    }
    protocol = fig->protocol;
    gbps.push_back(fig->gbps);
    am_rate.push_back(fig->am_roundtrips_per_s);
    am_sync_rate.push_back(fig->am_sync_roundtrips_per_s);
    am_windowed.push_back(fig->am_windowed_per_s);
    std::fprintf(stderr,
                 "run %d: kvblockd transport %s: %zu x %zu B via %s: %.3f GB/s; AM round trips (64 B, 1 in flight): "
                 "%.0f/s (coroutine handler), %.0f/s (synchronous handler)\n",
                 rep + 1, f.tls.c_str(), f.iters, f.size, fig->protocol.c_str(), fig->gbps, fig->am_roundtrips_per_s,
                 fig->am_sync_roundtrips_per_s);
    if (f.am_window > 1) {
      std::fprintf(stderr, "run %d: AM round trips with %zu requesters in flight: %.0f/s\n", rep + 1, f.am_window,
                   fig->am_windowed_per_s);
    }
    if (!f.baseline) continue;
    // ucp_am_lat first, right after our AM figures: this machine's latency
    // moves between regimes (0.07, 0.1 or 0.5 us one way on sm) from minute
    // to minute, so each run's ratio pairs figures taken close together.
    if (auto r = run_perftest(f.tls, "ucp_am_lat", 64, std::max<std::size_t>(f.am_iters, 1000), port++)) {
      am_lat.push_back(r->latency_us);
      const double implied = 1e6 / (2 * r->latency_us);
      am_paired.push_back(fig->am_roundtrips_per_s / implied);
      am_sync_paired.push_back(fig->am_sync_roundtrips_per_s / implied);
      std::fprintf(stderr,
                   "run %d: baseline ucx_perftest %s ucp_am_lat 64 B: %.3f us one way (%.0f round trips/s); this run's "
                   "AM ratio %.2fx (coroutine handler), %.2fx (synchronous handler)\n",
                   rep + 1, f.tls.c_str(), r->latency_us, implied, am_paired.back(), am_sync_paired.back());
    }
    double run_best = 0;
    for (std::size_t t = 0; t < std::size(bw_tests); ++t) {
      auto r = run_perftest(f.tls, bw_tests[t], f.size, std::max<std::size_t>(f.iters, 20), port++);
      if (!r) {
        std::fprintf(stderr, "run %d: baseline ucx_perftest %s: no result\n", rep + 1, bw_tests[t]);
        continue;
      }
      bw_base[t].push_back(r->mb_per_s * 1048576.0 / 1e9);
      run_best = std::max(run_best, bw_base[t].back());
      std::fprintf(stderr, "run %d: baseline ucx_perftest %s %s %zu B: %.3f GB/s\n", rep + 1, f.tls.c_str(),
                   bw_tests[t], f.size, bw_base[t].back());
    }
    if (run_best > 0) {
      bw_paired.push_back(fig->gbps / run_best);
      std::fprintf(stderr, "run %d: bandwidth ratio to this run's best perftest: %.2fx\n", rep + 1, bw_paired.back());
    }
    for (std::size_t t = 0; f.err_baseline && t < std::size(err_tests); ++t) {
      auto r = run_perftest(f.tls, err_tests[t], f.size, std::max<std::size_t>(f.iters, 20), port++, true);
      if (!r) continue;
      err_base[t].push_back(r->mb_per_s * 1048576.0 / 1e9);
      std::fprintf(stderr, "run %d: baseline ucx_perftest -e %s %s %zu B: %.3f GB/s\n", rep + 1, f.tls.c_str(),
                   err_tests[t], f.size, err_base[t].back());
    }
  }
  const double our_gbps = median(gbps);
  const double our_am = median(am_rate);
  const double our_am_sync = median(am_sync_rate);
  nlohmann::ordered_json baseline_json = nullptr;
  double best_gbps = 0;
  std::string best_test;
  if (f.baseline) {
    baseline_json = nlohmann::ordered_json::object();
    for (std::size_t t = 0; t < std::size(bw_tests); ++t) {
      if (bw_base[t].empty()) continue;
      const double m = median(bw_base[t]);
      baseline_json[fmt::format("{}_gbps", bw_tests[t])] = m;
      baseline_json[fmt::format("{}_gbps_runs", bw_tests[t])] = bw_base[t];
      if (m > best_gbps) best_gbps = m, best_test = bw_tests[t];
    }
    double best_err = 0;
    for (std::size_t t = 0; t < std::size(err_tests); ++t) {
      if (err_base[t].empty()) continue;
      const double m = median(err_base[t]);
      baseline_json[fmt::format("{}_err_handling_gbps", err_tests[t])] = m;
      best_err = std::max(best_err, m);
    }
    if (best_err > 0) {
      baseline_json["best_err_handling_gbps"] = best_err;
      baseline_json["gbps_ratio_err_handling"] = our_gbps / best_err;
      std::fprintf(stderr, "like for like (perftest -e, peer error handling as ours): best %.3f GB/s, ratio %.2fx\n",
                   best_err, our_gbps / best_err);
    }
    if (!am_lat.empty()) {
      baseline_json["ucp_am_lat_us"] = median(am_lat);
      baseline_json["ucp_am_lat_us_runs"] = am_lat;
    }
  }
  const double am_lat_us = median(am_lat);
  const double bw_ratio = best_gbps > 0 ? our_gbps / best_gbps : 0;
  const double am_implied = am_lat_us > 0 ? 1e6 / (2 * am_lat_us) : 0;
  const double am_ratio = am_implied > 0 ? our_am / am_implied : 0;
  const double am_sync_ratio = am_implied > 0 ? our_am_sync / am_implied : 0;
  std::fprintf(
      stderr,
      "median of %d: kvblockd %.3f GB/s, AM round trips/s (1 in flight) %.0f with a coroutine handler, %.0f with "
      "a synchronous handler; %.0f/s (%zu in flight)\n",
      f.repeat, our_gbps, our_am, our_am_sync, median(am_windowed), f.am_window);
  if (!bw_paired.empty() || !am_paired.empty()) {
    std::fprintf(stderr,
                 "paired (median of the per-run ratios): bandwidth %.2fx; AM %.2fx (coroutine handler), %.2fx "
                 "(synchronous handler)\n",
                 median(bw_paired), median(am_paired), median(am_sync_paired));
  }
  if (best_gbps > 0) {
    std::fprintf(stderr,
                 "ratio: %.2fx of the best perftest bandwidth (%s, %.3f GB/s); AM %.2fx (coroutine handler) and "
                 "%.2fx (synchronous handler) of the rate implied by ucp_am_lat (%.0f/s)\n",
                 bw_ratio, best_test.c_str(), best_gbps, am_ratio, am_sync_ratio, am_implied);
  }
  const nlohmann::ordered_json json{{"tls", f.tls},
                                    {"size", f.size},
                                    {"iters", f.iters},
                                    {"window", f.window},
                                    {"protocol", protocol},
                                    {"spin_us", f.spin_us},
                                    {"repeat", f.repeat},
                                    {"gbps", our_gbps},
                                    {"gbps_runs", gbps},
                                    {"am_roundtrips_per_s", our_am},
                                    {"am_roundtrips_per_s_runs", am_rate},
                                    {"baseline", baseline_json},
                                    {"best_baseline", best_test},
                                    {"gbps_ratio", bw_ratio},
                                    {"am_implied_roundtrips_per_s", am_implied},
                                    {"am_ratio", am_ratio},
                                    {"am_sync_roundtrips_per_s", our_am_sync},
                                    {"am_sync_roundtrips_per_s_runs", am_sync_rate},
                                    {"am_sync_ratio", am_sync_ratio},
                                    {"gbps_ratio_paired", median(bw_paired)},
                                    {"gbps_ratio_paired_runs", bw_paired},
                                    {"am_ratio_paired", median(am_paired)},
                                    {"am_ratio_paired_runs", am_paired},
                                    {"am_sync_ratio_paired", median(am_sync_paired)},
                                    {"am_sync_ratio_paired_runs", am_sync_paired},
                                    {"am_window", f.am_window},
                                    {"am_windowed_roundtrips_per_s", median(am_windowed)}};
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace

int run_transport(int argc, char** argv) {
  Flags f;
  CLI::App app{"UCX block transfer GB/s and active-message round trips, beside ucx_perftest"};
  app.add_option("--tls", f.tls, "UCX_TLS for both processes")->check(CLI::IsMember({"tcp", "sm"}));
  app.add_option("--size", f.size, "bytes per block transfer")->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--iters", f.iters, "blocks to transfer")->check(CLI::PositiveNumber);
  app.add_option("--am-iters", f.am_iters, "sequential AM round trips")->check(CLI::PositiveNumber);
  app.add_option("--am-window", f.am_window, "also time AM round trips with this many requesters in flight (1 = skip)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  app.add_option("--window", f.window, "blocks per batch (each batch completes before the next; 0 = auto)");
  app.add_option("--spin-us", f.spin_us, "worker spin before sleeping on its event fd (0 = pure event-driven)");
  app.add_option("--repeat", f.repeat, "repetitions (ours, then perftest, each time); figures are medians")
      ->check(CLI::Range(1, 99));
  app.add_flag("!--no-baseline", f.baseline, "skip the ucx_perftest baseline");
  app.add_flag("!--no-err-baseline", f.err_baseline, "skip the perftest -e (peer error handling) bandwidth runs");
  app.add_flag("!--no-pin", f.pin, "do not pin server/client to cores 0/1");
  app.add_option("--role", f.role)->group("");  // hidden: server
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (f.window == 0) f.window = std::clamp<std::size_t>((std::size_t{64} << 20) / f.size, 16, 1024);
  if (auto st = kvb::setup_logging("warn"); !st) return 2;
  try {
    return f.role == "server" ? run_server(f) : run_client(f);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvblockd-bench transport: %s\n", e.what());
    return 1;
  }
}

}  // namespace kvb::bench
