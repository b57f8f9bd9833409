#include "kvb/blockmgr/pool.h"

#include <cstdint>

namespace kvb {

std::string_view to_string(BlockState state) noexcept {
  switch (state) {
    case BlockState::free: return "free";
    case BlockState::partial: return "partial";
    case BlockState::complete: return "complete";
    case BlockState::registered: return "registered";
  }
  return "unknown";
}

Result<std::unique_ptr<Pool>> Pool::make(PoolId id, Layout layout, std::unique_ptr<MemoryRegion> region) {
  if (layout.kind() != LayoutKind::fully_contiguous)
    return fail(Errc::invalid_argument, "pool {}: layout kind must be fully_contiguous (got {})", id,
                to_string(layout.kind()));
  if (!region) return fail(Errc::invalid_argument, "pool {}: region must not be null", id);
  if (region->size() < layout.region_bytes())
    return fail(Errc::invalid_argument, "pool {}: region size {} is smaller than the layout's {} bytes ({} blocks)", id,
                region->size(), layout.region_bytes(), layout.num_blocks());
  const auto base = reinterpret_cast<std::uintptr_t>(region->data());
  if (base % layout.spec().alignment != 0)
    return fail(Errc::invalid_argument, "pool {}: region base {:#x} is not aligned to the layout's alignment {}", id,
                base, layout.spec().alignment);
  return std::unique_ptr<Pool>(new Pool(id, layout, std::move(region)));
}

Result<std::unique_ptr<Pool>> Pool::make_without_memory(PoolId id, Layout layout) {
  if (layout.kind() != LayoutKind::fully_contiguous)
    return fail(Errc::invalid_argument, "pool {}: layout kind must be fully_contiguous (got {})", id,
                to_string(layout.kind()));
  return std::unique_ptr<Pool>(new Pool(id, layout, nullptr));
}

Pool::Pool(PoolId id, Layout layout, std::unique_ptr<MemoryRegion> region)
    : id_(id), layout_(layout), region_(std::move(region)) {
  const std::uint32_t n = layout_.num_blocks();
  states_.assign(n, BlockState::free);
  free_list_.reserve(n);
  // Highest id at the bottom of the stack: blocks are handed out 0, 1, 2, ...
  for (std::uint32_t i = n; i > 0; --i) free_list_.emplace_back(i - 1);
  counts_[static_cast<std::size_t>(BlockState::free)] = n;
}

BlockSpace Pool::space() const { return BlockSpace{layout_, {RegionSpan::of(*region_)}}; }

std::byte* Pool::block_data(BlockId block) const noexcept {
  return region_->data() + layout_.chunk(block, 0, 0).offset;
}

void Pool::set_state(BlockId block, BlockState state) noexcept {
  auto& slot = states_[block.value()];
  --counts_[static_cast<std::size_t>(slot)];
  ++counts_[static_cast<std::size_t>(state)];
  slot = state;
}

Status Pool::check(BlockRef ref) const {
  if (ref.pool != id_)
    return fail(Errc::invalid_argument, "pool {}: block {} belongs to pool {}, not this one", id_, ref.block, ref.pool);
  if (ref.block.value() >= capacity())
    return fail(Errc::invalid_argument, "pool {}: block {} is out of range (capacity {})", id_, ref.block, capacity());
  return ok();
}

Result<BlockRef> Pool::allocate() {
  if (free_list_.empty()) return fail(Errc::out_of_capacity, "pool {}: all {} blocks are in use", id_, capacity());
  const BlockId block = free_list_.back();
  free_list_.pop_back();
  set_state(block, BlockState::partial);
  return BlockRef{id_, block};
}

Status Pool::free(BlockRef ref) {
  if (auto s = check(ref); !s) return s;
  if (states_[ref.block.value()] == BlockState::free)
    return fail(Errc::wrong_state, "pool {}: double free of block {}", id_, ref.block);
  set_state(ref.block, BlockState::free);
  free_list_.push_back(ref.block);
  return ok();
}

Status Pool::mark_complete(BlockRef ref) {
  if (auto s = check(ref); !s) return s;
  const BlockState st = states_[ref.block.value()];
  if (st != BlockState::partial)
    return fail(Errc::wrong_state, "pool {}: block {} is {}, only a partial block can become complete", id_, ref.block,
                to_string(st));
  set_state(ref.block, BlockState::complete);
  return ok();
}

Status Pool::mark_registered(BlockRef ref) {
  if (auto s = check(ref); !s) return s;
  const BlockState st = states_[ref.block.value()];
  if (st != BlockState::complete)
    return fail(Errc::wrong_state, "pool {}: block {} is {}, only a complete block can be registered", id_, ref.block,
                to_string(st));
  set_state(ref.block, BlockState::registered);
  return ok();
}

Status Pool::mark_unregistered(BlockRef ref) {
  if (auto s = check(ref); !s) return s;
  const BlockState st = states_[ref.block.value()];
  if (st != BlockState::registered)
    return fail(Errc::wrong_state, "pool {}: block {} is {}, only a registered block can be unregistered", id_,
                ref.block, to_string(st));
  set_state(ref.block, BlockState::complete);
  return ok();
}

Status Pool::claim(std::span<const BlockId> blocks) {
  std::vector<bool> taken(capacity(), false);
  for (BlockId b : blocks) {
    if (b.value() >= capacity())
      return fail(Errc::invalid_argument, "pool {}: block {} is out of range (capacity {})", id_, b, capacity());
    if (states_[b.value()] != BlockState::free || taken[b.value()])
      return fail(Errc::wrong_state, "pool {}: block {} cannot be claimed: it is not free", id_, b);
    taken[b.value()] = true;
  }
  for (BlockId b : blocks) set_state(b, BlockState::partial);
  std::erase_if(free_list_, [&](BlockId b) { return taken[b.value()]; });
  return ok();
}

Result<BlockState> Pool::state(BlockRef ref) const {
  if (auto s = check(ref); !s) return tl::unexpected(s.error());
  return states_[ref.block.value()];
}

}  // namespace kvb
