// The value kinds of kvblockd's configuration keys: one parser per kind, for
// TOML values and for flag text, with the range check and the TOML form
// --print-config writes. config.cpp pairs each key with one kind.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <toml++/toml.h>

#include "kvb/common/error.h"

namespace kvb::daemon::config_values {

/// "8GiB", "256 MiB", "4096", "64k" -> bytes. Binary units: K, KiB, M, MiB,
/// G, GiB, T, TiB (case-insensitive); decimal: KB, MB, GB, TB; B or none:
/// bytes. Whole numbers only. invalid_argument on anything else or overflow.
[[nodiscard]] Result<std::uint64_t> parse_size(std::string_view text);
/// Bytes in the largest binary unit that divides them exactly ("256MiB");
/// plain digits when none does.
[[nodiscard]] std::string format_size(std::uint64_t bytes);
/// A whole unsigned decimal number; invalid_argument otherwise.
[[nodiscard]] Result<std::uint64_t> parse_unsigned(std::string_view text);

/// An unsigned integer in [min, max] (max also capped by the member's type).
struct UInt {
  static constexpr bool kRepeatable = false;
  std::uint64_t min = 0;
  std::uint64_t max = std::numeric_limits<std::uint64_t>::max();

  template <class T>
  [[nodiscard]] Status check(const std::string& name, const T& value) const {
    const std::uint64_t hi = std::min<std::uint64_t>(max, std::numeric_limits<T>::max());
    if (value < min || value > hi) {
      return fail(Errc::invalid_argument, "config key '{}' = {} is out of range [{}, {}]", name,
                  static_cast<std::uint64_t>(value), min, hi);
    }
    return kvb::ok();
  }
  template <class T>
  [[nodiscard]] Result<T> from_number(const std::string& name, std::uint64_t value) const {
    const std::uint64_t hi = std::min<std::uint64_t>(max, std::numeric_limits<T>::max());
    if (value < min || value > hi) {
      return fail(Errc::invalid_argument, "config key '{}' = {} is out of range [{}, {}]", name, value, min, hi);
    }
    return static_cast<T>(value);
  }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    const auto value = node.value<std::int64_t>();
    if (!node.is_integer() || !value) return fail(Errc::invalid_argument, "config key '{}' must be an integer", name);
    if (*value < 0) return fail(Errc::invalid_argument, "config key '{}' = {} is negative", name, *value);
    return from_number<T>(name, static_cast<std::uint64_t>(*value));
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    auto value = parse_unsigned(texts.back());
    if (!value) return fail(Errc::invalid_argument, "config key '{}': {}", name, value.error().message);
    return from_number<T>(name, *value);
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    table.insert_or_assign(key, static_cast<std::int64_t>(value));
  }
};

/// A byte count in [min, max]: an integer, or a string with a unit.
struct Size : UInt {
  template <class T>
  [[nodiscard]] Result<T> from_text(const std::string& name, std::string_view text) const {
    auto value = parse_size(text);
    if (!value) return fail(Errc::invalid_argument, "config key '{}': {}", name, value.error().message);
    return this->template from_number<T>(name, *value);
  }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    if (node.is_string()) return from_text<T>(name, *node.value<std::string>());
    if (!node.is_integer()) {
      return fail(Errc::invalid_argument, "config key '{}' must be a byte count (an integer or e.g. \"8GiB\")", name);
    }
    return UInt::from_toml<T>(name, node);
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    return from_text<T>(name, texts.back());
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    const std::string text = format_size(value);
    if (text.find_first_not_of("0123456789") == std::string::npos) {
      table.insert_or_assign(key, static_cast<std::int64_t>(value));
    } else {
      table.insert_or_assign(key, text);
    }
  }
};

/// A string of [min_bytes, max_bytes] bytes.
struct Text {
  static constexpr bool kRepeatable = false;
  std::size_t min_bytes = 0;
  std::size_t max_bytes = std::numeric_limits<std::size_t>::max();

  [[nodiscard]] Status check(const std::string& name, const std::string& value) const {
    if (value.size() < min_bytes || value.size() > max_bytes) {
      return fail(Errc::invalid_argument, "config key '{}' = '{}' is {} bytes; it must be {}..{}", name, value,
                  value.size(), min_bytes, max_bytes);
    }
    return kvb::ok();
  }
  template <class T>
  [[nodiscard]] Result<T> from_text(const std::string& name, std::string value) const {
    if (auto valid = check(name, value); !valid) return tl::unexpected(valid.error());
    return value;
  }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    if (!node.is_string()) return fail(Errc::invalid_argument, "config key '{}' must be a string", name);
    return from_text<T>(name, *node.value<std::string>());
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    return from_text<T>(name, texts.back());
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    table.insert_or_assign(key, value);
  }
};

/// One of a fixed set of strings.
struct Choice {
  static constexpr bool kRepeatable = false;
  std::vector<std::string_view> choices;

  [[nodiscard]] Status check(const std::string& name, const std::string& value) const;
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    if (!node.is_string()) return fail(Errc::invalid_argument, "config key '{}' must be a string", name);
    return from_flag<T>(name, {*node.value<std::string>()});
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    if (auto valid = check(name, texts.back()); !valid) return tl::unexpected(valid.error());
    return texts.back();
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    table.insert_or_assign(key, value);
  }
};

/// Permission bits as an octal string ("0600"), at most 0777.
struct OctalMode {
  static constexpr bool kRepeatable = false;
  [[nodiscard]] static Result<std::uint32_t> parse(const std::string& name, std::string_view text);
  [[nodiscard]] Status check(const std::string& name, std::uint32_t value) const;
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    if (!node.is_string()) return fail(Errc::invalid_argument, "config key '{}' must be an octal string", name);
    return parse(name, *node.value<std::string>());
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    return parse(name, texts.back());
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    table.insert_or_assign(key, fmt::format("{:04o}", value));
  }
};

/// A list of ids (uids, GPU ordinals), each within the element type's range;
/// the flag repeats, one id each.
struct IdList {
  static constexpr bool kRepeatable = true;
  template <class T>
  static constexpr std::uint64_t max_id() {
    return static_cast<std::uint64_t>(std::numeric_limits<typename T::value_type>::max());
  }
  template <class T>
  [[nodiscard]] Status check(const std::string&, const T&) const {
    return kvb::ok();
  }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    const auto* array = node.as_array();
    if (!array) return fail(Errc::invalid_argument, "config key '{}' must be an array of integers", name);
    T out;
    for (const auto& element : *array) {
      const auto value = element.value<std::int64_t>();
      if (!element.is_integer() || !value || *value < 0 || static_cast<std::uint64_t>(*value) > max_id<T>()) {
        return fail(Errc::invalid_argument, "config key '{}' holds a value that is not an id", name);
      }
      out.push_back(static_cast<typename T::value_type>(*value));
    }
    return out;
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    T out;
    for (const auto& text : texts) {
      auto value = parse_unsigned(text);
      if (!value || *value > max_id<T>()) {
        return fail(Errc::invalid_argument, "config key '{}': '{}' is not an id", name, text);
      }
      out.push_back(static_cast<typename T::value_type>(*value));
    }
    return out;
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    toml::array array;
    for (auto id : value) array.push_back(static_cast<std::int64_t>(id));
    table.insert_or_assign(key, std::move(array));
  }
};

/// true / false (flag text: true, false, 1, 0, on, off, yes, no).
struct Bool {
  static constexpr bool kRepeatable = false;
  [[nodiscard]] static Result<bool> parse(const std::string& name, std::string_view text);
  [[nodiscard]] Status check(const std::string&, bool) const { return kvb::ok(); }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    if (!node.is_boolean()) return fail(Errc::invalid_argument, "config key '{}' must be true or false", name);
    return *node.value<bool>();
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string& name, const std::vector<std::string>& texts) const {
    return parse(name, texts.back());
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    table.insert_or_assign(key, value);
  }
};

/// A list of strings (e.g. peer addresses); the flag repeats, one each.
struct TextList {
  static constexpr bool kRepeatable = true;
  [[nodiscard]] Status check(const std::string&, const std::vector<std::string>&) const { return kvb::ok(); }
  template <class T>
  [[nodiscard]] Result<T> from_toml(const std::string& name, const toml::node& node) const {
    const auto* array = node.as_array();
    if (!array) return fail(Errc::invalid_argument, "config key '{}' must be an array of strings", name);
    T out;
    for (const auto& element : *array) {
      if (!element.is_string()) return fail(Errc::invalid_argument, "config key '{}' holds a non-string", name);
      out.push_back(*element.value<std::string>());
    }
    return out;
  }
  template <class T>
  [[nodiscard]] Result<T> from_flag(const std::string&, const std::vector<std::string>& texts) const {
    return T(texts.begin(), texts.end());
  }
  template <class T>
  void store(toml::table& table, const std::string& key, const T& value) const {
    toml::array array;
    for (const auto& text : value) array.push_back(text);
    table.insert_or_assign(key, std::move(array));
  }
};

}  // namespace kvb::daemon::config_values
