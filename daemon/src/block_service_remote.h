// BlockService::RemoteOnboard: an engine onboard some of whose blocks other
// workers hold, while they are fetched (block_service_remote.cpp) or
// borrowed. Internal to the BlockService's two source files.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "block_service.h"

namespace kvb::daemon {

struct BlockService::RemoteOnboard {
  std::shared_ptr<EngineKv> kv;
  std::shared_ptr<BlockLeases> held;  // an empty lease per missing item
  std::vector<BlockPair> pairs;       // no source yet per missing item
  std::vector<proto::OnboardItem> items;
  std::vector<std::size_t> on_disk;
  std::vector<std::size_t> missing;  // items other workers hold
  std::vector<SequenceHash> missing_keys;
  OnboardProgress progress;
  std::shared_ptr<OpControl> control;
  Done done;
  // A fetch in parts (fetch_then_copy): all of them within one deadline.
  std::chrono::steady_clock::time_point deadline{};
  std::size_t part_blocks = 0;
  bool by_transport = false;
  bool fetches_ended = false;      // the last part arrived, or a part failed
  std::size_t copies_running = 0;  // earlier parts' copies into the engine
  std::optional<Error> error;
};

}  // namespace kvb::daemon
