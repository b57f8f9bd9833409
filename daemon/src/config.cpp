#include "kvb/daemon/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

namespace kvb::daemon {
namespace {

// One configuration key: its TOML name, its flag, and how to move it between
// a DaemonConfig, a TOML table and the command line.
struct KeyDef {
  std::string key;
  std::string help;
  std::function<Status(DaemonConfig&, const toml::node&)> from_toml;
  std::function<void(toml::table&, const DaemonConfig&)> to_toml;
  std::function<CLI::Option*(CLI::App&, DaemonConfig&)> add_flag;
  std::function<void(DaemonConfig&, const DaemonConfig&)> copy;
};

std::string flag_of(const std::string& key) {
  std::string flag = "--" + key;
  for (auto& c : flag) {
    if (c == '_') c = '-';
  }
  return flag;
}

template <class T>
KeyDef int_key(std::string key, T DaemonConfig::*member, std::string help, std::uint64_t min_value = 0) {
  KeyDef def;
  def.key = key;
  def.help = help;
  def.from_toml = [key, member, min_value](DaemonConfig& c, const toml::node& node) -> Status {
    const auto value = node.value<std::int64_t>();
    if (!node.is_integer() || !value) return fail(Errc::invalid_argument, "config key '{}' must be an integer", key);
    if (*value < 0 || static_cast<std::uint64_t>(*value) < min_value ||
        static_cast<std::uint64_t>(*value) > std::numeric_limits<T>::max()) {
      return fail(Errc::invalid_argument, "config key '{}' = {} is out of range [{}, {}]", key, *value, min_value,
                  static_cast<std::uint64_t>(std::numeric_limits<T>::max()));
    }
    c.*member = static_cast<T>(*value);
    return ok();
  };
  def.to_toml = [key, member](toml::table& t, const DaemonConfig& c) {
    t.insert_or_assign(key, static_cast<std::int64_t>(c.*member));
  };
  def.add_flag = [key, member, help](CLI::App& app, DaemonConfig& c) {
    return app.add_option(flag_of(key), c.*member, help);
  };
  def.copy = [member](DaemonConfig& dst, const DaemonConfig& src) { dst.*member = src.*member; };
  return def;
}

std::vector<KeyDef> key_defs() {
  std::vector<KeyDef> defs;
  {
    KeyDef def;
    def.key = "socket";
    def.help = "Unix socket path (default: $XDG_RUNTIME_DIR/kvblockd.sock, else /tmp/kvblockd-<uid>.sock)";
    def.from_toml = [](DaemonConfig& c, const toml::node& node) -> Status {
      if (!node.is_string()) return fail(Errc::invalid_argument, "config key 'socket' must be a string");
      c.socket = *node.value<std::string>();
      return ok();
    };
    def.to_toml = [](toml::table& t, const DaemonConfig& c) { t.insert_or_assign("socket", c.socket); };
    def.add_flag = [help = def.help](CLI::App& app, DaemonConfig& c) {
      return app.add_option("--socket", c.socket, help);
    };
    def.copy = [](DaemonConfig& dst, const DaemonConfig& src) { dst.socket = src.socket; };
    defs.push_back(std::move(def));
  }
  {
    KeyDef def;
    def.key = "socket_mode";
    def.help = "Permission bits of the socket file, octal (default \"0600\")";
    def.from_toml = [](DaemonConfig& c, const toml::node& node) -> Status {
      if (!node.is_string()) return fail(Errc::invalid_argument, "config key 'socket_mode' must be an octal string");
      const std::string text = *node.value<std::string>();
      std::uint32_t mode = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
      if (ec != std::errc{} || end != text.data() + text.size() || mode > 0777) {
        return fail(Errc::invalid_argument, "config key 'socket_mode' = '{}' is not an octal mode <= 0777", text);
      }
      c.socket_mode = mode;
      return ok();
    };
    def.to_toml = [](toml::table& t, const DaemonConfig& c) {
      t.insert_or_assign("socket_mode", fmt::format("{:04o}", c.socket_mode));
    };
    def.add_flag = [help = def.help](CLI::App& app, DaemonConfig& c) {
      return app.add_option_function<std::string>(
          "--socket-mode",
          [&c](const std::string& text) {
            std::uint32_t mode = 0;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
            if (ec != std::errc{} || end != text.data() + text.size() || mode > 0777) {
              throw CLI::ValidationError("--socket-mode", "'" + text + "' is not an octal mode <= 0777");
            }
            c.socket_mode = mode;
          },
          help);
    };
    def.copy = [](DaemonConfig& dst, const DaemonConfig& src) { dst.socket_mode = src.socket_mode; };
    defs.push_back(std::move(def));
  }
  {
    KeyDef def;
    def.key = "log_level";
    def.help = "trace, debug, info, warn, error, critical or off";
    def.from_toml = [](DaemonConfig& c, const toml::node& node) -> Status {
      if (!node.is_string()) return fail(Errc::invalid_argument, "config key 'log_level' must be a string");
      c.log_level = *node.value<std::string>();
      return ok();
    };
    def.to_toml = [](toml::table& t, const DaemonConfig& c) { t.insert_or_assign("log_level", c.log_level); };
    def.add_flag = [help = def.help](CLI::App& app, DaemonConfig& c) {
      return app.add_option("--log-level", c.log_level, help);
    };
    def.copy = [](DaemonConfig& dst, const DaemonConfig& src) { dst.log_level = src.log_level; };
    defs.push_back(std::move(def));
  }
  defs.push_back(
      int_key("max_frame_bytes", &DaemonConfig::max_frame_bytes, "Largest accepted frame payload, bytes", 4096));
  defs.push_back(
      int_key("max_sessions", &DaemonConfig::max_sessions, "Connections served at once; more are refused", 1));
  defs.push_back(int_key("max_inflight", &DaemonConfig::max_inflight,
                         "Per session: async requests and waits not yet answered; more are refused (busy)", 1));
  defs.push_back(int_key("copy_slots", &DaemonConfig::copy_slots, "Copies running at once on the host copy engine", 1));
  defs.push_back(int_key("copy_queue", &DaemonConfig::copy_queue,
                         "Admitted copies waiting in order for a slot; beyond this new ones are refused (busy)"));
  defs.push_back(
      int_key("copy_threads", &DaemonConfig::copy_threads, "Host copy engine worker threads; 0 = one per core"));
  defs.push_back(int_key("request_timeout_ms", &DaemonConfig::request_timeout_ms,
                         "Deadline of every offload/onboard request, milliseconds", 1));
  defs.push_back(int_key("status_history", &DaemonConfig::status_history,
                         "Finished requests per session whose result status/wait still report", 1));
  defs.push_back(int_key("metrics_port", &DaemonConfig::metrics_port,
                         "Serve Prometheus metrics on http://127.0.0.1:PORT/metrics; 0 = off"));
  defs.push_back(int_key("host_pool_bytes", &DaemonConfig::host_pool_bytes,
                         "Bytes of the host (G2) pool created for each distinct block layout", 1));
  defs.push_back(int_key("max_layouts", &DaemonConfig::max_layouts,
                         "Distinct block layouts served at once (each gets a host pool)", 1));
  {
    KeyDef def;
    def.key = "allowed_uids";
    def.help = "Uids allowed to connect (SO_PEERCRED); empty = the daemon's own uid. Flag: repeat --allowed-uid";
    def.from_toml = [](DaemonConfig& c, const toml::node& node) -> Status {
      const auto* array = node.as_array();
      if (!array) return fail(Errc::invalid_argument, "config key 'allowed_uids' must be an array of integers");
      c.allowed_uids.clear();
      for (const auto& element : *array) {
        const auto value = element.value<std::int64_t>();
        if (!element.is_integer() || !value || *value < 0 || *value > std::numeric_limits<std::uint32_t>::max()) {
          return fail(Errc::invalid_argument, "config key 'allowed_uids' holds a value that is not a uid");
        }
        c.allowed_uids.push_back(static_cast<std::uint32_t>(*value));
      }
      return ok();
    };
    def.to_toml = [](toml::table& t, const DaemonConfig& c) {
      toml::array array;
      for (auto uid : c.allowed_uids) array.push_back(static_cast<std::int64_t>(uid));
      t.insert_or_assign("allowed_uids", std::move(array));
    };
    def.add_flag = [help = def.help](CLI::App& app, DaemonConfig& c) {
      return app.add_option("--allowed-uid", c.allowed_uids, help);
    };
    def.copy = [](DaemonConfig& dst, const DaemonConfig& src) { dst.allowed_uids = src.allowed_uids; };
    defs.push_back(std::move(def));
  }
  return defs;
}

}  // namespace

std::string default_socket_path() {
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime != '\0') {
    struct stat st {};
    if (::stat(runtime, &st) == 0 && S_ISDIR(st.st_mode)) return std::string(runtime) + "/kvblockd.sock";
  }
  return fmt::format("/tmp/kvblockd-{}.sock", ::getuid());
}

Status DaemonConfig::validate() const {
  if (socket.empty()) return fail(Errc::invalid_argument, "socket path is empty");
  if (socket.size() >= 108) {
    return fail(Errc::invalid_argument, "socket path '{}' is {} bytes, over the Unix socket limit of 107", socket,
                socket.size());
  }
  if (socket_mode > 0777) return fail(Errc::invalid_argument, "socket_mode {:o} is over 0777", socket_mode);
  if (max_frame_bytes < 4096) return fail(Errc::invalid_argument, "max_frame_bytes {} is under 4096", max_frame_bytes);
  if (max_sessions == 0) return fail(Errc::invalid_argument, "max_sessions must be > 0");
  if (max_inflight == 0) return fail(Errc::invalid_argument, "max_inflight must be > 0");
  if (copy_slots == 0) return fail(Errc::invalid_argument, "copy_slots must be > 0");
  if (request_timeout_ms == 0) return fail(Errc::invalid_argument, "request_timeout_ms must be > 0");
  if (status_history == 0) return fail(Errc::invalid_argument, "status_history must be > 0");
  if (host_pool_bytes == 0) return fail(Errc::invalid_argument, "host_pool_bytes must be > 0");
  if (max_layouts == 0) return fail(Errc::invalid_argument, "max_layouts must be > 0");
  const auto level = log_level;
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool known = false;
  for (auto name : kLevels) known = known || name == level;
  if (!known) return fail(Errc::invalid_argument, "log_level '{}' is not one of trace..off", level);
  return kvb::ok();
}

std::string DaemonConfig::to_toml() const {
  toml::table table;
  for (const auto& def : key_defs()) def.to_toml(table, *this);
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
  const auto defs = key_defs();
  for (const auto& [key, node] : table) {
    const auto it = std::find_if(defs.begin(), defs.end(), [&](const KeyDef& d) { return d.key == key.str(); });
    if (it == defs.end()) return fail(Errc::invalid_argument, "{}: unknown config key '{}'", source_name, key.str());
    if (auto status = it->from_toml(config, node); !status) {
      return fail(Errc::invalid_argument, "{}: {}", source_name, status.error().message);
    }
  }
  return kvb::ok();
}

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine result;
  CLI::App app{"kvblockd: the KV-cache block manager daemon of one node"};
  DaemonConfig from_flags;
  std::string config_file;
  bool print_config = false;
  app.add_option("--config,-c", config_file, "TOML config file; flags override its keys")->check(CLI::ExistingFile);
  app.add_flag("--print-config", print_config, "Print the effective configuration as TOML and exit");
  app.set_version_flag("--version", "kvblockd " KVB_VERSION);
  const auto defs = key_defs();
  std::vector<CLI::Option*> options;
  for (const auto& def : defs) options.push_back(def.add_flag(app, from_flags));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    result.exit_code = app.exit(e, out, err);
    result.exit_text = out.str() + err.str();
    return result;
  }
  DaemonConfig config;
  config.socket = default_socket_path();
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      result.exit_code = 2;
      result.exit_text = fmt::format("kvblockd: cannot read config file '{}'\n", config_file);
      return result;
    }
    if (auto status = apply_toml(config, text.str(), config_file); !status) {
      result.exit_code = 2;
      result.exit_text = fmt::format("kvblockd: {}\n", status.error().message);
      return result;
    }
  }
  for (std::size_t i = 0; i < defs.size(); ++i) {
    if (options[i]->count() > 0) defs[i].copy(config, from_flags);
  }
  if (auto status = config.validate(); !status) {
    result.exit_code = 2;
    result.exit_text = fmt::format("kvblockd: {}\n", status.error().message);
    return result;
  }
  result.config = std::move(config);
  result.print_config = print_config;
  return result;
}

}  // namespace kvb::daemon
