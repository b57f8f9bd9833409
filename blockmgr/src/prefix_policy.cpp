// "prefix": eviction that knows a prefix cache is a tree, weighted by how
// often and how recently each block was used.
//
// The tree: each registered block names the hash of its parent (the block
// before it in its sequence; BlockOrigin::parent). A block is a *leaf* when
// no registered block of this tier names it as parent. A prefix match walks
// from the root, so a block is worth nothing once its parent is gone: only
// inactive leaves are evicted while one exists. A block whose turn comes
// while it still has children is *parked* until its last child is evicted,
// then it is next in line again. (When no leaf is inactive, the oldest
// parked block goes: the tier must make room, and its children are leased
// right now.)
//
// The order among leaves:
//   1. dead ends first, oldest first: leaves used once that no block ever
//      extended -- the last block of a request nobody repeated (in a trace
//      whose last block is partial, one no later request can match);
//   2. then the lowest  release time + kUseBonus * (log2(uses) - 1),
// where `uses` counts the requests that registered or hit the block,
// including those before it was last evicted from this tier (UseHistory
// remembers the counts of evicted hashes, about 4 x capacity of them) and
// those in the tier it was copied from. So a block used twice outlives one used
// once by kUseBonus of idleness, one used 4 times by twice that, and so on.
//
// Time here is the tier's own: the number of uses (registrations and hits)
// the policy has seen, not the clock. Idleness is measured in the traffic
// that went by, so the order of evictions depends only on the order of
// events, not on their pace: the same requests sent 700 times faster (a
// benchmark replaying an hour-long trace in seconds) evict the same blocks.
// With a wall-clock bonus (it was 4 minutes) the policy turned into "fewest
// uses first" at such paces and fell far below LRU (docs/eviction.md).
// kUseBonus = 20,000 uses is about 4 minutes of the shared conversation
// trace (82 uses/s), and measured as good on it at 1 to 30 M tokens.
//
// The bonus is a step per class of uses (floor(2 log2 uses)), so the
// blocks of one class leave in release order: one FIFO per class (leaves
// and interior blocks alike) plus one of dead ends, and evict() compares the
// heads of the non-empty FIFOs; a head with children is parked instead. A
// parked block that becomes a leaf goes back to the front of its FIFO: it
// was its head, the oldest of its class, when it was parked. All O(1)
// amortized (a block is parked at most once per release).
//
// Measured on the shared conversation trace (docs/eviction.md). Ideas
// from, not code of: LRFU and GDSF (a frequency-dependent credit added to
// an aging clock), TinyLFU's and S3-FIFO's memory of evicted keys, SGLang's
// radix cache (evict leaves only), dead-block prediction (the one-off tail).
#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <utility>
#include <vector>

#include "eviction_policies.h"
#include "intrusive_fifo.h"
#include "prefix_tree.h"
#include "use_history.h"

namespace kvb::detail {
namespace {

constexpr std::int64_t kUseBonus = 20'000;     // idleness (in uses of the tier) one doubling of uses is worth
constexpr std::uint32_t kHistoryPerBlock = 4;  // evicted hashes remembered (about), per block of capacity
constexpr std::uint32_t kClasses = 16;         // floor(2 log2 uses), the last for uses >= 182
constexpr std::uint32_t kDeadEnds = kClasses;  // the queue of dead ends (all used once: one class)
constexpr std::uint8_t kMaxUses = 255;

enum class Where : std::uint8_t { none, active, queued, parked };

/// The FIFO of a block used `uses` times: floor(2 log2 uses), capped.
constexpr std::uint32_t use_class(std::uint32_t uses) noexcept {
  // floor(2 log2 u) = 2 floor(log2 u) + (u^2 >= 2 * 4^floor(log2 u))
  const std::uint32_t lg = static_cast<std::uint32_t>(std::bit_width(uses)) - 1;
  const std::uint64_t u2 = std::uint64_t{uses} * uses;
  const std::uint32_t half = u2 >= (std::uint64_t{2} << (2 * lg)) ? 1 : 0;
  return std::min(kClasses - 1, 2 * lg + half);
}
static_assert(use_class(1) == 0 && use_class(2) == 2 && use_class(3) == 3 && use_class(4) == 4 && use_class(6) == 5 &&
              use_class(8) == 6 && use_class(255) == kClasses - 1);

class PrefixPolicy final : public EvictionPolicy {
 public:
  PrefixPolicy(std::uint32_t capacity, const Clock& clock)
      : clock_(&clock),
        links_(capacity),
        queues_{make_queues(links_)},
        parked_(links_),
        tree_(capacity),
        history_(std::uint64_t{capacity} * kHistoryPerBlock),
        hash_(capacity),
        since_(capacity, 0),
        stamp_(capacity, 0),
        uses_(capacity, 0),
        class_(capacity, 0),
        where_(capacity, Where::none),
        extended_(capacity, 0),
        dead_end_(capacity, 0) {}

  std::string_view name() const noexcept override { return "prefix"; }

  void on_registered(BlockId block, SequenceHash hash, const BlockOrigin& origin,
                     std::optional<BlockId> parent_block) override {
    const std::uint32_t b = block.value();
    hash_[b] = hash;
    ++now_;  // a use: the policy's clock
    // Uses so far: what the block brings along, or what this tier remembers of
    // it from before it was evicted (plus this request), whichever is more.
    const std::uint32_t remembered = 1U + history_.take(hash).value_or(0);
    uses_[b] =
        static_cast<std::uint8_t>(std::min<std::uint32_t>(kMaxUses, std::max<std::uint32_t>(origin.uses, remembered)));
    extended_[b] = origin.extended ? 1 : 0;
    where_[b] = Where::active;
    const std::uint32_t p = parent_block ? parent_block->value() : kNil;
    tree_.add(b, hash, origin.parent, p);
    if (p != kNil) extended_[p] = 1;
  }

  void on_inactive(BlockId block, SequenceHash /*hash*/) override {
    const std::uint32_t b = block.value();
    since_[b] = clock_->now_ns();
    stamp_[b] = now_;
    class_[b] = static_cast<std::uint8_t>(use_class(uses_[b]));
    dead_end_[b] = tree_.children(b) == 0 && uses_[b] == 1 && extended_[b] == 0 ? 1 : 0;
    ++held_;
    enqueue_back(b);
  }

  void on_reactivated(BlockId block) override {
    const std::uint32_t b = block.value();
    unlink(b);
    where_[b] = Where::active;
    ++now_;
    if (uses_[b] < kMaxUses) ++uses_[b];
  }

  void on_leased_again(BlockId block) override {
    const std::uint32_t b = block.value();
    unlink(b);
    where_[b] = Where::active;  // neither a use nor a tick of the clock: the request counted both
  }

  void on_dropped(BlockId block) override {
    const std::uint32_t b = block.value();
    if (where_[b] == Where::active) forget(b);  // out of the tree: its parent may be a leaf again
  }

  std::optional<BlockId> evict() override {
    if (held_ == 0) return std::nullopt;
    std::uint32_t victim = pick_leaf();
    if (victim == kNil) victim = parked_.front();  // every leaf is leased: take an interior block
    unlink(victim);
    forget(victim);
    return BlockId{victim};
  }

  std::uint32_t size() const noexcept override { return held_; }

  std::optional<std::uint64_t> oldest_inactive_since_ns() const override {
    std::optional<std::uint64_t> oldest;
    auto consider = [&](const IntrusiveFifo& f) {
      if (!f.empty() && (!oldest || since_[f.front()] < *oldest)) oldest = since_[f.front()];
    };
    for (const auto& q : queues_) consider(q);
    consider(parked_);  // a parked block may be older than the front of its queue
    return oldest;
  }

 private:
  static std::array<IntrusiveFifo, kClasses + 1> make_queues(FifoLinks& links) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<IntrusiveFifo, kClasses + 1>{((void)I, IntrusiveFifo(links))...};
    }
    (std::make_index_sequence<kClasses + 1>{});
  }

  [[nodiscard]] std::uint32_t queue_of(std::uint32_t b) const noexcept {
    return dead_end_[b] != 0 ? kDeadEnds : class_[b];
  }
  // kUseBonus * (log2(uses) - 1), in half steps; dead ends before everything.
  [[nodiscard]] static std::int64_t bonus(std::uint32_t queue) noexcept {
    if (queue == kDeadEnds) return std::numeric_limits<std::int64_t>::min() / 2;
    return kUseBonus * (static_cast<std::int64_t>(queue) - 2) / 2;
  }

  void enqueue_back(std::uint32_t b) {
    const std::uint32_t q = queue_of(b);
    queues_[q].push_back(b);
    nonempty_ |= 1U << q;
    where_[b] = Where::queued;
  }
  void enqueue_front(std::uint32_t b) {
    const std::uint32_t q = queue_of(b);
    queues_[q].push_front(b);
    nonempty_ |= 1U << q;
    where_[b] = Where::queued;
  }

  // Takes a held block out of its FIFO (or out of the parked list).
  void unlink(std::uint32_t b) {
    if (where_[b] == Where::parked) {
      parked_.unlink(b);
    } else {
      const std::uint32_t q = queue_of(b);
      queues_[q].unlink(b);
      if (queues_[q].empty()) nonempty_ &= ~(1U << q);
    }
    --held_;
  }

  // The inactive leaf of lowest priority, parking the heads with children on
  // the way; kNil when no leaf is inactive.
  [[nodiscard]] std::uint32_t pick_leaf() noexcept {
    for (;;) {
      std::uint32_t best = kNil;
      std::uint32_t best_q = 0;
      std::int64_t best_key = 0;
      for (std::uint32_t mask = nonempty_; mask != 0; mask &= mask - 1) {
        const auto q = static_cast<std::uint32_t>(std::countr_zero(mask));
        const std::uint32_t b = queues_[q].front();
        const std::int64_t key = static_cast<std::int64_t>(stamp_[b]) + bonus(q);
        if (best == kNil || key < best_key) {
          best = b;
          best_q = q;
          best_key = key;
        }
      }
      if (best == kNil || tree_.children(best) == 0) return best;
      queues_[best_q].unlink(best);  // its turn came, but a child still stands on it
      if (queues_[best_q].empty()) nonempty_ &= ~(1U << best_q);
      parked_.push_back(best);
      where_[best] = Where::parked;
    }
  }

  // `b` leaves the tier: remember its uses, take it out of the tree, and let
  // a parked parent whose last child it was take its turn again.
  void forget(std::uint32_t b) {
    history_.remember(hash_[b], uses_[b]);
    where_[b] = Where::none;
    const std::uint32_t p = tree_.remove(b);
    if (p != kNil && where_[p] == Where::parked) {
      parked_.unlink(p);
      enqueue_front(p);
    }
  }

  const Clock* clock_;
  FifoLinks links_;
  std::array<IntrusiveFifo, kClasses + 1> queues_;  // inactive blocks by use class, then dead ends
  IntrusiveFifo parked_;                            // inactive blocks whose turn came while they had children
  std::uint32_t nonempty_ = 0;                      // bit q: queues_[q] is not empty
  std::uint32_t held_ = 0;
  PrefixTree tree_;
  UseHistory history_;  // evicted hash -> its uses
  std::vector<SequenceHash> hash_;
  std::uint64_t now_ = 0;             // uses seen (registrations + hits): the order of evictions reads this clock
  std::vector<std::uint64_t> since_;  // clock time of the last release (diagnostics only)
  std::vector<std::uint64_t> stamp_;  // now_ at the last release
  std::vector<std::uint8_t> uses_;
  std::vector<std::uint8_t> class_;
  std::vector<Where> where_;
  std::vector<std::uint8_t> extended_;  // some block named it as parent while it was registered
  std::vector<std::uint8_t> dead_end_;  // at its last release: a leaf, used once, never extended
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_prefix_policy(std::uint32_t capacity, const Clock& clock) {
  return std::make_unique<PrefixPolicy>(capacity, clock);
}

}  // namespace kvb::detail
