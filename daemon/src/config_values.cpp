#include "config_values.h"

#include <array>
#include <cctype>
#include <charconv>

namespace kvb::daemon::config_values {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct Unit {
  std::string_view name;
  std::uint64_t factor;
};
constexpr std::array kUnits{
    Unit{"", 1},
    Unit{"b", 1},
    Unit{"k", 1ULL << 10},
    Unit{"kib", 1ULL << 10},
    Unit{"kb", 1000ULL},
    Unit{"m", 1ULL << 20},
    Unit{"mib", 1ULL << 20},
    Unit{"mb", 1000ULL * 1000},
    Unit{"g", 1ULL << 30},
    Unit{"gib", 1ULL << 30},
    Unit{"gb", 1000ULL * 1000 * 1000},
    Unit{"t", 1ULL << 40},
    Unit{"tib", 1ULL << 40},
    Unit{"tb", 1000ULL * 1000 * 1000 * 1000},
};

}  // namespace

Result<std::uint64_t> parse_unsigned(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
    return fail(Errc::invalid_argument, "'{}' is not a whole non-negative number", text);
  }
  return value;
}

Result<std::uint64_t> parse_size(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])) != 0) ++digits;
  auto number = parse_unsigned(text.substr(0, digits));
  std::string_view unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  const std::string name = lower(unit);
  for (const auto& u : kUnits) {
    if (u.name != name) continue;
    if (!number) break;
    if (*number > std::numeric_limits<std::uint64_t>::max() / u.factor) {
      return fail(Errc::invalid_argument, "'{}' does not fit in 64 bits", text);
    }
    return *number * u.factor;
  }
  return fail(Errc::invalid_argument,
              "'{}' is not a byte count (a whole number with an optional unit: B, KiB, MiB, GiB, TiB, K, M, G, T, "
              "KB, MB, GB, TB)",
              text);
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::array<std::pair<std::uint64_t, std::string_view>, 4> kBinary{
      {{1ULL << 40, "TiB"}, {1ULL << 30, "GiB"}, {1ULL << 20, "MiB"}, {1ULL << 10, "KiB"}}};
  for (const auto& [factor, name] : kBinary) {
    if (bytes != 0 && bytes % factor == 0) return fmt::format("{}{}", bytes / factor, name);
  }
  return std::to_string(bytes);
}

Status Choice::check(const std::string& name, const std::string& value) const {
  for (auto choice : choices) {
    if (choice == value) return kvb::ok();
  }
  std::string list;
  for (auto choice : choices) list += (list.empty() ? "" : ", ") + std::string(choice);
  return fail(Errc::invalid_argument, "config key '{}' = '{}' is not one of: {}", name, value, list);
}

Result<std::uint32_t> OctalMode::parse(const std::string& name, std::string_view text) {
  std::uint32_t mode = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || mode > 0777) {
    return fail(Errc::invalid_argument, "config key '{}' = '{}' is not an octal mode <= 0777", name, text);
  }
  return mode;
}

Status OctalMode::check(const std::string& name, std::uint32_t value) const {
  if (value > 0777) return fail(Errc::invalid_argument, "config key '{}' = {:o} is over 0777", name, value);
  return kvb::ok();
}

Result<bool> Bool::parse(const std::string& name, std::string_view text) {
  const std::string value = lower(text);
  if (value == "true" || value == "1" || value == "on" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "off" || value == "no") return false;
  return fail(Errc::invalid_argument, "config key '{}' = '{}' is not true or false", name, text);
}

}  // namespace kvb::daemon::config_values
