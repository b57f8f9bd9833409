// Logging setup: spdlog to stderr, one format for every kvblockd program.
#pragma once

#include <string_view>

#include "kvb/common/error.h"

namespace kvb {

/// Sets the default logger to stderr at `level` (trace, debug, info, warn,
/// error, critical, off). Unknown levels are an invalid_argument error.
[[nodiscard]] Status setup_logging(std::string_view level);

}  // namespace kvb
