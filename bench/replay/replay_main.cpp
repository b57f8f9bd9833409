// kvblockd-bench replay --trace FILE --capacity-tokens N [--block-tokens 512]
//   [--policy prefix|lru|s3fifo|belady] [--host-capacity-tokens M] [--disk-capacity-tokens D]
//   [--disk-admit-min-frequency F] [--disk-dir DIR] [--max-requests K]
// Progress on stderr; the last line of stdout is one JSON object.
#include <charconv>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "replay.h"
#include "subcommands.h"

namespace {

// "unbounded" or 0 -> 0 (unbounded); else a non-negative integer.
bool parse_tokens(const std::string& text, std::uint64_t& out) {
  if (text == "unbounded") {
    out = 0;
    return true;
  }
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

}  // namespace

int kvb::bench::run_replay(int argc, char** argv) {
  CLI::App app{"Replay a Mooncake-format JSONL trace through the real BlockManager and report the prefix hit ratio.",
               "kvblockd-bench replay"};
  std::string trace_path;
  std::string capacity = "unbounded";
  std::string host_capacity = "0";
  std::string disk_capacity = "0";
  std::size_t max_requests = 0;
  ReplayConfig config;
  app.add_option("--trace", trace_path, "JSONL trace (timestamp, input_length, output_length, hash_ids)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--capacity-tokens", capacity,
                 "G1 capacity in tokens (floor(N / block-tokens) blocks); 0 or 'unbounded' = every block fits")
      ->required();
  app.add_option("--block-tokens", config.block_tokens, "tokens per block")
      ->default_val(512)
      ->check(CLI::PositiveNumber);
  app.add_option("--policy", config.policy,
                 fmt::format("eviction policy ({}; belady = the offline optimum, reading the trace's future)",
                             kvb::bench::replay_policy_names()))
      ->default_val("prefix");
  app.add_option("--host-capacity-tokens", host_capacity, "adds a G2 host tier of M tokens (0 = none)")
      ->default_val("0");
  app.add_option("--disk-capacity-tokens", disk_capacity,
                 "adds a G3 disk tier of D tokens (0 = none; needs a G2 tier): a real slot store in a temp dir")
      ->default_val("0");
  app.add_option("--disk-admit-min-frequency", config.disk_admit_min_frequency,
                 "G3 admission filter: G2 victims used fewer times are not written (0 or 1 = all)")
      ->default_val(1);
  app.add_option("--disk-dir", config.disk_dir, "parent of the G3 temp dir (default /dev/shm, else $TMPDIR)");
  app.add_option("--max-requests", max_requests, "replay only the first K requests (0 = all)")->default_val(0);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!parse_tokens(capacity, config.capacity_tokens)) {
    std::fprintf(stderr, "replay: --capacity-tokens: expected a number of tokens or 'unbounded', got '%s'\n",
                 capacity.c_str());
    return 2;
  }
  if (!parse_tokens(host_capacity, config.host_capacity_tokens)) {
    std::fprintf(stderr, "replay: --host-capacity-tokens: expected a number of tokens, got '%s'\n",
                 host_capacity.c_str());
    return 2;
  }

  if (!parse_tokens(disk_capacity, config.disk_capacity_tokens)) {
    std::fprintf(stderr, "replay: --disk-capacity-tokens: expected a number of tokens, got '%s'\n",
                 disk_capacity.c_str());
    return 2;
  }

  std::fprintf(stderr, "replay: reading %s\n", trace_path.c_str());
  auto trace = read_trace(trace_path, max_requests);
  if (!trace) {
    std::fprintf(stderr, "replay: %s\n", trace.error().to_string().c_str());
    return 1;
  }
  config.progress = [](std::size_t done, std::size_t total, double hit_ratio) {
    std::fprintf(stderr, "replay: %zu/%zu requests, hit ratio %.4f\n", done, total, hit_ratio);
  };
  auto result = replay_trace(*trace, config);
  if (!result) {
    std::fprintf(stderr, "replay: %s\n", result.error().to_string().c_str());
    return 1;
  }
  std::fprintf(
      stderr,
      "replay: policy %s, G1 %u blocks, G2 %u blocks: hit ratio %.4f vs %.4f unbounded baseline "
      "(%.1f%% of it), %.2f s\n",
      config.policy.c_str(), result->g1_blocks, result->g2_blocks, result->hit_ratio(), result->unbounded_hit_ratio(),
      result->unbounded_hit_blocks == 0
          ? 0.0
          : 100.0 * static_cast<double>(result->hit_blocks) / static_cast<double>(result->unbounded_hit_blocks),
      result->seconds);
  std::printf("%s\n", to_json(*result, config).c_str());
  return 0;
}
