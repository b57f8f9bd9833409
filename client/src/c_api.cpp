// The C ABI (kvb_client.h) over Client and KvRegion. Every entry point
// catches everything: no exception crosses into C.
#include "kvb/client/kvb_client.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "kvb/client/client.h"

struct kvb_client {
  std::unique_ptr<kvb::client::Client> client;
};

struct kvb_kv_region {
  kvb::client::KvRegion region;
};

namespace {

thread_local std::string t_last_error;
thread_local std::string t_socket_path;

int set_error(const kvb::Error& e) {
  t_last_error = e.to_string();
  return static_cast<int>(e.code);
}

int set_error(kvb::Errc code, std::string message) { return set_error(kvb::Error{code, std::move(message)}); }

int status_code(const kvb::Status& st) { return st ? 0 : set_error(st.error()); }

/// Runs body, turning any exception into KVB internal with its message.
template <class Body>
int guarded(Body body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return set_error(kvb::Errc::internal, std::string("kvb_client: ") + e.what());
  } catch (...) {
    return set_error(kvb::Errc::internal, "kvb_client: unknown exception");
  }
}

kvb::client::BlockShape to_shape(const kvb_block_shape& s) {
  kvb::client::BlockShape out;
  out.num_layers = s.num_layers;
  out.outer_dim = s.outer_dim;
  out.page_size = s.page_size;
  out.inner_dim = s.inner_dim;
  out.dtype = s.dtype;
  out.alignment = s.alignment;
  return out;
}

#define KVB_REQUIRE(cond, what) \
  if (!(cond)) return set_error(kvb::Errc::invalid_argument, what)

}  // namespace

extern "C" {

const char* kvb_last_error(void) { return t_last_error.c_str(); }

const char* kvb_error_name(int code) {
  if (code < 0 || code > 16) return "unknown";
  return kvb::to_string(static_cast<kvb::Errc>(code)).data();
}

const char* kvb_default_socket_path(void) {
  try {
    t_socket_path = kvb::client::default_socket_path();
  } catch (...) {
    t_socket_path.clear();
  }
  return t_socket_path.c_str();
}

int kvb_client_connect(const char* socket_path, kvb_client** out) {
  return guarded([&] {
    KVB_REQUIRE(out != nullptr, "kvb_client_connect: out is NULL");
    *out = nullptr;
    const std::string path = socket_path != nullptr ? socket_path : kvb::client::default_socket_path();
    auto c = kvb::client::Client::connect(path);
    if (!c) return set_error(c.error());
    *out = new kvb_client{std::move(*c)};
    return 0;
  });
}

void kvb_client_close(kvb_client* client) {
  try {
    delete client;
  } catch (...) {  // nothing may cross into C
  }
}

void kvb_client_set_timeout_ms(kvb_client* client, uint32_t timeout_ms) {
  if (client != nullptr) client->client->set_timeout(std::chrono::milliseconds(timeout_ms));
}

int kvb_client_hello(kvb_client* client, const char* client_name, uint64_t tenant_salt, const kvb_block_shape* shape,
                     uint64_t* session_id) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_hello: client is NULL");
    KVB_REQUIRE(shape != nullptr, "kvb_client_hello: shape is NULL");
    kvb::client::HelloParams p;
    p.client_name = client_name != nullptr ? client_name : "kvb-c-client";
    p.tenant_salt = tenant_salt;
    p.shape = to_shape(*shape);
    auto info = client->client->hello(p);
    if (!info) return set_error(info.error());
    if (session_id != nullptr) *session_id = info->session_id.value();
    return 0;
  });
}

int kvb_client_register_kv(kvb_client* client, const kvb_kv_region* region) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr && region != nullptr, "kvb_client_register_kv: client or region is NULL");
    return status_code(client->client->register_kv(region->region));
  });
}

int kvb_client_register_device_kv(kvb_client* client, const kvb_block_shape* shape, int layout_kind,
                                  uint32_t num_blocks, const uint64_t* region_ptrs, size_t region_count,
                                  uint64_t region_bytes, int handles) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr && shape != nullptr, "kvb_client_register_device_kv: client or shape is NULL");
    KVB_REQUIRE(region_ptrs != nullptr || region_count == 0, "kvb_client_register_device_kv: region_ptrs is NULL");
    KVB_REQUIRE(layout_kind >= 0 && layout_kind <= static_cast<int>(kvb::kLastLayoutKind),
                "kvb_client_register_device_kv: layout_kind must be 0, 1 or 2");
    KVB_REQUIRE(handles >= 0 && handles <= 2, "kvb_client_register_device_kv: handles must be 0, 1 or 2");
    kvb::client::DeviceKvSpec spec;
    spec.shape = to_shape(*shape);
    spec.kind = static_cast<kvb::client::WireLayoutKind>(layout_kind);
    spec.num_blocks = num_blocks;
    spec.region_ptrs.assign(region_ptrs, region_ptrs + region_count);
    spec.region_bytes = region_bytes;
    spec.handles = static_cast<kvb::client::DeviceHandles>(handles);
    auto kv = kvb::client::DeviceKv::export_regions(spec);
    if (!kv) return set_error(kv.error());
    return status_code(client->client->register_device_kv(*kv));
  });
}

int kvb_client_lookup(kvb_client* client, const uint64_t* hashes, size_t count, int pin, uint32_t* prefix_blocks) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_lookup: client is NULL");
    KVB_REQUIRE(hashes != nullptr || count == 0, "kvb_client_lookup: hashes is NULL");
    auto r = client->client->lookup(std::span<const std::uint64_t>(hashes, count), pin != 0);
    if (!r) return set_error(r.error());
    if (prefix_blocks != nullptr) *prefix_blocks = r->prefix_blocks;
    return 0;
  });
}

int kvb_client_locate(kvb_client* client, const uint64_t* hashes, size_t count, kvb_worker_prefix* out, size_t capacity,
                      size_t* workers) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_locate: client is NULL");
    KVB_REQUIRE(hashes != nullptr || count == 0, "kvb_client_locate: hashes is NULL");
    KVB_REQUIRE(out != nullptr || capacity == 0, "kvb_client_locate: out is NULL");
    KVB_REQUIRE(workers != nullptr, "kvb_client_locate: workers is NULL");
    auto r = client->client->locate(std::span<const std::uint64_t>(hashes, count));
    if (!r) return set_error(r.error());
    for (const auto& w : *r) {
      if (w.worker.size() >= KVB_WORKER_NAME_MAX) {
        return set_error(kvb::Errc::invalid_argument,
                         fmt::format("kvb_client_locate: worker name '{}' has {} bytes, over KVB_WORKER_NAME_MAX - 1",
                                     w.worker, w.worker.size()));
      }
    }
    *workers = r->size();
    for (size_t i = 0; i < r->size() && i < capacity; ++i) {
      std::memcpy(out[i].worker, (*r)[i].worker.c_str(), (*r)[i].worker.size() + 1);
      out[i].prefix_blocks = (*r)[i].prefix_blocks;
    }
    return 0;
  });
}

int kvb_client_offload(kvb_client* client, const uint32_t* engine_blocks, const uint64_t* hashes, size_t count) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_offload: client is NULL");
    KVB_REQUIRE((engine_blocks != nullptr && hashes != nullptr) || count == 0,
                "kvb_client_offload: engine_blocks or hashes is NULL");
    std::vector<kvb::client::OffloadItem> items(count);
    for (size_t i = 0; i < count; ++i) items[i] = {kvb::BlockId{engine_blocks[i]}, hashes[i]};
    return status_code(client->client->offload(items));
  });
}

int kvb_client_onboard(kvb_client* client, const uint64_t* hashes, const uint32_t* engine_blocks, size_t count) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_onboard: client is NULL");
    KVB_REQUIRE((engine_blocks != nullptr && hashes != nullptr) || count == 0,
                "kvb_client_onboard: engine_blocks or hashes is NULL");
    std::vector<kvb::client::OnboardItem> items(count);
    for (size_t i = 0; i < count; ++i) items[i] = {hashes[i], kvb::BlockId{engine_blocks[i]}};
    return status_code(client->client->onboard(items));
  });
}

int kvb_client_onboard_layers(kvb_client* client, const uint64_t* hashes, const uint32_t* engine_blocks, size_t count,
                              uint32_t layers_per_group, kvb_layer_progress_fn on_progress, void* user) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_onboard_layers: client is NULL");
    KVB_REQUIRE((engine_blocks != nullptr && hashes != nullptr) || count == 0,
                "kvb_client_onboard_layers: engine_blocks or hashes is NULL");
    std::vector<kvb::client::OnboardItem> items(count);
    for (size_t i = 0; i < count; ++i) items[i] = {hashes[i], kvb::BlockId{engine_blocks[i]}};
    kvb::client::ProgressCallback progress;
    if (on_progress != nullptr) {
      progress = [on_progress, user](const kvb::client::LayerProgress& p) {
        on_progress(user, p.layer_begin, p.layer_end, p.num_layers);
      };
    }
    return status_code(client->client->onboard_layers(items, layers_per_group, std::move(progress)));
  });
}

int kvb_client_release(kvb_client* client, const uint64_t* hashes, size_t count, uint32_t* released) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_release: client is NULL");
    KVB_REQUIRE(hashes != nullptr || count == 0, "kvb_client_release: hashes is NULL");
    auto r = client->client->release(std::span<const std::uint64_t>(hashes, count));
    if (!r) return set_error(r.error());
    if (released != nullptr) *released = *r;
    return 0;
  });
}

int kvb_client_stats(kvb_client* client, char* buffer, size_t capacity, size_t* needed) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_stats: client is NULL");
    auto json = client->client->stats();
    if (!json) return set_error(json.error());
    if (needed != nullptr) *needed = json->size() + 1;
    if (buffer == nullptr || capacity < json->size() + 1)
      return set_error(kvb::Errc::invalid_argument,
                       fmt::format("kvb_client_stats: buffer of {} bytes, need {}", capacity, json->size() + 1));
    std::memcpy(buffer, json->data(), json->size());
    buffer[json->size()] = '\0';
    return 0;
  });
}

int kvb_client_bye(kvb_client* client) {
  return guarded([&] {
    KVB_REQUIRE(client != nullptr, "kvb_client_bye: client is NULL");
    return status_code(client->client->bye());
  });
}

int kvb_kv_region_create(const kvb_block_shape* shape, int layout_kind, uint32_t num_blocks, kvb_kv_region** out) {
  return guarded([&] {
    KVB_REQUIRE(shape != nullptr && out != nullptr, "kvb_kv_region_create: shape or out is NULL");
    *out = nullptr;
    KVB_REQUIRE(layout_kind >= 0 && layout_kind <= static_cast<int>(kvb::kLastLayoutKind),
                "kvb_kv_region_create: layout_kind must be 0, 1 or 2");
    auto r = kvb::client::KvRegion::create(to_shape(*shape), static_cast<kvb::LayoutKind>(layout_kind), num_blocks);
    if (!r) return set_error(r.error());
    *out = new kvb_kv_region{std::move(*r)};
    return 0;
  });
}

void kvb_kv_region_destroy(kvb_kv_region* region) { delete region; }

void* kvb_kv_region_chunk(const kvb_kv_region* region, uint32_t block, uint32_t layer, uint32_t outer, size_t* bytes) {
  if (region == nullptr) return nullptr;
  const auto& r = region->region;
  if (block >= r.num_blocks() || layer >= r.shape().num_layers || outer >= r.shape().outer_dim) return nullptr;
  auto chunk = r.chunk(block, layer, outer);
  if (bytes != nullptr) *bytes = chunk.size();
  return chunk.data();
}

}  // extern "C"
