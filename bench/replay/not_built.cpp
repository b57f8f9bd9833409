// Placeholder until the replay subcommand is built: says so and fails.
#include <cstdio>

#include "subcommands.h"

int kvb::bench::run_replay(int, char**) {
  std::fprintf(stderr, "kvblockd-bench replay: not built yet in this version\n");
  return 3;
}
