// Error handling for every kvblockd component boundary.
//
// One style per layer (docs/architecture.md): functions that cross a component
// boundary return Result<T> (tl::expected<T, Error>) or Status and are
// [[nodiscard]]. Exceptions stay inside a component (and constructors).
// Errc values travel on the wire (docs/protocol.md): never renumber them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <tl/expected.hpp>

namespace kvb {

enum class Errc : std::uint16_t {
  ok = 0,
  invalid_argument = 1,    // the caller passed something malformed
  not_found = 2,           // an id, hash or name that does not exist
  already_exists = 3,      // registering something twice
  out_of_capacity = 4,     // a pool, queue or table is full
  busy = 5,                // admission refused: try again later
  timeout = 6,             // a deadline passed
  io_error = 7,            // the OS said no (errno in the message)
  protocol_error = 8,      // a malformed frame or message
  unavailable = 9,         // a feature or device is not present
  cancelled = 10,          // the work was cancelled (session ended, ...)
  shutting_down = 11,      // the daemon is stopping
  permission_denied = 12,  // credentials or mode refused
  internal = 13,           // a bug: an invariant did not hold
  peer_lost = 14,          // a remote worker or client went away
  unsupported = 15,        // valid, but this build or engine cannot do it
  wrong_state = 16,        // the object is not in a state that allows this
};

/// Stable lower-case name of an error code ("invalid_argument", ...).
[[nodiscard]] std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code = Errc::internal;
  std::string message;

  /// "<code>: <message>", e.g. "invalid_argument: page_size must be > 0".
  [[nodiscard]] std::string to_string() const;
};

template <class T>
using Result = tl::expected<T, Error>;
using Status = tl::expected<void, Error>;

[[nodiscard]] inline tl::unexpected<Error> make_error(Errc code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

/// make_error with a fmt format string: fail(Errc::not_found, "no block {}", id).
template <class... Args>
[[nodiscard]] tl::unexpected<Error> fail(Errc code, fmt::format_string<Args...> format, Args&&... args) {
  return make_error(code, fmt::format(format, std::forward<Args>(args)...));
}

[[nodiscard]] inline Status ok() { return {}; }

}  // namespace kvb

template <>
struct fmt::formatter<kvb::Errc> : fmt::formatter<std::string_view> {
  auto format(kvb::Errc code, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(kvb::to_string(code), ctx);
  }
};
