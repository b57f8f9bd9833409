#include "kvb/daemon/config.h"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

#include "config_values.h"
#include "kvb/blockmgr/eviction_policy.h"

namespace kvb::daemon {
namespace {

/// The longest socket path a sockaddr_un holds (its sun_path less the NUL).
constexpr std::size_t kMaxSocketPathBytes = sizeof(sockaddr_un::sun_path) - 1;

using config_values::Bool;
using config_values::Choice;
using config_values::IdList;
using config_values::OctalMode;
using config_values::Size;
using config_values::Text;
using config_values::TextList;
using config_values::UInt;

/// One configuration key, type-erased: its TOML name, flag and help, and how
/// its value moves between a DaemonConfig, TOML and flag text.
struct KeyDef {
  std::string name;  // TOML key; "section.key" lives in table [section]
  std::string flag;  // --name with '_' and '.' as '-', unless given
  std::string help;
  bool repeatable = false;  // list values: the flag may repeat, each adds one element
  std::function<Status(DaemonConfig&, const toml::node&)> load;
  std::function<Status(DaemonConfig&, const std::vector<std::string>&)> load_flag;
  std::function<Status(const DaemonConfig&)> check;
  std::function<void(toml::table&, const DaemonConfig&)> store;
};

std::string flag_of(std::string_view name) {
  std::string flag = "--" + std::string(name);
  std::replace(flag.begin(), flag.end(), '_', '-');
  std::replace(flag.begin(), flag.end(), '.', '-');
  return flag;
}

/// The table a dotted name lives in (created on the way), and its last part.
std::pair<toml::table*, std::string> table_for(toml::table& root, std::string_view name) {
  toml::table* table = &root;
  std::size_t dot;
  while ((dot = name.find('.')) != std::string_view::npos) {
    const std::string section(name.substr(0, dot));
    if (!table->contains(section)) table->insert(section, toml::table{});
    table = table->get_as<toml::table>(section);
    name.remove_prefix(dot + 1);
  }
  return {table, std::string(name)};
}

/// A key over member `member` with value kind `kind` (config_values.h).
template <class T, class Kind>
KeyDef key(std::string name, T DaemonConfig::*member, Kind kind, std::string help, std::string flag = {}) {
  KeyDef def;
  def.flag = flag.empty() ? flag_of(name) : std::move(flag);
  def.help = std::move(help);
  def.repeatable = Kind::kRepeatable;
  def.load = [name, member, kind](DaemonConfig& c, const toml::node& node) -> Status {
    auto value = kind.template from_toml<T>(name, node);
    if (!value) return tl::unexpected(value.error());
    c.*member = std::move(*value);
    return kvb::ok();
  };
  def.load_flag = [name, member, kind](DaemonConfig& c, const std::vector<std::string>& texts) -> Status {
    auto value = kind.template from_flag<T>(name, texts);
    if (!value) return tl::unexpected(value.error());
    c.*member = std::move(*value);
    return kvb::ok();
  };
  def.check = [name, member, kind](const DaemonConfig& c) { return kind.check(name, c.*member); };
  def.store = [name, member, kind](toml::table& root, const DaemonConfig& c) {
    auto [table, last] = table_for(root, name);
    kind.store(*table, last, c.*member);
  };
  def.name = std::move(name);
  return def;
}

/// Every key, one line each. docs/configuration.md lists them (a test checks it).
const std::vector<KeyDef>& key_defs() {
  static const std::vector<KeyDef> defs = [] {
    const std::uint64_t u32 = std::numeric_limits<std::uint32_t>::max();
    std::vector<KeyDef> d;
    d.push_back(key("socket", &DaemonConfig::socket, Text{1, kMaxSocketPathBytes},
                    "Unix socket path (default: $XDG_RUNTIME_DIR/kvblockd.sock, else /tmp/kvblockd-<uid>.sock)"));
    d.push_back(key("socket_mode", &DaemonConfig::socket_mode, OctalMode{}, "Socket file permission bits, octal"));
    d.push_back(key("allowed_uids", &DaemonConfig::allowed_uids, IdList{},
                    "Uids allowed to connect (SO_PEERCRED); empty = the daemon's own uid (a list replaces it: list it "
                    "too if it must still connect). Repeat the flag",
                    "--allowed-uid"));
    d.push_back(
        key("operator_uids", &DaemonConfig::operator_uids, IdList{},
            "Uids allowed the operator requests drain and config; empty = the daemon's own uid. Repeat the flag",
            "--operator-uid"));
    d.push_back(key("tenants.shared_uids", &DaemonConfig::tenants_shared_uids, IdList{},
                    "Uids whose clients share one tenant namespace (a hello's salt then names a tenant among them); "
                    "every other uid is a namespace of its own. Repeat the flag",
                    "--tenant-shared-uid"));
    d.push_back(key("tenants.secret_file", &DaemonConfig::tenants_secret_file, Text{0, 4096},
                    "File holding the secret tenant keys are derived with (>= 16 bytes, same file on every cluster "
                    "worker); empty = from cluster.name in a cluster, else <disk.path>/tenant-secret, else random"));
    d.push_back(key("log_level", &DaemonConfig::log_level,
                    Choice{{"trace", "debug", "info", "warn", "error", "critical", "off"}}, "Log level (stderr)"));
    d.push_back(key("max_frame_bytes", &DaemonConfig::max_frame_bytes, Size{4096, u32},
                    "Largest accepted frame payload (bytes; units allowed, e.g. 16MiB)"));
    d.push_back(key("max_sessions", &DaemonConfig::max_sessions, UInt{1}, "Connections served at once"));
    d.push_back(key("max_inflight", &DaemonConfig::max_inflight, UInt{1},
                    "Per session: async requests and waits not yet answered; more are refused (busy)"));
    d.push_back(key("copy_slots", &DaemonConfig::copy_slots, UInt{1}, "Copies running at once on the copy engine"));
    d.push_back(key("copy_queue", &DaemonConfig::copy_queue, UInt{0},
                    "Admitted copies waiting in order for a slot; beyond it requests are refused (busy)"));
    d.push_back(
        key("copy_threads", &DaemonConfig::copy_threads, UInt{0}, "Host copy engine worker threads; 0 = one per core"));
    d.push_back(key("request_timeout_ms", &DaemonConfig::request_timeout_ms, UInt{1},
                    "Deadline of every offload/onboard, milliseconds"));
    d.push_back(key("status_history", &DaemonConfig::status_history, UInt{1},
                    "Finished requests per session whose result status/wait still report"));
    d.push_back(key("metrics_port", &DaemonConfig::metrics_port, UInt{0},
                    "Prometheus metrics on http://127.0.0.1:PORT/metrics; 0 = off"));
    d.push_back(key("host_pool_bytes", &DaemonConfig::host_pool_bytes, Size{1},
                    "Host (G2) pool bytes per distinct block layout (units allowed, e.g. 8GiB)"));
    d.push_back(key("max_layouts", &DaemonConfig::max_layouts, UInt{1},
                    "Distinct block layouts served at once (one host pool each)"));
    d.push_back(key("max_pool_blocks", &DaemonConfig::max_pool_blocks, UInt{1},
                    "Most blocks one host pool may have (each costs ~70 bytes of bookkeeping); a block shape "
                    "that needs more is refused"));
    d.push_back(key("frame_timeout_ms", &DaemonConfig::frame_timeout_ms, UInt{1},
                    "A frame whose first byte came must be complete within this (ms), else the connection closes"));
    d.push_back(key("hello_timeout_ms", &DaemonConfig::hello_timeout_ms, UInt{1},
                    "A connection that has not said hello and sends no request for this long (ms) is closed"));
    d.push_back(key("max_buffered_bytes", &DaemonConfig::max_buffered_bytes, Size{1},
                    "Daemon-wide: bytes of partial frames and unread answers all connections may hold; past it the "
                    "connection holding the most is closed (units allowed, e.g. 1GiB)"));
    d.push_back(key("max_session_pins", &DaemonConfig::max_session_pins, UInt{1},
                    "lookup(pin=1) leases one session may hold; a pinning lookup past it is refused out_of_capacity"));
    d.push_back(key("eviction_policy", &DaemonConfig::eviction_policy, Choice{[] {
                      std::vector<std::string_view> names{"auto"};
                      names.insert(names.end(), eviction_policies().begin(), eviction_policies().end());
                      return names;
                    }()},
                    "Which inactive host block goes first: prefix, lru or s3fifo; auto = prefix (a cluster "
                    "worker's counts idleness in its share of the cluster's traffic; docs/eviction.md)"));
    d.push_back(key("prefault", &DaemonConfig::prefault, Bool{},
                    "Populate each new host (G2) pool's pages in the background so the first copies need no faults"));
    d.push_back(key("prefault_engine_regions", &DaemonConfig::prefault_engine_regions, Bool{},
                    "Map the pages an engine wrote into the daemon's mapping of its memfd KV regions at register_kv, "
                    "in the background, so its first offload and onboard take no page faults"));
    d.push_back(key("disk.path", &DaemonConfig::disk_path, Text{0, 4096},
                    "Directory of the disk tier's (G3) slot files; empty = no disk tier"));
    d.push_back(key("disk.bytes", &DaemonConfig::disk_bytes, Size{1},
                    "Slot file size per distinct block layout (units allowed, e.g. 200GiB)"));
    d.push_back(key("disk.required", &DaemonConfig::disk_required, Bool{},
                    "An unusable disk tier at start stops kvblockd (true) or is logged and left out (false)"));
    d.push_back(key("disk.io_backend", &DaemonConfig::disk_io_backend, Choice{{"auto", "io_uring", "threads"}},
                    "Disk I/O engine: io_uring, a thread pool, or auto (io_uring where the kernel allows it)"));
    d.push_back(key("disk.queue_depth", &DaemonConfig::disk_queue_depth, UInt{1, 4096},
                    "Disk I/O operations in the kernel at once, per slot file"));
    d.push_back(key("disk.sync_batch", &DaemonConfig::disk_sync_batch, UInt{1, 4096},
                    "A shared fdatasync starts when this many writes wait for it (or none is left in flight)"));
    d.push_back(key("disk.write_queue_bytes", &DaemonConfig::disk_write_queue_bytes, Size{1},
                    "Write-backs accepted and not yet durable, per slot file; beyond it write-backs are skipped"));
    d.push_back(key("disk.admit_min_frequency", &DaemonConfig::disk_admit_min_frequency, UInt{0, 255},
                    "Write an evicted host block to disk only if it was used this often lately (0 or 1 = always)"));
    d.push_back(key("disk.policy", &DaemonConfig::disk_policy,
                    Choice{std::vector<std::string_view>(eviction_policies().begin(), eviction_policies().end())},
                    "Eviction policy of the disk tier: " + std::string(eviction_policy_names())));
    d.push_back(key("disk.inject_faults", &DaemonConfig::disk_inject_faults, Text{0, 1024},
                    "Drills only: make disk I/O fail or slow, e.g. write_errno=ENOSPC,delay_ms=50 (docs/disk.md)"));
    d.push_back(key("integrity.check_host_blocks", &DaemonConfig::integrity_check_host_blocks, Bool{},
                    "Sum host (G2) blocks as they are stored and check them before every copy to an engine"));
    d.push_back(key("devices", &DaemonConfig::devices, IdList{},
                    "CUDA device ordinals served; empty = every usable GPU. Repeat the flag", "--device"));
    d.push_back(key("pin_host_pools", &DaemonConfig::pin_host_pools, Bool{},
                    "Register the host (G2) pools with CUDA (cudaHostRegister) when a GPU is present"));
    d.push_back(key("cluster.listen", &DaemonConfig::cluster_listen, Text{0, 262},
                    "IP:PORT of this worker's cluster bootstrap listener (port 0: any); empty = no cluster"));
    d.push_back(key("cluster.name", &DaemonConfig::cluster_name, Text{1, 128},
                    "The cluster's name: workers of another cluster are refused; etcd keys under /kvblockd/<name>/"));
    d.push_back(key("cluster.worker", &DaemonConfig::cluster_worker, Text{0, 128},
                    "This worker's name, unique in the cluster; empty = <hostname>:<port>"));
    d.push_back(key("cluster.peers", &DaemonConfig::cluster_peers, TextList{},
                    "Static peers: their cluster.listen addresses (HOST:PORT). Repeat the flag"));
    d.push_back(key("cluster.etcd", &DaemonConfig::cluster_etcd, Text{0, 512},
                    "etcd endpoint (http://HOST:PORT) for dynamic membership; empty = static peers only"));
    d.push_back(key("cluster.lease_ttl_s", &DaemonConfig::cluster_lease_ttl_s, UInt{1, 3600},
                    "TTL of this worker's etcd lease: a worker that stops renewing leaves within it"));
    d.push_back(key("cluster.tls", &DaemonConfig::cluster_tls, Text{0, 128},
                    "UCX_TLS of the daemon's UCX context (tcp, sm, rc, ...); empty = UCX's choice"));
    d.push_back(key("cluster.spin_us", &DaemonConfig::cluster_spin_us, UInt{0, 1000000},
                    "UCX progress keeps spinning this long after work (microseconds); 0 = event driven"));
    d.push_back(key("cluster.cache_fetched", &DaemonConfig::cluster_cache_fetched, Bool{},
                    "Blocks fetched from other workers stay registered here (a later onboard is local)"));
    d.push_back(key("cluster.cache_same_host", &DaemonConfig::cluster_cache_same_host, Bool{},
                    "With cache_fetched: keep blocks from same-host workers (pool mapped here) too; false: an onboard "
                    "reads them in place, one copy and no second copy in this host's memory"));
    d.push_back(key("cluster.map_same_host", &DaemonConfig::cluster_map_same_host, Bool{},
                    "Same host, shared-memory transport: fetch by mapping the holder's pool and copying"));
    d.push_back(key("cluster.fetch_into_engine", &DaemonConfig::cluster_fetch_into_engine, Bool{},
                    "With cache_fetched false: holders write fetched blocks straight into the engine's host "
                    "memory (no copy through this worker's pool) where the engine's layout and the transport "
                    "allow; false: always through the pool"));
    d.push_back(key("cluster.fetch_part_bytes", &DaemonConfig::cluster_fetch_part_bytes, Size{0},
                    "An onboard fetches its remote blocks in parts of about this many bytes, each part copied into "
                    "the engine while the next one travels; 0 = all at once, then the copy"));
    d.push_back(key("cluster.connect", &DaemonConfig::cluster_connect, Choice{{"auto", "address"}},
                    "How to open UCX endpoints to peers: auto = by IP:PORT (a UCX listener beside cluster.listen) "
                    "when the transports reach it over the network and not by shared memory (another host, or "
                    "network transports only), else by worker address; address = always by worker address"));
    d.push_back(key("cluster.max_concurrent", &DaemonConfig::cluster_max_concurrent, UInt{1},
                    "Active-message handlers running at once, all message types"));
    d.push_back(key("cluster.max_queued", &DaemonConfig::cluster_max_queued, UInt{1},
                    "Active messages waiting for a handler; beyond it requests are refused (busy)"));
    d.push_back(key("cluster.fetch_concurrency", &DaemonConfig::cluster_fetch_concurrency, UInt{1},
                    "Fetch handlers (serving other workers' onboards) running at once"));
    d.push_back(key("cluster.index_flush_ms", &DaemonConfig::cluster_index_flush_ms, UInt{0, 60000},
                    "Index events (stored/removed) are batched this long at most before they are sent"));
    return d;
  }();
  return defs;
}

const KeyDef* find_key(std::string_view name) {
  const auto& defs = key_defs();
  const auto it = std::find_if(defs.begin(), defs.end(), [&](const KeyDef& d) { return d.name == name; });
  return it == defs.end() ? nullptr : &*it;
}

bool is_section(std::string_view prefix) {
  return std::any_of(key_defs().begin(), key_defs().end(),
                     [&](const KeyDef& d) { return d.name.starts_with(std::string(prefix) + "."); });
}

/// Applies every key of `table` (whose keys are under `prefix`) to `config`.
Status apply_table(DaemonConfig& config, const toml::table& table, const std::string& prefix,
                   std::string_view source_name) {
  for (const auto& [name, node] : table) {
    const std::string full = prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
    if (const KeyDef* def = find_key(full)) {
      if (auto status = def->load(config, node); !status) {
        return fail(Errc::invalid_argument, "{}: {}", source_name, status.error().message);
      }
    } else if (node.is_table() && is_section(full)) {
      if (auto status = apply_table(config, *node.as_table(), full, source_name); !status) return status;
    } else {
      return fail(Errc::invalid_argument, "{}: unknown config key '{}'", source_name, full);
    }
  }
  return kvb::ok();
}

}  // namespace

std::string default_socket_path() {
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime != '\0') {
    struct stat st {};
    if (::stat(runtime, &st) == 0 && S_ISDIR(st.st_mode)) return std::string(runtime) + "/kvblockd.sock";
  }
  return fmt::format("/tmp/kvblockd-{}.sock", ::getuid());
}

std::vector<ConfigKeyInfo> config_keys() {
  std::vector<ConfigKeyInfo> out;
  for (const auto& def : key_defs()) out.push_back(ConfigKeyInfo{def.name, def.flag, def.help});
  return out;
}

Status DaemonConfig::validate() const {
  for (const auto& def : key_defs()) {
    if (auto status = def.check(*this); !status) return status;
  }
  return kvb::ok();
}

std::string DaemonConfig::to_toml() const {
  toml::table table;
  for (const auto& def : key_defs()) def.store(table, *this);
  std::ostringstream out;
  out << "# kvblockd effective configuration\n" << table << "\n";
  return out.str();
}

Status apply_toml(DaemonConfig& config, std::string_view toml_text, std::string_view source_name) {
  toml::table table;
  try {
    table = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    return fail(Errc::invalid_argument, "{}: {} (line {})", source_name, e.description(), e.source().begin.line);
  }
  return apply_table(config, table, "", source_name);
}

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine result;
  CLI::App app{"kvblockd: the KV-cache block manager daemon of one node"};
  std::string config_file;
  bool print_config = false;
  app.add_option("--config,-c", config_file, "TOML config file; flags override its keys")->check(CLI::ExistingFile);
  app.add_flag("--print-config", print_config, "Print the effective configuration as TOML and exit");
  app.set_version_flag("--version", "kvblockd " KVB_VERSION);
  const auto& defs = key_defs();
  // Flags are collected as text and applied over the file after it loads.
  std::vector<std::vector<std::string>> flag_texts(defs.size());
  for (std::size_t i = 0; i < defs.size(); ++i) {
    auto* option = app.add_option(defs[i].flag, flag_texts[i], defs[i].help);
    if (!defs[i].repeatable) option->expected(1);
  }
  auto exit_with = [&result](int code, std::string text) {
    result.exit_code = code;
    result.exit_text = std::move(text);
    return result;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    // --help and --version exit 0; every parse error exits 2 (docs/operations.md).
    return exit_with(code == 0 ? 0 : kExitBadConfig, out.str() + err.str());
  }
  DaemonConfig config;
  config.socket = default_socket_path();
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return exit_with(kExitBadConfig, fmt::format("kvblockd: cannot read config file '{}'\n", config_file));
    if (auto status = apply_toml(config, text.str(), config_file); !status) {
      return exit_with(kExitBadConfig, fmt::format("kvblockd: {}\n", status.error().message));
    }
  }
  for (std::size_t i = 0; i < defs.size(); ++i) {
    if (flag_texts[i].empty()) continue;
    if (auto status = defs[i].load_flag(config, flag_texts[i]); !status) {
      return exit_with(kExitBadConfig, fmt::format("kvblockd: {}: {}\n", defs[i].flag, status.error().message));
    }
  }
  if (auto status = config.validate(); !status) {
    return exit_with(kExitBadConfig, fmt::format("kvblockd: {}\n", status.error().message));
  }
  result.config = std::move(config);
  result.print_config = print_config;
  return result;
}

}  // namespace kvb::daemon
