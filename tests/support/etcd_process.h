// EtcdProcess: a real etcd (Debian's etcd-server, /usr/bin/etcd) for the
// cluster tests: one member on 127.0.0.1 with its data in a fresh temp dir.
//
// etcd's HTTP/JSON gateway dials the client URL it listens on, so the
// client port cannot be 0: a port the kernel picked (bind to port 0, then
// closed) is handed to etcd, and if another process took it meanwhile (etcd
// exits with "address already in use") a new one is tried, a few times.
// The peer port is 0. Readiness is etcd's "ready to serve client requests"
// log line (no polling). The destructor stops etcd and removes its data.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "support/daemon_process.h"

namespace kvb::test {

class EtcdProcess {
 public:
  static constexpr const char* kBinary = "/usr/bin/etcd";
  /// Whether etcd is installed here (tests skip with the reason otherwise).
  [[nodiscard]] static bool installed();

  explicit EtcdProcess(std::chrono::milliseconds ready_timeout = std::chrono::seconds(30));

  [[nodiscard]] bool ready() const { return process_ && process_->ready(); }
  /// http://127.0.0.1:PORT (the daemons' --cluster-etcd).
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  /// Its log (or, when it never started, the last attempt's).
  [[nodiscard]] std::string log() const { return process_ ? process_->log() : std::string("etcd: not started"); }

 private:
  std::unique_ptr<DaemonProcess> process_;
  std::string endpoint_;
};

}  // namespace kvb::test
