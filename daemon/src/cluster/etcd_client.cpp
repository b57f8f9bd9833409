#include "cluster/etcd_client.h"

#include <charconv>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace kvb::daemon::cluster {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The gateway writes 64-bit numbers as strings; accept numbers too.
std::int64_t int_field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (!it->is_string()) return 0;
  const auto& text = it->get_ref<const std::string&>();
  std::int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

// The key after the last byte of every key starting with `prefix` (etcd's
// range_end for a prefix).
std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = prefix.back();
    if (static_cast<unsigned char>(last) < 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<EtcdKeyValue> key_value(const json& kv) {
  EtcdKeyValue out;
  auto key = base64_decode(kv.value("key", std::string()));
  auto value = base64_decode(kv.value("value", std::string()));
  if (!key || !value) return fail(Errc::protocol_error, "etcd: a key or value is not base64");
  out.key = std::move(*key);
  out.value = std::move(*value);
  out.mod_revision = int_field(kv, "mod_revision");
  return out;
}

// {"key", "range_end"} of every key under `prefix` (outside the coroutines:
// GCC 12 cannot compile braced JSON with string literals inside one).
json prefix_body(const std::string& prefix) {
  return json{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_end(prefix))}};
}

Error etcd_error(std::string_view what, const beast::error_code& ec) {
  const bool refused = ec == asio::error::connection_refused || ec == beast::error::timeout;
  return Error{refused ? Errc::unavailable : Errc::io_error, fmt::format("etcd {}: {}", what, ec.message())};
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kBase64[(v >> shift) & 63]);
  }
  if (i < bytes.size()) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out.push_back(kBase64[(v >> 18) & 63]);
    out.push_back(kBase64[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kBase64[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  auto digit = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return fail(Errc::invalid_argument, "base64 of {} characters", text.size());
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    unsigned v = 0;
    int pad = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = digit(c);
      if (d < 0 || pad > 0) return fail(Errc::invalid_argument, "not base64 at {}", i + j);
      v = (v << 6) | static_cast<unsigned>(d);
    }
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

Result<EtcdEndpoint> EtcdEndpoint::parse(std::string_view url) {
  if (url.starts_with("http://")) url.remove_prefix(7);
  while (url.ends_with('/')) url.remove_suffix(1);
  const auto colon = url.rfind(':');
  unsigned port = 0;
  if (colon == std::string_view::npos || colon == 0 ||
      std::from_chars(url.data() + colon + 1, url.data() + url.size(), port).ec != std::errc{} || port == 0 ||
      port > 65535) {
    return fail(Errc::invalid_argument, "etcd endpoint '{}' is not http://HOST:PORT", url);
  }
  return EtcdEndpoint{std::string(url.substr(0, colon)), static_cast<std::uint16_t>(port)};
}

struct EtcdClient::Impl {
  asio::any_io_executor executor;
  EtcdEndpoint endpoint;
  std::chrono::milliseconds timeout;
  std::shared_ptr<beast::tcp_stream> watch_stream;  // the running watch's connection
  bool watch_cancelled = false;

  // (Coroutine parameters by value: the frame keeps its own copy.)
  asio::awaitable<Result<std::shared_ptr<beast::tcp_stream>>> open(std::string what) {
    tcp::resolver resolver(executor);
    auto [rec, results] = co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port), kUseTuple);
    if (rec) co_return tl::unexpected(etcd_error(what, rec));
    auto stream = std::make_shared<beast::tcp_stream>(executor);
    stream->expires_after(timeout);
    auto [ec, ep] = co_await stream->async_connect(results, kUseTuple);
    if (ec) co_return tl::unexpected(etcd_error(what, ec));
    co_return stream;
  }

  static http::request<http::string_body> request(const EtcdEndpoint& endpoint, std::string_view path,
                                                  const json& body) {
    http::request<http::string_body> req{http::verb::post, std::string(path), 11};
    req.set(http::field::host, fmt::format("{}:{}", endpoint.host, endpoint.port));
    req.set(http::field::content_type, "application/json");
    req.body() = body.dump();
    req.prepare_payload();
    return req;
  }

  // One call: POST `path` with `body`, the JSON answer.
  asio::awaitable<Result<json>> call(std::string path, json body) {
    auto stream = co_await open(path);
    if (!stream) co_return tl::unexpected(stream.error());
    auto req = request(endpoint, path, body);
    (*stream)->expires_after(timeout);
    auto [wec, written] = co_await http::async_write(**stream, req, kUseTuple);
    if (wec) co_return tl::unexpected(etcd_error(path, wec));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    auto [rec, read] = co_await http::async_read(**stream, buffer, res, kUseTuple);
    if (rec) co_return tl::unexpected(etcd_error(path, rec));
    beast::error_code ignored;
    (*stream)->socket().shutdown(tcp::socket::shutdown_both, ignored);
    json answer = json::parse(res.body(), nullptr, false);
    if (answer.is_discarded()) co_return fail(Errc::protocol_error, "etcd {}: the answer is not JSON", path);
    if (res.result() != http::status::ok || answer.contains("error")) {
      const std::string message = answer.value("message", answer.value("error", res.body()));
      const Errc code = message.find("not found") != std::string::npos ? Errc::not_found : Errc::io_error;
      co_return fail(code, "etcd {}: HTTP {}: {}", path, res.result_int(), message);
    }
    co_return answer;
  }
};

EtcdClient::EtcdClient(asio::any_io_executor executor, EtcdEndpoint endpoint, std::chrono::milliseconds call_timeout)
    : impl_(std::make_shared<Impl>(Impl{std::move(executor), std::move(endpoint), call_timeout, nullptr, false})) {}

EtcdClient::~EtcdClient() { cancel_watch(); }

asio::awaitable<Result<std::int64_t>> EtcdClient::grant_lease(std::chrono::seconds ttl) {
  // (GCC 12 miscompiles string literals and braced JSON inside a co_await
  // expression: the path, body and Impl are locals.)
  const auto impl = impl_;
  const std::string path = "/v3/lease/grant";
  json body;
  body["TTL"] = ttl.count();
  auto answer = co_await impl->call(path, body);
  if (!answer) co_return tl::unexpected(answer.error());
  const std::int64_t id = int_field(*answer, "ID");
  if (id == 0) co_return fail(Errc::protocol_error, "etcd lease grant: no lease id in {}", answer->dump());
  co_return id;
}

asio::awaitable<Status> EtcdClient::keep_alive(std::int64_t lease) {
  const auto impl = impl_;
  const std::string path = "/v3/lease/keepalive";
  json body;
  body["ID"] = std::to_string(lease);
  auto answer = co_await impl->call(path, body);
  if (!answer) co_return tl::unexpected(answer.error());
  const json& result = answer->contains("result") ? (*answer)["result"] : *answer;
  if (int_field(result, "TTL") <= 0) co_return fail(Errc::not_found, "etcd lease {:x} has expired", lease);
  co_return kvb::ok();
}

asio::awaitable<Status> EtcdClient::revoke(std::int64_t lease) {
  const auto impl = impl_;
  const std::string path = "/v3/lease/revoke";
  json body;
  body["ID"] = std::to_string(lease);
  auto answer = co_await impl->call(path, body);
  if (!answer) co_return tl::unexpected(answer.error());
  co_return kvb::ok();
}

asio::awaitable<Status> EtcdClient::put(const std::string& key, const std::string& value, std::int64_t lease) {
  json body;
  body["key"] = base64_encode(key);
  body["value"] = base64_encode(value);
  if (lease != 0) body["lease"] = std::to_string(lease);
  const auto impl = impl_;
  const std::string path = "/v3/kv/put";
  auto answer = co_await impl->call(path, body);
  if (!answer) co_return tl::unexpected(answer.error());
  co_return kvb::ok();
}

asio::awaitable<Result<EtcdRange>> EtcdClient::get_prefix(const std::string& prefix) {
  const auto impl = impl_;
  const std::string path = "/v3/kv/range";
  const json body = prefix_body(prefix);
  auto answer = co_await impl->call(path, body);
  if (!answer) co_return tl::unexpected(answer.error());
  EtcdRange range;
  if (answer->contains("header")) range.revision = int_field((*answer)["header"], "revision");
  for (const auto& kv : answer->value("kvs", json::array())) {
    auto parsed = key_value(kv);
    if (!parsed) co_return tl::unexpected(parsed.error());
    range.kvs.push_back(std::move(*parsed));
  }
  co_return range;
}

void EtcdClient::cancel_watch() {
  impl_->watch_cancelled = true;
  if (impl_->watch_stream) {
    beast::error_code ignored;
    impl_->watch_stream->socket().cancel(ignored);
    impl_->watch_stream->socket().close(ignored);
  }
}

asio::awaitable<Status> EtcdClient::watch_prefix(const std::string& prefix, std::int64_t start_revision,
                                                 std::function<void(const EtcdEvent&)> on_event) {
  auto self = impl_;  // the client may be destroyed while this waits
  Impl& impl = *self;
  impl.watch_cancelled = false;
  const std::string path = "/v3/watch";
  auto stream = co_await impl.open(path);
  if (!stream) co_return tl::unexpected(stream.error());
  json create = prefix_body(prefix);
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  json watch;
  watch["create_request"] = std::move(create);
  auto req = Impl::request(impl.endpoint, path, watch);
  auto [wec, written] = co_await http::async_write(**stream, req, kUseTuple);
  if (wec) co_return tl::unexpected(etcd_error("watch", wec));
  (*stream)->expires_never();  // a watch is silent while nothing changes
  impl.watch_stream = *stream;
  if (impl.watch_cancelled) co_return fail(Errc::cancelled, "etcd watch cancelled");
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  auto [hec, header_bytes] = co_await http::async_read_header(**stream, buffer, parser, kUseTuple);
  Status result = kvb::ok();
  if (hec) result = tl::unexpected(etcd_error("watch", hec));
  while (result && !parser.is_done()) {
    auto [ec, n] = co_await http::async_read_some(**stream, buffer, parser, kUseTuple);
    if (impl.watch_cancelled) {
      result = fail(Errc::cancelled, "etcd watch cancelled");
      break;
    }
    if (ec) {
      result = tl::unexpected(etcd_error("watch", ec));
      break;
    }
    // The gateway writes one JSON object per line.
    std::string& body = parser.get().body();
    std::size_t start = 0;
    for (std::size_t nl; (nl = body.find('\n', start)) != std::string::npos; start = nl + 1) {
      json message = json::parse(std::string_view(body).substr(start, nl - start), nullptr, false);
      if (message.is_discarded()) continue;
      const json& res = message.contains("result") ? message["result"] : message;
      if (res.value("canceled", false)) {
        result = fail(Errc::unavailable, "etcd cancelled the watch: {}", res.value("cancel_reason", std::string()));
        break;
      }
      for (const auto& event : res.value("events", json::array())) {
        auto kv = key_value(event.value("kv", json::object()));
        if (!kv) continue;
        on_event(EtcdEvent{event.value("type", std::string()) == "DELETE", std::move(*kv)});
      }
    }
    body.erase(0, start);
  }
  if (result && parser.is_done()) result = fail(Errc::unavailable, "etcd closed the watch");
  impl.watch_stream.reset();
  co_return result;
}

}  // namespace kvb::daemon::cluster
