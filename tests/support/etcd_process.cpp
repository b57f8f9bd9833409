#include "support/etcd_process.h"

#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/loopback_http.h"

namespace kvb::test {

bool EtcdProcess::installed() { return ::access(kBinary, X_OK) == 0; }

EtcdProcess::EtcdProcess(std::chrono::milliseconds ready_timeout) {
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts && !ready(); ++attempt) {
    const std::uint16_t port = free_port();
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
