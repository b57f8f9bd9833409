// Placeholder until the copy subcommand is built: says so and fails.
#include <cstdio>

#include "subcommands.h"

int kvb::bench::run_copy(int, char**) {
  std::fprintf(stderr, "kvblockd-bench copy: not built yet in this version\n");
  return 3;
}
