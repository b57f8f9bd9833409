#include "replay_disk.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace kvb::bench {

Result<std::unique_ptr<ReplayDisk>> ReplayDisk::make(const LayoutSpec& spec, std::uint32_t slots,
                                                     const std::string& dir) {
  std::string base = dir;
  if (base.empty())
    base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::filesystem::temp_directory_path().string();
  std::string pattern = base + "/kvb-replay-g3-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    return fail(Errc::unavailable, "replay: cannot make a directory under '{}' for the disk tier", base);
  std::unique_ptr<ReplayDisk> disk(new ReplayDisk());
  disk->dir_ = pattern;
  storage::SlotStoreOptions o;
  o.directory = pattern;
  o.spec = spec;
  o.bytes = storage::FileHeader::plan(spec, slots).file_bytes;
  o.write_queue_bytes = 256ULL << 20;
  auto store = storage::SlotStore::open(o);
  if (!store) return tl::unexpected(store.error());
  disk->store_ = std::move(*store);
  return disk;
}

ReplayDisk::~ReplayDisk() {
  store_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

PostToOwner ReplayDisk::poster() {
  // The replay's thread runs its own completions at once (the copy engine
  // is synchronous, as with no post at all); the store's threads queue
  // theirs for pump_until().
  return [this, owner = std::this_thread::get_id()](std::function<void()> fn) {
    if (std::this_thread::get_id() == owner) return fn();
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  };
}

Status ReplayDisk::pump_until(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); }))
      return fail(Errc::timeout, "replay: the disk tier did not complete within 60 s");
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    fn();
  }
  return ok();
}

}  // namespace kvb::bench
