#include "kvb/common/protocol_messages.h"

namespace kvb::proto {
namespace {

// The wire values of docs/protocol.md are the enums' values: changing either
// breaks every client.
static_assert(static_cast<int>(DType::u8) == 0 && static_cast<int>(DType::f16) == 1 &&
              static_cast<int>(DType::bf16) == 2 && static_cast<int>(DType::f32) == 3 &&
              static_cast<int>(DType::fp8_e4m3) == 4 && static_cast<int>(DType::fp8_e5m2) == 5 &&
              kLastDType == DType::fp8_e5m2);
static_assert(static_cast<int>(LayoutKind::fully_contiguous) == 0 &&
              static_cast<int>(LayoutKind::layer_separate_block_outer) == 1 &&
              static_cast<int>(LayoutKind::layer_separate_outer_block) == 2 &&
              kLastLayoutKind == LayoutKind::layer_separate_outer_block);
static_assert(static_cast<int>(MemoryHandle::memfd) == 0 && static_cast<int>(MemoryHandle::cuda_ipc) == 1);

constexpr std::uint16_t kMaxErrc = static_cast<std::uint16_t>(Errc::wrong_state);

bool read_bool(WireReader& in, std::string_view field) {
  const std::uint8_t value = in.u8(field);
  if (value > 1) in.fail_with(Error{Errc::protocol_error, fmt::format("{} is {} (expected 0 or 1)", field, value)});
  return value == 1;
}

Errc read_errc(WireReader& in, std::string_view field) {
  const std::uint16_t value = in.u16(field);
  if (value > kMaxErrc) {
    in.fail_with(Error{Errc::protocol_error, fmt::format("{} is {}, not an error code", field, value)});
    return Errc::internal;
  }
  return static_cast<Errc>(value);
}

void read_u64_list(WireReader& in, std::vector<std::uint64_t>& out, std::string_view field) {
  const std::uint32_t n = in.count(field, 8);
  out.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) out.push_back(in.u64(field));
}

void write_u64_list(WireWriter& out, const std::vector<std::uint64_t>& in, std::string_view field) {
  out.count(in.size(), field);
  for (const auto value : in) out.u64(value);
}

}  // namespace

void write(WireWriter& out, const WireLayout& in) {
  out.u32(in.num_layers);
  out.u32(in.outer_dim);
  out.u32(in.page_size);
  out.u32(in.inner_dim);
  out.u8(in.dtype);
  out.u32(in.alignment);
}
void read(WireReader& in, WireLayout& out) {
  out.num_layers = in.u32("layout.num_layers");
  out.outer_dim = in.u32("layout.outer_dim");
  out.page_size = in.u32("layout.page_size");
  out.inner_dim = in.u32("layout.inner_dim");
  out.dtype = in.u8("layout.dtype");
  out.alignment = in.u32("layout.alignment");
  if (in.ok() && !dtype_from_wire(out.dtype)) {
    in.fail_with(Error{Errc::protocol_error,
                       fmt::format("layout.dtype is {} (expected 0..{})", out.dtype, static_cast<int>(kLastDType))});
  }
}

Result<LayoutSpec> to_spec(const WireLayout& wire) {
  const auto dtype = dtype_from_wire(wire.dtype);
  if (!dtype) return fail(Errc::invalid_argument, "layout: dtype {} is not a known dtype", wire.dtype);
  LayoutSpec spec{wire.num_layers, wire.outer_dim, wire.page_size, wire.inner_dim, *dtype, wire.alignment};
  if (auto valid = spec.validate(); !valid) return tl::unexpected(valid.error());
  return spec;
}

WireLayout to_wire(const LayoutSpec& spec) noexcept {
  return WireLayout{
      spec.num_layers, spec.outer_dim, spec.page_size, spec.inner_dim, static_cast<std::uint8_t>(spec.dtype),
      spec.alignment};
}

void write(WireWriter& out, const HelloRequest& in) {
  out.u16(in.min_version);
  out.u16(in.max_version);
  out.string(in.client_name, "client_name");
  out.u64(in.tenant_salt);
  write(out, in.layout);
}
void read(WireReader& in, HelloRequest& out) {
  out.min_version = in.u16("min_version");
  out.max_version = in.u16("max_version");
  out.client_name = in.string("client_name");
  out.tenant_salt = in.u64("tenant_salt");
  read(in, out.layout);
  if (in.ok() && out.min_version > out.max_version) {
    in.fail_with(
        Error{Errc::protocol_error, fmt::format("min_version {} > max_version {}", out.min_version, out.max_version)});
  }
}

void write(WireWriter& out, const RegisterKvRequest& in) {
  out.u8(static_cast<std::uint8_t>(in.memory));
  out.u8(static_cast<std::uint8_t>(in.layout_kind));
  out.u32(in.num_blocks);
  out.u64(in.region_bytes);
  out.u32(in.fd_count);
  out.count(in.cuda_ipc_handles.size(), "cuda_ipc_handles");
  for (const auto& handle : in.cuda_ipc_handles) out.blob(handle, "cuda_ipc_handles[]");
  out.blob(in.device_uuid, "device_uuid");
  write_u64_list(out, in.allocation_bytes, "allocation_bytes");
  out.count(in.regions.size(), "regions");
  for (const auto& region : in.regions) {
    out.u32(region.allocation);
    out.u64(region.offset);
  }
}
void read(WireReader& in, RegisterKvRequest& out) {
  const std::uint8_t memory = in.u8("memory");
  out.memory = static_cast<MemoryHandle>(memory);
  const std::uint8_t layout_kind = in.u8("layout_kind");
  out.num_blocks = in.u32("num_blocks");
  out.region_bytes = in.u64("region_bytes");
  out.fd_count = in.u32("fd_count");
  const std::uint32_t n = in.count("cuda_ipc_handles", 4);
  out.cuda_ipc_handles.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) out.cuda_ipc_handles.push_back(in.blob("cuda_ipc_handles[]"));
  out.device_uuid = in.blob("device_uuid");
  read_u64_list(in, out.allocation_bytes, "allocation_bytes");
  const std::uint32_t regions = in.count("regions", 12);
  out.regions.reserve(regions);
  for (std::uint32_t i = 0; i < regions && in.ok(); ++i) {
    DeviceRegionRef region;
    region.allocation = in.u32("regions[].allocation");
    region.offset = in.u64("regions[].offset");
    out.regions.push_back(region);
  }
  if (!in.ok()) return;
  const auto kind = layout_kind_from_wire(layout_kind);
  if (memory > static_cast<std::uint8_t>(kLastMemoryHandle)) {
    in.fail_with(
        Error{Errc::protocol_error, fmt::format("memory is {} (expected 0 memfd, 1 cuda_ipc or 2 cuda_vmm)", memory)});
  } else if (!kind) {
    in.fail_with(Error{Errc::protocol_error, fmt::format("layout_kind is {} (expected 0..{})", layout_kind,
                                                         static_cast<int>(kLastLayoutKind))});
  } else if (out.fd_count > kMaxFdsPerFrame) {
    in.fail_with(
        Error{Errc::protocol_error, fmt::format("fd_count {} over the limit of {}", out.fd_count, kMaxFdsPerFrame)});
  } else {
    out.layout_kind = *kind;
  }
}

void write(WireWriter& out, const LookupRequest& in) {
  out.u8(in.pin ? 1 : 0);
  write_u64_list(out, in.hashes, "hashes");
}
void read(WireReader& in, LookupRequest& out) {
  out.pin = read_bool(in, "pin");
  read_u64_list(in, out.hashes, "hashes");
}

void write(WireWriter& out, const OffloadRequest& in) {
  out.count(in.items.size(), "items");
  for (const auto& item : in.items) {
    out.u32(item.engine_block.value());
    out.u64(item.hash);
  }
}
void read(WireReader& in, OffloadRequest& out) {
  const std::uint32_t n = in.count("items", 12);
  out.items.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) {
    OffloadItem item;
    item.engine_block = BlockId{in.u32("items[].engine_block")};
    item.hash = in.u64("items[].hash");
    out.items.push_back(item);
  }
}

void write(WireWriter& out, const OnboardRequest& in) {
  out.count(in.items.size(), "items");
  for (const auto& item : in.items) {
    out.u64(item.hash);
    out.u32(item.engine_block.value());
  }
}
void read(WireReader& in, OnboardRequest& out) {
  const std::uint32_t n = in.count("items", 12);
  out.items.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) {
    OnboardItem item;
    item.hash = in.u64("items[].hash");
    item.engine_block = BlockId{in.u32("items[].engine_block")};
    out.items.push_back(item);
  }
}

void write(WireWriter& out, const OnboardLayersRequest& in) {
  out.u32(in.layers_per_group);
  write(out, OnboardRequest{in.items});
}
void read(WireReader& in, OnboardLayersRequest& out) {
  out.layers_per_group = in.u32("layers_per_group");
  OnboardRequest items;
  read(in, items);
  out.items = std::move(items.items);
}

void write(WireWriter& out, const LocateRequest& in) { write_u64_list(out, in.hashes, "hashes"); }
void read(WireReader& in, LocateRequest& out) { read_u64_list(in, out.hashes, "hashes"); }

void write(WireWriter& out, const ReleaseRequest& in) { write_u64_list(out, in.hashes, "hashes"); }
void read(WireReader& in, ReleaseRequest& out) { read_u64_list(in, out.hashes, "hashes"); }

void write(WireWriter& out, const StatusRequest& in) { out.u64(in.target.value()); }
void read(WireReader& in, StatusRequest& out) { out.target = RequestId{in.u64("target_request_id")}; }

void write(WireWriter& out, const WaitRequest& in) {
  out.u64(in.target.value());
  out.u32(in.timeout_ms);
}
void read(WireReader& in, WaitRequest& out) {
  out.target = RequestId{in.u64("target_request_id")};
  out.timeout_ms = in.u32("timeout_ms");
}

void write(WireWriter&, const StatsRequest&) {}
void read(WireReader&, StatsRequest&) {}
void write(WireWriter&, const ByeRequest&) {}
void read(WireReader&, ByeRequest&) {}
void write(WireWriter&, const DrainRequest&) {}
void read(WireReader&, DrainRequest&) {}
void write(WireWriter&, const ConfigRequest&) {}
void read(WireReader&, ConfigRequest&) {}

void write(WireWriter& out, const Reply& in) {
  out.u16(static_cast<std::uint16_t>(in.code));
  out.string(in.message, "message");
  out.u8(in.accepted ? 1 : 0);
  if (in.code == Errc::ok && !in.accepted) out.raw(in.body);
}
void read(WireReader& in, Reply& out) {
  out.code = read_errc(in, "code");
  out.message = in.string("message");
  out.accepted = read_bool(in, "accepted");
  if (in.ok() && out.code == Errc::ok && !out.accepted) out.body = in.rest();
}

void write(WireWriter& out, const Notification& in) {
  out.u16(static_cast<std::uint16_t>(in.code));
  out.string(in.text, "text");
}
void read(WireReader& in, Notification& out) {
  out.code = read_errc(in, "code");
  out.text = in.string("text");
}

void write(WireWriter& out, const Progress& in) {
  out.u32(in.layer_begin);
  out.u32(in.layer_end);
  out.u32(in.num_layers);
}
void read(WireReader& in, Progress& out) {
  out.layer_begin = in.u32("layer_begin");
  out.layer_end = in.u32("layer_end");
  out.num_layers = in.u32("num_layers");
  if (in.ok() && !(out.layer_begin < out.layer_end && out.layer_end <= out.num_layers)) {
    in.fail_with(Error{Errc::protocol_error, fmt::format("progress layers [{}, {}) of {} is not a layer range",
                                                         out.layer_begin, out.layer_end, out.num_layers)});
  }
}

void write(WireWriter& out, const ErrorFrame& in) {
  out.u16(static_cast<std::uint16_t>(in.code));
  out.string(in.message, "message");
}
void read(WireReader& in, ErrorFrame& out) {
  out.code = read_errc(in, "code");
  out.message = in.string("message");
}

void write(WireWriter& out, const HelloReply& in) {
  out.u64(in.session_id.value());
  out.u16(in.version);
  out.u32(in.max_frame_bytes);
  out.u32(in.max_inflight);
  out.u8(in.gpu_present ? 1 : 0);
  out.string(in.server_version, "server_version");
}
void read(WireReader& in, HelloReply& out) {
  out.session_id = SessionId{in.u64("session_id")};
  out.version = in.u16("version");
  out.max_frame_bytes = in.u32("max_frame_bytes");
  out.max_inflight = in.u32("max_inflight");
  out.gpu_present = read_bool(in, "gpu_present");
  out.server_version = in.string("server_version");
}

void write(WireWriter& out, const LookupReply& in) {
  out.u32(in.prefix_blocks);
  out.count(in.tiers.size(), "tiers");
  for (const auto& match : in.tiers) {
    out.u8(static_cast<std::uint8_t>(match.tier));
    out.u32(match.blocks);
  }
}
void read(WireReader& in, LookupReply& out) {
  out.prefix_blocks = in.u32("prefix_blocks");
  const std::uint32_t n = in.count("tiers", 5);
  out.tiers.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) {
    const std::uint8_t tier = in.u8("tiers[].tier");
    const std::uint32_t blocks = in.u32("tiers[].blocks");
    if (tier < static_cast<std::uint8_t>(WireTier::g1) || tier > static_cast<std::uint8_t>(kLastWireTier)) {
      in.fail_with(
          Error{Errc::protocol_error, fmt::format("tiers[].tier is {} (expected {}..{})", tier,
                                                  static_cast<int>(WireTier::g1), static_cast<int>(kLastWireTier))});
    }
    out.tiers.push_back(TierMatch{static_cast<WireTier>(tier), blocks});
  }
}

void write(WireWriter& out, const LocateReply& in) {
  out.count(in.workers.size(), "workers");
  for (const auto& w : in.workers) {
    out.string(w.worker, "workers[].worker");
    out.u32(w.prefix_blocks);
  }
}
void read(WireReader& in, LocateReply& out) {
  const std::uint32_t n = in.count("workers", 8);  // u32 string length + u32 prefix_blocks at least
  out.workers.reserve(n);
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) {
    WorkerPrefix w;
    w.worker = in.string("workers[].worker");
    w.prefix_blocks = in.u32("workers[].prefix_blocks");
    out.workers.push_back(std::move(w));
  }
}

void write(WireWriter& out, const ReleaseReply& in) { out.u32(in.released); }
void read(WireReader& in, ReleaseReply& out) { out.released = in.u32("released"); }

void write(WireWriter& out, const RequestStateReply& in) {
  out.u8(static_cast<std::uint8_t>(in.state));
  out.string(in.message, "message");
}
void read(WireReader& in, RequestStateReply& out) {
  const std::uint8_t state = in.u8("state");
  if (state > static_cast<std::uint8_t>(kLastRequestState)) {
    in.fail_with(Error{Errc::protocol_error,
                       fmt::format("state is {} (expected 0..{})", state, static_cast<int>(kLastRequestState))});
  }
  out.state = static_cast<RequestState>(state);
  out.message = in.string("message");
}

namespace {

// stats json and config toml can exceed kMaxStringBytes: they take the rest
// of the payload (u32 length prefix kept, but not capped at 64 KiB).
void write_long_text(WireWriter& out, const std::string& text) {
  out.u32(static_cast<std::uint32_t>(text.size()));
  out.raw(std::as_bytes(std::span<const char>(text.data(), text.size())));
}
void read_long_text(WireReader& in, std::string_view field, std::string& text) {
  const std::uint32_t n = in.count(field, 1);
  auto bytes = in.rest();
  if (in.ok() && bytes.size() != n) {
    in.fail_with(
        Error{Errc::protocol_error, fmt::format("{} declares {} bytes, payload has {}", field, n, bytes.size())});
  }
  text.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

void write(WireWriter& out, const StatsReply& in) { write_long_text(out, in.json); }
void read(WireReader& in, StatsReply& out) { read_long_text(in, "json", out.json); }

void write(WireWriter& out, const ConfigReply& in) { write_long_text(out, in.toml); }
void read(WireReader& in, ConfigReply& out) { read_long_text(in, "toml", out.toml); }

namespace {
template <class M>
Result<AnyRequest> decode_as(std::span<const std::byte> payload) {
  auto message = decode_payload<M>(payload);
  if (!message) {
    return fail(Errc::protocol_error, "{} payload: {}", to_string(M::kType), message.error().message);
  }
  return AnyRequest{std::move(*message)};
}
}  // namespace

Result<AnyRequest> decode_request(MsgType type, std::span<const std::byte> payload) {
  switch (type) {
    case MsgType::hello: return decode_as<HelloRequest>(payload);
    case MsgType::register_kv: return decode_as<RegisterKvRequest>(payload);
    case MsgType::lookup: return decode_as<LookupRequest>(payload);
    case MsgType::offload: return decode_as<OffloadRequest>(payload);
    case MsgType::onboard: return decode_as<OnboardRequest>(payload);
    case MsgType::release: return decode_as<ReleaseRequest>(payload);
    case MsgType::status: return decode_as<StatusRequest>(payload);
    case MsgType::wait: return decode_as<WaitRequest>(payload);
    case MsgType::stats: return decode_as<StatsRequest>(payload);
    case MsgType::bye: return decode_as<ByeRequest>(payload);
    case MsgType::drain: return decode_as<DrainRequest>(payload);
    case MsgType::config: return decode_as<ConfigRequest>(payload);
    case MsgType::onboard_layers: return decode_as<OnboardLayersRequest>(payload);
    case MsgType::locate: return decode_as<LocateRequest>(payload);
    case MsgType::reply:
    case MsgType::notification:
    case MsgType::error:
    case MsgType::progress: break;
  }
  return fail(Errc::protocol_error, "message type {:#06x} ({}) is not a request", static_cast<std::uint16_t>(type),
              to_string(type));
}

Reply make_empty_reply() { return Reply{}; }

Reply make_accepted_reply() {
  Reply reply;
  reply.accepted = true;
  return reply;
}

Reply make_error_reply(const Error& error) {
  Reply reply;
  reply.code = error.code == Errc::ok ? Errc::internal : error.code;
  reply.message = error.message;
  return reply;
}

Notification make_notification(RequestId request_id, const Status& result) {
  Notification note;
  note.code = result ? Errc::ok : result.error().code;
  note.text = format_completion(request_id, result);
  return note;
}

}  // namespace kvb::proto
