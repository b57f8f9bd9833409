#include "connection.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace kvbpy {

namespace asio = boost::asio;
using kvb::Errc;

Connection::Connection(const std::string& path) : io_(std::make_unique<asio::io_context>(1)) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw Failure{{Errc::io_error, fmt::format("eventfd: {}", std::strerror(errno))}};
  auto session = kvb::client::Session::connect(io_->get_executor(), path);
  if (!session) {
    ::close(event_fd_);
    throw Failure{session.error()};
  }
  session_ = std::move(*session);
  thread_ = std::thread([io = io_.get()] {
    auto guard = asio::make_work_guard(*io);
    io->run();
  });
}

Connection::~Connection() {
  close();
  // close() resolves every pending request on the io thread; then stop it.
  std::promise<void> closed;
  asio::post(session_->executor(), [&closed] { closed.set_value(); });
  closed.get_future().wait_for(std::chrono::seconds(5));
  io_->stop();
  if (thread_.joinable()) thread_.join();
  session_.reset();
  ::close(event_fd_);
}

void Connection::close() {
  if (session_) session_->close();
}

void Connection::finish(Outcome outcome, bool async) {
  std::lock_guard lock(mutex_);
  if (async) {
    queue_.push_back(std::move(outcome));
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n =
        ::write(event_fd_, &one, sizeof one);  // EAGAIN only when the counter is full: still readable
    return;
  }
  if (abandoned_.erase(outcome.ticket) != 0) return;
  done_.emplace(outcome.ticket, std::move(outcome));
  arrived_.notify_all();
}

template <class T>
kvb::client::Callback<T> Connection::completion(std::uint64_t ticket, bool async) {
  // Runs on the io thread; never touches Python.
  return [this, ticket, async](kvb::Result<T> result) {
    Outcome out{ticket, Errc::ok, {}, {}};
    if (!result) {
      out.code = result.error().code;
      out.message = std::move(result.error().message);
    } else if constexpr (!std::is_void_v<T>) {
      out.value = std::move(*result);
    }
    finish(std::move(out), async);
  };
}

void Connection::note_request(std::uint64_t ticket, kvb::RequestId id) {
  std::lock_guard lock(mutex_);
  // Recorded even when the answer already arrived: the caller asks for the id
  // (Pending.request_id) before it takes the answer, which erases the entry.
  request_ids_[ticket] = id.value();
}

std::uint64_t Connection::request_id_of(std::uint64_t ticket) const {
  std::lock_guard lock(mutex_);
  auto it = request_ids_.find(ticket);
  return it == request_ids_.end() ? 0 : it->second;
}

bool Connection::ready(std::uint64_t ticket) {
  std::lock_guard lock(mutex_);
  return done_.contains(ticket);
}

std::vector<Outcome> Connection::drain_async() {
  std::uint64_t counter = 0;
  [[maybe_unused]] auto n = ::read(event_fd_, &counter, sizeof counter);  // EAGAIN when nothing arrived
  std::lock_guard lock(mutex_);
  std::vector<Outcome> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  for (const auto& o : out) request_ids_.erase(o.ticket);
  return out;
}

// ---- requests ---------------------------------------------------------------

std::uint64_t Connection::hello(const std::string& name, std::uint64_t salt, const kvb::client::BlockShape& shape,
                                bool async) {
  const auto t = new_ticket();
  kvb::client::HelloParams params{name, salt, shape};
  note_request(t, session_->async_hello(params, completion<kvb::client::HelloInfo>(t, async)));
  return t;
}

std::uint64_t Connection::register_kv(const kvb::client::KvRegion& region, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_register_kv(region, completion<void>(t, async)));
  return t;
}

std::uint64_t Connection::lookup(std::vector<std::uint64_t> hashes, bool pin, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_lookup(hashes, pin, completion<kvb::client::LookupResult>(t, async)));
  return t;
}

std::uint64_t Connection::locate(std::vector<std::uint64_t> hashes, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_locate(hashes, completion<std::vector<kvb::client::WorkerPrefix>>(t, async)));
  return t;
}

namespace {

Outcome mismatch(std::uint64_t ticket, std::size_t blocks, std::size_t hashes) {
  return Outcome{ticket,
                 Errc::invalid_argument,
                 fmt::format("{} engine blocks but {} hashes: give one hash per block", blocks, hashes),
                 {}};
}

}  // namespace

std::uint64_t Connection::offload(const std::vector<std::uint32_t>& blocks, const std::vector<std::uint64_t>& hashes,
                                  bool async) {
  const auto t = new_ticket();
  if (blocks.size() != hashes.size()) {
    finish(mismatch(t, blocks.size(), hashes.size()), async);
    return t;
  }
  std::vector<kvb::client::OffloadItem> items(blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) items[i] = {kvb::BlockId{blocks[i]}, hashes[i]};
  note_request(t, session_->async_offload(items, completion<void>(t, async)));
  return t;
}

std::uint64_t Connection::onboard(const std::vector<std::uint32_t>& blocks, const std::vector<std::uint64_t>& hashes,
                                  bool async) {
  const auto t = new_ticket();
  if (blocks.size() != hashes.size()) {
    finish(mismatch(t, blocks.size(), hashes.size()), async);
    return t;
  }
  std::vector<kvb::client::OnboardItem> items(blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) items[i] = {hashes[i], kvb::BlockId{blocks[i]}};
  note_request(t, session_->async_onboard(items, completion<void>(t, async)));
  return t;
}

std::uint64_t Connection::release(std::vector<std::uint64_t> hashes, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_release(hashes, completion<std::uint32_t>(t, async)));
  return t;
}

std::uint64_t Connection::status(std::uint64_t request_id, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_status(kvb::RequestId{request_id}, completion<kvb::client::RequestStatus>(t, async)));
  return t;
}

std::uint64_t Connection::wait(std::uint64_t request_id, std::uint32_t timeout_ms, bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_wait(kvb::RequestId{request_id}, timeout_ms,
                                       completion<kvb::client::RequestStatus>(t, async)));
  return t;
}

std::uint64_t Connection::stats(bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_stats(completion<std::string>(t, async)));
  return t;
}

std::uint64_t Connection::config(bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_config(completion<std::string>(t, async)));
  return t;
}

std::uint64_t Connection::drain(bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_drain(completion<void>(t, async)));
  return t;
}

std::uint64_t Connection::bye(bool async) {
  const auto t = new_ticket();
  note_request(t, session_->async_bye(completion<void>(t, async)));
  return t;
}

}  // namespace kvbpy
