#include "fio_baseline.h"

#include <cstdio>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kvb::bench {

Result<FioResult> run_fio(const FioJob& job) {
  for (std::string_view s : {std::string_view(job.fio), std::string_view(job.file)}) {
    if (s.find('\'') != std::string_view::npos)
      return fail(Errc::invalid_argument, "fio baseline: path '{}' holds a quote", s);
  }
  FioResult r;
  // numjobs=1 and iodepth=Q: one submitter with Q I/Os in flight, as the
  // slot store; psync cannot queue, so it gets Q jobs instead.
  const bool sync_engine = job.ioengine == "psync";
  r.command = fmt::format(
      "'{}' --name=kvb --filename='{}' --size={} --bs={} --direct=1 --ioengine={} --iodepth={} --numjobs={} "
      "--rw={} {} --group_reporting --output-format=json",
      job.fio, job.file, job.bytes, job.block_bytes, job.ioengine, sync_engine ? 1 : job.queue_depth,
      sync_engine ? job.queue_depth : 1, job.write ? "write" : "read",
      job.write ? "--fallocate=native --end_fsync=1" : "");
  std::FILE* pipe = ::popen((r.command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return fail(Errc::unavailable, "fio baseline: cannot run '{}'", job.fio);
  std::string out;
  char buf[4096];
  while (const std::size_t n = std::fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  const int status = ::pclose(pipe);
  if (status != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
      return fail(Errc::unavailable, "fio baseline: '{}' is not installed (apt install fio)", job.fio);
    return fail(Errc::io_error, "fio baseline failed (status {}): {}", status, out.substr(0, 2000));
  }
  const auto start = out.find('{');  // fio may print notes before its JSON
  const auto json = nlohmann::json::parse(start == std::string::npos ? out : out.substr(start), nullptr, false);
  if (json.is_discarded() || !json.contains("jobs") || json["jobs"].empty())
    return fail(Errc::io_error, "fio baseline: no JSON result in its output: {}", out.substr(0, 2000));
  const auto& side = json["jobs"][0][job.write ? "write" : "read"];
  const double bytes_per_s = side.value("bw_bytes", 0.0);
  r.gbps = bytes_per_s / 1e9;
  r.seconds = side.value("runtime", 0.0) / 1000.0;
  return r;
}

}  // namespace kvb::bench
