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
// The first new block after a hit (its parent was used twice or more) counts
// as used twice here: the next request sharing that prefix continues there.
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
// A tier that sees only a share of its cache's traffic (a worker of a
// cluster whose requests are spread over N workers: its blocks' uses come
// from all of them, but only about 1/N of the cluster's uses are of its
// blocks) counts time 1/N as fast: set_traffic_share scales the bonus by
// the share, so that it stays the same stretch of the traffic
// (docs/eviction.md, "In a cluster").
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
#include <cmath>
#include <limits>
#include <vector>

#include "eviction_policies.h"
#include "prefix_tree.h"
#include "use_history.h"

namespace kvb::detail {
namespace {

constexpr std::int64_t kUseBonus = 20'000;     // idleness (in uses of the tier) one doubling of uses is worth
constexpr std::uint32_t kHistoryPerBlock = 4;  // evicted hashes remembered (about), per block of capacity
constexpr std::uint32_t kClasses = 16;         // floor(2 log2 uses), the last for uses >= 182
constexpr std::uint32_t kDeadEnds = kClasses;  // the queue of dead ends (all used once: one class)
constexpr std::uint8_t kMaxUses = 255;
constexpr double kMinShare = 1.0 / 4096;  // set_traffic_share's floor (a cluster of more workers counts as this)

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

// The policy's state of one block, in its node of the tree (one cache line
// per block: the policy is bound by cache misses).
struct BlockState {
  std::uint64_t stamp = 0;                 // now_ at the last release
  std::uint32_t prev = kNil, next = kNil;  // in its FIFO (or the parked list)
  std::uint8_t uses = 0;
  std::uint8_t queue = 0;  // its FIFO, fixed at its last release: use class, or kDeadEnds
  Where where = Where::none;
  bool extended = false;   // some block named it as parent while it was registered
  bool after_hit = false;  // registered as the child of a block used twice or more (see on_inactive)
};
using Tree = PrefixTree<BlockState>;
static_assert(sizeof(Tree::Node) == 64, "a block's node of the prefix policy is one cache line");

// A doubly linked FIFO of block ids through BlockState::prev/next. A block
// is in at most one of them at a time.
class Fifo {
 public:
  [[nodiscard]] bool empty() const noexcept { return head_ == kNil; }
  /// The oldest entry; kNil when empty.
  [[nodiscard]] std::uint32_t front() const noexcept { return head_; }

  void push_back(Tree& t, std::uint32_t b) noexcept {
    BlockState& s = t.payload(b);
    s.prev = tail_;
    s.next = kNil;
    if (tail_ != kNil)
      t.payload(tail_).next = b;
    else
      head_ = b;
    tail_ = b;
  }
  /// Puts `b` ahead of every entry (it leaves first).
  void push_front(Tree& t, std::uint32_t b) noexcept {
    BlockState& s = t.payload(b);
    s.next = head_;
    s.prev = kNil;
    if (head_ != kNil)
      t.payload(head_).prev = b;
    else
      tail_ = b;
    head_ = b;
  }
  /// Precondition: `b` is in this FIFO.
  void unlink(Tree& t, std::uint32_t b) noexcept {
    BlockState& s = t.payload(b);
    if (s.prev != kNil)
      t.payload(s.prev).next = s.next;
    else
      head_ = s.next;
    if (s.next != kNil)
      t.payload(s.next).prev = s.prev;
    else
      tail_ = s.prev;
    s.prev = s.next = kNil;
  }

 private:
  std::uint32_t head_ = kNil;
  std::uint32_t tail_ = kNil;
};

class PrefixPolicy final : public EvictionPolicy {
 public:
  PrefixPolicy(std::uint32_t capacity, const Clock& clock)
      : clock_(&clock), tree_(capacity), history_(std::uint64_t{capacity} * kHistoryPerBlock), since_(capacity, 0) {}

  std::string_view name() const noexcept override { return "prefix"; }

  void set_traffic_share(double share) noexcept override {
    share = std::clamp(share, kMinShare, 1.0);
    use_bonus_ = std::max<std::int64_t>(1, std::llround(static_cast<double>(kUseBonus) * share));
  }
  std::optional<std::uint64_t> use_credit() const noexcept override { return static_cast<std::uint64_t>(use_bonus_); }

  void prefetch(SequenceHash hash) const noexcept override { history_.prefetch(hash); }

  void on_registered(BlockId block, SequenceHash hash, const BlockOrigin& origin,
                     std::optional<BlockId> parent_block) override {
    const std::uint32_t b = block.value();
    ++now_;  // a use: the policy's clock
    const std::uint32_t p = parent_block ? parent_block->value() : kNil;
    tree_.add(b, hash, origin.parent, p);
    BlockState& s = tree_.payload(b);
    // Uses so far: what the block brings along, or what this tier remembers of
    // it from before it was evicted (plus this request), whichever is more.
    const std::uint32_t remembered = 1U + history_.take(hash).value_or(0);
    s.uses =
        static_cast<std::uint8_t>(std::min<std::uint32_t>(kMaxUses, std::max<std::uint32_t>(origin.uses, remembered)));
    s.extended = origin.extended;
    s.where = Where::active;
    s.after_hit = false;
    if (p != kNil) {
      BlockState& ps = tree_.payload(p);
      s.after_hit = ps.uses >= 2;
      ps.extended = true;
    }
  }

  void on_inactive(BlockId block, SequenceHash /*hash*/) override {
    const std::uint32_t b = block.value();
    since_[b] = clock_->now_ns();
    BlockState& s = tree_.payload(b);
    s.stamp = now_;
    // Dead end: at its release a leaf, used once, never extended.
    const bool dead_end = tree_.children(b) == 0 && s.uses == 1 && !s.extended;
    // The first new block after a hit (its parent was used before) is ordered
    // as if used twice: it is where the next request that shares the hit
    // prefix continues (the next turn, another request of the same
    // template), and such blocks are used again 40 % of the time against 25 %
    // for the other new blocks of the shared trace (docs/eviction.md).
    const std::uint32_t uses = s.after_hit ? std::max<std::uint32_t>(s.uses, 2) : s.uses;
    s.queue = static_cast<std::uint8_t>(dead_end ? kDeadEnds : use_class(uses));
    ++held_;
    enqueue(b, /*front=*/false);
  }

  void on_reactivated(BlockId block) override {
    const std::uint32_t b = block.value();
    unlink(b);
    BlockState& s = tree_.payload(b);
    s.where = Where::active;
    ++now_;
    if (s.uses < kMaxUses) ++s.uses;
  }

  void on_leased_again(BlockId block) override {
    const std::uint32_t b = block.value();
    unlink(b);
    tree_.payload(b).where = Where::active;  // neither a use nor a tick of the clock: the request counted both
  }

  void on_dropped(BlockId block) override {
    const std::uint32_t b = block.value();
    if (tree_.payload(b).where == Where::active) forget(b);  // out of the tree: its parent may be a leaf again
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
    auto consider = [&](const Fifo& f) {
      if (!f.empty() && (!oldest || since_[f.front()] < *oldest)) oldest = since_[f.front()];
    };
    for (const auto& q : queues_) consider(q);
    consider(parked_);  // a parked block may be older than the front of its queue
    return oldest;
  }

 private:
  // use_bonus_ * (log2(uses) - 1), in half steps; dead ends before everything.
  [[nodiscard]] std::int64_t bonus(std::uint32_t queue) const noexcept {
    if (queue == kDeadEnds) return std::numeric_limits<std::int64_t>::min() / 2;
    return use_bonus_ * (static_cast<std::int64_t>(queue) - 2) / 2;
  }

  void enqueue(std::uint32_t b, bool front) {
    BlockState& s = tree_.payload(b);
    if (front)
      queues_[s.queue].push_front(tree_, b);
    else
      queues_[s.queue].push_back(tree_, b);
    nonempty_ |= 1U << s.queue;
    s.where = Where::queued;
  }

  // Takes a held block out of its FIFO (or out of the parked list).
  void unlink(std::uint32_t b) {
    const BlockState& s = tree_.payload(b);
    if (s.where == Where::parked) {
      parked_.unlink(tree_, b);
    } else {
      Fifo& q = queues_[s.queue];
      q.unlink(tree_, b);
      if (q.empty()) nonempty_ &= ~(1U << s.queue);
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
        const std::int64_t key = static_cast<std::int64_t>(tree_.payload(b).stamp) + bonus(q);
        if (best == kNil || key < best_key) {
          best = b;
          best_q = q;
          best_key = key;
        }
      }
      if (best == kNil || tree_.children(best) == 0) return best;
      queues_[best_q].unlink(tree_, best);  // its turn came, but a child still stands on it
      if (queues_[best_q].empty()) nonempty_ &= ~(1U << best_q);
      parked_.push_back(tree_, best);
      tree_.payload(best).where = Where::parked;
    }
  }

  // `b` leaves the tier: remember its uses, take it out of the tree, and let
  // a parked parent whose last child it was take its turn again.
  void forget(std::uint32_t b) {
    BlockState& s = tree_.payload(b);
    history_.remember(tree_.hash(b), s.uses);
    s.where = Where::none;
    const std::uint32_t p = tree_.remove(b);
    if (p != kNil && tree_.payload(p).where == Where::parked) {
      parked_.unlink(tree_, p);
      enqueue(p, /*front=*/true);
    }
  }

  const Clock* clock_;
  Tree tree_;                              // the blocks' nodes: tree links, hashes and BlockState
  std::array<Fifo, kClasses + 1> queues_;  // inactive blocks by use class, then dead ends
  Fifo parked_;                            // inactive blocks whose turn came while they had children
  std::uint32_t nonempty_ = 0;             // bit q: queues_[q] is not empty
  std::uint32_t held_ = 0;
  UseHistory history_;                  // evicted hash -> its uses
  std::uint64_t now_ = 0;               // uses seen (registrations + hits): the order of evictions reads this clock
  std::int64_t use_bonus_ = kUseBonus;  // kUseBonus x this tier's share of its cache's traffic (set_traffic_share)
  std::vector<std::uint64_t> since_;    // clock time of the last release (diagnostics only)
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_prefix_policy(std::uint32_t capacity, const Clock& clock) {
  return std::make_unique<PrefixPolicy>(capacity, clock);
}

}  // namespace kvb::detail
