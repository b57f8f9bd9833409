// "lru": least recently released first. One intrusive FIFO in release order;
// a hit unlinks the block, its next release appends it again.
#include <vector>

#include "eviction_policies.h"
#include "intrusive_fifo.h"

namespace kvb::detail {
namespace {

class LruPolicy final : public EvictionPolicy {
 public:
  LruPolicy(std::uint32_t capacity, const Clock& clock)
      : clock_(&clock), links_(capacity), fifo_(links_), since_(capacity, 0) {}

  std::string_view name() const noexcept override { return "lru"; }

  void on_inactive(BlockId block, SequenceHash /*hash*/) override {
    since_[block.value()] = clock_->now_ns();
    fifo_.push_back(block.value());
  }
  void on_reactivated(BlockId block) override { fifo_.unlink(block.value()); }

  std::optional<BlockId> evict() override {
    if (fifo_.empty()) return std::nullopt;
    return BlockId{fifo_.pop_front()};
  }
  std::uint32_t size() const noexcept override { return fifo_.size(); }
  std::optional<std::uint64_t> oldest_inactive_since_ns() const override {
    if (fifo_.empty()) return std::nullopt;
    return since_[fifo_.front()];
  }

 private:
  const Clock* clock_;
  FifoLinks links_;
  IntrusiveFifo fifo_;
  std::vector<std::uint64_t> since_;  // clock time each held block entered the FIFO
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_lru_policy(std::uint32_t capacity, const Clock& clock) {
  return std::make_unique<LruPolicy>(capacity, clock);
}

}  // namespace kvb::detail
