#include "transport/transport_baselines.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "kvb/transport/memory.h"

namespace kvb::bench {

using clock_type = std::chrono::steady_clock;

// Block i of a source carries i + 1 in its first and ~i in its last 8 bytes
// (stamp_blocks); count_unstamped() counts the blocks of a destination that
// do not, i.e. that the transfer did not deliver.
void stamp_blocks(std::byte* base, std::size_t size, std::size_t blocks) {
  for (std::size_t i = 0; i < blocks; ++i) {
    std::byte* block = base + i * size;
    std::memset(block, 0x5a, size);
    const std::uint64_t head = i + 1, tail = ~static_cast<std::uint64_t>(i);
    std::memcpy(block, &head, std::min<std::size_t>(8, size));
    if (size >= 16) std::memcpy(block + size - 8, &tail, 8);
  }
}

std::uint64_t count_unstamped(const std::byte* base, std::size_t size, std::size_t blocks) {
  std::uint64_t bad = 0;
  for (std::size_t i = 0; i < blocks; ++i) {
    const std::byte* block = base + i * size;
    std::uint64_t head = 0, tail = 0;
    std::memcpy(&head, block, std::min<std::size_t>(8, size));
    if (size >= 16) std::memcpy(&tail, block + size - 8, 8);
    const bool head_ok = size >= 8 ? head == i + 1 : true;
    const bool tail_ok = size >= 16 ? tail == ~static_cast<std::uint64_t>(i) : true;
    if (!head_ok || !tail_ok) ++bad;
  }
  return bad;
}

bool write_full(int fd, const std::byte* data, std::size_t bytes) {
  while (bytes > 0) {
    const ssize_t n = ::write(fd, data, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_full(int fd, std::byte* data, std::size_t bytes) {
  while (bytes > 0) {
    const ssize_t n = ::read(fd, data, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

/// Bytes of [addr, addr + bytes) whose pages are resident (mincore): a
/// destination meant to be cold must report 0 before its first pass.
std::uint64_t resident_bytes(const std::byte* addr, std::size_t bytes) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(addr) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(addr) + bytes + page - 1) / page * page;
  std::vector<unsigned char> vec((end - begin) / page);
  if (vec.empty() || ::mincore(reinterpret_cast<void*>(begin), end - begin, vec.data()) != 0) return 0;
  std::uint64_t pages = 0;
  for (unsigned char v : vec) pages += v & 1U;
  return pages * page;
}

std::string read_line(int fd, int timeout_ms) {
  std::string line;
  const auto deadline = clock_type::now() + std::chrono::milliseconds(timeout_ms);
  while (clock_type::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char c;
    if (::read(fd, &c, 1) != 1) break;
    if (c == '\n') return line;
    line.push_back(c);
  }
  return line;
}

// The TCP stream baseline's receiving end ("stream PORT SIZE BLOCKS PASSES"
// on stdin): a fresh destination allocated the way the transport's was,
// `passes` times `blocks` blocks of `size` read into block i in turn, one
// byte of acknowledgement after each pass. Returns the reply line.
std::string receive_stream(transport::Context& context, const std::string& command) {
  unsigned port = 0;
  std::size_t size = 0, blocks = 0, passes = 0;
  if (std::sscanf(command.c_str(), "stream %u %zu %zu %zu", &port, &size, &blocks, &passes) != 4 || size == 0)
    return "stream error: bad command";
  auto reg = transport::MemoryRegistration::allocate(context, size * blocks);
  if (!reg) return "stream error: " + reg.error().to_string();
  const std::uint64_t resident = resident_bytes((*reg)->address(), size * blocks);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "stream error: socket";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    reply = fmt::format("stream error: connect: {}", std::strerror(errno));
  } else {
    std::byte* base = (*reg)->address();
    bool good = true;
    for (std::size_t p = 0; good && p < passes; ++p) {
      for (std::size_t i = 0; good && i < blocks; ++i) good = read_full(fd, base + i * size, size);
      const std::byte ack{1};
      good = good && write_full(fd, &ack, 1);
    }
    reply = good ? fmt::format("stream ok {} resident {}", count_unstamped(base, size, blocks), resident)
                 : "stream error: short read";
  }
  ::close(fd);
  return reply;
}

// memcpy of the same blocks, block i to block i, `passes` times, into a
// fresh destination UCX allocates in the same context (the same kind of
// memory the transport's destination is; untouched before the first pass).
Result<PassTimes> memcpy_baseline(transport::Context& context, const std::byte* src, const BlockSet& set) {
  const std::size_t blocks = set.blocks;
  auto dst = transport::MemoryRegistration::allocate(context, blocks * set.size);
  if (!dst) return tl::unexpected(dst.error());
  std::byte* base = (*dst)->address();
  PassTimes out;
  out.resident_before = resident_bytes(base, blocks * set.size);
  for (std::size_t p = 0; p < set.passes; ++p) {
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < blocks; ++i) std::memcpy(base + i * set.size, src + i * set.size, set.size);
    out.seconds.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  if (const auto bad = count_unstamped(base, set.size, blocks); bad != 0)
    return fail(Errc::internal, "memcpy baseline: {} blocks differ", bad);
  return out;
}

// A plain TCP stream over 127.0.0.1 from this process's source blocks to a
// fresh destination in the server (receive_stream), the same blocks in the
// same order, `passes` times; a pass ends when the server acknowledges it.
Result<PassTimes> tcp_stream_baseline(int to_server, int from_server, const std::byte* src, const BlockSet& set) {
  const std::size_t blocks = set.blocks;
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return fail(Errc::io_error, "socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return fail(Errc::io_error, "listen: {}", std::strerror(errno));
  }
  const std::string command = fmt::format("stream {} {} {} {}\n", ntohs(addr.sin_port), set.size, blocks, set.passes);
  pollfd p{listener, POLLIN, 0};
  int fd = -1;
  if (write_full(to_server, reinterpret_cast<const std::byte*>(command.data()), command.size()) &&
      ::poll(&p, 1, 30000) == 1)
    fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  if (fd < 0) return fail(Errc::unavailable, "the server did not connect for the TCP stream");
  PassTimes out;
  bool good = true;
  for (std::size_t pass = 0; good && pass < set.passes; ++pass) {
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; good && i < blocks; ++i) good = write_full(fd, src + i * set.size, set.size);
    std::byte ack{};
    good = good && read_full(fd, &ack, 1);
    out.seconds.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  ::close(fd);
  std::string line;
  for (int i = 0; i < 50 && !line.starts_with("stream "); ++i) line = read_line(from_server, 20000);
  unsigned long long resident = 0;
  if (!good || std::sscanf(line.c_str(), "stream ok 0 resident %llu", &resident) != 1)
    return fail(Errc::io_error, "TCP stream baseline failed ('{}')", line);
  out.resident_before = resident;
  return out;
}

}  // namespace kvb::bench
