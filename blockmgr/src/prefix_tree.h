// PrefixTree: the parent/child links between the registered blocks of one
// tier, for the "prefix" eviction policy. Each block names its parent by
// hash; the parent may be registered in the tier before the child, after it
// (a write-back brings a sequence's tail before its head), or never. A child
// whose parent is not registered here is an *orphan*, listed under the
// parent's hash until a block with that hash arrives and adopts it. Child
// lists are intrusive (links in arrays indexed by block id), so every call
// is O(1) but two: add() adopts the orphans waiting for it, remove() of a
// block that still has children (the tier had no leaf to give) orphans them.
// Memory: about 40 bytes per block plus a table of capacity entries.
// Private to blockmgr/src.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hash_registry.h"
#include "kvb/blockmgr/sequence_hash.h"

namespace kvb::detail {

class PrefixTree {
 public:
  explicit PrefixTree(std::uint32_t capacity)
      : orphans_(capacity),
        hash_(capacity),
        parent_hash_(capacity),
        parent_(capacity, kNil),
        first_child_(capacity, kNil),
        next_(capacity, kNil),
        prev_(capacity, kNil),
        children_(capacity, 0),
        has_parent_(capacity, 0) {}

  /// Block `b` is registered as `hash`, child of `parent` (nullopt or `hash`
  /// itself: a root), which is registered in this tier as block
  /// `parent_block` (kNil: it is not). `b` adopts the orphans that name
  /// `hash`. Cycles (a parent named by its own descendant) are allowed: those
  /// blocks are never leaves, so they leave only when no leaf is inactive.
  void add(std::uint32_t b, SequenceHash hash, std::optional<SequenceHash> parent, std::uint32_t parent_block) {
    if (parent == hash) parent.reset();  // a block cannot extend itself: a root
    hash_[b] = hash;
    has_parent_[b] = parent.has_value() ? 1 : 0;
    parent_hash_[b] = parent.value_or(SequenceHash{});
    first_child_[b] = kNil;
    children_[b] = 0;
    if (std::uint32_t* head = orphans_.size() == 0 ? nullptr : orphans_.find_value(hash)) {
      first_child_[b] = *head;
      (void)orphans_.erase(hash);
      for (std::uint32_t c = first_child_[b]; c != kNil; c = next_[c]) {
        parent_[c] = b;
        ++children_[b];
      }
    }
    parent_[b] = kNil;
    next_[b] = prev_[b] = kNil;
    if (!parent) return;
    if (parent_block != kNil) {
      parent_[b] = parent_block;
      push_front(first_child_[parent_block], b);
      ++children_[parent_block];
    } else if (std::uint32_t* head = orphans_.find_value(*parent)) {
      push_front(*head, b);
    } else {
      orphans_.insert(*parent, b);
    }
  }

  /// Block `b` leaves the tier. Returns its parent block when `b` was that
  /// block's last child (it has just become a leaf), else kNil. Children `b`
  /// still has become orphans waiting for its hash.
  std::uint32_t remove(std::uint32_t b) {
    if (first_child_[b] != kNil) {
      for (std::uint32_t c = first_child_[b]; c != kNil; c = next_[c]) parent_[c] = kNil;
      orphans_.insert(hash_[b], first_child_[b]);
      first_child_[b] = kNil;
      children_[b] = 0;
    }
    if (has_parent_[b] == 0) return kNil;
    const std::uint32_t p = parent_[b];
    if (p != kNil) {
      unlink(first_child_[p], b);
      return --children_[p] == 0 ? p : kNil;
    }
    std::uint32_t* head = orphans_.find_value(parent_hash_[b]);
    if (head == nullptr) return kNil;  // cannot happen: an orphan is always listed
    if (*head == b && next_[b] == kNil) {
      (void)orphans_.erase(parent_hash_[b]);  // the last orphan of that hash (kNil would mean an empty slot)
      prev_[b] = kNil;
    } else {
      unlink(*head, b);
    }
    return kNil;
  }

  /// Children of `b` registered in this tier.
  [[nodiscard]] std::uint32_t children(std::uint32_t b) const noexcept { return children_[b]; }

 private:
  void push_front(std::uint32_t& head, std::uint32_t b) noexcept {
    next_[b] = head;
    prev_[b] = kNil;
    if (head != kNil) prev_[head] = b;
    head = b;
  }
  void unlink(std::uint32_t& head, std::uint32_t b) noexcept {
    if (prev_[b] != kNil)
      next_[prev_[b]] = next_[b];
    else
      head = next_[b];
    if (next_[b] != kNil) prev_[next_[b]] = prev_[b];
    next_[b] = prev_[b] = kNil;
  }

  HashRegistry orphans_;  // parent hash -> first orphan child (siblings linked by next_/prev_)
  std::vector<SequenceHash> hash_;
  std::vector<SequenceHash> parent_hash_;
  std::vector<std::uint32_t> parent_;       // parent block, kNil for roots and orphans
  std::vector<std::uint32_t> first_child_;  // head of the child list
  std::vector<std::uint32_t> next_, prev_;  // siblings (under a parent block or an orphan entry)
  std::vector<std::uint32_t> children_;     // length of the child list
  std::vector<std::uint8_t> has_parent_;
};

}  // namespace kvb::detail
