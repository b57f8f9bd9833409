#include "support/etcd_process.h"

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "support/loopback_http.h"

namespace kvb::test {

bool EtcdProcess::installed() { return ::access(kBinary, X_OK) == 0; }

EtcdProcess::EtcdProcess(std::chrono::milliseconds ready_timeout) {
  char dir_template[] = "/tmp/kvbd-etcd-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return;
  data_dir_ = dir_template;
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts && !ready(); ++attempt) {
    const std::uint16_t port = free_port();
    if (port == 0) continue;
    launch(port, ready_timeout);
    if (ready()) return;
    if (process_->log().find("address already in use") == std::string::npos) return;  // another failure: report it
  }
}

EtcdProcess::~EtcdProcess() {
  process_.reset();  // stops etcd
  if (!data_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
  }
}

void EtcdProcess::launch(std::uint16_t port, std::chrono::milliseconds ready_timeout) {
  port_ = port;
  const std::string client = "http://127.0.0.1:" + std::to_string(port);
  const std::string peer = "http://127.0.0.1:0";
  // A one-member cluster elects itself after one election timeout: short
  // ones make it ready in a fraction of a second.
  process_ = std::make_unique<DaemonProcess>(
      DaemonProcess::Command{
          {kBinary, "--name", "kvbtest", "--data-dir", data_dir_ + "/etcd", "--listen-client-urls", client,
           "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
           "--initial-cluster", "kvbtest=" + peer, "--heartbeat-interval", "10", "--election-timeout", "100"},
          "ready to serve client requests"},
      ready_timeout);
  endpoint_ = client;
}

void EtcdProcess::kill() {
  if (process_) process_->kill();
}

bool EtcdProcess::restart(Data data, std::chrono::milliseconds ready_timeout) {
  if (port_ == 0 || data_dir_.empty()) return false;
  kill();
  if (data == Data::wiped) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_ + "/etcd", ec);
  }
  launch(port_, ready_timeout);
  return ready();
}

}  // namespace kvb::test
