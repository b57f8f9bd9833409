// EtcdProcess: a real etcd (Debian's etcd-server, /usr/bin/etcd) for the
// cluster tests: one member on 127.0.0.1 with its data in a fresh temp dir.
//
// etcd's HTTP/JSON gateway dials the client URL it listens on, so the
// client port cannot be 0: a port the kernel picked (bind to port 0, then
// closed) is handed to etcd, and if another process took it meanwhile (etcd
// exits with "address already in use") a new one is tried, a few times.
// The peer port is 0. Readiness is etcd's "ready to serve client requests"
// log line (no polling). kill() and restart() take etcd away and bring it
// back on the same port (with its data, or with an empty data dir: a fresh
// etcd). The destructor stops etcd and removes its data.
#pragma once

#include <chrono>
#include <cstdint>
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
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  /// SIGKILL (etcd's own loss) and reap. Idempotent.
  void kill();
  /// What a restart keeps.
  enum class Data { kept, wiped };
  /// Starts etcd again on the same client URL (after kill()), with its data
  /// dir as it was or emptied; whether it is ready.
  bool restart(Data data, std::chrono::milliseconds ready_timeout = std::chrono::seconds(30));
  [[nodiscard]] bool running() const { return process_ && process_->alive(); }

  [[nodiscard]] bool ready() const { return process_ && process_->ready(); }
  /// http://127.0.0.1:PORT (the daemons' --cluster-etcd).
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  /// Its log (or, when it never started, the last attempt's).
  [[nodiscard]] std::string log() const { return process_ ? process_->log() : std::string("etcd: not started"); }

 private:
  /// One etcd on `port` with its data under data_dir_.
  void launch(std::uint16_t port, std::chrono::milliseconds ready_timeout);

  std::unique_ptr<DaemonProcess> process_;
  std::string data_dir_;  // outlives each process (restart with Data::kept)
  std::uint16_t port_ = 0;
  std::string endpoint_;
};

}  // namespace kvb::test
