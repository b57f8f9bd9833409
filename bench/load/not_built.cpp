// Placeholder until the load subcommand is built: says so and fails.
#include <cstdio>

#include "subcommands.h"

int kvb::bench::run_load(int, char**) {
  std::fprintf(stderr, "kvblockd-bench load: not built yet in this version\n");
  return 3;
}
