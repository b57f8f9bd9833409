// IPC protocol v1, message level: one struct per message with its payload
// codec (docs/protocol.md, "Message types").
//
// Every message struct M has write(WireWriter&, const M&) and
// read(WireReader&, M&); requests, Reply, Notification and ErrorFrame also
// have `static constexpr MsgType kType`. Use the templates at the end:
// encode_payload / decode_payload (exact: trailing bytes are an error) and
// encode_message (a whole frame).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "kvb/common/block_shape.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"
#include "kvb/common/protocol_frame.h"
#include "kvb/common/wire.h"

namespace kvb::proto {

/// The block shape on the wire: a LayoutSpec (block_shape.h) whose dtype is
/// its DType's u8 value. Decoding refuses a dtype outside DType.
struct WireLayout {
  std::uint32_t num_layers = 0;
  std::uint32_t outer_dim = 2;
  std::uint32_t page_size = 0;
  std::uint32_t inner_dim = 0;
  std::uint8_t dtype = 2;
  std::uint32_t alignment = 256;
  friend bool operator==(const WireLayout&, const WireLayout&) = default;
};

/// The LayoutSpec a wire layout names, validated (invalid_argument naming the field).
[[nodiscard]] Result<LayoutSpec> to_spec(const WireLayout& wire);
/// The wire form of a spec.
[[nodiscard]] WireLayout to_wire(const LayoutSpec& spec) noexcept;

// ---- requests (client -> daemon) -------------------------------------------

struct HelloRequest {
  static constexpr MsgType kType = MsgType::hello;
  std::uint16_t min_version = kVersion;
  std::uint16_t max_version = kVersion;
  std::string client_name;
  std::uint64_t tenant_salt = 0;
  WireLayout layout;
  friend bool operator==(const HelloRequest&, const HelloRequest&) = default;
};

/// How the engine's KV memory reaches the daemon: memfds (host memory), CUDA
/// IPC handles (cudaIpcGetMemHandle, one per device allocation) or CUDA VMM
/// shareable handles (cuMemExportToShareableHandle as POSIX fds, one per
/// allocation, sent as SCM_RIGHTS).
enum class MemoryHandle : std::uint8_t { memfd = 0, cuda_ipc = 1, cuda_vmm = 2 };
inline constexpr MemoryHandle kLastMemoryHandle = MemoryHandle::cuda_vmm;
/// Bytes of a CUDA IPC memory handle (CU_IPC_HANDLE_SIZE) and of a device UUID.
inline constexpr std::size_t kCudaIpcHandleBytes = 64;
inline constexpr std::size_t kDeviceUuidBytes = 16;

/// Where one layout region lives in device memory: an allocation (index into
/// cuda_ipc_handles, or into the frame's fds for cuda_vmm) and the offset.
struct DeviceRegionRef {
  std::uint32_t allocation = 0;
  std::uint64_t offset = 0;
  friend bool operator==(const DeviceRegionRef&, const DeviceRegionRef&) = default;
};

/// The frame carries `fd_count` fds as SCM_RIGHTS (memfd: one per layout
/// region, in region order; cuda_vmm: one per allocation; cuda_ipc: none).
struct RegisterKvRequest {
  static constexpr MsgType kType = MsgType::register_kv;
  MemoryHandle memory = MemoryHandle::memfd;
  LayoutKind layout_kind = LayoutKind::fully_contiguous;
  std::uint32_t num_blocks = 0;
  std::uint64_t region_bytes = 0;  // bytes of each region
  std::uint32_t fd_count = 0;
  std::vector<std::vector<std::byte>> cuda_ipc_handles;  // cuda_ipc: one 64-byte handle per allocation
  // Device memory only (empty for memfd):
  std::vector<std::byte> device_uuid;           // the allocations' GPU (16 bytes)
  std::vector<std::uint64_t> allocation_bytes;  // size of each allocation
  std::vector<DeviceRegionRef> regions;         // one per layout region, in region order
  friend bool operator==(const RegisterKvRequest&, const RegisterKvRequest&) = default;
};

struct LookupRequest {
  static constexpr MsgType kType = MsgType::lookup;
  bool pin = false;
  std::vector<std::uint64_t> hashes;  // a prefix, in order
  friend bool operator==(const LookupRequest&, const LookupRequest&) = default;
};

struct OffloadItem {
  BlockId engine_block{0};
  std::uint64_t hash = 0;
  friend bool operator==(const OffloadItem&, const OffloadItem&) = default;
};

struct OffloadRequest {
  static constexpr MsgType kType = MsgType::offload;
  std::vector<OffloadItem> items;
  friend bool operator==(const OffloadRequest&, const OffloadRequest&) = default;
};

struct OnboardItem {
  std::uint64_t hash = 0;
  BlockId engine_block{0};
  friend bool operator==(const OnboardItem&, const OnboardItem&) = default;
};

struct OnboardRequest {
  static constexpr MsgType kType = MsgType::onboard;
  std::vector<OnboardItem> items;
  friend bool operator==(const OnboardRequest&, const OnboardRequest&) = default;
};

/// onboard with per-layer progress: the blocks' layers are copied in groups
/// of `layers_per_group` (the last group may be smaller); a `progress`
/// message announces each group, in layer order, before the notification.
struct OnboardLayersRequest {
  static constexpr MsgType kType = MsgType::onboard_layers;
  std::uint32_t layers_per_group = 1;
  std::vector<OnboardItem> items;
  friend bool operator==(const OnboardLayersRequest&, const OnboardLayersRequest&) = default;
};

struct ReleaseRequest {
  static constexpr MsgType kType = MsgType::release;
  std::vector<std::uint64_t> hashes;  // empty = every lease of the session
  friend bool operator==(const ReleaseRequest&, const ReleaseRequest&) = default;
};

struct StatusRequest {
  static constexpr MsgType kType = MsgType::status;
  RequestId target{0};
  friend bool operator==(const StatusRequest&, const StatusRequest&) = default;
};

struct WaitRequest {
  static constexpr MsgType kType = MsgType::wait;
  RequestId target{0};
  std::uint32_t timeout_ms = 0;
  friend bool operator==(const WaitRequest&, const WaitRequest&) = default;
};

/// For a router: for each worker of the daemon's cluster (this daemon
/// first), the longest prefix of `hashes` it holds.
struct LocateRequest {
  static constexpr MsgType kType = MsgType::locate;
  std::vector<std::uint64_t> hashes;  // a prefix, in order
  friend bool operator==(const LocateRequest&, const LocateRequest&) = default;
};

struct StatsRequest {
  static constexpr MsgType kType = MsgType::stats;
  friend bool operator==(const StatsRequest&, const StatsRequest&) = default;
};
struct ByeRequest {
  static constexpr MsgType kType = MsgType::bye;
  friend bool operator==(const ByeRequest&, const ByeRequest&) = default;
};
struct DrainRequest {
  static constexpr MsgType kType = MsgType::drain;
  friend bool operator==(const DrainRequest&, const DrainRequest&) = default;
};
struct ConfigRequest {
  static constexpr MsgType kType = MsgType::config;
  friend bool operator==(const ConfigRequest&, const ConfigRequest&) = default;
};

using AnyRequest = std::variant<HelloRequest, RegisterKvRequest, LookupRequest, OffloadRequest, OnboardRequest,
                                ReleaseRequest, StatusRequest, WaitRequest, StatsRequest, ByeRequest, DrainRequest,
                                ConfigRequest, OnboardLayersRequest, LocateRequest>;

// ---- daemon -> client ------------------------------------------------------

/// Every request gets one. `body` is the type-specific body (encode it with
/// encode_payload(body struct)); present only when code is ok and accepted is false.
struct Reply {
  static constexpr MsgType kType = MsgType::reply;
  Errc code = Errc::ok;
  std::string message;
  bool accepted = false;
  std::vector<std::byte> body;
  friend bool operator==(const Reply&, const Reply&) = default;
};

/// One per accepted async request: text is format_completion's.
struct Notification {
  static constexpr MsgType kType = MsgType::notification;
  Errc code = Errc::ok;
  std::string text;
  friend bool operator==(const Notification&, const Notification&) = default;
};

/// An onboard_layers request (header request_id) has copied layers
/// [layer_begin, layer_end) of every engine block it names; sent in layer
/// order, before the request's notification.
struct Progress {
  static constexpr MsgType kType = MsgType::progress;
  std::uint32_t layer_begin = 0;
  std::uint32_t layer_end = 0;
  std::uint32_t num_layers = 0;
  friend bool operator==(const Progress&, const Progress&) = default;
};

/// Connection-level error; the daemon closes the connection after it.
struct ErrorFrame {
  static constexpr MsgType kType = MsgType::error;
  Errc code = Errc::protocol_error;
  std::string message;
  friend bool operator==(const ErrorFrame&, const ErrorFrame&) = default;
};

// Reply bodies (no kType: they ride inside Reply::body).

struct HelloReply {
  SessionId session_id{0};
  std::uint16_t version = kVersion;
  std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  std::uint32_t max_inflight = 0;
  bool gpu_present = false;
  std::string server_version;
  friend bool operator==(const HelloReply&, const HelloReply&) = default;
};

enum class WireTier : std::uint8_t { g1 = 1, g2 = 2, g3 = 3, g4 = 4 };
inline constexpr WireTier kLastWireTier = WireTier::g4;

struct TierMatch {
  WireTier tier = WireTier::g2;
  std::uint32_t blocks = 0;
  friend bool operator==(const TierMatch&, const TierMatch&) = default;
};

struct LookupReply {
  std::uint32_t prefix_blocks = 0;  // longest match over all tiers
  std::vector<TierMatch> tiers;
  friend bool operator==(const LookupReply&, const LookupReply&) = default;
};

/// One worker's longest prefix of a locate query (worker "" is a daemon
/// that is not in a cluster).
struct WorkerPrefix {
  std::string worker;
  std::uint32_t prefix_blocks = 0;
  friend bool operator==(const WorkerPrefix&, const WorkerPrefix&) = default;
};

/// This daemon first, then every joined member of its cluster.
struct LocateReply {
  std::vector<WorkerPrefix> workers;
  friend bool operator==(const LocateReply&, const LocateReply&) = default;
};

struct ReleaseReply {
  std::uint32_t released = 0;
  friend bool operator==(const ReleaseReply&, const ReleaseReply&) = default;
};

enum class RequestState : std::uint8_t { pending = 0, ok = 1, err = 2, unknown = 3 };
inline constexpr RequestState kLastRequestState = RequestState::unknown;

/// Body of the status and wait replies.
struct RequestStateReply {
  RequestState state = RequestState::unknown;
  std::string message;
  friend bool operator==(const RequestStateReply&, const RequestStateReply&) = default;
};

struct StatsReply {
  std::string json;
  friend bool operator==(const StatsReply&, const StatsReply&) = default;
};

struct ConfigReply {
  std::string toml;
  friend bool operator==(const ConfigReply&, const ConfigReply&) = default;
};

// ---- payload codecs ---------------------------------------------------------

// M names a type: it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define KVB_PROTO_CODEC(M)                  \
  void write(WireWriter& out, const M& in); \
  void read(WireReader& in, M& out)
// NOLINTEND(bugprone-macro-parentheses)
KVB_PROTO_CODEC(WireLayout);
KVB_PROTO_CODEC(HelloRequest);
KVB_PROTO_CODEC(RegisterKvRequest);
KVB_PROTO_CODEC(LookupRequest);
KVB_PROTO_CODEC(OffloadRequest);
KVB_PROTO_CODEC(OnboardRequest);
KVB_PROTO_CODEC(ReleaseRequest);
KVB_PROTO_CODEC(StatusRequest);
KVB_PROTO_CODEC(WaitRequest);
KVB_PROTO_CODEC(StatsRequest);
KVB_PROTO_CODEC(ByeRequest);
KVB_PROTO_CODEC(DrainRequest);
KVB_PROTO_CODEC(ConfigRequest);
KVB_PROTO_CODEC(OnboardLayersRequest);
KVB_PROTO_CODEC(LocateRequest);
KVB_PROTO_CODEC(Reply);
KVB_PROTO_CODEC(Progress);
KVB_PROTO_CODEC(Notification);
KVB_PROTO_CODEC(ErrorFrame);
KVB_PROTO_CODEC(HelloReply);
KVB_PROTO_CODEC(LookupReply);
KVB_PROTO_CODEC(LocateReply);
KVB_PROTO_CODEC(ReleaseReply);
KVB_PROTO_CODEC(RequestStateReply);
KVB_PROTO_CODEC(StatsReply);
KVB_PROTO_CODEC(ConfigReply);
#undef KVB_PROTO_CODEC

/// The payload bytes of `message`; errors: a string over kMaxStringBytes, or
/// more than `limit` bytes.
template <class M>
[[nodiscard]] Result<std::vector<std::byte>> encode_payload(const M& message, std::size_t limit = 0xFFFFFFFFU) {
  WireWriter out(limit);
  write(out, message);
  return std::move(out).finish();
}

/// Decodes exactly `payload` as M; protocol_error naming the field when it is
/// truncated, has trailing bytes, or holds an invalid value.
template <class M>
[[nodiscard]] Result<M> decode_payload(std::span<const std::byte> payload) {
  WireReader in(payload);
  M message{};
  read(in, message);
  if (auto status = in.finish(); !status) return tl::unexpected<Error>(std::move(status.error()));
  return message;
}

/// A whole frame (header + payload) carrying `message` (M::kType).
template <class M>
[[nodiscard]] Result<std::vector<std::byte>> encode_message(RequestId request_id, const M& message) {
  auto payload = encode_payload(message);
  if (!payload) return tl::unexpected<Error>(std::move(payload.error()));
  return encode_frame(M::kType, request_id, *payload);
}

/// Decodes a request frame's payload by its type; protocol_error when the
/// type is not a request type or the payload does not decode exactly.
[[nodiscard]] Result<AnyRequest> decode_request(MsgType type, std::span<const std::byte> payload);

/// An ok reply carrying `body` (encoded).
template <class Body>
[[nodiscard]] Reply make_reply(const Body& body) {
  Reply reply;
  if (auto bytes = encode_payload(body)) {
    reply.body = std::move(*bytes);
  } else {
    reply.code = bytes.error().code;
    reply.message = bytes.error().message;
  }
  return reply;
}
/// An ok reply with an empty body.
[[nodiscard]] Reply make_empty_reply();
/// An "accepted" reply (async request; a notification follows).
[[nodiscard]] Reply make_accepted_reply();
/// A refusal: code and message of `error`.
[[nodiscard]] Reply make_error_reply(const Error& error);
/// The notification for a finished async request.
[[nodiscard]] Notification make_notification(RequestId request_id, const Status& result);

/// The typed body of an ok, not-accepted reply; the reply's own error when
/// its code is not ok.
template <class Body>
[[nodiscard]] Result<Body> decode_reply_body(const Reply& reply) {
  if (reply.code != Errc::ok) return make_error(reply.code, reply.message);
  if (reply.accepted) return fail(Errc::protocol_error, "reply is 'accepted' and has no body");
  return decode_payload<Body>(reply.body);
}

}  // namespace kvb::proto
