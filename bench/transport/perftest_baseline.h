// The same-run baseline of `kvblockd-bench transport`: ucx_perftest (from
// ucx-utils) over the same transport and size, server and client pinned to
// different cores, each run bounded by `timeout`.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace kvb::bench {

struct PerftestFigure {
  std::string test;       // ucp_put_bw, ucp_am_bw, tag_bw, ucp_am_lat
  double mb_per_s = 0;    // "overall" bandwidth column (UCX's MB = 2^20 bytes)
  double latency_us = 0;  // "overall" overhead column (one-way latency for *_lat)
};

/// Runs one ucx_perftest test (server + client on 127.0.0.1:port);
/// `err_handling` adds -e (endpoints with UCP_ERR_HANDLING_MODE_PEER, as
/// kvblockd's). nullopt when ucx_perftest is missing or the run failed.
std::optional<PerftestFigure> run_perftest(const std::string& tls, const std::string& test, std::size_t size,
                                           std::size_t iters, int port, bool err_handling = false);

}  // namespace kvb::bench
