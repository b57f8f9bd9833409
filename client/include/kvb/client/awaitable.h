// Completion-token forms of Session's requests, for Asio coroutines and
// futures: `auto r = co_await kvb::client::lookup(session, hashes, false,
// asio::use_awaitable);` gives a Result<LookupResult>. Any Asio completion
// token works (use_awaitable, use_future, deferred, a callback). Each resolves
// exactly once, like the callback it wraps, on the token's associated
// executor (the coroutine's, when it has one; else the session's strand).
// The Session must outlive the operation.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>

#include "kvb/client/session.h"

namespace kvb::client {

namespace detail {

/// async_initiate over a Session request that takes a Callback<T>.
template <class T, class Token, class Start>
auto initiate(Session& session, Start start, Token&& token) {
  return boost::asio::async_initiate<Token, void(Result<T>)>(
      [&session](auto handler, Start start_request) {
        using Handler = std::decay_t<decltype(handler)>;
        auto shared = std::make_shared<Handler>(std::move(handler));
        start_request([shared, fallback = session.executor()](Result<T> result) {
          auto ex = boost::asio::get_associated_executor(*shared, fallback);
          boost::asio::dispatch(ex, [shared, result = std::move(result)]() mutable {
            Handler h = std::move(*shared);
            std::move(h)(std::move(result));
          });
        });
      },
      token, std::move(start));
}

}  // namespace detail

template <class Token>
auto hello(Session& s, HelloParams params, Token&& token) {
  return detail::initiate<HelloInfo>(
      s, [&s, params = std::move(params)](Callback<HelloInfo> cb) { s.async_hello(params, std::move(cb)); },
      std::forward<Token>(token));
}

/// `region` must outlive the session's use of it.
template <class Token>
auto register_kv(Session& s, const KvRegion& region, Token&& token) {
  return detail::initiate<void>(
      s, [&s, &region](Callback<void> cb) { s.async_register_kv(region, std::move(cb)); }, std::forward<Token>(token));
}

template <class Token>
auto lookup(Session& s, std::vector<std::uint64_t> hashes, bool pin, Token&& token) {
  return detail::initiate<LookupResult>(
      s,
      [&s, hashes = std::move(hashes), pin](Callback<LookupResult> cb) { s.async_lookup(hashes, pin, std::move(cb)); },
      std::forward<Token>(token));
}

/// Resolves with the pushed notification's outcome.
template <class Token>
auto offload(Session& s, std::vector<OffloadItem> items, Token&& token) {
  return detail::initiate<void>(
      s, [&s, items = std::move(items)](Callback<void> cb) { s.async_offload(items, std::move(cb)); },
      std::forward<Token>(token));
}

/// Resolves with the pushed notification's outcome.
template <class Token>
auto onboard(Session& s, std::vector<OnboardItem> items, Token&& token) {
  return detail::initiate<void>(
      s, [&s, items = std::move(items)](Callback<void> cb) { s.async_onboard(items, std::move(cb)); },
      std::forward<Token>(token));
}

template <class Token>
auto release(Session& s, std::vector<std::uint64_t> hashes, Token&& token) {
  return detail::initiate<std::uint32_t>(
      s, [&s, hashes = std::move(hashes)](Callback<std::uint32_t> cb) { s.async_release(hashes, std::move(cb)); },
      std::forward<Token>(token));
}

template <class Token>
auto stats(Session& s, Token&& token) {
  return detail::initiate<std::string>(
      s, [&s](Callback<std::string> cb) { s.async_stats(std::move(cb)); }, std::forward<Token>(token));
}

template <class Token>
auto bye(Session& s, Token&& token) {
  return detail::initiate<void>(
      s, [&s](Callback<void> cb) { s.async_bye(std::move(cb)); }, std::forward<Token>(token));
}

}  // namespace kvb::client
