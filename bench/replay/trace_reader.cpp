#include "trace_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

namespace kvb::bench {
namespace {

using json = nlohmann::json;

// nlohmann-json's SAX interface fills a TraceRequest as the line is read, with
// no DOM in between (the DOM parse of a 12k-line trace is several times
// slower). The library checks the JSON; this handler checks the fields.
class LineHandler final : public nlohmann::json_sax<json> {
 public:
  LineHandler(TraceRequest& req, std::size_t line) : req_(req), line_(line) {}

  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v < 0) return in_ids() ? reject("hash_ids: expected a non-negative integer, got {}", v) : negative(v);
    return number_unsigned(static_cast<number_unsigned_t>(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (in_ids()) {
      req_.hash_ids.push_back(v);
      return true;
    }
    if (depth_ != 1) return true;  // inside a value of an unknown key
    switch (field_) {
      case Field::timestamp: req_.timestamp_ms = static_cast<double>(v); return seen(kTimestamp);
      case Field::input_length: req_.input_length = v; return seen(kInput);
      case Field::output_length: req_.output_length = v; return seen(kOutput);
      case Field::hash_ids: return reject("hash_ids: expected a list of ids, got a number");
      case Field::other: return true;
    }
    return true;
  }
  bool number_float(number_float_t v, const string_t&) override {
    if (in_ids()) return reject("hash_ids: expected an integer, not a fraction ({})", v);
    if (depth_ != 1) return true;
    switch (field_) {
      case Field::timestamp:
        if (v < 0) return reject("timestamp must be >= 0 (got {})", v);
        req_.timestamp_ms = v;
        return seen(kTimestamp);
      case Field::input_length: return reject("input_length: expected an integer, not a fraction ({})", v);
      case Field::output_length: return reject("output_length: expected an integer, not a fraction ({})", v);
      case Field::hash_ids: return reject("hash_ids: expected a list of ids, got a number");
      case Field::other: return true;
    }
    return true;
  }
  bool string(string_t&) override { return scalar("a string"); }
  bool binary(binary_t&) override { return scalar("binary"); }

  bool start_object(std::size_t) override {
    if (depth_ == 0) {
      depth_ = 1;
      return true;
    }
    if (in_ids()) return reject("hash_ids: expected an integer, got an object");
    if (depth_ == 1 && field_ != Field::other) return reject("{}: expected a number, got an object", name(field_));
    ++depth_;
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    if (depth_ == 0) return reject("expected '{{' (one JSON object a line), got an array");
    if (in_ids()) return reject("hash_ids: expected an integer, got a list");
    if (depth_ == 1 && field_ != Field::hash_ids && field_ != Field::other)
      return reject("{}: expected a number, got a list", name(field_));
    if (depth_ == 1 && field_ == Field::hash_ids) {
      req_.hash_ids.clear();
      ids_open_ = true;
      (void)seen(kIds);
    }
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    if (depth_ == 1) ids_open_ = false;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ != 1) return true;
    if (k == "timestamp")
      field_ = Field::timestamp;
    else if (k == "input_length")
      field_ = Field::input_length;
    else if (k == "output_length")
      field_ = Field::output_length;
    else if (k == "hash_ids")
      field_ = Field::hash_ids;
    else
      field_ = Field::other;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    // ex.what(): "[json.exception.parse_error.101] parse error at line 1, column 75: syntax error ..."
    std::string_view what = ex.what();
    if (auto colon = what.find(": "); colon != std::string_view::npos) what.remove_prefix(colon + 2);
    error_ = Error{Errc::invalid_argument, fmt::format("trace line {}, column {}: {}", line_, position, what)};
    return false;
  }

  /// The outcome once sax_parse has returned.
  [[nodiscard]] Status result() const {
    if (error_) return tl::unexpected(*error_);
    for (auto [bit, field] : {std::pair{kTimestamp, "timestamp"}, std::pair{kInput, "input_length"},
                              std::pair{kOutput, "output_length"}, std::pair{kIds, "hash_ids"}}) {
      if ((seen_ & bit) == 0) return fail(Errc::invalid_argument, "trace line {}: missing field '{}'", line_, field);
    }
    return ok();
  }

 private:
  enum class Field : std::uint8_t { other, timestamp, input_length, output_length, hash_ids };
  static constexpr std::uint8_t kTimestamp = 1, kInput = 2, kOutput = 4, kIds = 8;

  static const char* name(Field f) {
    switch (f) {
      case Field::timestamp: return "timestamp";
      case Field::input_length: return "input_length";
      case Field::output_length: return "output_length";
      case Field::hash_ids: return "hash_ids";
      case Field::other: break;
    }
    return "value";
  }
  [[nodiscard]] bool in_ids() const noexcept { return ids_open_ && depth_ == 2; }
  bool seen(std::uint8_t bit) {
    seen_ |= bit;
    return true;
  }
  bool scalar(const char* what) {
    if (depth_ == 0) return reject("expected '{{' (one JSON object a line), got {}", what);
    if (in_ids()) return reject("hash_ids: expected a non-negative integer, got {}", what);
    if (depth_ == 1 && field_ != Field::other) return reject("{}: expected a number, got {}", name(field_), what);
    return true;
  }
  bool negative(number_integer_t v) {
    if (depth_ != 1 || field_ == Field::other) return true;
    return reject("{}: expected a non-negative number, got {}", name(field_), v);
  }
  template <class... Args>
  bool reject(fmt::format_string<Args...> what, Args&&... args) {
    error_ = Error{Errc::invalid_argument,
                   fmt::format("trace line {}: {}", line_, fmt::format(what, std::forward<Args>(args)...))};
    return false;
  }

  TraceRequest& req_;
  std::size_t line_;
  std::size_t depth_ = 0;  // 1 = inside the line's object
  Field field_ = Field::other;
  bool ids_open_ = false;
  std::uint8_t seen_ = 0;
  std::optional<Error> error_;
};

}  // namespace

Result<TraceRequest> parse_trace_line(std::string_view line, std::size_t line_number) {
  TraceRequest req;
  LineHandler handler(req, line_number);
  (void)json::sax_parse(line, &handler);  // false = handler.result() holds the error
  if (auto s = handler.result(); !s) return tl::unexpected(s.error());
  return req;
}

Result<std::vector<TraceRequest>> read_trace(const std::string& path, std::size_t max_requests) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return fail(Errc::io_error, "cannot open trace '{}': {}", path, std::strerror(err));
  }
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail(Errc::io_error, "reading trace '{}' failed", path);

  // The non-blank lines (up to max_requests), with their 1-based numbers.
  struct Line {
    std::string_view text;
    std::size_t number;
  };
  std::vector<Line> lines;
  std::size_t number = 0;
  for (std::size_t at = 0; at < text.size() && (max_requests == 0 || lines.size() < max_requests);) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + at, end - at);
    ++number;
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) lines.push_back({line, number});
    at = end + 1;
  }

  // Lines are independent: parse slices of them on every core (the JSON
  // library's lexer, not I/O, is the cost). The first bad line wins.
  std::vector<TraceRequest> trace(lines.size());
  const std::size_t workers =
      std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, std::max<std::size_t>(1, lines.size() / 2048));
  std::vector<std::optional<Error>> errors(workers);
  auto parse_slice = [&](std::size_t w) {
    for (std::size_t i = lines.size() * w / workers; i < lines.size() * (w + 1) / workers; ++i) {
      auto req = parse_trace_line(lines[i].text, lines[i].number);
      if (!req) {
        errors[w] = req.error();
        return;
      }
      trace[i] = std::move(*req);
    }
  };
  {
    std::vector<std::jthread> threads;
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(parse_slice, w);
    parse_slice(0);
  }
  for (const auto& e : errors) {
    if (e) return fail(Errc::invalid_argument, "{}: {}", path, e->message);
  }
  return trace;
}

}  // namespace kvb::bench
