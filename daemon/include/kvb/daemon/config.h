// kvblockd configuration: built-in defaults < TOML config file < command-line
// flags. Every key has a flag (docs/configuration.md lists them all).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvb/common/error.h"

namespace kvb::daemon {

struct DaemonConfig {
  std::string socket;                // default: $XDG_RUNTIME_DIR/kvblockd.sock, else /tmp/kvblockd-<uid>.sock
  std::uint32_t socket_mode = 0600;  // permission bits of the socket file
  std::string log_level = "info";
  std::uint32_t max_frame_bytes = 16U << 20;
  std::uint32_t max_sessions = 16384;
  std::uint32_t max_inflight = 256;  // per session: async requests + waits not yet answered
  std::uint32_t copy_slots = 64;     // copies running at once on the host copy engine
  std::uint32_t copy_queue = 65536;  // admitted copies waiting for a slot; beyond: busy
  std::uint32_t copy_threads = 0;    // host copy engine workers; 0 = one per core
  std::uint32_t request_timeout_ms = 30000;
  std::uint32_t status_history = 1024;             // finished requests per session remembered for status/wait
  std::uint16_t metrics_port = 0;                  // 0 = no metrics endpoint
  std::uint64_t host_pool_bytes = 256ULL << 20;    // per distinct block layout
  std::uint32_t max_layouts = 4;                   // distinct block layouts (one host pool each)
  std::uint64_t max_pool_blocks = 1ULL << 20;      // blocks of one host pool (bounds its metadata)
  std::uint64_t max_buffered_bytes = 1ULL << 30;   // daemon-wide: partial frames + unread answers of all connections
  std::uint32_t max_session_pins = 65536;          // lookup(pin=1) leases one session may hold
  std::uint32_t frame_timeout_ms = 10000;          // a frame started must be complete within this
  std::uint32_t hello_timeout_ms = 10000;          // a connection without hello idle this long is closed
  std::vector<std::uint32_t> allowed_uids;         // empty = the daemon's own uid only (a list replaces it)
  std::vector<std::uint32_t> operator_uids;        // may drain / read config; empty = the daemon's own uid
  std::vector<std::uint32_t> tenants_shared_uids;  // uids that share one tenant namespace (else one per uid)
  std::string tenants_secret_file;                 // the tenant keys' secret; empty: see docs/operations.md
  std::vector<int> devices;                        // CUDA ordinals the daemon serves; empty = every usable GPU
  bool pin_host_pools = true;                      // cudaHostRegister the G2 pools when a GPU is present
  std::string eviction_policy = "auto";            // the host pools' policy (docs/eviction.md); see below
  bool prefault = true;                            // populate each new host pool's pages in the background
  bool prefault_engine_regions = true;             // map registered engine regions' resident pages in the background
  // Disk tier (G3), docs/disk.md. An empty disk_path = no disk tier.
  std::string disk_path;
  std::uint64_t disk_bytes = 16ULL << 30;               // slot file size per distinct block layout
  bool disk_required = true;                            // unusable disk tier at start: error (true) or logged downgrade
  std::string disk_io_backend = "auto";                 // auto, io_uring, threads
  std::uint32_t disk_queue_depth = 64;                  // I/O operations in the kernel at once, per slot file
  std::uint32_t disk_sync_batch = 32;                   // a shared fdatasync starts when this many writes wait for it
  std::uint64_t disk_write_queue_bytes = 128ULL << 20;  // write-backs accepted, not yet durable; beyond: skipped
  std::uint32_t disk_admit_min_frequency = 1;           // G2 victims used fewer times are not written to disk
  std::string disk_policy = "lru";                      // G3 eviction policy
  std::string disk_inject_faults;                       // drills only: a FaultPlan (docs/disk.md)
  bool integrity_check_host_blocks = false;             // sum host blocks when stored, check them before engine copies

  // [cluster] (docs/cluster.md). cluster_listen empty: the daemon runs alone.
  std::string cluster_listen;              // IP:PORT of this worker's bootstrap listener (port 0: any)
  std::string cluster_name = "kvblockd";   // workers of another cluster are refused
  std::string cluster_worker;              // this worker's name; empty: <hostname>:<port>
  std::vector<std::string> cluster_peers;  // static peers' cluster.listen addresses
  std::string cluster_etcd;                // http://HOST:PORT of etcd; empty: static membership only
  std::uint32_t cluster_lease_ttl_s = 5;
  std::string cluster_tls;  // UCX_TLS of the daemon's UCX context; empty: UCX's choice
  std::uint32_t cluster_spin_us = 0;
  bool cluster_cache_fetched = true;
  bool cluster_cache_same_host = false;
  bool cluster_map_same_host = true;
  bool cluster_fetch_into_engine = true;                 // not cached: holders write straight into engine host memory
  std::uint64_t cluster_fetch_part_bytes = 32ULL << 20;  // remote onboards fetch in parts this size (0: at once)
  std::string cluster_connect = "auto";  // auto: by IP:PORT where the transports allow; address: by worker address
  std::uint32_t cluster_max_concurrent = 16;
  std::uint32_t cluster_max_queued = 4096;
  std::uint32_t cluster_fetch_concurrency = 4;
  std::uint32_t cluster_index_flush_ms = 2;

  /// The host pools' policy by name: eviction_policy, where "auto" is
  /// prefix, alone and in a cluster (a cluster worker's prefix policy counts
  /// idleness in its share of the cluster's traffic, docs/eviction.md; auto
  /// was lru for a cluster worker before, when prefix hit less there).
  [[nodiscard]] std::string effective_eviction_policy() const {
    return eviction_policy == "auto" ? "prefix" : eviction_policy;
  }

  /// invalid_argument naming the bad key and value (every key's range and
  /// form, as the TOML and flag parsers check them), else ok.
  [[nodiscard]] Status validate() const;
  /// The effective configuration as TOML (every key, parseable by load).
  [[nodiscard]] std::string to_toml() const;
};

/// Exit code of kvblockd for a bad flag, config file or key.
inline constexpr int kExitBadConfig = 2;

/// One configuration key as the user sees it: TOML name ("section.key" for
/// keys in a [section]), flag and help text.
struct ConfigKeyInfo {
  std::string name;
  std::string flag;
  std::string help;
};
/// Every key, in --print-config order.
[[nodiscard]] std::vector<ConfigKeyInfo> config_keys();

/// The default socket path: $XDG_RUNTIME_DIR/kvblockd.sock when that
/// variable names a directory, else /tmp/kvblockd-<uid>.sock.
[[nodiscard]] std::string default_socket_path();

/// Applies the keys of a TOML document to `config`. Unknown keys and values
/// of the wrong type or range are invalid_argument naming the key.
[[nodiscard]] Status apply_toml(DaemonConfig& config, std::string_view toml_text, std::string_view source_name);

/// What the command line asks for.
struct CommandLine {
  DaemonConfig config;
  bool print_config = false;
  /// Set when the process should exit at once (--help, --version, a parse
  /// error): the text to print and the exit code.
  std::optional<int> exit_code;
  std::string exit_text;
};

/// Parses flags, loads --config FILE if given, applies flags over the file,
/// validates. Never throws.
[[nodiscard]] CommandLine parse_command_line(int argc, const char* const* argv);

}  // namespace kvb::daemon
