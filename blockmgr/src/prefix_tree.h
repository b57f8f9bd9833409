// PrefixTree: the parent/child links between the registered blocks of one
// tier, for the "prefix" eviction policy. Each block names its parent by
// hash; the parent may be registered in the tier before the child, after it
// (a write-back brings a sequence's tail before its head), or never. A child
// whose parent is not registered here is an *orphan*, listed under the
// parent's hash until a block with that hash arrives and adopts it. Child
// lists are intrusive (links in one node per block id), so every call is
// O(1) but two: add() adopts the orphans waiting for it, remove() of a block
// that still has children (the tier had no leaf to give) orphans them.
//
// A node holds everything about one block in one place (the links, the
// hashes, and the user's `Payload`: the policy keeps its own state there),
// so one call touches one cache line of the block instead of one per array:
// the policy is bound by cache misses, not by instructions. Memory: 40 bytes
// per block plus the payload (a 64-byte node for the policy's) and a table
// of capacity entries. Private to blockmgr/src.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hash_registry.h"
#include "kvb/blockmgr/sequence_hash.h"

namespace kvb::detail {

/// No payload: a node of the tree alone.
struct NoPayload {};

template <class Payload = NoPayload>
class PrefixTree {
 public:
  struct alignas(64) Node {  // one cache line with the policy's payload
    SequenceHash hash{};
    SequenceHash parent_hash{};        // valid if has_parent
    std::uint32_t parent = kNil;       // parent block, kNil for roots and orphans
    std::uint32_t first_child = kNil;  // head of the child list
    std::uint32_t next = kNil;         // siblings (under a parent block or an orphan entry)
    std::uint32_t prev = kNil;
    std::uint32_t children = 0;  // length of the child list
    bool has_parent = false;
    [[no_unique_address]] Payload payload{};
  };

  explicit PrefixTree(std::uint32_t capacity) : orphans_(capacity), nodes_(capacity) {}

  /// Block `b` is registered as `hash`, child of `parent` (nullopt or `hash`
  /// itself: a root), which is registered in this tier as block
  /// `parent_block` (kNil: it is not). `b` adopts the orphans that name
  /// `hash`. Cycles (a parent named by its own descendant) are allowed: those
  /// blocks are never leaves, so they leave only when no leaf is inactive.
  /// The payload of `b` is left as it is.
  void add(std::uint32_t b, SequenceHash hash, std::optional<SequenceHash> parent, std::uint32_t parent_block) {
    if (parent == hash) parent.reset();  // a block cannot extend itself: a root
    Node& n = nodes_[b];
    n.hash = hash;
    n.has_parent = parent.has_value();
    n.parent_hash = parent.value_or(SequenceHash{});
    n.first_child = kNil;
    n.children = 0;
    if (std::uint32_t* head = orphans_.size() == 0 ? nullptr : orphans_.find_value(hash)) {
      n.first_child = *head;
      (void)orphans_.erase(hash);
      for (std::uint32_t c = n.first_child; c != kNil; c = nodes_[c].next) {
        nodes_[c].parent = b;
        ++n.children;
      }
    }
    n.parent = kNil;
    n.next = n.prev = kNil;
    if (!parent) return;
    if (parent_block != kNil) {
      n.parent = parent_block;
      push_front(nodes_[parent_block].first_child, b);
      ++nodes_[parent_block].children;
    } else if (std::uint32_t* head = orphans_.size() == 0 ? nullptr : orphans_.find_value(*parent)) {
      push_front(*head, b);
    } else {
      orphans_.insert(*parent, b);
    }
  }

  /// Block `b` leaves the tier. Returns its parent block when `b` was that
  /// block's last child (it has just become a leaf), else kNil. Children `b`
  /// still has become orphans waiting for its hash.
  std::uint32_t remove(std::uint32_t b) {
    Node& n = nodes_[b];
    if (n.first_child != kNil) {
      for (std::uint32_t c = n.first_child; c != kNil; c = nodes_[c].next) nodes_[c].parent = kNil;
      orphans_.insert(n.hash, n.first_child);
      n.first_child = kNil;
      n.children = 0;
    }
    if (!n.has_parent) return kNil;
    const std::uint32_t p = n.parent;
    if (p != kNil) {
      unlink(nodes_[p].first_child, b);
      return --nodes_[p].children == 0 ? p : kNil;
    }
    std::uint32_t* head = orphans_.find_value(n.parent_hash);
    if (head == nullptr) return kNil;  // cannot happen: an orphan is always listed
    if (*head == b && n.next == kNil) {
      (void)orphans_.erase(n.parent_hash);  // the last orphan of that hash (kNil would mean an empty slot)
      n.prev = kNil;
    } else {
      unlink(*head, b);
    }
    return kNil;
  }

  /// Children of `b` registered in this tier.
  [[nodiscard]] std::uint32_t children(std::uint32_t b) const noexcept { return nodes_[b].children; }
  /// The hash `b` was last added as.
  [[nodiscard]] SequenceHash hash(std::uint32_t b) const noexcept { return nodes_[b].hash; }
  /// The caller's state of block `b` (kept across add and remove).
  [[nodiscard]] Payload& payload(std::uint32_t b) noexcept { return nodes_[b].payload; }
  [[nodiscard]] const Payload& payload(std::uint32_t b) const noexcept { return nodes_[b].payload; }
  /// The whole node of `b`, to read several fields at once.
  [[nodiscard]] const Node& node(std::uint32_t b) const noexcept { return nodes_[b]; }

 private:
  void push_front(std::uint32_t& head, std::uint32_t b) noexcept {
    Node& n = nodes_[b];
    n.next = head;
    n.prev = kNil;
    if (head != kNil) nodes_[head].prev = b;
    head = b;
  }
  void unlink(std::uint32_t& head, std::uint32_t b) noexcept {
    Node& n = nodes_[b];
    if (n.prev != kNil)
      nodes_[n.prev].next = n.next;
    else
      head = n.next;
    if (n.next != kNil) nodes_[n.next].prev = n.prev;
    n.next = n.prev = kNil;
  }

  HashRegistry orphans_;  // parent hash -> first orphan child (siblings linked by next/prev)
  std::vector<Node> nodes_;
};

}  // namespace kvb::detail
