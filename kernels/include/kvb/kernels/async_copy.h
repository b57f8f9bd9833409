// Asio adaptor for CopyEngine::submit: async_copy(engine, plan, token).
//
// The completion signature is void(kvb::Status). The handler runs on its
// associated executor (for `asio::use_awaitable`, the coroutine's executor;
// for a callback, the executor bound with asio::bind_executor, else the
// system executor), always through asio::post, never inline inside
// async_copy and never on an engine thread. While the copy is in flight the
// executor has outstanding work, so io_context::run() does not return early.
// Nothing blocks: the engine's completion only posts the handler.
//
// Complete means what CopyEngine's contract says (kvb/blockmgr/copy_engine.h):
// a Status that is ok means every destination byte is written and visible.
#pragma once

#include <memory>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include "kvb/blockmgr/copy_engine.h"

namespace kvb {

/// Submits `plan` to `engine`; completes with the plan's Status on the
/// handler's executor. Safe from any thread. `engine` must outlive the copy.
template <class CompletionToken>
auto async_copy(CopyEngine& engine, TransferPlan plan, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(Status)>(
      // The token decides whether the plan arrives as an lvalue or an rvalue.
      // NOLINTNEXTLINE(performance-unnecessary-value-param)
      [&engine](auto handler, TransferPlan p) {
        using Handler = decltype(handler);
        auto ex = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                      boost::asio::execution::outstanding_work.tracked);
        // CopyDone is a std::function (copyable); the handler may be move-only.
        auto shared = std::make_shared<Handler>(std::move(handler));
        engine.submit(std::move(p), [shared, ex = std::move(ex)](Status status) mutable {
          boost::asio::post(ex, [shared, status = std::move(status)]() mutable {
            Handler h = std::move(*shared);
            std::move(h)(std::move(status));
          });
        });
      },
      token, std::move(plan));
}

}  // namespace kvb
