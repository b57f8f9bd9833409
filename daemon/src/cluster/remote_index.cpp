#include "cluster/remote_index.h"

#include <algorithm>

namespace kvb::daemon::cluster {

namespace {
constexpr std::size_t kInitialSlots = 1024;
}

RemoteIndex::RemoteIndex() : slots_(kInitialSlots), mask_(kInitialSlots - 1) {}

std::size_t RemoteIndex::home(BlockKey key) const noexcept {
  // Keys are hashes already; the layout is mixed in so shapes stay apart.
  const std::uint64_t h = (key.key ^ (key.layout * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
  return static_cast<std::size_t>(h >> 32) & mask_;
}

std::size_t RemoteIndex::probe(BlockKey key) const noexcept {
  std::size_t i = home(key);
  while (slots_[i].count != 0 && !(slots_[i].key == key)) i = (i + 1) & mask_;
  return i;
}

std::span<const WorkerIndex> RemoteIndex::holders_of(const Slot& s) const noexcept {
  if (s.list != kNoList) return lists_[s.list];
  return {s.inline_holders, s.count};
}

void RemoteIndex::count(WorkerIndex worker, int delta) {
  if (worker >= per_worker_.size()) per_worker_.resize(worker + 1, 0);
  per_worker_[worker] = static_cast<std::size_t>(static_cast<std::int64_t>(per_worker_[worker]) + delta);
}

void RemoteIndex::push_holder(Slot& s, WorkerIndex worker) {
  if (s.count < 2) {
    s.inline_holders[s.count] = worker;
  } else {
    if (s.list == kNoList) {
      if (free_lists_.empty()) {
        s.list = static_cast<std::uint32_t>(lists_.size());
        lists_.emplace_back();
      } else {
        s.list = free_lists_.back();
        free_lists_.pop_back();
      }
      lists_[s.list].assign(s.inline_holders, s.inline_holders + 2);
    }
    lists_[s.list].push_back(worker);
  }
  ++s.count;
}

void RemoteIndex::add(WorkerIndex worker, BlockKey key) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const std::size_t i = probe(key);
  Slot& s = slots_[i];
  if (s.count == 0) {
    s.key = key;
    s.list = kNoList;
    ++size_;
  } else {
    const auto held = holders_of(s);
    if (std::find(held.begin(), held.end(), worker) != held.end()) return;
  }
  push_holder(s, worker);
  count(worker, +1);
}

bool RemoteIndex::drop_holder(std::size_t i, WorkerIndex worker) {
  Slot& s = slots_[i];
  if (s.list != kNoList) {
    auto& list = lists_[s.list];
    auto at = std::find(list.begin(), list.end(), worker);
    if (at == list.end()) return false;
    list.erase(at);
    --s.count;
    if (s.count <= 2) {  // back inline
      std::copy(list.begin(), list.end(), s.inline_holders);
      list.clear();
      free_lists_.push_back(s.list);
      s.list = kNoList;
    }
  } else {
    WorkerIndex* end = s.inline_holders + s.count;
    WorkerIndex* at = std::find(s.inline_holders, end, worker);
    if (at == end) return false;
    std::copy(at + 1, end, at);
    --s.count;
  }
  count(worker, -1);
  if (s.count == 0) erase_slot(i);
  return true;
}

void RemoteIndex::erase_slot(std::size_t i) {
  // Backward-shift deletion: move each follower of the probe run whose home
  // is not between the hole and it into the hole.
  --size_;
  std::size_t hole = i;
  for (std::size_t j = (i + 1) & mask_; slots_[j].count != 0; j = (j + 1) & mask_) {
    const std::size_t h = home(slots_[j].key);
    const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    hole = j;
  }
  slots_[hole] = Slot{};
}

void RemoteIndex::remove(WorkerIndex worker, BlockKey key) {
  const std::size_t i = probe(key);
  if (slots_[i].count != 0) (void)drop_holder(i, worker);
}

void RemoteIndex::clear(WorkerIndex worker) {
  if (size_of(worker) == 0) return;
  // Rebuilt without `worker`: erasing while scanning would move entries
  // across the scan.
  std::vector<Slot> old;
  old.swap(slots_);
  std::vector<std::vector<WorkerIndex>> old_lists;
  old_lists.swap(lists_);
  free_lists_.clear();
  slots_.assign(old.size(), Slot{});
  size_ = 0;
  for (const Slot& s : old) {
    if (s.count == 0) continue;
    const std::span<const WorkerIndex> held = s.list != kNoList
                                                  ? std::span<const WorkerIndex>(old_lists[s.list])
                                                  : std::span<const WorkerIndex>(s.inline_holders, s.count);
    bool placed = false;
    std::size_t at = 0;
    for (WorkerIndex w : held) {
      if (w == worker) continue;
      if (!placed) {
        at = probe(s.key);
        slots_[at].key = s.key;
        ++size_;
        placed = true;
      }
      push_holder(slots_[at], w);
    }
  }
  per_worker_[worker] = 0;
}

void RemoteIndex::grow() {
  std::vector<Slot> old(slots_.size() * 2);
  old.swap(slots_);
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.count != 0) slots_[probe(s.key)] = s;
  }
}

std::span<const WorkerIndex> RemoteIndex::holders(BlockKey key) const {
  const Slot& s = slots_[probe(key)];
  if (s.count == 0) return {};
  return holders_of(s);
}

std::uint32_t RemoteIndex::continuation(std::uint64_t layout, std::span<const std::uint64_t> keys) const {
  std::uint32_t n = 0;
  for (auto key : keys) {
    if (slots_[probe(BlockKey{layout, key})].count == 0) break;
    ++n;
  }
  return n;
}

std::uint32_t RemoteIndex::prefix_of(WorkerIndex worker, std::uint64_t layout,
                                     std::span<const std::uint64_t> keys) const {
  std::uint32_t n = 0;
  for (auto key : keys) {
    const auto held = holders(BlockKey{layout, key});
    if (std::find(held.begin(), held.end(), worker) == held.end()) break;
    ++n;
  }
  return n;
}

std::size_t RemoteIndex::size_of(WorkerIndex worker) const {
  return worker < per_worker_.size() ? per_worker_[worker] : 0;
}

}  // namespace kvb::daemon::cluster
