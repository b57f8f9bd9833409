#include "kvb/storage/fault_injecting_file_io.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

namespace kvb::storage {
namespace {

struct ErrnoName {
  std::string_view name;
  int value;
};
constexpr ErrnoName kErrnos[] = {{"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EROFS", EROFS}, {"EDQUOT", EDQUOT}};

Result<int> parse_errno(std::string_view key, std::string_view text) {
  for (const auto& e : kErrnos)
    if (e.name == text) return e.value;
  return fail(Errc::invalid_argument, "inject_faults: {}={} is not one of ENOSPC, EIO, EROFS, EDQUOT", key, text);
}

std::string_view errno_name(int value) {
  for (const auto& e : kErrnos)
    if (e.value == value) return e.name;
  return "?";
}

Result<std::uint64_t> parse_number(std::string_view key, std::string_view text) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size())
    return fail(Errc::invalid_argument, "inject_faults: {}={} is not a number", key, text);
  return v;
}

}  // namespace

Result<FaultPlan> FaultPlan::parse(std::string_view text) {
  FaultPlan plan;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) return fail(Errc::invalid_argument, "inject_faults: '{}' is not key=value", item);
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (key == "write_errno" || key == "read_errno" || key == "sync_errno") {
      auto e = parse_errno(key, value);
      if (!e) return tl::unexpected(e.error());
      (key == "write_errno" ? plan.write_errno : key == "read_errno" ? plan.read_errno : plan.sync_errno) = *e;
    } else if (key == "writes_before_fault" || key == "reads_before_fault" || key == "delay_ms") {
      auto n = parse_number(key, value);
      if (!n) return tl::unexpected(n.error());
      if (key == "writes_before_fault") plan.writes_before_fault = *n;
      if (key == "reads_before_fault") plan.reads_before_fault = *n;
      if (key == "delay_ms") plan.delay = std::chrono::milliseconds(*n);
    } else {
      return fail(Errc::invalid_argument,
                  "inject_faults: unknown key '{}' (write_errno, writes_before_fault, read_errno, "
                  "reads_before_fault, sync_errno, delay_ms)",
                  key);
    }
  }
  return plan;
}

std::string FaultPlan::to_string() const {
  std::vector<std::string> items;
  if (write_errno != 0)
    items.push_back(fmt::format("write_errno={},writes_before_fault={}", errno_name(write_errno), writes_before_fault));
  if (read_errno != 0)
    items.push_back(fmt::format("read_errno={},reads_before_fault={}", errno_name(read_errno), reads_before_fault));
  if (sync_errno != 0) items.push_back(fmt::format("sync_errno={}", errno_name(sync_errno)));
  if (delay.count() != 0) items.push_back(fmt::format("delay_ms={}", delay.count()));
  return fmt::format("{}", fmt::join(items, ","));
}

FaultInjectingFileIo::FaultInjectingFileIo(std::unique_ptr<FileIo> real, FaultPlan plan)
    : real_(std::move(real)), name_(fmt::format("fault-injecting({})", real_->name())), plan_(plan) {
  delay_thread_ = std::thread([this] { delay_loop(); });
}

FaultInjectingFileIo::~FaultInjectingFileIo() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  delay_thread_.join();  // runs every timer left first
  real_.reset();
}

void FaultInjectingFileIo::set_plan(FaultPlan plan) {
  std::lock_guard lock(mu_);
  plan_ = plan;
  writes_ = 0;
  reads_ = 0;
}

void FaultInjectingFileIo::later(std::chrono::milliseconds delay, std::function<void()> fn, bool on_thread) {
  if (delay.count() == 0 && !on_thread) return fn();
  delayed_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    timers_.emplace(Clock::now() + delay, std::move(fn));
  }
  cv_.notify_all();
}

void FaultInjectingFileIo::delay_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (timers_.empty()) {
      if (stopping_) return;
      cv_.wait(lock);
      continue;
    }
    auto first = timers_.begin();
    if (!stopping_ && first->first > Clock::now()) {
      cv_.wait_until(lock, first->first);
      continue;
    }
    auto fn = std::move(first->second);
    timers_.erase(first);
    lock.unlock();
    delayed_.fetch_sub(1);
    fn();
    lock.lock();
  }
}

void FaultInjectingFileIo::fail_soon(std::chrono::milliseconds delay, IoDone done, int err, std::string_view what,
                                     std::uint64_t offset) {
  injected_.fetch_add(1);
  // Always on the delay thread: a FileIo never calls done inside the call.
  later(
      delay,
      [done = std::move(done), err, what, offset] {
        done(fail(Errc::io_error, "{} at offset {}: {} (injected by fault-injecting backend)", what, offset,
                  std::strerror(err)));
      },
      true);
}

void FaultInjectingFileIo::read(std::uint64_t offset, std::span<std::byte> dst, IoDone done) {
  std::chrono::milliseconds delay{0};
  int err = 0;
  {
    std::lock_guard lock(mu_);
    delay = plan_.delay;
    if (plan_.read_errno != 0 && reads_++ >= plan_.reads_before_fault) err = plan_.read_errno;
  }
  if (err != 0) return fail_soon(delay, std::move(done), err, "read", offset);
  later(delay, [this, offset, dst, done = std::move(done)]() mutable { real_->read(offset, dst, std::move(done)); });
}

void FaultInjectingFileIo::write(std::uint64_t offset, std::span<const std::byte> src, IoDone done) {
  std::chrono::milliseconds delay{0};
  int err = 0;
  {
    std::lock_guard lock(mu_);
    delay = plan_.delay;
    if (plan_.write_errno != 0 && writes_++ >= plan_.writes_before_fault) err = plan_.write_errno;
  }
  if (err != 0) return fail_soon(delay, std::move(done), err, "write", offset);
  later(delay, [this, offset, src, done = std::move(done)]() mutable { real_->write(offset, src, std::move(done)); });
}

void FaultInjectingFileIo::datasync(IoDone done) {
  std::chrono::milliseconds delay{0};
  int err = 0;
  {
    std::lock_guard lock(mu_);
    delay = plan_.delay;
    err = plan_.sync_errno;
  }
  if (err != 0) return fail_soon(delay, std::move(done), err, "fdatasync", 0);
  later(delay, [this, done = std::move(done)]() mutable { real_->datasync(std::move(done)); });
}

}  // namespace kvb::storage
