// kvblockctl: the operator's tool for a running kvblockd.
//   kvblockctl [--socket PATH] status | stats [--json] | lookup HASH... | locate HASH... | config | drain | cluster
// Exit codes: 0 ok, 1 the daemon answered an error or is unreachable, 2 usage.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "kvb/client/client.h"
#include "kvb/common/block_shape.h"

namespace {

using kvb::client::Client;

int report(const kvb::Error& e) {
  std::fprintf(stderr, "kvblockctl: %s\n", e.to_string().c_str());
  return 1;
}

/// Operator sessions say hello with num_layers 0 (no KV cache); lookup and
/// locate say hello with the tenant's block shape, since the daemon keeps a
/// pool per shape.
kvb::Result<kvb::client::HelloInfo> hello(Client& c, std::uint64_t salt, const kvb::client::BlockShape& shape) {
  kvb::client::HelloParams p;
  p.client_name = "kvblockctl";
  p.tenant_salt = salt;
  p.shape = shape;
  return c.hello(p);
}

/// Prints the stats JSON as "key value" lines (nested keys joined with '.').
/// The JSON stays the contract (--json); this is only a reading aid.
void print_flat(const nlohmann::json& value, const std::string& name) {
  if (value.is_object()) {
    for (const auto& [key, child] : value.items())
      print_flat(child, name.empty() ? key : std::string(name).append(".").append(key));
  } else {
    std::printf("%-28s %s\n", name.c_str(),
                value.is_string() ? value.get<std::string>().c_str() : value.dump().c_str());
  }
}

int print_stats_human(const std::string& json) {
  const auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    std::fprintf(stderr, "kvblockctl: the daemon's stats are not valid JSON: %s\n", json.c_str());
    return 1;
  }
  print_flat(parsed, "");
  return 0;
}

/// `kvblockctl cluster`: the daemon's cluster (stats' "cluster" object) as a
/// table of members, or a clear line when the daemon runs alone.
int print_cluster(const std::string& json) {
  const auto stats = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (stats.is_discarded()) {
    std::fprintf(stderr, "kvblockctl: the daemon's stats are not valid JSON: %s\n", json.c_str());
    return 1;
  }
  const auto it = stats.find("cluster");
  if (it == stats.end() || !it->is_object()) {
    std::printf("not in a cluster (cluster.listen is not set)\n");
    return 0;
  }
  const auto& c = *it;
  auto text = [](const nlohmann::json& o, const char* key) {
    const auto v = o.find(key);
    return v == o.end() ? std::string("-") : v->is_string() ? v->get<std::string>() : v->dump();
  };
  std::printf("worker %s of cluster '%s' on %s (UCX_TLS %s, bulk by %s, membership %s), %s blocks in its index\n",
              text(c, "worker").c_str(), text(c, "name").c_str(), text(c, "listen").c_str(), text(c, "tls").c_str(),
              text(c, "bulk_protocol").c_str(), text(c, "membership").c_str(), text(c, "index_blocks").c_str());
  if (c.contains("traffic_shared_by")) {
    // prefix counts idleness in the host pools' own uses: 1/N of the traffic.
    const auto credit = stats.find("eviction_use_credit");
    const std::string of_credit = credit != stats.end() && credit->is_number()
                                      ? ": credit of " + credit->dump() + " uses per doubling of uses"
                                      : std::string();
    std::printf("eviction %s%s, traffic shared by %s worker(s)\n", text(stats, "eviction_policy").c_str(),
                of_credit.c_str(), text(c, "traffic_shared_by").c_str());
  }
  if (const auto etcd = c.find("etcd"); etcd != c.end() && etcd->is_object()) {
    if (etcd->value("state", std::string()) == "reachable") {
      std::printf("etcd %s: reachable (%s outages so far)\n", text(*etcd, "endpoint").c_str(),
                  text(*etcd, "outages").c_str());
    } else {
      std::printf("etcd %s: UNREACHABLE since %s (%s ms; members kept, retrying): %s\n",
                  text(*etcd, "endpoint").c_str(), text(*etcd, "unreachable_since").c_str(),
                  text(*etcd, "unreachable_ms").c_str(), text(*etcd, "last_error").c_str());
    }
  }
  std::printf("%-20s %-22s %-7s %-8s %12s %14s %14s %9s %9s %7s %10s %10s\n", "WORKER", "BOOTSTRAP", "STATE",
              "ENDPOINT", "INDEX_BLOCKS", "BYTES_IN", "BYTES_OUT", "FETCHES", "SERVED", "ERRORS", "RTT_US",
              "FETCH_GBPS");
  for (const auto& m : c.value("members", nlohmann::json::array())) {
    // The fetch rate from it: bytes fetched over the time those fetches took.
    const double us = m.value("fetch_us", 0.0);
    char gbps[32] = "-";
    if (us > 0) std::snprintf(gbps, sizeof gbps, "%.3f", m.value("bytes_in", 0.0) / (us * 1e3));
    std::printf("%-20s %-22s %-7s %-8s %12s %14s %14s %9s %9s %7s %10s %10s\n", text(m, "worker").c_str(),
                text(m, "bootstrap").c_str(), text(m, "state").c_str(), text(m, "endpoint").c_str(),
                text(m, "index_blocks").c_str(), text(m, "bytes_in").c_str(), text(m, "bytes_out").c_str(),
                text(m, "fetches_requested").c_str(), text(m, "fetches_served").c_str(),
                text(m, "fetch_errors").c_str(), text(m, "rtt_us").c_str(), gbps);
  }
  return 0;
}

/// A dtype by name (bf16, f16, ...) or by its wire number.
kvb::Result<kvb::DType> parse_dtype_arg(const std::string& text) {
  if (text.size() == 1 && text[0] >= '0' && text[0] <= '9') {
    if (auto dtype = kvb::dtype_from_wire(static_cast<std::uint8_t>(text[0] - '0'))) return *dtype;
  }
  return kvb::parse_dtype(text);
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{"kvblockctl: inspect and operate a running kvblockd"};
  app.require_subcommand(1);
  std::string socket = kvb::client::default_socket_path();
  app.add_option("--socket", socket, "kvblockd's Unix socket")->capture_default_str();
  std::uint64_t salt = 0;
  app.add_option("--salt", salt, "tenant salt for lookup (hashes are per tenant)")->capture_default_str();
  unsigned timeout_ms = 10'000;
  app.add_option("--timeout-ms", timeout_ms, "how long to wait for each answer")->capture_default_str();

  auto* status_cmd = app.add_subcommand("status", "is the daemon up: version, limits, GPU, session and lease counts");
  auto* stats_cmd = app.add_subcommand("stats", "the daemon's counters");
  bool json = false;
  stats_cmd->add_flag("--json", json, "print the counters JSON exactly as the daemon sends it");
  auto* lookup_cmd = app.add_subcommand("lookup", "longest prefix of these sequence hashes held, per tier");
  auto* locate_cmd = app.add_subcommand(
      "locate", "for a KV-aware router: the longest prefix of these sequence hashes each worker of the cluster holds");
  std::vector<std::string> hash_text;
  // The block shape of the blocks looked up (defaults: examples/engine_sim's).
  kvb::client::BlockShape shape;
  shape.num_layers = 4;
  shape.outer_dim = 2;
  shape.page_size = 16;
  shape.inner_dim = 128;
  std::string dtype_name = "bf16";
  for (auto* cmd : {lookup_cmd, locate_cmd}) {
    cmd->add_option("HASH", hash_text, "sequence hashes, in prefix order (decimal or 0x hex)")->required();
    cmd->add_option("--layers", shape.num_layers, "block shape: layers")->capture_default_str();
    cmd->add_option("--outer-dim", shape.outer_dim, "block shape: 2 (K,V) or 1 (MLA)")->capture_default_str();
    cmd->add_option("--page-size", shape.page_size, "block shape: tokens per block")->capture_default_str();
    cmd->add_option("--inner-dim", shape.inner_dim, "block shape: num_kv_heads x head_dim")->capture_default_str();
    cmd->add_option("--dtype", dtype_name, "block shape: u8, f16, bf16, f32, fp8_e4m3 or fp8_e5m2 (or its number)")
        ->capture_default_str();
    cmd->add_option("--alignment", shape.alignment, "block shape: alignment")->capture_default_str();
  }
  auto* config_cmd = app.add_subcommand("config", "the daemon's effective configuration (TOML)");
  auto* drain_cmd = app.add_subcommand("drain", "stop accepting new work from every session");
  auto* cluster_cmd =
      app.add_subcommand("cluster", "the daemon's cluster: its members, their state, index sizes and traffic");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::uint64_t> hashes;
  for (const auto& h : hash_text) {
    try {
      std::size_t used = 0;
      hashes.push_back(std::stoull(h, &used, 0));
      if (used != h.size()) throw std::invalid_argument(h);
    } catch (const std::exception&) {
      std::fprintf(stderr, "kvblockctl: %s: '%s' is not a hash (decimal or 0x hex u64)\n",
                   lookup_cmd->parsed() ? "lookup" : "locate", h.c_str());
      return 2;
    }
  }

  auto connected = Client::connect(socket);
  if (!connected) return report(connected.error());
  Client& c = **connected;
  c.set_timeout(std::chrono::milliseconds(timeout_ms));
  kvb::client::BlockShape operator_shape;
  operator_shape.num_layers = 0;  // no KV cache: an operator session
  const bool with_shape = lookup_cmd->parsed() || locate_cmd->parsed();
  if (with_shape) {
    auto dtype = parse_dtype_arg(dtype_name);
    if (!dtype) {
      std::fprintf(stderr, "kvblockctl: --dtype: %s\n", dtype.error().message.c_str());
      return 2;
    }
    shape.dtype = static_cast<std::uint8_t>(*dtype);
  }
  auto info = hello(c, salt, with_shape ? shape : operator_shape);
  if (!info) return report(info.error());

  int rc = 0;
  if (status_cmd->parsed()) {
    std::printf("%s at %s: up\n", info->server_version.c_str(), socket.c_str());
    std::printf("protocol version  %u\nmax frame bytes   %u\nmax in flight     %u per session\ngpu present       %s\n",
                info->version, info->max_frame_bytes, info->max_inflight, info->gpu_present ? "yes" : "no");
    auto stats = c.stats();
    if (!stats) {
      rc = report(stats.error());
    } else {
      rc = print_stats_human(*stats);
    }
  } else if (stats_cmd->parsed()) {
    auto stats = c.stats();
    if (!stats) {
      rc = report(stats.error());
    } else if (json) {
      std::printf("%s\n", stats->c_str());
    } else {
      rc = print_stats_human(*stats);
    }
  } else if (lookup_cmd->parsed()) {
    auto r = c.lookup(hashes, false);
    if (!r) {
      rc = report(r.error());
    } else {
      std::printf("prefix_blocks %u of %zu\n", r->prefix_blocks, hashes.size());
      for (const auto& t : r->tiers) std::printf("  G%u %u\n", static_cast<unsigned>(t.tier), t.blocks);
    }
  } else if (locate_cmd->parsed()) {
    auto r = c.locate(hashes);
    if (!r) {
      rc = report(r.error());
    } else {
      std::printf("%-24s %s (of %zu)\n", "WORKER", "PREFIX_BLOCKS", hashes.size());
      for (std::size_t i = 0; i < r->size(); ++i) {
        const auto& w = (*r)[i];
        const std::string name =
            i == 0 ? (w.worker.empty() ? std::string("(this daemon)") : w.worker + " (this daemon)") : w.worker;
        std::printf("%-24s %u\n", name.c_str(), w.prefix_blocks);
      }
    }
  } else if (cluster_cmd->parsed()) {
    auto stats = c.stats();
    rc = stats ? print_cluster(*stats) : report(stats.error());
  } else if (config_cmd->parsed()) {
    auto toml = c.config();
    if (!toml) {
      rc = report(toml.error());
    } else {
      std::fputs(toml->c_str(), stdout);
      if (!toml->empty() && toml->back() != '\n') std::fputc('\n', stdout);
    }
  } else if (drain_cmd->parsed()) {
    if (auto st = c.drain(); !st) {
      rc = report(st.error());
    } else {
      std::printf("kvblockd at %s is draining: new work is refused\n", socket.c_str());
    }
  }
  (void)c.bye();
  return rc;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvblockctl: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "kvblockctl: an unknown exception\n");
    return 1;
  }
}
