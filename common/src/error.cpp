#include "kvb/common/error.h"

namespace kvb {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::already_exists: return "already_exists";
    case Errc::out_of_capacity: return "out_of_capacity";
    case Errc::busy: return "busy";
    case Errc::timeout: return "timeout";
    case Errc::io_error: return "io_error";
    case Errc::protocol_error: return "protocol_error";
    case Errc::unavailable: return "unavailable";
    case Errc::cancelled: return "cancelled";
    case Errc::shutting_down: return "shutting_down";
    case Errc::permission_denied: return "permission_denied";
    case Errc::internal: return "internal";
    case Errc::peer_lost: return "peer_lost";
    case Errc::unsupported: return "unsupported";
    case Errc::wrong_state: return "wrong_state";
  }
  return "unknown";
}

std::string Error::to_string() const { return fmt::format("{}: {}", kvb::to_string(code), message); }

}  // namespace kvb
