#include "kvb/client/client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <future>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace kvb::client {

std::string default_socket_path() {
  if (const char* dir = std::getenv("XDG_RUNTIME_DIR"); dir != nullptr && *dir != '\0') {
    struct stat st {};
    if (::stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return std::string(dir) + "/kvblockd.sock";
  }
  return fmt::format("/tmp/kvblockd-{}.sock", ::getuid());
}

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) {
  auto io = std::make_unique<boost::asio::io_context>(1);
  auto session = Session::connect(io->get_executor(), socket_path);
  if (!session) return tl::unexpected(session.error());
  return std::unique_ptr<Client>(new Client(std::move(io), std::move(*session)));
}

Client::Client(std::unique_ptr<boost::asio::io_context> io, std::shared_ptr<Session> session)
    : io_(std::move(io)), session_(std::move(session)) {
  thread_ = std::thread([io = io_.get()] {
    auto guard = boost::asio::make_work_guard(*io);
    io->run();
  });
}

Client::~Client() {
  // A failure to post or to join (out of memory, a thread error) cannot be
  // recovered here: the io thread would outlive the objects it uses. Say so
  // by terminating, as an exception escaping a destructor would.
  try {
    session_->close();
    // close() resolves every pending request on the io thread; then stop it.
    std::promise<void> closed;
    boost::asio::post(session_->executor(), [&closed] { closed.set_value(); });
    closed.get_future().wait_for(std::chrono::seconds(5));
    io_->stop();
    if (thread_.joinable()) thread_.join();
  } catch (...) {
    std::terminate();
  }
  session_.reset();
}

template <class T, class Start>
Result<T> Client::call(Start start) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  start([promise](Result<T> result) { promise->set_value(std::move(result)); });
  if (future.wait_for(timeout_) != std::future_status::ready)
    return fail(Errc::timeout, "no answer from kvblockd within {} ms", timeout_.count());
  return future.get();
}

Result<HelloInfo> Client::hello(const HelloParams& params) {
  return call<HelloInfo>([&](Callback<HelloInfo> cb) { session_->async_hello(params, std::move(cb)); });
}

Status Client::register_kv(const KvRegion& region) {
  return call<void>([&](Callback<void> cb) { session_->async_register_kv(region, std::move(cb)); });
}

Status Client::register_device_kv(const DeviceKv& kv) {
  return call<void>([&](Callback<void> cb) { session_->async_register_device_kv(kv, std::move(cb)); });
}

Result<LookupResult> Client::lookup(std::span<const std::uint64_t> hashes, bool pin) {
  return call<LookupResult>([&](Callback<LookupResult> cb) { session_->async_lookup(hashes, pin, std::move(cb)); });
}

Result<std::vector<WorkerPrefix>> Client::locate(std::span<const std::uint64_t> hashes) {
  return call<std::vector<WorkerPrefix>>(
      [&](Callback<std::vector<WorkerPrefix>> cb) { session_->async_locate(hashes, std::move(cb)); });
}

Status Client::offload(std::span<const OffloadItem> items) {
  return call<void>([&](Callback<void> cb) { session_->async_offload(items, std::move(cb)); });
}

Status Client::onboard(std::span<const OnboardItem> items) {
  return call<void>([&](Callback<void> cb) { session_->async_onboard(items, std::move(cb)); });
}

Status Client::onboard_layers(std::span<const OnboardItem> items, std::uint32_t layers_per_group,
                              ProgressCallback on_progress) {
  return call<void>([&](Callback<void> cb) {
    session_->async_onboard_layers(items, layers_per_group, std::move(on_progress), std::move(cb));
  });
}

Result<std::uint32_t> Client::release(std::span<const std::uint64_t> hashes) {
  return call<std::uint32_t>([&](Callback<std::uint32_t> cb) { session_->async_release(hashes, std::move(cb)); });
}

Result<RequestStatus> Client::status(RequestId target) {
  return call<RequestStatus>([&](Callback<RequestStatus> cb) { session_->async_status(target, std::move(cb)); });
}

Result<RequestStatus> Client::wait(RequestId target, std::uint32_t timeout_ms) {
  return call<RequestStatus>(
      [&](Callback<RequestStatus> cb) { session_->async_wait(target, timeout_ms, std::move(cb)); });
}

Result<std::string> Client::stats() {
  return call<std::string>([&](Callback<std::string> cb) { session_->async_stats(std::move(cb)); });
}

Result<std::string> Client::config() {
  return call<std::string>([&](Callback<std::string> cb) { session_->async_config(std::move(cb)); });
}

Status Client::drain() {
  return call<void>([&](Callback<void> cb) { session_->async_drain(std::move(cb)); });
}

Status Client::bye() {
  return call<void>([&](Callback<void> cb) { session_->async_bye(std::move(cb)); });
}

}  // namespace kvb::client
