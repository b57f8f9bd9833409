// LayerGroups: the plans of one (layer-wise) onboard and the order in which
// their completions are announced.
//
// An onboard_layers request copies its blocks' layers in groups of
// `layers_per_group` (the last group may be smaller), one plan per group.
// Engines may finish the plans in any order (the host engine's workers do);
// progress is reported strictly in layer order: group g is announced once
// groups 0..g have all completed, and nothing is announced after a failure.
// Event-loop thread only; O(1) amortized per completion.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "kvb/blockmgr/transfer_plan.h"
#include "kvb/common/error.h"

namespace kvb::daemon {

class LayerGroups {
 public:
  /// Announces layers [first, first + count) of every block.
  using Announce = std::function<void(LayerRange)>;

  /// `layers_per_group` 0 means one group of every layer.
  LayerGroups(std::uint32_t num_layers, std::uint32_t layers_per_group) : num_layers_(num_layers) {
    const std::uint32_t step = layers_per_group == 0 ? num_layers : layers_per_group;
    for (std::uint32_t first = 0; first < num_layers; first += step)
      ranges_.push_back({first, first + step <= num_layers ? step : num_layers - first});
    done_.assign(ranges_.size(), false);
  }

  [[nodiscard]] std::size_t size() const noexcept { return ranges_.size(); }
  [[nodiscard]] LayerRange range(std::size_t group) const noexcept { return ranges_[group]; }
  [[nodiscard]] std::uint32_t num_layers() const noexcept { return num_layers_; }

  /// Group `group`'s plan ended with `status`: announces every group that
  /// is now complete in order (none once a group failed). Returns true when
  /// every group has ended (ok or not).
  bool finish(std::size_t group, const Status& status, const Announce& announce) {
    ++ended_;
    if (!status) {
      if (!error_) error_ = status.error();
    } else {
      done_[group] = true;
    }
    while (!error_ && announced_ < ranges_.size() && done_[announced_]) {
      if (announce) announce(ranges_[announced_]);
      ++announced_;
    }
    return ended_ == ranges_.size();
  }

  /// The first failure, if any group failed.
  [[nodiscard]] const std::optional<Error>& error() const noexcept { return error_; }
  /// Groups announced so far (a prefix, in layer order).
  [[nodiscard]] std::size_t announced() const noexcept { return announced_; }

 private:
  std::uint32_t num_layers_;
  std::vector<LayerRange> ranges_;
  std::vector<bool> done_;
  std::size_t announced_ = 0;
  std::size_t ended_ = 0;
  std::optional<Error> error_;
};

}  // namespace kvb::daemon
