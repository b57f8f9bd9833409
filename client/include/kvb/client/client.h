// Client: a blocking handle on one kvblockd session, for engines and tools
// that prefer plain calls. It owns an Asio io_context run by ONE background
// thread (the session's reader); every call sends a request through the
// asynchronous Session and waits for its result with a bounded timeout.
//
// Async use: session() gives the Session; its callbacks run on the
// background thread. Never call a blocking Client method from inside such a
// callback (it would wait on the thread that has to deliver its answer).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>

#include "kvb/client/kv_region.h"
#include "kvb/client/session.h"
#include "kvb/common/error.h"

namespace boost::asio {
class io_context;
}

namespace kvb::client {

/// The socket kvblockd listens on by default: $XDG_RUNTIME_DIR/kvblockd.sock (when
/// that directory exists),
/// else /tmp/kvblockd-<uid>.sock (docs/configuration.md).
[[nodiscard]] std::string default_socket_path();

class Client {
 public:
  /// How long a blocking call waits for its answer before returning timeout.
  static constexpr std::chrono::milliseconds kDefaultTimeout{30'000};

  /// Connects to `socket_path` and starts the reader thread.
  [[nodiscard]] static Result<std::unique_ptr<Client>> connect(const std::string& socket_path);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  /// Closes the session (pending requests fail with cancelled) and joins the thread.
  ~Client();

  void set_timeout(std::chrono::milliseconds timeout) noexcept { timeout_ = timeout; }

  [[nodiscard]] Result<HelloInfo> hello(const HelloParams& params);
  /// `region` must outlive the session's use of it (until bye / close).
  [[nodiscard]] Status register_kv(const KvRegion& region);
  /// An engine's device KV cache (DeviceKv::export_regions); its device
  /// memory must stay allocated until bye / close.
  [[nodiscard]] Status register_device_kv(const DeviceKv& kv);
  [[nodiscard]] Result<LookupResult> lookup(std::span<const std::uint64_t> hashes, bool pin = false);
  /// For a KV-aware router: each worker's longest prefix of `hashes` (the
  /// daemon first, named "" when it is not in a cluster). Needs a hello
  /// with the block shape (and tenant salt) the hashes were stored under.
  [[nodiscard]] Result<std::vector<WorkerPrefix>> locate(std::span<const std::uint64_t> hashes);
  /// Returns once the daemon's notification says the blocks are registered (or failed).
  [[nodiscard]] Status offload(std::span<const OffloadItem> items);
  /// Returns once the daemon's notification says the engine blocks hold the data (or failed).
  [[nodiscard]] Status onboard(std::span<const OnboardItem> items);
  /// onboard with per-layer progress: `on_progress` runs on the client's
  /// thread for each group of `layers_per_group` layers, in layer order;
  /// returns with the notification.
  [[nodiscard]] Status onboard_layers(std::span<const OnboardItem> items, std::uint32_t layers_per_group,
                                      ProgressCallback on_progress);
  [[nodiscard]] Result<std::uint32_t> release(std::span<const std::uint64_t> hashes = {});
  [[nodiscard]] Result<RequestStatus> status(RequestId target);
  [[nodiscard]] Result<RequestStatus> wait(RequestId target, std::uint32_t timeout_ms);
  [[nodiscard]] Result<std::string> stats();
  [[nodiscard]] Result<std::string> config();
  [[nodiscard]] Status drain();
  [[nodiscard]] Status bye();

  /// The asynchronous session underneath.
  [[nodiscard]] Session& session() noexcept { return *session_; }

 private:
  Client(std::unique_ptr<boost::asio::io_context> io, std::shared_ptr<Session> session);
  template <class T, class Start>
  Result<T> call(Start start);

  std::unique_ptr<boost::asio::io_context> io_;
  std::shared_ptr<Session> session_;
  std::thread thread_;
  std::chrono::milliseconds timeout_ = kDefaultTimeout;
};

}  // namespace kvb::client
