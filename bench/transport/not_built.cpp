// Placeholder until the transport subcommand is built: says so and fails.
#include <cstdio>

#include "subcommands.h"

int kvb::bench::run_transport(int, char**) {
  std::fprintf(stderr, "kvblockd-bench transport: not built yet in this version\n");
  return 3;
}
