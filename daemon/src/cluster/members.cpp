#include "cluster/members.h"

#include <algorithm>

#include <fmt/format.h>

namespace kvb::daemon::cluster {

WorkerIndex Members::index_of(const std::string& worker) {
  if (auto it = by_name_.find(worker); it != by_name_.end()) return it->second;
  const auto i = static_cast<WorkerIndex>(members_.size());
  members_.push_back(std::make_unique<Member>());
  members_.back()->worker = worker;
  by_name_.emplace(worker, i);
  return i;
}

std::optional<WorkerIndex> Members::find(const std::string& worker) const {
  auto it = by_name_.find(worker);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<WorkerIndex> Members::by_peer(PeerId peer) const {
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return std::nullopt;
  return it->second;
}

void Members::attach(WorkerIndex i, PeerId peer, bool ours) {
  Member& m = *members_[i];
  by_peer_[peer] = i;
  ours_[peer] = ours;
  names_[peer] = m.worker;
  if (std::find(m.peer_ids.begin(), m.peer_ids.end(), peer) == m.peer_ids.end()) m.peer_ids.push_back(peer);
  if (!m.send_peer || (ours && !ours_[*m.send_peer])) m.send_peer = peer;
}

std::optional<std::pair<WorkerIndex, bool>> Members::detach(PeerId peer) {
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return std::nullopt;
  const WorkerIndex i = it->second;
  by_peer_.erase(it);
  ours_.erase(peer);
  Member& m = *members_[i];
  std::erase(m.peer_ids, peer);
  std::erase_if(m.rkeys, [peer](const auto& kv) { return kv.first.first == peer; });
  if (m.send_peer == peer) {
    m.send_peer.reset();
    if (!m.peer_ids.empty()) m.send_peer = m.peer_ids.front();
  }
  const bool gone = m.peer_ids.empty();
  if (gone) {
    m.joined = false;
    m.expected_seq_in.reset();
    m.resync_requested = false;
    ++m.metrics.losses;
  }
  return std::pair{i, gone};
}

std::string Members::name_of(PeerId peer) const {
  auto it = names_.find(peer);
  if (it == names_.end()) return fmt::format("{}", peer);
  return it->second;
}

}  // namespace kvb::daemon::cluster
