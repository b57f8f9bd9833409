// kvblockd-bench: one program, one subcommand per thing measured. Every
// subcommand prints progress to stderr and, as the last line of stdout, one
// JSON object with its figures.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "subcommands.h"

namespace {

struct Subcommand {
  std::string_view name;
  int (*run)(int, char**);
  std::string_view help;
};

constexpr Subcommand kSubcommands[] = {
    {"replay", kvb::bench::run_replay, "replay a Mooncake-format trace through the block manager"},
    {"copy", kvb::bench::run_copy, "copy engine bandwidth against memcpy / cudaMemcpy"},
    {"transport", kvb::bench::run_transport, "UCX block transfer GB/s and active-message round trips"},
    {"load", kvb::bench::run_load, "N concurrent engine sessions against a running kvblockd"},
    {"cluster", kvb::bench::run_cluster,
     "kvblockd workers as one cache: trace hit ratio alone vs clustered, remote onboard GB/s"},
    {"disk", kvb::bench::run_disk, "disk tier (G3) write/read GB/s and restart time, beside fio"},
    {"daemon", kvb::bench::run_daemon_bench,
     "offload / onboard through a kvblockd (memfd engine memory): first request, steady, N sessions vs memcpy"},
    {"gpu-request", kvb::bench::run_gpu_request,
     "an engine's device KV blocks through a running kvblockd vs pinned cudaMemcpy (GPU)"},
};

void usage(std::FILE* out) {
  std::fprintf(out, "usage: kvblockd-bench <subcommand> [flags]   (kvblockd-bench <subcommand> --help)\n\n");
  for (const auto& s : kSubcommands)
    std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(s.name.size()), s.name.data(),
                 static_cast<int>(s.help.size()), s.help.data());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& s : kSubcommands) {
    if (cmd == s.name) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "kvblockd-bench: unknown subcommand '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
