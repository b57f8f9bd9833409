// Session: one connection to kvblockd, asynchronous.
//
// Every request gets a request id chosen here (a per-session counter) and
// resolves its callback EXACTLY ONCE: from its reply, or, for offload and
// onboard accepted by the daemon, from the notification `<id>:ok` /
// `<id>:err(<message>)` pushed when the work ends. Losing the connection (the
// daemon closing it, an error frame, close()) fails every pending request
// with that reason. One reader per connection and one map of pending
// requests: no thread or task per request.
//
// Flow control: offload, onboard and wait count against the max_inflight the
// daemon sends in its hello reply. Beyond it the session holds new ones back,
// in order, and sends each when an earlier one ends (so the daemon never has
// to refuse them busy); with 8 x max_inflight already held, or 64 MiB of
// frames not yet written, a new request fails at once with busy.
//
// Callbacks run on the session's strand (never inline inside the call that
// started the request). A callback may start new requests. Do not block the
// executor's threads inside a callback waiting for another request's result.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include "kvb/client/device_kv.h"
#include "kvb/client/kv_region.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/common/protocol_messages.h"

namespace kvb::client {

namespace detail {
struct OutFrame;
struct PendingRequest;
}  // namespace detail

template <class T>
using Callback = std::function<void(Result<T>)>;

/// What hello sends.
struct HelloParams {
  std::string client_name = "kvb-client";
  std::uint64_t tenant_salt = 0;
  BlockShape shape{};
};

/// What hello answers (session id, version, limits, server version).
using HelloInfo = proto::HelloReply;
/// prefix_blocks (longest match over all tiers) and the blocks per tier.
using LookupResult = proto::LookupReply;
/// One worker's longest prefix of a locate query.
using WorkerPrefix = proto::WorkerPrefix;
/// Copy engine block `engine_block` to the daemon under `hash`.
using OffloadItem = proto::OffloadItem;
/// Copy the block of `hash` into engine block `engine_block`.
using OnboardItem = proto::OnboardItem;
using RequestState = proto::RequestState;
/// Layers [layer_begin, layer_end) of every engine block of an
/// onboard_layers request hold their bytes (num_layers: the block's layers).
using LayerProgress = proto::Progress;
using ProgressCallback = std::function<void(const LayerProgress&)>;
/// state (pending / ok / err / unknown) and the error message.
using RequestStatus = proto::RequestStateReply;

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Executor = boost::asio::any_io_executor;

  /// Connects to the Unix socket `path` without blocking the executor; `done`
  /// runs on the executor with the session or an io_error naming the path.
  static void async_connect(const Executor& executor, std::string path, Callback<std::shared_ptr<Session>> done);
  /// Connects synchronously (a Unix socket connect does not wait on the
  /// network). The session's reader starts at once on `executor`.
  [[nodiscard]] static Result<std::shared_ptr<Session>> connect(const Executor& executor, const std::string& path);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Requests. Each returns the request id it used. Safe from any thread.
  RequestId async_hello(const HelloParams& params, Callback<HelloInfo> done);
  /// Sends the region's layout and its memfds (SCM_RIGHTS). The region must
  /// stay alive while the daemon uses it (until bye or the session ends).
  RequestId async_register_kv(const KvRegion& region, Callback<void> done);
  /// Registers an engine's device KV cache: the request DeviceKv built and,
  /// for VMM, copies of its fds (SCM_RIGHTS). The device memory must stay
  /// allocated while the daemon uses it (until bye or the session ends).
  RequestId async_register_device_kv(const DeviceKv& kv, Callback<void> done);
  RequestId async_lookup(std::span<const std::uint64_t> hashes, bool pin, Callback<LookupResult> done);
  /// For a KV-aware router: for each worker of the daemon's cluster (the
  /// daemon first; its name is "" when it is not in a cluster), the longest
  /// prefix of `hashes` it holds. Leases nothing.
  RequestId async_locate(std::span<const std::uint64_t> hashes, Callback<std::vector<WorkerPrefix>> done);
  /// Resolves when the notification arrives (or with the reply's refusal).
  RequestId async_offload(std::span<const OffloadItem> items, Callback<void> done);
  /// Resolves when the notification arrives (or with the reply's refusal).
  RequestId async_onboard(std::span<const OnboardItem> items, Callback<void> done);
  /// onboard with per-layer progress (vLLM's wait_for_layer_load): the
  /// daemon copies the layers in groups of `layers_per_group` and
  /// `on_progress` runs for each group, in layer order, as soon as every
  /// block holds it; `done` resolves after the last one, with the
  /// notification. On the session's strand, like every callback.
  RequestId async_onboard_layers(std::span<const OnboardItem> items, std::uint32_t layers_per_group,
                                 ProgressCallback on_progress, Callback<void> done);
  /// Empty `hashes` releases every lease of the session; answers how many were released.
  RequestId async_release(std::span<const std::uint64_t> hashes, Callback<std::uint32_t> done);
  RequestId async_status(RequestId target, Callback<RequestStatus> done);
  RequestId async_wait(RequestId target, std::uint32_t timeout_ms, Callback<RequestStatus> done);
  /// The daemon's counters as JSON text, exactly as sent.
  RequestId async_stats(Callback<std::string> done);
  /// The daemon's effective configuration as TOML text.
  RequestId async_config(Callback<std::string> done);
  RequestId async_drain(Callback<void> done);
  RequestId async_bye(Callback<void> done);

  /// Closes the connection; every pending request fails with cancelled.
  /// Idempotent. Safe from any thread.
  void close();
  /// Requests sent and not yet resolved. Safe from any thread.
  [[nodiscard]] std::size_t pending() const noexcept { return pending_count_.load(std::memory_order_relaxed); }
  /// Whether the connection is still open. Safe from any thread.
  [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_relaxed); }
  [[nodiscard]] Executor executor() const;

 private:
  struct Impl;
  explicit Session(const Executor& executor);

  // All of these run on the strand.
  /// Removes a resolved request (it must be pending) and, if it counted
  /// against max_inflight, sends the oldest held request.
  detail::PendingRequest take(std::uint64_t id);
  /// Queues a frame for the writer.
  void enqueue(detail::OutFrame frame);
  template <class M>
  RequestId send(const M& message, std::function<void(Result<proto::Reply>)> on_reply, Callback<void> on_done,
                 std::vector<int> fds, ProgressCallback on_progress = {});
  void start_read();
  void handle_frame(const proto::Frame& frame);
  void start_write();
  void send_with_fds();
  void finish_write(const boost::system::error_code& ec, std::size_t bytes);
  /// Closes the socket and fails every pending request with `reason`. Idempotent.
  void shut_down(const Error& reason);

  std::unique_ptr<Impl> impl_;
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::size_t> pending_count_{0};
  std::atomic<bool> open_{false};
};

}  // namespace kvb::client
