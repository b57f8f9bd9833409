// kvblockd: see docs/operations.md (run, monitor, stop) and
// docs/configuration.md (every key and flag).
#include <cstdio>

#include "kvb/daemon/config.h"
#include "kvb/daemon/daemon.h"

int main(int argc, char** argv) {
  auto command = kvb::daemon::parse_command_line(argc, argv);
  if (command.exit_code) {
    std::fputs(command.exit_text.c_str(), *command.exit_code == 0 ? stdout : stderr);
    return *command.exit_code;
  }
  if (command.print_config) {
    std::fputs(command.config.to_toml().c_str(), stdout);
    return 0;
  }
  return kvb::daemon::run_daemon(command.config);
}
