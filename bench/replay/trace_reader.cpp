#include "trace_reader.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>

namespace kvb::bench {
namespace {

// A cursor over one line with strict JSON scanning.
class Cursor {
 public:
  Cursor(std::string_view text, std::size_t line) : text_(text), line_(line) {}

  void skip_ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\r')) ++pos_;
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  template <class... Args>
  tl::unexpected<Error> error(fmt::format_string<Args...> what, Args&&... args) const {
    return fail(Errc::invalid_argument, "trace line {}, column {}: {}", line_, pos_ + 1,
                fmt::format(what, std::forward<Args>(args)...));
  }

  Status expect(char c) {
    skip_ws();
    if (peek() != c) return error("expected '{}' but found {}", c, describe());
    ++pos_;
    return ok();
  }

  std::string describe() const { return at_end() ? "end of line" : fmt::format("'{}'", text_[pos_]); }

  // A string without escapes (keys of this format never need them); escapes
  // are accepted and skipped so that unknown string values still parse.
  Result<std::string_view> string() {
    skip_ws();
    if (peek() != '"') return error("expected a string but found {}", describe());
    const std::size_t start = ++pos_;
    while (!at_end() && text_[pos_] != '"') {
      if (text_[pos_] == '\\') ++pos_;
      ++pos_;
    }
    if (at_end()) return error("unterminated string");
    return text_.substr(start, pos_++ - start);
  }

  // A JSON number token (validated by from_chars as a double).
  Result<double> number() {
    skip_ws();
    const std::size_t start = pos_;
    while (!at_end() && (std::strchr("+-.eE", text_[pos_]) != nullptr || (text_[pos_] >= '0' && text_[pos_] <= '9')))
      ++pos_;
    double value = 0;
    auto [ptr, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, value);
    if (start == pos_ || ec != std::errc() || ptr != text_.data() + pos_) {
      pos_ = start;
      return error("expected a number but found {}", describe());
    }
    return value;
  }

  // A non-negative integer that fits in 64 bits.
  Result<std::uint64_t> unsigned_integer(std::string_view field) {
    skip_ws();
    const std::size_t start = pos_;
    std::uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text_.data() + pos_, text_.data() + text_.size(), value);
    if (ec != std::errc()) return error("{}: expected a non-negative integer but found {}", field, describe());
    pos_ = static_cast<std::size_t>(ptr - text_.data());
    if (!at_end() && (peek() == '.' || peek() == 'e' || peek() == 'E')) {
      pos_ = start;
      return error("{}: expected an integer, not a fraction", field);
    }
    return value;
  }

  // Skips any JSON value (for keys this reader does not know).
  Status skip_value(int depth = 0) {
    if (depth > 64) return error("nesting deeper than 64");
    skip_ws();
    const char c = peek();
    if (c == '"') return string().map([](auto) {});
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      skip_ws();
      if (peek() == close) {
        ++pos_;
        return ok();
      }
      for (;;) {
        if (c == '{') {
          if (auto k = string(); !k) return tl::unexpected(k.error());
          if (auto s = expect(':'); !s) return s;
        }
        if (auto s = skip_value(depth + 1); !s) return s;
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        return expect(close);
      }
    }
    for (std::string_view word : {"true", "false", "null"}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return ok();
      }
    }
    return number().map([](double) {});
  }

 private:
  std::string_view text_;
  std::size_t line_;
  std::size_t pos_ = 0;
};

Result<std::vector<std::uint64_t>> parse_ids(Cursor& cur) {
  std::vector<std::uint64_t> ids;
  if (auto s = cur.expect('['); !s) return tl::unexpected(s.error());
  cur.skip_ws();
  if (cur.peek() == ']') return cur.expect(']').map([&] { return std::move(ids); });
  for (;;) {
    auto id = cur.unsigned_integer("hash_ids");
    if (!id) return tl::unexpected(id.error());
    ids.push_back(*id);
    cur.skip_ws();
    if (cur.peek() == ',') {
      (void)cur.expect(',');
      continue;
    }
    if (auto s = cur.expect(']'); !s) return tl::unexpected(s.error());
    return ids;
  }
}

}  // namespace

Result<TraceRequest> parse_trace_line(std::string_view line, std::size_t line_number) {
  Cursor cur(line, line_number);
  TraceRequest req;
  bool has_ts = false, has_in = false, has_out = false, has_ids = false;
  if (auto s = cur.expect('{'); !s) return tl::unexpected(s.error());
  cur.skip_ws();
  if (cur.peek() != '}') {
    for (;;) {
      auto key = cur.string();
      if (!key) return tl::unexpected(key.error());
      if (auto s = cur.expect(':'); !s) return tl::unexpected(s.error());
      Status field = ok();
      if (*key == "timestamp") {
        auto v = cur.number();
        if (v && *v < 0) return cur.error("timestamp must be >= 0 (got {})", *v);
        field = v.map([&](double x) { req.timestamp_ms = x; });
        has_ts = true;
      } else if (*key == "input_length") {
        field = cur.unsigned_integer("input_length").map([&](std::uint64_t x) { req.input_length = x; });
        has_in = true;
      } else if (*key == "output_length") {
        field = cur.unsigned_integer("output_length").map([&](std::uint64_t x) { req.output_length = x; });
        has_out = true;
      } else if (*key == "hash_ids") {
        field = parse_ids(cur).map([&](std::vector<std::uint64_t> ids) { req.hash_ids = std::move(ids); });
        has_ids = true;
      } else {
        field = cur.skip_value();
      }
      if (!field) return tl::unexpected(field.error());
      cur.skip_ws();
      if (cur.peek() == ',') {
        (void)cur.expect(',');
        continue;
      }
      break;
    }
  }
  if (auto s = cur.expect('}'); !s) return tl::unexpected(s.error());
  cur.skip_ws();
  if (!cur.at_end()) return cur.error("unexpected {} after the object", cur.describe());
  for (auto [present, name] : {std::pair{has_ts, "timestamp"}, std::pair{has_in, "input_length"},
                               std::pair{has_out, "output_length"}, std::pair{has_ids, "hash_ids"}}) {
    if (!present) return fail(Errc::invalid_argument, "trace line {}: missing field '{}'", line_number, name);
  }
  return req;
}

Result<std::vector<TraceRequest>> read_trace(const std::string& path, std::size_t max_requests) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    return fail(Errc::io_error, "cannot open trace '{}': {}", path, std::strerror(err));
  }
  std::vector<TraceRequest> trace;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto req = parse_trace_line(line, number);
    if (!req) return fail(Errc::invalid_argument, "{}: {}", path, req.error().message);
    trace.push_back(std::move(*req));
    if (max_requests != 0 && trace.size() == max_requests) break;
  }
  if (in.bad()) return fail(Errc::io_error, "reading trace '{}' failed at line {}", path, number);
  return trace;
}

}  // namespace kvb::bench
