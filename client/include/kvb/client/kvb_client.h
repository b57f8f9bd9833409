/* kvb_client.h: the C ABI of the kvblockd client library, for FFI (Python
 * ctypes/cffi, Rust, Go, ...). Plain C: opaque handles, int results.
 *
 * Every function returning int answers 0 on success or a kvblockd error code
 * (the stable Errc numbers of docs/protocol.md: 1 invalid_argument, 2
 * not_found, ..., 14 peer_lost); kvb_last_error() then gives the message for
 * the calling thread. No C++ exception ever crosses this boundary.
 *
 * Calls block until the daemon answers (offload/onboard: until the work's
 * notification arrived) or the handle's timeout passes (KVB_ETIMEOUT).
 * A kvb_client may be used from one thread at a time per call; distinct
 * handles are independent. */
#ifndef KVB_CLIENT_KVB_CLIENT_H
#define KVB_CLIENT_KVB_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  KVB_OK = 0,
  KVB_EINVAL = 1,
  KVB_ENOTFOUND = 2,
  KVB_ETIMEOUT = 6,
  KVB_EIO = 7,
  KVB_EPROTOCOL = 8,
  KVB_EUNAVAILABLE = 9,
  KVB_ECANCELLED = 10,
  KVB_EPEERLOST = 14
};

/* Layout kinds of register_kv. */
enum {
  KVB_LAYOUT_FULLY_CONTIGUOUS = 0,
  KVB_LAYOUT_LAYER_SEPARATE_BLOCK_OUTER = 1,
  KVB_LAYOUT_LAYER_SEPARATE_OUTER_BLOCK = 2
};

/* dtype: 0 u8, 1 f16, 2 bf16, 3 f32, 4 fp8_e4m3, 5 fp8_e5m2. */
typedef struct kvb_block_shape {
  uint32_t num_layers;
  uint32_t outer_dim; /* 2 = K,V; 1 = MLA */
  uint32_t page_size; /* tokens per block */
  uint32_t inner_dim; /* num_kv_heads * head_dim */
  uint8_t dtype;
  uint32_t alignment; /* power of two, e.g. 256 */
} kvb_block_shape;

typedef struct kvb_client kvb_client;       /* one session with kvblockd */
typedef struct kvb_kv_region kvb_kv_region; /* the engine's KV cache (memfd regions) */

/* The message of the last failed call on this thread ("" when none). */
const char* kvb_last_error(void);
/* Stable name of an error code ("invalid_argument", ...). */
const char* kvb_error_name(int code);
/* The default socket path (static storage until the next call on this thread). */
const char* kvb_default_socket_path(void);

/* Connects (socket_path NULL = the default path). *out is set on success. */
int kvb_client_connect(const char* socket_path, kvb_client** out);
/* Closes the session; NULL is allowed. */
void kvb_client_close(kvb_client* client);
/* Timeout of each blocking call, in milliseconds (default 30000). */
void kvb_client_set_timeout_ms(kvb_client* client, uint32_t timeout_ms);

/* hello; session_id may be NULL. */
int kvb_client_hello(kvb_client* client, const char* client_name, uint64_t tenant_salt, const kvb_block_shape* shape,
                     uint64_t* session_id);
int kvb_client_register_kv(kvb_client* client, const kvb_kv_region* region);

/* Handle kinds of kvb_client_register_device_kv. */
enum { KVB_DEVICE_HANDLES_AUTO = 0, KVB_DEVICE_HANDLES_CUDA_IPC = 1, KVB_DEVICE_HANDLES_CUDA_VMM = 2 };
/* Registers the engine's KV cache in GPU memory: region_ptrs holds the device
 * address of each layout region (1 for fully contiguous, num_layers
 * otherwise; e.g. each layer's torch tensor data_ptr()), region_bytes the
 * bytes of each (0: what the layout needs). The library loads the CUDA driver
 * (libcuda.so.1) to export the allocations: cudaMalloc memory as CUDA IPC
 * handles, cuMemCreate memory (exportable as POSIX fds) as VMM fds (handles:
 * KVB_DEVICE_HANDLES_*). The memory must stay allocated until bye / close.
 * Without a CUDA driver: KVB_EUNAVAILABLE (9) with the reason. */
int kvb_client_register_device_kv(kvb_client* client, const kvb_block_shape* shape, int layout_kind,
                                  uint32_t num_blocks, const uint64_t* region_ptrs, size_t region_count,
                                  uint64_t region_bytes, int handles);
/* prefix_blocks: longest prefix of hashes the daemon holds in any tier. */
int kvb_client_lookup(kvb_client* client, const uint64_t* hashes, size_t count, int pin, uint32_t* prefix_blocks);
/* One worker's answer to a locate: its name (NUL-terminated; "" for a daemon
 * that is not in a cluster) and the longest prefix of the hashes it holds. */
#define KVB_WORKER_NAME_MAX 256
typedef struct kvb_worker_prefix {
  char worker[KVB_WORKER_NAME_MAX];
  uint32_t prefix_blocks;
} kvb_worker_prefix;
/* For a KV-aware router: for each worker of the daemon's cluster (the daemon
 * first), the longest prefix of hashes it holds. Writes min(*workers,
 * capacity) entries to out and sets *workers to how many there are: with
 * capacity < *workers, call again with more room. A worker name of
 * KVB_WORKER_NAME_MAX bytes or more is KVB_EINVAL (nothing is truncated). */
int kvb_client_locate(kvb_client* client, const uint64_t* hashes, size_t count, kvb_worker_prefix* out, size_t capacity,
                      size_t* workers);
/* Copies engine_blocks[i] to the daemon under hashes[i]; returns when done. */
int kvb_client_offload(kvb_client* client, const uint32_t* engine_blocks, const uint64_t* hashes, size_t count);
/* Copies the block of hashes[i] into engine_blocks[i]; returns when done. */
int kvb_client_onboard(kvb_client* client, const uint64_t* hashes, const uint32_t* engine_blocks, size_t count);
/* Called for each group of layers an onboard_layers has copied, in layer
 * order: layers [layer_begin, layer_end) of num_layers. Runs on the client's
 * reader thread: keep it short; it must not call back into this kvb_client. */
typedef void (*kvb_layer_progress_fn)(void* user, uint32_t layer_begin, uint32_t layer_end, uint32_t num_layers);
/* onboard with per-layer progress (layers_per_group >= 1; on_progress may be
 * NULL); returns when every layer is copied. */
int kvb_client_onboard_layers(kvb_client* client, const uint64_t* hashes, const uint32_t* engine_blocks, size_t count,
                              uint32_t layers_per_group, kvb_layer_progress_fn on_progress, void* user);
/* count 0 releases every lease of the session; released may be NULL. */
int kvb_client_release(kvb_client* client, const uint64_t* hashes, size_t count, uint32_t* released);
/* The counters JSON. Writes at most capacity bytes including a terminating
 * NUL; *needed (may be NULL) gets the full length + 1. A too small buffer
 * answers KVB_EINVAL with *needed set. */
int kvb_client_stats(kvb_client* client, char* buffer, size_t capacity, size_t* needed);
int kvb_client_bye(kvb_client* client);

/* Creates num_blocks blocks of `shape` laid out as `layout_kind`. */
int kvb_kv_region_create(const kvb_block_shape* shape, int layout_kind, uint32_t num_blocks, kvb_kv_region** out);
/* NULL is allowed. Only after the session using it ended. */
void kvb_kv_region_destroy(kvb_kv_region* region);
/* Address and size of chunk (block, layer, outer); NULL when out of range. */
void* kvb_kv_region_chunk(const kvb_kv_region* region, uint32_t block, uint32_t layer, uint32_t outer, size_t* bytes);

#ifdef __cplusplus
}
#endif

#endif /* KVB_CLIENT_KVB_CLIENT_H */
