#include "kvb/transport/context.h"

#include <algorithm>
#include <string>
#include <string_view>

#include <ucp/api/ucp.h>

#include "ucx_request.h"

namespace kvb::transport {

namespace {

bool any_transport_detects_peer_failure(std::string_view tls) {
  if (tls.empty()) return true;
  static constexpr std::string_view kLocalOnly[] = {"self", "sm", "shm", "sysv", "posix", "cma", "mm", "knem", "xpmem"};
  while (!tls.empty()) {
    const auto comma = tls.find(',');
    const auto name = tls.substr(0, comma);
    if (std::find(std::begin(kLocalOnly), std::end(kLocalOnly), name) == std::end(kLocalOnly)) return true;
    tls = comma == std::string_view::npos ? std::string_view{} : tls.substr(comma + 1);
  }
  return false;
}

}  // namespace

Context::Context(const ContextOptions& options)
    : tls_(options.tls), peer_failure_detection_(any_transport_detects_peer_failure(options.tls)) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) detail::throw_ucx("ucp_config_read", st);
  if (!options.tls.empty()) {
    st = ucp_config_modify(config, "TLS", options.tls.c_str());
    if (st != UCS_OK) {
      ucp_config_release(config);
      throw TransportError(Error{Errc::invalid_argument,
                                 fmt::format("tls '{}' refused by UCX: {}", options.tls, ucs_status_string(st))});
    }
  }
  const std::string keepalive = std::to_string(options.keepalive_interval.count()) + "ms";
  (void)ucp_config_modify(config, "KEEPALIVE_INTERVAL", keepalive.c_str());

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  st = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (st != UCS_OK) detail::throw_ucx(fmt::format("ucp_init (tls '{}')", options.tls), st);
}

Result<std::unique_ptr<Context>> Context::create(const ContextOptions& options) {
  try {
    return std::make_unique<Context>(options);
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

Context::~Context() {
  if (context_ != nullptr) ucp_cleanup(context_);
}

}  // namespace kvb::transport
