#include "peer_service.h"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace kvb::transport::test {

namespace {

template <class T>
T get(const Bytes& b, std::size_t at) {
  T v{};
  if (at + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}

}  // namespace

std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out.push_back(kDigits[std::to_integer<unsigned>(b) >> 4]);
    out.push_back(kDigits[std::to_integer<unsigned>(b) & 15]);
  }
  return out;
}

std::vector<std::byte> from_hex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(nibble(hex[2 * i]) * 16 + nibble(hex[2 * i + 1]));
  }
  return out;
}

PeerService::PeerService(Context& context, ActiveMessageManager& manager)
    : context_(context), manager_(manager), park_(std::make_shared<Park>(manager.worker().executor())) {
  auto check = [](Status st) {
    if (!st) throw std::runtime_error(st.error().to_string());
  };
  check(manager.register_handler(
      "echo", [](IncomingMessage m) -> asio::awaitable<Result<Bytes>> { co_return std::move(m.payload); }));
  check(manager.register_sync_handler("echo_sync",
                                      [](IncomingMessage& m) -> Result<Bytes> { return std::move(m.payload); }));
  check(manager.register_sync_handler("fail_sync", [](IncomingMessage&) -> Result<Bytes> {
    throw std::runtime_error("sync handler failed on purpose");
  }));
  check(manager.register_sync_handler("running_sync", [&manager](IncomingMessage&) -> Result<Bytes> {
    const std::uint64_t running = manager.stats().running;
    Bytes reply(8);
    std::memcpy(reply.data(), &running, 8);
    return reply;
  }));
  check(manager.register_handler("fail", [](IncomingMessage) -> asio::awaitable<Result<Bytes>> {
    throw std::runtime_error("handler failed on purpose");
    co_return Bytes{};
  }));
  auto park = [park = park_](IncomingMessage) -> asio::awaitable<Result<Bytes>> {
    ++park->parked;
    park->changed.set();
    co_await park->gate.wait();
    --park->parked;
    co_return Bytes{};
  };
  check(manager.register_handler("park", park));
  check(manager.register_handler("park2", park, AmTypeLimits{.max_concurrent = kPark2Limit}));
  check(manager.register_handler("fail_code", [](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    const auto code = get<std::uint16_t>(m.payload, 0);
    co_return fail(static_cast<Errc>(code), "failed with code {} on purpose", code);
  }));
  check(manager.register_handler("write_back", [&manager](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    const auto address = get<std::uint64_t>(m.payload, 0);
    const auto length = get<std::uint64_t>(m.payload, 8);
    const auto seed = get<std::uint64_t>(m.payload, 16);
    if (length > (std::uint64_t{64} << 20)) co_return fail(Errc::invalid_argument, "write_back of {} bytes", length);
    std::vector<std::byte> data(length);
    for (std::uint64_t i = 0; i < length; ++i) data[i] = pattern_byte(i, seed);
    const RmaChunk chunk{data.data(), address, length};
    auto st = co_await manager.write_chunks_am(m.peer, std::span(&chunk, 1), std::chrono::seconds(10));
    if (!st) co_return tl::unexpected(st.error());
    co_return Bytes{};
  }));
  check(manager.register_handler("alloc", [this](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    const auto size = get<std::uint64_t>(m.payload, 0);
    if (size == 0 || size > (std::uint64_t{1} << 30)) co_return fail(Errc::invalid_argument, "alloc size {}", size);
    if (registration_) manager_.unexpose(*registration_);
    registration_.reset();
    buffer_.assign(size, std::byte{0});
    for (std::uint64_t i = 0; i < size; ++i) buffer_[i] = pattern_byte(i, 7);
    auto reg = MemoryRegistration::create(context_, buffer_.data(), buffer_.size());
    if (!reg) co_return tl::unexpected(reg.error());
    registration_ = std::move(*reg);
    manager_.expose(*registration_);
    const auto& rkey = registration_->packed_rkey();
    const auto address = reinterpret_cast<std::uint64_t>(buffer_.data());
    Bytes reply(8 + rkey.size());
    std::memcpy(reply.data(), &address, 8);
    std::memcpy(reply.data() + 8, rkey.data(), rkey.size());
    co_return reply;
  }));
  check(manager.register_handler("read", [this](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    const auto offset = get<std::uint64_t>(m.payload, 0);
    const auto length = get<std::uint64_t>(m.payload, 8);
    if (offset > buffer_.size() || length > buffer_.size() - offset) {
      co_return fail(Errc::invalid_argument, "read [{}, +{}) outside the {}-byte buffer", offset, length,
                     buffer_.size());
    }
    co_return Bytes(buffer_.begin() + offset, buffer_.begin() + offset + length);
  }));
  check(manager.register_handler("verify", [this](IncomingMessage m) -> asio::awaitable<Result<Bytes>> {
    for (std::size_t at = 0; at + 24 <= m.payload.size(); at += 24) {
      const auto offset = get<std::uint64_t>(m.payload, at);
      const auto length = get<std::uint64_t>(m.payload, at + 8);
      const auto seed = get<std::uint64_t>(m.payload, at + 16);
      if (offset > buffer_.size() || length > buffer_.size() - offset) {
        co_return fail(Errc::invalid_argument, "verify range [{}, +{}) outside the buffer", offset, length);
      }
      for (std::uint64_t i = 0; i < length; ++i) {
        if (buffer_[offset + i] != pattern_byte(i, seed)) {
          co_return fail(Errc::internal, "mismatch at offset {} (chunk at {}) when notified", offset + i, offset);
        }
      }
    }
    co_return Bytes{};
  }));
}

PeerService::~PeerService() {
  if (registration_) manager_.unexpose(*registration_);
}

asio::awaitable<void> PeerService::wait_parked(std::size_t n) {
  auto park = park_;
  while (park->parked < n) {
    park->changed.reset();
    co_await park->changed.wait();
  }
}

void PeerService::release() { park_->gate.set(); }

std::string PeerService::stats_line() const {
  const auto s = manager_.stats();
  const auto p2 = manager_.type_stats("park2");
  return fmt::format(
      "running={} peak={} queued={} handled={} ff_failures={} busy={} park2: running={} peak={} queued={}", s.running,
      s.peak_running, s.queued, s.handled, s.fire_and_forget_failures, s.busy_refusals, p2 ? p2->running : 0,
      p2 ? p2->peak_running : 0, p2 ? p2->queued : 0);
}

}  // namespace kvb::transport::test
