// kvblockd-bench transport: block-transfer GB/s and active-message round
// trips per second between two processes over loopback, beside baselines
// measured the same way in the same run.
//   kvblockd-bench transport --tls tcp|sm --size BYTES [--working-set 1GiB]
//                            [--passes 3] [--repeat R]
// The parent re-executes itself with the hidden `--role server`; the server
// allocates and registers a destination of --working-set bytes (plus one
// warm-up block) and never touches it; the client cycles over a source of
// the same size, block i to block i, `passes` times (batches of --window,
// complete = in the peer's memory; one notification after each pass). The
// first pass writes pages nobody has touched yet (cold), the later ones
// pages that are mapped but long evicted from the caches (steady state).
// Beside it, in the same process pair and the same way: memcpy of the same
// blocks into a fresh destination of the same kind (the ceiling for sm) and,
// for tcp, a plain TCP stream over 127.0.0.1 from the same source blocks
// into a fresh destination in the server. Then --am-iters sequential 64-byte
// requests. ucx_perftest, the older baseline, moves one buffer over and
// over (cache-resident): it is printed as such.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
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
#include "last_level_cache.h"
#include "subcommands.h"
#include "transport/perftest_baseline.h"
#include "transport/transport_baselines.h"

namespace kvb::bench {
namespace {

namespace asio = boost::asio;
using namespace kvb::transport;
using clock_type = std::chrono::steady_clock;

struct Flags {
  std::string tls = "tcp";
  std::size_t size = 1 << 20;
  std::size_t working_set = std::size_t{1} << 30;  // bytes of distinct source (and destination) blocks
  std::size_t passes = 3;                          // pass 1 cold, 2.. steady state
  std::size_t am_iters = 20000;
  std::size_t am_window = 16;
  std::size_t window = 0;  // 0: enough blocks for >= 64 MiB per batch (16..1024)
  int spin_us = 50;
  bool baseline = true;  // memcpy, TCP stream, ucx_perftest
  bool perftest = true;
  bool pin = true;
  bool connect_by_address = false;  // tcp: the client opens its endpoint by worker address, not IP:PORT
  int repeat = 1;
  bool err_baseline = true;
  std::string role = "client";
  /// Blocks in the working set (each side).
  [[nodiscard]] std::size_t blocks() const { return std::max<std::size_t>(1, working_set / size); }
  [[nodiscard]] std::size_t set_bytes() const { return blocks() * size; }
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
  // A destination nobody touches before the client's first pass (its pages
  // are faulted in by the transfer itself: the cold pass).
  check(manager.register_handler("alloc", [&](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    std::uint64_t size = 0;
    if (m.payload.size() == 8) std::memcpy(&size, m.payload.data(), 8);
    if (reg) manager.unexpose(*reg);
    reg.reset();
    auto r = MemoryRegistration::allocate(context, size);
    if (!r) co_return tl::unexpected(r.error());
    reg = std::move(*r);
    manager.expose(*reg);
    const auto address = reinterpret_cast<std::uint64_t>(reg->address());
    // address, bytes already resident (mincore; 0 for a cold destination), rkey
    const std::uint64_t resident = resident_bytes(reg->address(), size);
    Bytes reply(16 + reg->packed_rkey().size());
    std::memcpy(reply.data(), &address, 8);
    std::memcpy(reply.data() + 8, &resident, 8);
    std::memcpy(reply.data() + 16, reg->packed_rkey().data(), reg->packed_rkey().size());
    co_return reply;
  }));
  // "check": payload block size and count; reply: the blocks that do not
  // carry their stamp.
  check(manager.register_sync_handler("check", [&](IncomingMessage& m) -> Result<Bytes> {
    std::uint64_t arg[2] = {0, 0};
    if (m.payload.size() != sizeof arg || !reg) return fail(Errc::invalid_argument, "check: no destination");
    std::memcpy(arg, m.payload.data(), sizeof arg);
    if (arg[0] == 0 || arg[0] * arg[1] > reg->length()) return fail(Errc::invalid_argument, "check: out of range");
    const std::uint64_t bad = count_unstamped(reg->address(), arg[0], arg[1]);
    Bytes reply(8);
    std::memcpy(reply.data(), &bad, 8);
    return reply;
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
  // Commands arrive on stdin, one a line ("stream ..."); runs until the
  // client closes it. The stream runs on this thread: UCX is idle by then.
  asio::posix::stream_descriptor in(io, ::dup(STDIN_FILENO));
  std::array<char, 256> sink;
  std::string pending;
  std::function<void(boost::system::error_code, std::size_t)> on_read = [&](boost::system::error_code ec,
                                                                            std::size_t n) {
    if (ec) return io.stop();
    pending.append(sink.data(), n);
    for (auto eol = pending.find('\n'); eol != std::string::npos; eol = pending.find('\n')) {
      const std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      if (!line.starts_with("stream ")) continue;
      if (reg) manager.unexpose(*reg);
      reg.reset();  // the transport's destination: not needed any more
      std::printf("%s\n", receive_stream(context, line).c_str());
      std::fflush(stdout);
    }
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
  PassTimes transport;
  PassTimes memcpy_copy;                // empty without baselines
  PassTimes tcp_stream;                 // empty unless tcp with baselines
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

// `src` holds blocks() stamped blocks plus one warm-up block after them.
asio::awaitable<Result<Figures>> measure(const Flags& f, ActiveMessageManager& client, MemoryRegistration& src) {
  const PeerId peer{1};
  const std::size_t blocks = f.blocks();
  Bytes request(8);
  const std::uint64_t dst_bytes = (blocks + 1) * f.size;
  std::memcpy(request.data(), &dst_bytes, 8);
  auto reply = co_await client.send_request(peer, "alloc", std::move(request), std::chrono::seconds(30));
  if (!reply) co_return tl::unexpected(reply.error());
  std::uint64_t remote = 0;
  if (reply->size() < 16) co_return fail(Errc::protocol_error, "alloc: short reply");
  std::memcpy(&remote, reply->data(), 8);
  auto ep = client.endpoint(peer);
  if (!ep) co_return tl::unexpected(ep.error());
  auto rkey = RemoteKey::unpack(**ep, std::span<const std::byte>(*reply).subspan(16));
  if (!rkey) co_return tl::unexpected(rkey.error());

  const BulkProtocol protocol = protocol_for_tls(f.tls, Destination::ucx_allocated);
  const std::size_t window = std::max<std::size_t>(1, std::min(f.window, blocks));
  const auto timeout = std::chrono::milliseconds(120000);
  // Warm-up: one batch, every chunk from and to the spare block after the
  // working set (so the set's destination pages stay untouched).
  std::vector<RmaChunk> warm(window, RmaChunk{src.address() + blocks * f.size, remote + blocks * f.size, f.size});
  auto warmed = co_await write_then_notify(client, peer, protocol, rkey->get(), warm, "done", {}, timeout);
  if (!warmed) co_return tl::unexpected(warmed.error());

  std::vector<RmaChunk> pass(blocks);
  for (std::size_t i = 0; i < blocks; ++i) pass[i] = RmaChunk{src.address() + i * f.size, remote + i * f.size, f.size};
  Figures out;
  std::memcpy(&out.transport.resident_before, reply->data() + 8, 8);  // measured before the warm-up
  for (std::size_t p = 0; p < f.passes; ++p) {
    const auto t0 = clock_type::now();
    for (std::size_t sent = 0; sent < blocks;) {
      const std::size_t n = std::min(window, blocks - sent);
      std::span<const RmaChunk> chunks(pass.data() + sent, n);
      // (No co_await inside a conditional expression: GCC 12 destroys its
      // result twice, a double free of an error's text.)
      Status st = ok();
      if (protocol == BulkProtocol::rma_put) {
        st = co_await put_chunks(**ep, **rkey, chunks, timeout, &src);
      } else {
        st = co_await client.write_chunks_am(peer, chunks, timeout);
      }
      if (!st) co_return tl::unexpected(st.error());
      sent += n;
    }
    auto notified = co_await client.send_request(peer, "done", {}, timeout);
    if (!notified) co_return tl::unexpected(notified.error());
    out.transport.seconds.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  // Every block arrived where it belongs (outside the timed passes).
  Bytes check_args(16);
  const std::uint64_t args[2] = {f.size, blocks};
  std::memcpy(check_args.data(), args, sizeof args);
  auto checked = co_await client.send_request(peer, "check", std::move(check_args), timeout);
  if (!checked) co_return tl::unexpected(checked.error());
  std::uint64_t bad = 0;
  if (checked->size() == 8) std::memcpy(&bad, checked->data(), 8);
  if (checked->size() != 8 || bad != 0)
    co_return fail(Errc::protocol_error, "{} of {} blocks did not arrive intact", bad, blocks);

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
  out.am_roundtrips_per_s = static_cast<double>(f.am_iters) / *am_s;
  out.am_sync_roundtrips_per_s = static_cast<double>(f.am_iters) / *am_sync_s;
  out.protocol = protocol_label(protocol, f.size, client.options());
  out.am_windowed_per_s = windowed;
  co_return out;
}

// One client/server pair: block transfer, AM round trips, then the memcpy
// and TCP stream baselines.
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
  // The source: the working set plus the warm-up block, stamped (written
  // once, so mapped; 1 GiB of it is long out of the caches when it is read).
  auto src = MemoryRegistration::allocate(context, (f.blocks() + 1) * f.size);
  if (!src) return tl::unexpected(src.error());
  stamp_blocks((*src)->address(), f.size, f.blocks() + 1);
  std::optional<Result<Figures>> result;
  {
    ActiveMessageManager client(worker);
    // sm: UCX 1.13's sockaddr connect needs a network transport; use the
    // address (and over tcp when told: docs/transport.md, "Connections").
    Status st =
        (f.tls == "sm" || f.connect_by_address)
            ? client.connect_address(PeerId{1}, unhex(address_line.substr(8)))
            : client.connect(PeerId{1}, "127.0.0.1", static_cast<std::uint16_t>(std::stoul(port_line.substr(5))));
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
          result = co_await measure(f, client, **src);
          watchdog.cancel();
          io.stop();
        },
        asio::detached);
    io.run();
  }
  if (!result) return fail(Errc::timeout, "timed out after 300 s");
  if (!*result || !f.baseline) return std::move(*result);
  auto copied = memcpy_baseline(context, (*src)->address(), BlockSet{f.size, f.blocks(), f.passes});
  if (!copied) return tl::unexpected(copied.error());
  (*result)->memcpy_copy = std::move(*copied);
  if (f.tls == "tcp") {
    auto streamed = tcp_stream_baseline(server.to_child, server.from_child, (*src)->address(),
                                        BlockSet{f.size, f.blocks(), f.passes});
    if (!streamed) return tl::unexpected(streamed.error());
    (*result)->tcp_stream = std::move(*streamed);
  }
  return std::move(*result);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

/// One figure's cold and steady GB/s, per repetition.
struct Series {
  std::vector<double> cold, steady;
  std::vector<std::uint64_t> resident;  // destination bytes resident before the cold pass
  void add(const PassTimes& t, std::size_t bytes) {
    cold.push_back(t.cold_gbps(bytes));
    steady.push_back(t.steady_gbps(bytes));
    resident.push_back(t.resident_before);
  }
  [[nodiscard]] nlohmann::ordered_json json() const {
    return {{"gbps_cold", median(cold)},
            {"gbps_steady", median(steady)},
            {"gbps_cold_runs", cold},
            {"gbps_steady_runs", steady},
            {"cold_destination_resident_bytes_runs", resident}};
  }
};

/// Per-repetition ratios ours / baseline (cold and steady), paired.
struct Ratios {
  std::vector<double> cold, steady;
  void add(const Series& ours, const Series& base) {
    if (base.cold.empty() || base.cold.back() <= 0) return;
    cold.push_back(ours.cold.back() / base.cold.back());
    if (base.steady.back() > 0) steady.push_back(ours.steady.back() / base.steady.back());
  }
  [[nodiscard]] nlohmann::ordered_json json() const {
    if (cold.empty()) return nullptr;
    return {{"cold", median(cold)}, {"steady", median(steady)}, {"cold_runs", cold}, {"steady_runs", steady}};
  }
};

int run_client(const Flags& f) {
  // Each repetition: our figures, then memcpy (and for tcp a TCP stream) of
  // the same blocks the same way in the same process pair, then ucx_perftest
  // at the same transport and size; the ratios are medians of the
  // per-repetition ratios (paired: a machine that gets busier or quieter
  // moves both).
  const std::size_t blocks = f.blocks(), set_bytes = f.set_bytes();
  const std::uint64_t llc = last_level_cache_bytes();
  if (llc > 0 && set_bytes < 4 * llc) {
    std::fprintf(stderr,
                 "warning: working set %zu B is under 4x the last-level cache (%llu B): the blocks may stay in "
                 "cache\n",
                 set_bytes, static_cast<unsigned long long>(llc));
  }
  std::fprintf(stderr,
               "transport %s: %zu B blocks, working set %zu blocks = %zu B of distinct source and of distinct "
               "destination blocks, %zu passes (1 cold, %zu steady), last-level cache %llu B\n",
               f.tls.c_str(), f.size, blocks, set_bytes, f.passes, f.passes - 1, static_cast<unsigned long long>(llc));
  const char* bw_tests[] = {"ucp_put_bw", "ucp_am_bw", "tag_bw"};
  Series ours, mem, stream;
  Ratios vs_memcpy, vs_stream;
  std::vector<double> am_rate, am_sync_rate, am_lat, am_windowed;
  // Per run: ours / the perftest figure of the same repetition.
  std::vector<double> bw_paired, am_paired, am_sync_paired;
  std::vector<std::vector<double>> bw_base(std::size(bw_tests));
  // Like for like: the same tests with -e (UCP_ERR_HANDLING_MODE_PEER, which
  // kvblockd's endpoints use; on tcp UCX then drops its zero-copy RMA lanes).
  const char* err_tests[] = {"ucp_am_bw", "tag_bw"};
  std::vector<std::vector<double>> err_base(std::size(err_tests));
  std::string protocol;
  int port = 20000 + static_cast<int>(::getpid() % 20000);
  const bool perftest = f.baseline && f.perftest;
  // perftest moves the bytes of our passes, from one buffer to one buffer.
  const std::size_t perftest_iters = std::max<std::size_t>(blocks * f.passes, 20);
  for (int rep = 0; rep < f.repeat; ++rep) {
    auto fig = measure_once(f);
    if (!fig) {
      std::fprintf(stderr, "transport: %s\n", fig.error().to_string().c_str());
      return 1;
    }
    protocol = fig->protocol;
    ours.add(fig->transport, set_bytes);
    am_rate.push_back(fig->am_roundtrips_per_s);
    am_sync_rate.push_back(fig->am_sync_roundtrips_per_s);
    am_windowed.push_back(fig->am_windowed_per_s);
    std::fprintf(stderr,
                 "run %d: kvblockd transport %s: %zu B blocks via %s over %zu B: cold %.3f GB/s, steady %.3f GB/s; "
                 "AM round trips (64 B, 1 in flight): %.0f/s (coroutine handler), %.0f/s (synchronous handler)\n",
                 rep + 1, f.tls.c_str(), f.size, fig->protocol.c_str(), set_bytes, ours.cold.back(), ours.steady.back(),
                 fig->am_roundtrips_per_s, fig->am_sync_roundtrips_per_s);
    if (f.am_window > 1) {
      std::fprintf(stderr, "run %d: AM round trips with %zu requesters in flight: %.0f/s\n", rep + 1, f.am_window,
                   fig->am_windowed_per_s);
    }
    if (!fig->memcpy_copy.seconds.empty()) {
      mem.add(fig->memcpy_copy, set_bytes);
      vs_memcpy.add(ours, mem);
      std::fprintf(stderr,
                   "run %d: baseline memcpy, same blocks and working set: cold %.3f GB/s, steady %.3f GB/s; "
                   "ours %.2fx cold, %.2fx steady\n",
                   rep + 1, mem.cold.back(), mem.steady.back(), vs_memcpy.cold.back(), vs_memcpy.steady.back());
    }
    if (!fig->tcp_stream.seconds.empty()) {
      stream.add(fig->tcp_stream, set_bytes);
      vs_stream.add(ours, stream);
      std::fprintf(stderr,
                   "run %d: baseline TCP stream over 127.0.0.1, same blocks and working set: cold %.3f GB/s, steady "
                   "%.3f GB/s; ours %.2fx cold, %.2fx steady\n",
                   rep + 1, stream.cold.back(), stream.steady.back(), vs_stream.cold.back(), vs_stream.steady.back());
    }
    // Cold means untouched: pages of a destination already resident
    // (mincore) before its first pass would make it warm.
    const std::uint64_t warm_bytes =
        fig->transport.resident_before + fig->memcpy_copy.resident_before + fig->tcp_stream.resident_before;
    const std::string stream_part =
        fig->tcp_stream.seconds.empty() ? "" : fmt::format(", TCP stream {}", fig->tcp_stream.resident_before);
    std::fprintf(stderr, "run %d: destination bytes resident before the cold pass: transport %llu, memcpy %llu%s%s\n",
                 rep + 1, static_cast<unsigned long long>(fig->transport.resident_before),
                 static_cast<unsigned long long>(fig->memcpy_copy.resident_before), stream_part.c_str(),
                 warm_bytes == 0 ? " (all cold)" : " (NOT all cold: the cold figures are not cold)");
    if (!perftest) continue;
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
      auto r = run_perftest(f.tls, bw_tests[t], f.size, perftest_iters, port++);
      if (!r) {
        std::fprintf(stderr, "run %d: baseline ucx_perftest %s: no result\n", rep + 1, bw_tests[t]);
        continue;
      }
      bw_base[t].push_back(r->mb_per_s * 1048576.0 / 1e9);
      run_best = std::max(run_best, bw_base[t].back());
      std::fprintf(stderr, "run %d: ucx_perftest %s %s %zu B (single buffer, cache-resident): %.3f GB/s\n", rep + 1,
                   f.tls.c_str(), bw_tests[t], f.size, bw_base[t].back());
    }
    if (run_best > 0) {
      bw_paired.push_back(ours.steady.back() / run_best);
      std::fprintf(stderr, "run %d: steady GB/s / this run's best single-buffer perftest: %.2fx\n", rep + 1,
                   bw_paired.back());
    }
    for (std::size_t t = 0; f.err_baseline && t < std::size(err_tests); ++t) {
      auto r = run_perftest(f.tls, err_tests[t], f.size, perftest_iters, port++, true);
      if (!r) continue;
      err_base[t].push_back(r->mb_per_s * 1048576.0 / 1e9);
      std::fprintf(stderr, "run %d: ucx_perftest -e %s %s %zu B (single buffer, cache-resident): %.3f GB/s\n", rep + 1,
                   f.tls.c_str(), err_tests[t], f.size, err_base[t].back());
    }
  }
  const double our_gbps = median(ours.steady);
  const double our_am = median(am_rate);
  const double our_am_sync = median(am_sync_rate);
  nlohmann::ordered_json perftest_json = nullptr;
  double best_gbps = 0;
  std::string best_test;
  if (perftest) {
    perftest_json = nlohmann::ordered_json::object();
    perftest_json["working_set"] = "single buffer (cache-resident)";
    for (std::size_t t = 0; t < std::size(bw_tests); ++t) {
      if (bw_base[t].empty()) continue;
      const double m = median(bw_base[t]);
      perftest_json[fmt::format("{}_gbps", bw_tests[t])] = m;
      perftest_json[fmt::format("{}_gbps_runs", bw_tests[t])] = bw_base[t];
      if (m > best_gbps) best_gbps = m, best_test = bw_tests[t];
    }
    double best_err = 0;
    for (std::size_t t = 0; t < std::size(err_tests); ++t) {
      if (err_base[t].empty()) continue;
      const double m = median(err_base[t]);
      perftest_json[fmt::format("{}_err_handling_gbps", err_tests[t])] = m;
      best_err = std::max(best_err, m);
    }
    if (best_err > 0) perftest_json["best_err_handling_gbps"] = best_err;
    if (!am_lat.empty()) {
      perftest_json["ucp_am_lat_us"] = median(am_lat);
      perftest_json["ucp_am_lat_us_runs"] = am_lat;
    }
    perftest_json["best"] = best_test;
    perftest_json["gbps_ratio_paired"] = median(bw_paired);
  }
  const double am_lat_us = median(am_lat);
  const double am_implied = am_lat_us > 0 ? 1e6 / (2 * am_lat_us) : 0;
  const double am_ratio = am_implied > 0 ? our_am / am_implied : 0;
  const double am_sync_ratio = am_implied > 0 ? our_am_sync / am_implied : 0;
  std::fprintf(stderr,
               "median of %d: kvblockd %s %zu B blocks over %zu B: cold %.3f GB/s, steady %.3f GB/s; AM round "
               "trips/s (1 in flight) %.0f with a coroutine handler, %.0f with a synchronous handler; %.0f/s (%zu in "
               "flight)\n",
               f.repeat, f.tls.c_str(), f.size, set_bytes, median(ours.cold), our_gbps, our_am, our_am_sync,
               median(am_windowed), f.am_window);
  if (!mem.cold.empty()) {
    std::fprintf(stderr,
                 "  memcpy, same blocks: cold %.3f GB/s, steady %.3f GB/s; ours / memcpy (paired medians): %.2fx "
                 "cold, %.2fx steady\n",
                 median(mem.cold), median(mem.steady), median(vs_memcpy.cold), median(vs_memcpy.steady));
  }
  if (!stream.cold.empty()) {
    std::fprintf(stderr,
                 "  TCP stream, same blocks: cold %.3f GB/s, steady %.3f GB/s; ours / TCP stream (paired medians): "
                 "%.2fx cold, %.2fx steady\n",
                 median(stream.cold), median(stream.steady), median(vs_stream.cold), median(vs_stream.steady));
  }
  if (best_gbps > 0) {
    std::fprintf(stderr,
                 "  ucx_perftest, single buffer (cache-resident, not a ceiling for a working set): best %s %.3f "
                 "GB/s; AM %.2fx (coroutine handler) and %.2fx (synchronous handler) of the rate implied by "
                 "ucp_am_lat (%.0f/s)\n",
                 best_test.c_str(), best_gbps, am_ratio, am_sync_ratio, am_implied);
  }
  // The transport's ceiling: memcpy for sm, the TCP stream for tcp.
  const Ratios& ceiling = f.tls == "tcp" ? vs_stream : vs_memcpy;
  const nlohmann::ordered_json json{{"bench", "transport"},
                                    {"tls", f.tls},
                                    {"size", f.size},
                                    {"working_set_bytes", set_bytes},
                                    {"working_set_blocks", blocks},
                                    {"last_level_cache_bytes", llc},
                                    {"passes", f.passes},
                                    {"window", f.window},
                                    {"protocol", protocol},
                                    {"spin_us", f.spin_us},
                                    {"repeat", f.repeat},
                                    {"gbps", our_gbps},
                                    {"gbps_cold", median(ours.cold)},
                                    {"transport", ours.json()},
                                    {"memcpy", mem.cold.empty() ? nlohmann::ordered_json() : mem.json()},
                                    {"tcp_stream", stream.cold.empty() ? nlohmann::ordered_json() : stream.json()},
                                    {"ratio_memcpy", vs_memcpy.json()},
                                    {"ratio_tcp_stream", vs_stream.json()},
                                    {"ratio_baseline", f.tls == "tcp" ? "tcp_stream" : "memcpy"},
                                    {"ratio", ceiling.steady.empty() ? 0.0 : median(ceiling.steady)},
                                    {"ratio_cold", ceiling.cold.empty() ? 0.0 : median(ceiling.cold)},
                                    {"am_roundtrips_per_s", our_am},
                                    {"am_roundtrips_per_s_runs", am_rate},
                                    {"am_sync_roundtrips_per_s", our_am_sync},
                                    {"am_sync_roundtrips_per_s_runs", am_sync_rate},
                                    {"am_implied_roundtrips_per_s", am_implied},
                                    {"am_ratio", am_ratio},
                                    {"am_sync_ratio", am_sync_ratio},
                                    {"am_ratio_paired", median(am_paired)},
                                    {"am_ratio_paired_runs", am_paired},
                                    {"am_sync_ratio_paired", median(am_sync_paired)},
                                    {"am_sync_ratio_paired_runs", am_sync_paired},
                                    {"am_window", f.am_window},
                                    {"am_windowed_roundtrips_per_s", median(am_windowed)},
                                    {"perftest_single_buffer", perftest_json}};
  std::printf("%s\n", json.dump().c_str());
  return 0;
}

}  // namespace

int run_transport(int argc, char** argv) {
  Flags f;
  CLI::App app{
      "UCX block transfer GB/s over a working set and active-message round trips, beside memcpy and a TCP "
      "stream of the same blocks"};
  app.add_option("--tls", f.tls, "UCX_TLS for both processes")->check(CLI::IsMember({"tcp", "sm"}));
  app.add_option("--size", f.size, "bytes per block transfer")->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  app.add_option("--working-set", f.working_set,
                 "bytes of distinct source blocks (and as many distinct destination blocks) cycled over, e.g. 1GiB")
      ->transform(CLI::AsSizeValue(true))
      ->capture_default_str();
  app.add_option("--passes", f.passes, "passes over the working set: the first is cold, the rest steady state")
      ->check(CLI::Range(std::size_t{2}, std::size_t{1000}))
      ->capture_default_str();
  app.add_option("--am-iters", f.am_iters, "sequential AM round trips")->check(CLI::PositiveNumber);
  app.add_option("--am-window", f.am_window, "also time AM round trips with this many requesters in flight (1 = skip)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  app.add_option("--window", f.window, "blocks per batch (each batch completes before the next; 0 = auto)");
  app.add_option("--spin-us", f.spin_us, "worker spin before sleeping on its event fd (0 = pure event-driven)");
  app.add_option("--repeat", f.repeat, "repetitions (ours, then the baselines, each time); figures are medians")
      ->check(CLI::Range(1, 99));
  app.add_flag("!--no-baseline", f.baseline, "skip every baseline (memcpy, TCP stream, ucx_perftest)");
  app.add_flag("!--no-perftest", f.perftest, "skip ucx_perftest (single buffer) only");
  app.add_flag("!--no-err-baseline", f.err_baseline, "skip the perftest -e (peer error handling) bandwidth runs");
  app.add_flag("!--no-pin", f.pin, "do not pin server/client to cores 0/1");
  app.add_flag("--connect-by-address", f.connect_by_address,
               "tcp: open the client's endpoint by worker address (as before 2026-12-03 kvblockd did), not IP:PORT");
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
