// HashRegistry: SequenceHash -> a 32-bit value, one entry per hash: the
// block registered as the hash for a tier's registry, a ring slot for a
// ghost, a count for the prefix policy. A fixed-size open-addressing table
// (linear probing, backward-shift deletion) sized for its maximum, so it
// never rehashes and never allocates after construction. Values are never
// kNil (it marks empty slots). Private to blockmgr/src.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "intrusive_fifo.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/mix64.h"

namespace kvb::detail {

class HashRegistry {
 public:
  /// A table for at most `max_entries` entries at load factor <= 1/2.
  explicit HashRegistry(std::uint32_t max_entries)
      : mask_(std::bit_ceil(std::max<std::uint64_t>(16, std::uint64_t{max_entries} * 2)) - 1),
        shift_(64 - std::countr_zero(mask_ + 1)),
        slots_(mask_ + 1) {}

  [[nodiscard]] std::uint32_t size() const noexcept { return size_; }

  /// The block registered as `hash`, or kNil.
  [[nodiscard]] std::uint32_t find(SequenceHash hash) const noexcept {
    for (std::uint64_t i = home(hash);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.block == kNil) return kNil;
      if (s.key == hash.value()) return s.block;
    }
  }
  [[nodiscard]] bool contains(SequenceHash hash) const noexcept { return find(hash) != kNil; }

  /// Asks for the first slot `hash` probes to be in cache soon (a hint).
  void prefetch(SequenceHash hash) const noexcept { __builtin_prefetch(&slots_[home(hash)]); }

  /// The value of `hash`, writable in place (not to kNil); nullptr when
  /// absent. Valid until the next insert or erase.
  [[nodiscard]] std::uint32_t* find_value(SequenceHash hash) noexcept {
    for (std::uint64_t i = home(hash);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.block == kNil) return nullptr;
      if (s.key == hash.value()) return &s.block;
    }
  }

  /// Adds hash -> block (a value). Precondition: `hash` is absent, block != kNil
  /// and size() < max_entries.
  void insert(SequenceHash hash, std::uint32_t block) noexcept {
    std::uint64_t i = home(hash);
    while (slots_[i].block != kNil) i = (i + 1) & mask_;
    slots_[i] = Slot{hash.value(), block};
    ++size_;
  }

  /// Calls fn(hash) for every registered hash (table order).
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (const Slot& s : slots_) {
      if (s.block != kNil) fn(SequenceHash{s.key});
    }
  }

  /// Removes `hash`; false when it was absent.
  bool erase(SequenceHash hash) noexcept {
    std::uint64_t i = home(hash);
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].block == kNil) return false;
      if (slots_[i].key == hash.value()) break;
    }
    // Backward shift: pull later entries of the probe run into the hole.
    std::uint64_t hole = i;
    for (std::uint64_t j = (i + 1) & mask_; slots_[j].block != kNil; j = (j + 1) & mask_) {
      const std::uint64_t want = home(SequenceHash{slots_[j].key});
      // Move j into the hole if its home is not in (hole, j] cyclically.
      const bool stays = hole <= j ? (want > hole && want <= j) : (want > hole || want <= j);
      if (!stays) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole] = Slot{};
    --size_;
    return true;
  }

 private:
  struct Slot {
    std::uint64_t key = 0;
    std::uint32_t block = kNil;  // kNil = empty
  };
  // The murmur3 finalizer, so that structured keys (sequential trace ids,
  // multiples of a constant) spread as well as random xxh3 values.
  [[nodiscard]] std::uint64_t home(SequenceHash hash) const noexcept { return fmix64(hash.value()) >> shift_; }

  std::uint64_t mask_;
  int shift_;
  std::vector<Slot> slots_;
  std::uint32_t size_ = 0;
};

}  // namespace kvb::detail
