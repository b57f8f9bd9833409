#include <cstring>

#include "kvb/blockmgr/copy_engine.h"

namespace kvb {

void SyncHostCopyEngine::submit(TransferPlan plan, CopyDone done) {
  if (!supports(plan.src().kind(), plan.dst().kind())) {
    done(fail(Errc::unsupported, "sync-host engine cannot copy {} -> {} memory", to_string(plan.src().kind()),
              to_string(plan.dst().kind())));
    return;
  }
  for (const auto& run : plan.runs()) std::memcpy(plan.dst_address(run), plan.src_address(run), run.bytes);
  done(ok());
}

}  // namespace kvb
