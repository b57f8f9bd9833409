// kvb_micro_transport: one active-message round trip through the
// ActiveMessageManager (send_request -> runner -> handler -> reply ->
// resumed sender), both managers on one thread, each worker driven by
// Worker::poll(), so the time is the CPU cost of both sides plus UCX's.
// Baseline, in the same run: raw UCX doing the same 64-byte ping-pong
// between two workers on one thread (raw_ucx_pingpong.cpp). Counters:
// round_trips_per_s, raw_ucx_round_trips_per_s, vs_raw_ucx (ours / raw).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "kvb/transport/am_manager.h"
#include "raw_ucx_pingpong.h"

namespace {

namespace asio = boost::asio;
using namespace kvb;
using namespace kvb::transport;
using namespace std::chrono_literals;

constexpr std::size_t kBatch = 1000;  // round trips per benchmark iteration

// `sync_handler`: the server answers from a synchronous handler
// (register_sync_handler) instead of a coroutine handler.
void BM_ManagerRoundTrip(benchmark::State& state, const std::string& tls, bool sync_handler) {
  std::string error;
  const double raw_ns = kvb::bench::raw_ucx_pingpong_ns(tls, 200000, error);
  if (raw_ns < 0) return state.SkipWithError(("raw UCX baseline: " + error).c_str());

  asio::io_context io(1);
  std::optional<Context> context;
  try {
    context.emplace(ContextOptions{.tls = tls});
  } catch (const TransportError& e) {
    return state.SkipWithError(e.what());
  }
  Worker client_worker(*context, io.get_executor());
  Worker server_worker(*context, io.get_executor());
  std::optional<ActiveMessageManager> client(std::in_place, client_worker);
  std::optional<ActiveMessageManager> server(std::in_place, server_worker);
  const Status registered =
      sync_handler ? server->register_sync_handler(
                         "ping", [](IncomingMessage& m) -> Result<Bytes> { return std::move(m.payload); })
                   : server->register_handler("ping", [](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
                       co_return std::move(m.payload);
                     });
  if (!registered) return state.SkipWithError(registered.error().to_string().c_str());
  if (auto st = client->connect_address(PeerId{1}, server_worker.address()); !st)
    return state.SkipWithError(st.error().to_string().c_str());
  // Polls both workers from inside an io_context handler (as a Worker's own
  // loop does: Asio's per-thread caches for coroutine frames and handlers
  // work only there).
  auto drive = [&](const bool& done) {
    asio::post(io, [&] {
      for (std::size_t spins = 0; !done; ++spins) {
        client_worker.poll();
        server_worker.poll();
        if ((spins & 255) == 0) io.poll();  // the hello, coroutine starts and ends
      }
    });
    io.restart();
    while (!done) io.run_one();  // the driver, after leftovers of the last batch
  };
  Bytes ping(64, std::byte{1});
  std::string failure;
  auto batch = [&](std::size_t n) {
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (std::size_t i = 0; i < n && failure.empty(); ++i) {
            const std::uint64_t seq = i;
            std::memcpy(ping.data(), &seq, sizeof(seq));
            auto r = co_await client->send_request(PeerId{1}, "ping", Bytes(ping), 10s);
            if (!r) {
              failure = r.error().to_string();
            } else if (r->size() != 64 || std::memcmp(r->data(), &seq, sizeof(seq)) != 0) {
              failure = "wrong echo";
            } else {
              ping = std::move(*r);
            }
          }
          done = true;
        },
        asio::detached);
    drive(done);
  };
  batch(10 * kBatch);  // warm-up (and the hello)
  for (auto _ : state) batch(kBatch);
  if (!failure.empty()) return state.SkipWithError(failure.c_str());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
  state.counters["round_trips_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch), benchmark::Counter::kIsRate);
  state.counters["raw_ucx_round_trips_per_s"] = 1e9 / raw_ns;
  // vs_raw_ucx is filled in by the reporter below (needs the measured rate).
  state.counters["raw_ucx_ns"] = raw_ns;
  client.reset();
  server.reset();
}

// Prints ours / raw after each run (Google Benchmark's rate counters are
// only final in the reporter).
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> copy = runs;
    for (Run& run : copy) {
      auto raw = run.counters.find("raw_ucx_ns");
      if (raw == run.counters.end() || run.iterations == 0) continue;
      const double ours_ns = run.real_accumulated_time * 1e9 / static_cast<double>(run.iterations * kBatch);
      run.counters["ns_per_round_trip"] = ours_ns;
      run.counters["vs_raw_ucx"] = raw->second.value / ours_ns;
    }
    ConsoleReporter::ReportRuns(copy);
  }
};

}  // namespace

BENCHMARK_CAPTURE(BM_ManagerRoundTrip, sm, std::string("sm"), false)->Unit(benchmark::kMicrosecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_ManagerRoundTrip, sm_sync_handler, std::string("sm"), true)
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(2.0);
BENCHMARK_CAPTURE(BM_ManagerRoundTrip, tcp, std::string("tcp"), false)->Unit(benchmark::kMicrosecond)->MinTime(2.0);
BENCHMARK_CAPTURE(BM_ManagerRoundTrip, tcp_sync_handler, std::string("tcp"), true)
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(2.0);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
}
