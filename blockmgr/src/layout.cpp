#include "kvb/blockmgr/layout.h"

namespace kvb {

Result<Layout> Layout::make(const LayoutSpec& spec, LayoutKind kind, std::uint32_t num_blocks) {
  auto geometry = make_geometry(spec, kind, num_blocks);
  if (!geometry) return tl::unexpected(geometry.error());
  return Layout(spec, *geometry);
}

}  // namespace kvb
