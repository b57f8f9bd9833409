// "s3fifo": S3-FIFO (Yang et al., SOSP'23) over the inactive blocks of a tier.
//
// New blocks enter the small FIFO (target 10% of held blocks). A block that
// is hit (leased again) leaves the policy; when it becomes inactive again it
// returns to the tail of the FIFO it lived in with its frequency raised
// (capped at 3). Eviction takes from the small FIFO while it is over target:
// a block with frequency > 0 is promoted to main, one with 0 is evicted and
// its hash goes to the ghost FIFO. From main, a block with frequency > 0 is
// reinserted with frequency - 1, one with 0 is evicted. A new block whose
// hash is in the ghost goes straight to main. Each reinsertion lowers a
// frequency, so evict() is amortized O(1).
#include <algorithm>
#include <vector>

#include "eviction_policies.h"
#include "hash_registry.h"
#include "intrusive_fifo.h"

namespace kvb::detail {
namespace {

enum class Home : std::uint8_t { none = 0, small = 1, main = 2 };

/// A bounded FIFO of recently evicted hashes with O(1) membership: a ring of
/// hashes plus a flat hash -> ring slot index (no allocation after start).
class GhostFifo {
 public:
  explicit GhostFifo(std::uint32_t capacity)
      : ring_(std::max<std::uint32_t>(capacity, 1)), index_(static_cast<std::uint32_t>(ring_.size())) {}

  void insert(SequenceHash hash) {
    (void)index_.erase(hash);      // evicted again while still remembered: move it to the tail
    if (count_ == ring_.size()) {  // forget the oldest, unless its slot was already dropped
      const std::uint32_t slot = head_;
      if (index_.find(ring_[slot]) == slot) (void)index_.erase(ring_[slot]);
      head_ = (head_ + 1) % static_cast<std::uint32_t>(ring_.size());
      --count_;
    }
    const std::uint32_t slot = (head_ + count_) % static_cast<std::uint32_t>(ring_.size());
    ring_[slot] = hash;
    index_.insert(hash, slot);
    ++count_;
  }
  /// Whether `hash` was in the ghost; forgets it if so.
  bool take(SequenceHash hash) { return index_.erase(hash); }

 private:
  std::vector<SequenceHash> ring_;
  HashRegistry index_;  // hash -> ring slot of its live entry
  std::uint32_t head_ = 0;
  std::uint32_t count_ = 0;
};

class S3FifoPolicy final : public EvictionPolicy {
 public:
  S3FifoPolicy(std::uint32_t capacity, const Clock& clock)
      : clock_(&clock),
        links_(capacity),
        small_(links_),
        main_(links_),
        ghost_(capacity),
        home_(capacity, Home::none),
        freq_(capacity, 0),
        again_(capacity, 0),
        since_(capacity, 0),
        hash_(capacity) {}

  std::string_view name() const noexcept override { return "s3fifo"; }

  void on_inactive(BlockId block, SequenceHash hash) override {
    const std::uint32_t b = block.value();
    if (home_[b] == Home::none) {  // a new block
      hash_[b] = hash;
      freq_[b] = 0;
      again_[b] = 0;
      home_[b] = ghost_.take(hash) ? Home::main : Home::small;
    } else if (again_[b] != 0) {  // back from a lease that was no new use
      again_[b] = 0;
    } else {  // back after a hit
      freq_[b] = static_cast<std::uint8_t>(std::min(freq_[b] + 1, 3));
    }
    push(b);
  }

  void on_reactivated(BlockId block) override { fifo(block.value()).unlink(block.value()); }
  void on_leased_again(BlockId block) override {
    fifo(block.value()).unlink(block.value());
    again_[block.value()] = 1;
  }

  std::optional<BlockId> evict() override {
    for (;;) {
      const std::uint32_t held = small_.size() + main_.size();
      if (held == 0) return std::nullopt;
      const std::uint32_t small_target = std::max<std::uint32_t>(1, held / 10);
      if (!small_.empty() && (small_.size() >= small_target || main_.empty())) {
        const std::uint32_t b = small_.pop_front();
        if (freq_[b] > 0) {  // hit while in small: promote
          freq_[b] = 0;
          home_[b] = Home::main;
          push(b);
          continue;
        }
        ghost_.insert(hash_[b]);
        home_[b] = Home::none;
        return BlockId{b};
      }
      const std::uint32_t b = main_.pop_front();
      if (freq_[b] > 0) {  // reinsert with one less
        --freq_[b];
        push(b);
        continue;
      }
      home_[b] = Home::none;
      return BlockId{b};
    }
  }

  std::uint32_t size() const noexcept override { return small_.size() + main_.size(); }

  std::optional<std::uint64_t> oldest_inactive_since_ns() const override {
    std::optional<std::uint64_t> oldest;
    for (const IntrusiveFifo* f : {&small_, &main_}) {
      if (f->empty()) continue;
      const std::uint64_t t = since_[f->front()];
      if (!oldest || t < *oldest) oldest = t;
    }
    return oldest;
  }

 private:
  IntrusiveFifo& fifo(std::uint32_t b) noexcept { return home_[b] == Home::main ? main_ : small_; }
  void push(std::uint32_t b) {
    since_[b] = clock_->now_ns();
    fifo(b).push_back(b);
  }

  const Clock* clock_;
  FifoLinks links_;
  IntrusiveFifo small_;
  IntrusiveFifo main_;
  GhostFifo ghost_;
  std::vector<Home> home_;  // none = not known to the policy
  std::vector<std::uint8_t> freq_;
  std::vector<std::uint8_t> again_;  // leased by on_leased_again: its next release is no hit
  std::vector<std::uint64_t> since_;
  std::vector<SequenceHash> hash_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_s3fifo_policy(std::uint32_t capacity, const Clock& clock) {
  return std::make_unique<S3FifoPolicy>(capacity, clock);
}

}  // namespace kvb::detail
