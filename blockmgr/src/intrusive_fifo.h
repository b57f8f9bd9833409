// IntrusiveFifo: a doubly linked FIFO of block ids 0..capacity-1 whose links
// live in two arrays indexed by block id. O(1) push (either end), pop, unlink. A block is
// in at most one IntrusiveFifo of a given link array at a time. Private to
// blockmgr/src.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace kvb::detail {

inline constexpr std::uint32_t kNil = std::numeric_limits<std::uint32_t>::max();

/// prev/next links for every block id; shared by the FIFOs of one policy.
struct FifoLinks {
  explicit FifoLinks(std::uint32_t capacity) : prev(capacity, kNil), next(capacity, kNil) {}
  std::vector<std::uint32_t> prev;
  std::vector<std::uint32_t> next;
};

class IntrusiveFifo {
 public:
  explicit IntrusiveFifo(FifoLinks& links) noexcept : links_(&links) {}

  [[nodiscard]] std::uint32_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// The oldest entry; kNil when empty.
  [[nodiscard]] std::uint32_t front() const noexcept { return head_; }

  void push_back(std::uint32_t id) noexcept {
    links_->prev[id] = tail_;
    links_->next[id] = kNil;
    if (tail_ != kNil)
      links_->next[tail_] = id;
    else
      head_ = id;
    tail_ = id;
    ++size_;
  }

  /// Puts `id` ahead of every entry (it leaves first).
  void push_front(std::uint32_t id) noexcept {
    links_->next[id] = head_;
    links_->prev[id] = kNil;
    if (head_ != kNil)
      links_->prev[head_] = id;
    else
      tail_ = id;
    head_ = id;
    ++size_;
  }

  /// Precondition: `id` is in this FIFO.
  void unlink(std::uint32_t id) noexcept {
    const std::uint32_t p = links_->prev[id];
    const std::uint32_t n = links_->next[id];
    if (p != kNil)
      links_->next[p] = n;
    else
      head_ = n;
    if (n != kNil)
      links_->prev[n] = p;
    else
      tail_ = p;
    links_->prev[id] = links_->next[id] = kNil;
    --size_;
  }

  /// Removes and returns the oldest entry. Precondition: not empty.
  std::uint32_t pop_front() noexcept {
    const std::uint32_t id = head_;
    unlink(id);
    return id;
  }

 private:
  FifoLinks* links_;
  std::uint32_t head_ = kNil;
  std::uint32_t tail_ = kNil;
  std::uint32_t size_ = 0;
};

}  // namespace kvb::detail
