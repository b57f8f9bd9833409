// Context: owns a ucp_context with the AM, RMA and WAKEUP features.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "kvb/common/error.h"
#include "kvb/transport/transport_error.h"
#include "kvb/transport/ucx_fwd.h"

namespace kvb::transport {

struct ContextOptions {
  /// UCX_TLS for this context only ("tcp", "sm", "self", ...); empty keeps
  /// the environment's / UCX's default.
  std::string tls;
  /// UCX keepalive interval: how fast a silent dead peer is detected.
  std::chrono::milliseconds keepalive_interval{500};
};

class Context {
 public:
  /// Throws TransportError when UCX refuses the configuration.
  explicit Context(const ContextOptions& options);
  /// Non-throwing factory for component boundaries.
  [[nodiscard]] static Result<std::unique_ptr<Context>> create(const ContextOptions& options);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  [[nodiscard]] ucp_context* handle() const noexcept { return context_; }
  [[nodiscard]] const std::string& tls() const noexcept { return tls_; }
  /// Whether endpoints can use UCP_ERR_HANDLING_MODE_PEER: false when every
  /// transport in tls is shared memory or self (UCX 1.13's sysv/posix/self
  /// have no peer failure support; the AM manager watches such peers itself).
  [[nodiscard]] bool peer_failure_detection() const noexcept { return peer_failure_detection_; }

 private:
  ucp_context* context_ = nullptr;
  std::string tls_;
  bool peer_failure_detection_ = true;
};

}  // namespace kvb::transport
