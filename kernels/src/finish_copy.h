// finish_copy: how every engine of kernels/ calls a plan's `done`.
#pragma once

#include <exception>
#include <string_view>

#include <spdlog/spdlog.h>

#include "kvb/blockmgr/copy_engine.h"

namespace kvb::detail {

/// Runs `done(status)` and keeps an exception from escaping into an engine
/// thread (it is logged with the engine's name). noexcept.
inline void finish_copy(std::string_view engine, CopyDone& done, Status status) noexcept {
  try {
    done(std::move(status));
  } catch (const std::exception& e) {
    spdlog::error("{} copy engine: completion callback threw: {}", engine, e.what());
  } catch (...) {
    spdlog::error("{} copy engine: completion callback threw a non-exception", engine);
  }
}

}  // namespace kvb::detail
