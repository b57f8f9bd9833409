#include "kvb/common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace kvb {

Status setup_logging(std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return fail(Errc::invalid_argument,
                "unknown log level '{}' (expected trace, debug, info, warn, error, critical or off)", level);
  }
  auto logger = spdlog::get("kvblockd");
  if (!logger) logger = spdlog::stderr_color_mt("kvblockd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
  logger->set_level(parsed);
  spdlog::set_default_logger(std::move(logger));
  return ok();
}

}  // namespace kvb
