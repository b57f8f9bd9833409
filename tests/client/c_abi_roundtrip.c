/* A C program (compiled as C, so kvb_client.h is proven valid C) that runs
 * the attach / offload / lookup / onboard round trip through the C ABI.
 * usage: kvb_c_abi_roundtrip SOCKET_PATH ; exit 0 when every byte matched. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kvb/client/kvb_client.h"

#define BLOCKS 8u

/* Layer-wise progress: records the ranges in arrival order. */
struct progress_log {
  uint32_t calls;
  uint32_t next_layer; /* where the next range must begin */
  int out_of_order;
};

static void on_layers(void* user, uint32_t begin, uint32_t end, uint32_t num_layers) {
  struct progress_log* log = (struct progress_log*)user;
  if (begin != log->next_layer || end <= begin || end > num_layers) log->out_of_order = 1;
  log->next_layer = end;
  ++log->calls;
}

static int check(int rc, const char* what) {
  if (rc != KVB_OK) fprintf(stderr, "c_abi: %s failed: %s (%s)\n", what, kvb_error_name(rc), kvb_last_error());
  return rc;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
    return 2;
  }
  kvb_block_shape shape = {2, 2, 16, 64, 1 /* f16 */, 256};
  kvb_kv_region* region = NULL;
  kvb_client* client = NULL;
  uint64_t session = 0, hashes[BLOCKS];
  uint32_t src[BLOCKS], dst[BLOCKS], again[BLOCKS], prefix = 0, released = 0, b, l, o;
  struct progress_log progress = {0, 0, 0};
  size_t bytes = 0, i, needed = 0, workers = 0;
  kvb_worker_prefix where[4];
  char stats[4096];
  int rc = 1;

  if (check(kvb_kv_region_create(&shape, KVB_LAYOUT_LAYER_SEPARATE_BLOCK_OUTER, 2 * BLOCKS, &region), "region"))
    return 1;
  if (check(kvb_client_connect(argv[1], &client), "connect")) goto out;
  kvb_client_set_timeout_ms(client, 20000);
  if (check(kvb_client_hello(client, "c_abi_roundtrip", 0xC0FFEEu, &shape, &session), "hello")) goto out;
  if (check(kvb_client_register_kv(client, region), "register_kv")) goto out;

  for (b = 0; b < BLOCKS; ++b) {
    hashes[b] = 0xABCD000000000000ull + b * 7919u;
    src[b] = b;
    dst[b] = BLOCKS + b;
    for (l = 0; l < shape.num_layers; ++l)
      for (o = 0; o < shape.outer_dim; ++o) {
        unsigned char* p = (unsigned char*)kvb_kv_region_chunk(region, b, l, o, &bytes);
        for (i = 0; i < bytes; ++i) p[i] = (unsigned char)(b * 13 + l * 5 + o * 3 + i);
      }
  }
  if (check(kvb_client_offload(client, src, hashes, BLOCKS), "offload")) goto out;
  if (check(kvb_client_lookup(client, hashes, BLOCKS, 0, &prefix), "lookup")) goto out;
  if (prefix != BLOCKS) {
    fprintf(stderr, "c_abi: lookup matched %u of %u\n", prefix, BLOCKS);
    goto out;
  }
  /* locate: one worker (this daemon, not in a cluster: named ""), the whole
   * prefix; with no room for the answer, only the count. */
  if (check(kvb_client_locate(client, hashes, BLOCKS, where, 4, &workers), "locate")) goto out;
  if (workers != 1 || where[0].worker[0] != '\0' || where[0].prefix_blocks != BLOCKS) {
    fprintf(stderr, "c_abi: locate: %zu workers, first '%s' with %u blocks\n", workers, where[0].worker,
            where[0].prefix_blocks);
    goto out;
  }
  workers = 0;
  if (check(kvb_client_locate(client, hashes, BLOCKS, NULL, 0, &workers), "locate (count)") || workers != 1) goto out;
  if (check(kvb_client_onboard(client, hashes, dst, BLOCKS), "onboard")) goto out;
  for (b = 0; b < BLOCKS; ++b)
    for (l = 0; l < shape.num_layers; ++l)
      for (o = 0; o < shape.outer_dim; ++o) {
        const unsigned char* p = (const unsigned char*)kvb_kv_region_chunk(region, BLOCKS + b, l, o, &bytes);
        for (i = 0; i < bytes; ++i)
          if (p[i] != (unsigned char)(b * 13 + l * 5 + o * 3 + i)) {
            fprintf(stderr, "c_abi: block %u layer %u outer %u byte %zu differs\n", b, l, o, i);
            goto out;
          }
      }
  /* The same blocks again, layer by layer, into blocks 0..7: one progress
   * call per layer, in layer order, before the call returns. */
  for (b = 0; b < BLOCKS; ++b) again[b] = b;
  if (check(kvb_client_onboard_layers(client, hashes, again, BLOCKS, 1, on_layers, &progress), "onboard_layers"))
    goto out;
  if (progress.calls != shape.num_layers || progress.out_of_order || progress.next_layer != shape.num_layers) {
    fprintf(stderr, "c_abi: onboard_layers progress: %u calls, out of order %d, last layer %u\n", progress.calls,
            progress.out_of_order, progress.next_layer);
    goto out;
  }
  if (check(kvb_client_release(client, NULL, 0, &released), "release")) goto out;
  /* A too small buffer is refused with the size needed. */
  if (kvb_client_stats(client, stats, 1, &needed) != KVB_EINVAL || needed < 2) {
    fprintf(stderr, "c_abi: stats with a 1-byte buffer was not refused\n");
    goto out;
  }
  if (check(kvb_client_stats(client, stats, sizeof stats, &needed), "stats")) goto out;
  if (strstr(stats, "\"sessions\"") == NULL) {
    fprintf(stderr, "c_abi: stats has no sessions counter: %s\n", stats);
    goto out;
  }
  if (check(kvb_client_bye(client), "bye")) goto out;
  printf("c_abi: session %llu: %u blocks round-tripped byte-exact\n", (unsigned long long)session, BLOCKS);
  rc = 0;
out:
  kvb_client_close(client);
  kvb_kv_region_destroy(region);
  return rc;
}
