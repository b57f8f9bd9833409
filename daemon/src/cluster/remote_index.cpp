#include "cluster/remote_index.h"

#include <algorithm>

namespace kvb::daemon::cluster {

void RemoteIndex::add(WorkerIndex worker, BlockKey key) {
  if (!by_worker_[worker].insert(key).second) return;
  holders_[key].push_back(worker);
}

void RemoteIndex::remove(WorkerIndex worker, BlockKey key) {
  auto mine = by_worker_.find(worker);
  if (mine == by_worker_.end() || mine->second.erase(key) == 0) return;
  auto it = holders_.find(key);
  if (it == holders_.end()) return;
  std::erase(it->second, worker);
  if (it->second.empty()) holders_.erase(it);
}

void RemoteIndex::clear(WorkerIndex worker) {
  auto mine = by_worker_.find(worker);
  if (mine == by_worker_.end()) return;
  for (const BlockKey& key : mine->second) {
    auto it = holders_.find(key);
    if (it == holders_.end()) continue;
    std::erase(it->second, worker);
    if (it->second.empty()) holders_.erase(it);
  }
  by_worker_.erase(mine);
}

std::span<const WorkerIndex> RemoteIndex::holders(BlockKey key) const {
  auto it = holders_.find(key);
  if (it == holders_.end()) return {};
  return it->second;
}

std::uint32_t RemoteIndex::continuation(std::uint64_t layout, std::span<const std::uint64_t> keys) const {
  std::uint32_t n = 0;
  for (auto key : keys) {
    if (!holders_.contains(BlockKey{layout, key})) break;
    ++n;
  }
  return n;
}

std::uint32_t RemoteIndex::prefix_of(WorkerIndex worker, std::uint64_t layout,
                                     std::span<const std::uint64_t> keys) const {
  auto mine = by_worker_.find(worker);
  if (mine == by_worker_.end()) return 0;
  std::uint32_t n = 0;
  for (auto key : keys) {
    if (!mine->second.contains(BlockKey{layout, key})) break;
    ++n;
  }
  return n;
}

std::size_t RemoteIndex::size_of(WorkerIndex worker) const {
  auto mine = by_worker_.find(worker);
  return mine == by_worker_.end() ? 0 : mine->second.size();
}

}  // namespace kvb::daemon::cluster
