// TestEngine: an engine-like test peer: a RawClient plus a KV cache in memfds
// (EngineMemory: layer separate, vLLM style) that it registers with the daemon.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "raw_client.h"

namespace kvb::test {

/// 4 layers x (K,V) x 16 tokens x 64 u8: 1 KiB chunks, 8 KiB blocks.
inline proto::WireLayout small_layout() { return proto::WireLayout{4, 2, 16, 64, 0, 256}; }

/// kvblockctl's block-shape flags (lookup, locate) for `l`.
inline std::vector<std::string> kvblockctl_shape_args(const proto::WireLayout& l = small_layout()) {
  return {"--layers",    std::to_string(l.num_layers), "--outer-dim", std::to_string(l.outer_dim),
          "--page-size", std::to_string(l.page_size),  "--inner-dim", std::to_string(l.inner_dim),
          "--dtype",     std::to_string(l.dtype),      "--alignment", std::to_string(l.alignment)};
}

/// How an engine's memfds are sealed before they are passed.
enum class Seal { shrink, none };

/// An engine's KV cache in memfds (layer separate, vLLM style: one region
/// per layer; or fully contiguous: one region, blocks at the layout's
/// alignment), mapped here. Sealed with F_SEAL_SHRINK unless asked otherwise.
class EngineMemory {
 public:
  EngineMemory(proto::WireLayout layout, std::uint32_t num_blocks, Seal seal = Seal::shrink,
               LayoutKind kind = LayoutKind::layer_separate_block_outer)
      : layout_(layout), num_blocks_(num_blocks), kind_(kind) {
    chunk_ = std::uint64_t{layout.page_size} * layout.inner_dim;  // dtype u8
    const std::uint64_t block = chunk_ * layout.outer_dim * layout.num_layers;
    stride_ = (block + layout.alignment - 1) / layout.alignment * layout.alignment;
    const bool contiguous = kind == LayoutKind::fully_contiguous;
    region_bytes_ = contiguous ? stride_ * num_blocks : chunk_ * layout.outer_dim * num_blocks;
    for (std::uint32_t l = 0; l < (contiguous ? 1 : layout.num_layers); ++l) {
      const int fd = ::memfd_create("test-engine-kv", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(region_bytes_)) != 0) return;
      if (seal == Seal::shrink && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) return;
      void* base = ::mmap(nullptr, region_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) return;
      fds_.push_back(fd);
      bases_.push_back(static_cast<std::byte*>(base));
    }
  }
  EngineMemory(const EngineMemory&) = delete;
  EngineMemory& operator=(const EngineMemory&) = delete;
  ~EngineMemory() {
    for (auto* base : bases_) ::munmap(base, region_bytes_);
    for (int fd : fds_) ::close(fd);
  }

  /// The register_kv request for these memfds (see fds()).
  proto::RegisterKvRequest register_request() const {
    proto::RegisterKvRequest reg;
    reg.memory = proto::MemoryHandle::memfd;
    reg.layout_kind = kind_;
    reg.num_blocks = num_blocks_;
    reg.region_bytes = region_bytes_;
    reg.fd_count = static_cast<std::uint32_t>(fds_.size());
    return reg;
  }
  const std::vector<int>& fds() const { return fds_; }
  std::uint64_t region_bytes() const { return region_bytes_; }

  /// Bytes of chunk (block, layer, outer).
  std::byte* chunk(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) {
    if (kind_ == LayoutKind::fully_contiguous)
      return bases_[0] + std::uint64_t{block} * stride_ + (std::uint64_t{layer} * layout_.outer_dim + outer) * chunk_;
    return bases_[layer] + (std::uint64_t{block} * layout_.outer_dim + outer) * chunk_;
  }

  /// Fills every chunk of `block` with a pattern derived from `seed`.
  void fill(std::uint32_t block, std::uint32_t seed) {
    for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
      for (std::uint32_t o = 0; o < layout_.outer_dim; ++o) {
        auto* p = chunk(block, l, o);
        for (std::uint64_t i = 0; i < chunk_; ++i) {
          p[i] = static_cast<std::byte>((seed * 131 + l * 31 + o * 7 + i) & 0xFF);
        }
      }
    }
  }
  void zero(std::uint32_t block) {
    for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
      for (std::uint32_t o = 0; o < layout_.outer_dim; ++o) std::memset(chunk(block, l, o), 0, chunk_);
    }
  }
  /// Whether blocks a and b hold the same bytes in every chunk.
  bool same(std::uint32_t a, std::uint32_t b) {
    for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
      for (std::uint32_t o = 0; o < layout_.outer_dim; ++o) {
        if (std::memcmp(chunk(a, l, o), chunk(b, l, o), chunk_) != 0) return false;
      }
    }
    return true;
  }

 private:
  proto::WireLayout layout_;
  std::uint32_t num_blocks_;
  LayoutKind kind_;
  std::uint64_t chunk_ = 0;
  std::uint64_t stride_ = 0;  // fully contiguous: bytes from one block to the next
  std::uint64_t region_bytes_ = 0;
  std::vector<int> fds_;
  std::vector<std::byte*> bases_;
};

/// An engine-like test peer: a RawClient plus its EngineMemory, which it
/// registers with the daemon.
class TestEngine {
 public:
  TestEngine(const std::string& socket, std::uint32_t num_blocks, std::uint64_t salt = 0,
             proto::WireLayout layout = small_layout(), Seal seal = Seal::shrink,
             LayoutKind kind = LayoutKind::layer_separate_block_outer)
      : client_(socket), memory_(layout, num_blocks, seal, kind), layout_(layout), salt_(salt) {}

  RawClient& client() { return client_; }
  EngineMemory& memory() { return memory_; }

  /// hello only; true when accepted.
  bool hello(const std::string& name = "test-engine") {
    auto hello =
        client_.call_body<proto::HelloReply>(RequestId{next_id()}, proto::HelloRequest{1, 1, name, salt_, layout_});
    if (hello) session_id_ = hello->session_id;
    return static_cast<bool>(hello);
  }
  /// The session id the daemon gave this engine (after hello).
  SessionId session_id() const { return session_id_; }

  /// The register_kv request for this engine's memfds (see fds()).
  proto::RegisterKvRequest register_request() const { return memory_.register_request(); }
  const std::vector<int>& fds() const { return memory_.fds(); }

  /// register_kv of this engine's memfds; the reply (nullopt when none came).
  std::optional<proto::Reply> register_kv() {
    return client_.call(RequestId{next_id()}, memory_.register_request(), memory_.fds());
  }

  /// hello + register_kv; true when both were accepted.
  bool attach(const std::string& name = "test-engine") {
    if (!hello(name)) return false;
    auto registered = register_kv();
    return registered && registered->code == Errc::ok;
  }

  std::byte* chunk(std::uint32_t block, std::uint32_t layer, std::uint32_t outer) {
    return memory_.chunk(block, layer, outer);
  }
  void fill(std::uint32_t block, std::uint32_t seed) { memory_.fill(block, seed); }
  void zero(std::uint32_t block) { memory_.zero(block); }
  bool same(std::uint32_t a, std::uint32_t b) { return memory_.same(a, b); }

  std::uint64_t next_id() { return ++last_id_; }

 private:
  RawClient client_;
  EngineMemory memory_;
  proto::WireLayout layout_;
  std::uint64_t salt_;
  std::uint64_t last_id_ = 0;
  SessionId session_id_{0};
};

/// A number from the stats JSON by its dotted path ("sessions",
/// "g2.registered"), or -1 when the JSON or the field is missing.
inline long long stat_of(const std::string& json, const std::string& path) {
  auto node = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (node.is_discarded()) return -1;
  for (std::size_t start = 0; start <= path.size();) {
    const auto dot = std::min(path.find('.', start), path.size());
    const std::string key = path.substr(start, dot - start);
    if (!node.is_object() || !node.contains(key)) return -1;
    node = node[key];
    start = dot + 1;
  }
  return node.is_number() ? node.get<long long>() : -1;
}

}  // namespace kvb::test
