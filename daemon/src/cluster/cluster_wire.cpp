#include "cluster/cluster_wire.h"

#include "kvb/common/wire.h"

namespace kvb::daemon::cluster {

using proto::WireReader;
using proto::WireWriter;

namespace {

void put(WireWriter& w, const PoolInfo& p) {
  w.u64(p.layout_key);
  w.u64(p.base);
  w.u64(p.bytes);
  w.u64(p.stride);
  w.u64(p.block_bytes);
  w.blob(p.rkey, "pool.rkey");
  w.u32(p.map_pid);
  w.u32(static_cast<std::uint32_t>(p.map_fd));
  w.u64(p.map_dev);
  w.u64(p.map_ino);
  w.u64(p.map_offset);
  w.string(p.boot_id, "pool.boot_id");
}

PoolInfo get_pool(WireReader& r) {
  PoolInfo p;
  p.layout_key = r.u64("pool.layout_key");
  p.base = r.u64("pool.base");
  p.bytes = r.u64("pool.bytes");
  p.stride = r.u64("pool.stride");
  p.block_bytes = r.u64("pool.block_bytes");
  p.rkey = r.blob("pool.rkey");
  p.map_pid = r.u32("pool.map_pid");
  p.map_fd = static_cast<std::int32_t>(r.u32("pool.map_fd"));
  p.map_dev = r.u64("pool.map_dev");
  p.map_ino = r.u64("pool.map_ino");
  p.map_offset = r.u64("pool.map_offset");
  p.boot_id = r.string("pool.boot_id");
  if (r.ok() && (p.stride < p.block_bytes || p.block_bytes == 0)) {
    r.fail_with(
        Error{Errc::protocol_error, fmt::format("pool stride {} is under its block size {}", p.stride, p.block_bytes)});
  }
  return p;
}

template <class M>
Result<M> finish(const WireReader& r, M message) {
  if (auto st = r.finish(); !st) return tl::unexpected(st.error());
  return message;
}

}  // namespace

Result<Bytes> encode(const PoolInfo& message) {
  WireWriter w;
  put(w, message);
  return std::move(w).finish();
}

Result<Bytes> encode(const JoinMessage& message) {
  WireWriter w;
  w.u16(kClusterWireVersion);
  w.string(message.cluster, "join.cluster");
  w.string(message.worker, "join.worker");
  w.string(message.bootstrap, "join.bootstrap");
  w.count(message.pools.size(), "join.pools");
  for (const auto& p : message.pools) put(w, p);
  return std::move(w).finish();
}

Result<Bytes> encode(const IndexBatch& message) {
  WireWriter w;
  w.u64(message.seq);
  w.u8(message.flags);
  w.count(message.entries.size(), "index.entries");
  for (const auto& e : message.entries) {
    w.u8(static_cast<std::uint8_t>(e.op));
    w.u8(e.tier);
    w.u64(e.layout_key);
    w.u64(e.key);
  }
  return std::move(w).finish();
}

Result<Bytes> encode(const FetchRequest& message) {
  WireWriter w;
  w.u64(message.layout_key);
  w.u32(message.timeout_ms);
  w.u8(message.into_exposed ? 1 : 0);
  w.count(message.items.size(), "fetch.items");
  for (const auto& item : message.items) {
    w.u64(item.key);
    w.u64(item.address);
  }
  return std::move(w).finish();
}

Result<Bytes> encode(const PinRequest& message) {
  WireWriter w;
  w.u64(message.layout_key);
  w.u32(message.timeout_ms);
  w.count(message.keys.size(), "pin.keys");
  for (auto key : message.keys) w.u64(key);
  return std::move(w).finish();
}

namespace {

void write_sums(WireWriter& w, const std::vector<BlockSum>& sums, const char* what) {
  w.count(sums.size(), what);
  for (const auto& s : sums) {
    w.u8(s.known ? 1 : 0);
    w.u64(s.sum);
  }
}

std::vector<BlockSum> read_sums(WireReader& r, const char* what) {
  std::vector<BlockSum> sums;
  const auto n = r.count(what, 9);
  sums.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    BlockSum s;
    s.known = r.u8("sum.known") != 0;
    s.sum = r.u64("sum.value");
    sums.push_back(s);
  }
  return sums;
}

}  // namespace

Result<Bytes> encode(const PinReply& message) {
  WireWriter w;
  w.u64(message.pin_id);
  w.u32(message.ttl_ms);
  w.u64(message.map_ino);
  w.count(message.offsets.size(), "pin.offsets");
  for (auto offset : message.offsets) w.u64(offset);
  write_sums(w, message.sums, "pin.sums");
  return std::move(w).finish();
}

Result<Bytes> encode(const FetchReply& message) {
  WireWriter w;
  write_sums(w, message.sums, "fetch.sums");
  return std::move(w).finish();
}

template <>
Result<FetchReply> decode<FetchReply>(std::span<const std::byte> payload) {
  WireReader r(payload);
  FetchReply m;
  m.sums = read_sums(r, "fetch.sums");
  return finish(r, std::move(m));
}

Result<Bytes> encode(const PinRelease& message) {
  WireWriter w;
  w.u64(message.pin_id);
  return std::move(w).finish();
}

template <>
Result<PinRequest> decode<PinRequest>(std::span<const std::byte> payload) {
  WireReader r(payload);
  PinRequest m;
  m.layout_key = r.u64("pin.layout_key");
  m.timeout_ms = r.u32("pin.timeout_ms");
  const auto n = r.count("pin.keys", 8);
  m.keys.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) m.keys.push_back(r.u64("pin.key"));
  return finish(r, std::move(m));
}

template <>
Result<PinReply> decode<PinReply>(std::span<const std::byte> payload) {
  WireReader r(payload);
  PinReply m;
  m.pin_id = r.u64("pin.id");
  m.ttl_ms = r.u32("pin.ttl_ms");
  m.map_ino = r.u64("pin.map_ino");
  const auto n = r.count("pin.offsets", 8);
  m.offsets.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) m.offsets.push_back(r.u64("pin.offset"));
  m.sums = read_sums(r, "pin.sums");
  return finish(r, std::move(m));
}

template <>
Result<PinRelease> decode<PinRelease>(std::span<const std::byte> payload) {
  WireReader r(payload);
  PinRelease m;
  m.pin_id = r.u64("unpin.id");
  return finish(r, m);
}

Result<Bytes> encode(const PoolGone& message) {
  WireWriter w;
  w.u64(message.layout_key);
  return std::move(w).finish();
}

template <>
Result<PoolGone> decode<PoolGone>(std::span<const std::byte> payload) {
  WireReader r(payload);
  PoolGone m;
  m.layout_key = r.u64("pool_gone.layout_key");
  return finish(r, m);
}

template <>
Result<PoolInfo> decode<PoolInfo>(std::span<const std::byte> payload) {
  WireReader r(payload);
  PoolInfo p = get_pool(r);
  return finish(r, std::move(p));
}

template <>
Result<JoinMessage> decode<JoinMessage>(std::span<const std::byte> payload) {
  WireReader r(payload);
  JoinMessage m;
  const auto version = r.u16("join.version");
  if (r.ok() && version != kClusterWireVersion) {
    return fail(Errc::unsupported, "join: cluster wire version {} (this worker speaks {})", version,
                kClusterWireVersion);
  }
  m.cluster = r.string("join.cluster");
  m.worker = r.string("join.worker");
  m.bootstrap = r.string("join.bootstrap");
  const auto n = r.count("join.pools", 44);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) m.pools.push_back(get_pool(r));
  return finish(r, std::move(m));
}

template <>
Result<IndexBatch> decode<IndexBatch>(std::span<const std::byte> payload) {
  WireReader r(payload);
  IndexBatch m;
  m.seq = r.u64("index.seq");
  m.flags = r.u8("index.flags");
  const auto n = r.count("index.entries", 18);
  m.entries.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    IndexEntry e;
    const auto op = r.u8("index.op");
    if (r.ok() && op != static_cast<std::uint8_t>(IndexOp::stored) &&
        op != static_cast<std::uint8_t>(IndexOp::removed)) {
      r.fail_with(Error{Errc::protocol_error, fmt::format("index.op {} is neither stored (1) nor removed (2)", op)});
    }
    e.op = static_cast<IndexOp>(op);
    e.tier = r.u8("index.tier");
    e.layout_key = r.u64("index.layout_key");
    e.key = r.u64("index.key");
    m.entries.push_back(e);
  }
  return finish(r, std::move(m));
}

template <>
Result<FetchRequest> decode<FetchRequest>(std::span<const std::byte> payload) {
  WireReader r(payload);
  FetchRequest m;
  m.layout_key = r.u64("fetch.layout_key");
  m.timeout_ms = r.u32("fetch.timeout_ms");
  const std::uint8_t flags = r.u8("fetch.flags");
  if (r.ok() && flags > 1) return fail(Errc::protocol_error, "fetch.flags {} is not 0 or 1", flags);
  m.into_exposed = flags == 1;
  const auto n = r.count("fetch.items", 16);
  m.items.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    FetchRequest::Item item;
    item.key = r.u64("fetch.key");
    item.address = r.u64("fetch.address");
    m.items.push_back(item);
  }
  return finish(r, std::move(m));
}

}  // namespace kvb::daemon::cluster
