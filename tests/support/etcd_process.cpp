#include "support/etcd_process.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvb::test {

namespace {

/// A port the kernel hands out for 127.0.0.1 now (0 on failure).
std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

bool EtcdProcess::installed() { return ::access(kBinary, X_OK) == 0; }

EtcdProcess::EtcdProcess(std::chrono::milliseconds ready_timeout) {
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts && !ready(); ++attempt) {
    const std::uint16_t port = free_loopback_port();
    if (port == 0) continue;
    const std::string client = "http://127.0.0.1:" + std::to_string(port);
    const std::string peer = "http://127.0.0.1:0";
    // A one-member cluster elects itself after one election timeout: short
    // ones make it ready in a fraction of a second.
    process_ = std::make_unique<DaemonProcess>(
        DaemonProcess::Command{
            {kBinary, "--name", "kvbtest", "--data-dir", "{dir}/etcd", "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "kvbtest=" + peer, "--heartbeat-interval", "10", "--election-timeout", "100"},
            "ready to serve client requests"},
        ready_timeout);
    endpoint_ = client;
    if (ready()) return;
    if (process_->log().find("address already in use") == std::string::npos) return;  // another failure: report it
  }
}

}  // namespace kvb::test
