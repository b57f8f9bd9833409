#include "transport/perftest_baseline.h"

#include <cstdio>
#include <sstream>
#include <vector>

#include <fmt/format.h>

namespace kvb::bench {

namespace {

/// Last line of the table: iterations, then 7 numeric columns.
std::optional<PerftestFigure> parse(const std::string& output, const std::string& test) {
  std::istringstream in(output);
  std::string line;
  std::optional<PerftestFigure> figure;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<double> v;
    double x = 0;
    while (fields >> x) v.push_back(x);
    if (v.size() == 8) figure = PerftestFigure{test, v[5], v[3]};
  }
  return figure;
}

}  // namespace

std::optional<PerftestFigure> run_perftest(const std::string& tls, const std::string& test, std::size_t size,
                                           std::size_t iters, int port, bool err_handling) {
  const std::size_t warmup = std::max<std::size_t>(iters / 20, 2);
  // The server waits for one client; the client retries until the server
  // listens (at most 20 tries); both are bounded by timeout(1).
  const std::string cmd = fmt::format(
      "command -v ucx_perftest >/dev/null || exit 3; "
      "UCX_TLS={0} timeout 120 ucx_perftest -p {1} -c 0 {6} >/dev/null 2>&1 & srv=$!; "
      "for i in $(seq 20); do "
      "  out=$(UCX_TLS={0} timeout 110 ucx_perftest 127.0.0.1 -p {1} -c 1 -t {2} -s {3} -n {4} -w {5} {6} -f 2>&1) && "
      "break; "
      "  sleep 0.2; "
      "done; kill $srv 2>/dev/null; wait $srv 2>/dev/null; echo \"$out\"",
      tls, port, test, size, iters, warmup, err_handling ? "-e" : "");
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string output;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  ::pclose(pipe);
  return parse(output, test);
}

}  // namespace kvb::bench
