#include "belady_policy.h"

#include <set>
#include <utility>

namespace kvb::bench {

TraceFuture::TraceFuture(std::span<const TraceRequest> trace) {
  for (std::size_t i = 0; i < trace.size(); ++i) {
    for (const std::uint64_t id : trace[i].hash_ids) {
      auto& r = uses_[id].requests;
      if (r.empty() || r.back() != i) r.push_back(static_cast<std::uint32_t>(i));
    }
  }
}

std::uint64_t TraceFuture::next_use(SequenceHash hash) const {
  auto it = uses_.find(hash.value());
  if (it == uses_.end()) return kNever;
  Uses& u = it->second;
  while (u.cursor < u.requests.size() && u.requests[u.cursor] <= now_) ++u.cursor;
  return u.cursor < u.requests.size() ? u.requests[u.cursor] : kNever;
}

namespace {

class BeladyPolicy final : public EvictionPolicy {
 public:
  BeladyPolicy(std::uint32_t capacity, const TraceFuture& future, const Clock& clock)
      : future_(&future), clock_(&clock), hash_(capacity), next_(capacity, 0), since_(capacity, 0) {}

  std::string_view name() const noexcept override { return "belady"; }

  void on_inactive(BlockId block, SequenceHash hash) override {
    const std::uint32_t b = block.value();
    hash_[b] = hash;
    next_[b] = future_->next_use(hash);
    since_[b] = clock_->now_ns();
    by_next_.emplace(next_[b], b);
  }
  void on_reactivated(BlockId block) override { by_next_.erase({next_[block.value()], block.value()}); }

  std::optional<BlockId> evict() override {
    if (by_next_.empty()) return std::nullopt;
    // Re-time blocks whose next use is already past (not touched then).
    while (by_next_.begin()->first <= future_->now()) {
      const std::uint32_t b = by_next_.begin()->second;
      by_next_.erase(by_next_.begin());
      next_[b] = future_->next_use(hash_[b]);
      by_next_.emplace(next_[b], b);
    }
    const auto last = std::prev(by_next_.end());
    const std::uint32_t victim = last->second;
    by_next_.erase(last);
    return BlockId{victim};
  }

  std::uint32_t size() const noexcept override { return static_cast<std::uint32_t>(by_next_.size()); }

  std::optional<std::uint64_t> oldest_inactive_since_ns() const override {
    std::optional<std::uint64_t> oldest;
    for (const auto& [next, b] : by_next_)
      if (!oldest || since_[b] < *oldest) oldest = since_[b];
    return oldest;
  }

 private:
  const TraceFuture* future_;
  const Clock* clock_;
  std::vector<SequenceHash> hash_;
  std::vector<std::uint64_t> next_;   // next use of each held block (request index)
  std::vector<std::uint64_t> since_;  // clock time it became inactive
  std::set<std::pair<std::uint64_t, std::uint32_t>> by_next_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_belady_policy(std::uint32_t capacity, const TraceFuture& future,
                                                   const Clock& clock) {
  return std::make_unique<BeladyPolicy>(capacity, future, clock);
}

}  // namespace kvb::bench
