// TransportError: the exception constructors of transport/ throw; it carries
// a kvb::Error so that factories turn it back into a Result.
#pragma once

#include <stdexcept>

#include "kvb/common/error.h"

namespace kvb::transport {

class TransportError : public std::runtime_error {
 public:
  explicit TransportError(const Error& error) : std::runtime_error(error.to_string()), error_(error) {}
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace kvb::transport
