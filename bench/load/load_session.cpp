#include "load_session.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "kvb/common/mix64.h"

namespace kvb::bench {

namespace {

using kvb::mix64;

/// Per-thread replay cursor and hit counters (one io thread each).
thread_local std::size_t t_trace_cursor = 0;

}  // namespace

std::vector<std::uint64_t> shared_prefix(std::uint64_t salt, std::uint32_t blocks) {
  std::vector<std::uint64_t> hashes(blocks);
  std::uint64_t h = salt;
  for (std::uint32_t i = 0; i < blocks; ++i) hashes[i] = h = mix64(h ^ (0x9F1Eull + i));
  return hashes;
}

LoadSession::LoadSession(boost::asio::io_context& io, LoadContext& ctx, std::uint32_t index)
    : io_(io), ctx_(ctx), index_(index), timer_(io), rng_(mix64(index + 1)) {}

void LoadSession::setup_failed(const char* step, const Error& e) {
  if (ctx_.counters->setup_errors.fetch_add(1) < 5)
    std::fprintf(stderr, "load: session %u: %s failed: %s\n", index_, step, e.to_string().c_str());
  if (session_) session_->close();
  auto done = std::move(setup_done_);
  if (done) done(false);
}

void LoadSession::start(std::function<void(bool)> setup_done) {
  setup_done_ = std::move(setup_done);
  const LoadConfig& cfg = *ctx_.config;
  auto region = client::KvRegion::create(cfg.shape, client::WireLayoutKind::fully_contiguous, region_blocks(cfg));
  if (!region) return setup_failed("kv region", region.error());
  region_.emplace(std::move(*region));
  if (cfg.mix != LoadMix::lookup) {
    // An engine offloads KV it wrote and onboards into a cache it allocated
    // (and zeroed): its region's pages exist before kvblockd reads or
    // writes them. Untouched memfd pages would be allocated by kvblockd's
    // first copies instead (kvblockd-bench daemon measures that case).
    for (std::uint32_t b = 0; b < region_->num_blocks(); ++b)
      for (std::uint32_t l = 0; l < region_->shape().num_layers; ++l)
        for (std::uint32_t o = 0; o < region_->shape().outer_dim; ++o) {
          auto chunk = region_->chunk(b, l, o);
          std::memset(chunk.data(), static_cast<int>((index_ + b) & 0xFF), chunk.size());
        }
  }
  client::Session::async_connect(io_.get_executor(), cfg.socket, [self = shared_from_this()](auto s) {
    if (!s) return self->setup_failed("connect", s.error());
    self->session_ = std::move(*s);
    client::HelloParams hello;
    hello.client_name = "kvblockd-bench-load";
    hello.tenant_salt = self->ctx_.config->tenant_salt;
    hello.shape = self->ctx_.config->shape;
    self->session_->async_hello(hello, [self](Result<client::HelloInfo> info) {
      if (!info) return self->setup_failed("hello", info.error());
      // A lookup-only session has no engine blocks to move: it needs no KV
      // region, which keeps 10,000 sessions within the daemon's fd limit.
      const LoadConfig& c = *self->ctx_.config;
      if (c.register_kv == "auto" && c.mix == LoadMix::lookup && self->index_ != 0) {
        self->region_->close_fds();
        auto done = std::move(self->setup_done_);
        return done(true);
      }
      self->session_->async_register_kv(*self->region_, [self](Status st) {
        if (!st) return self->setup_failed("register_kv", st.error());
        if (self->index_ == 0 && self->ctx_.config->mix != LoadMix::replay) return self->seed(0);
        auto done = std::move(self->setup_done_);
        done(true);
      });
      self->region_->close_fds();  // register_kv sent its own copies: keep 10,000 sessions under the fd limit
    });
  });
}

std::uint32_t region_blocks(const LoadConfig& cfg) {
  return std::max({std::min(cfg.prefix_blocks, kMaxPrefixRegionBlocks), cfg.onboard_blocks, cfg.offload_blocks}) + 1;
}

// Session 0 writes and offloads the shared prefix that lookups and onboards
// hit, as many blocks at a time as its region holds.
void LoadSession::seed(std::uint32_t first) {
  const auto& prefix = *ctx_.prefix;
  if (first >= prefix.size()) {
    auto done = std::move(setup_done_);
    return done(true);
  }
  std::vector<client::OffloadItem> items;
  const auto n = std::min<std::uint32_t>(region_->num_blocks(), static_cast<std::uint32_t>(prefix.size()) - first);
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t b = first + i;
    for (std::uint32_t l = 0; l < region_->shape().num_layers; ++l)
      for (std::uint32_t o = 0; o < region_->shape().outer_dim; ++o) {
        auto chunk = region_->chunk(i, l, o);
        std::memset(chunk.data(), static_cast<int>((b * 31 + l * 7 + o) & 0xFF), chunk.size());
      }
    items.push_back({BlockId{i}, prefix[b]});
  }
  session_->async_offload(items, [self = shared_from_this(), next = first + n](Status st) {
    if (!st) return self->setup_failed("seeding the shared prefix (offload)", st.error());
    self->seed(next);
  });
}

void LoadSession::run() {
  const LoadConfig& cfg = *ctx_.config;
  next_send_ = Clock::now();
  if (cfg.rate > 0) {
    interval_ = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.sessions / cfg.rate));
    // Spread the sessions' first sends over one interval.
    std::uniform_int_distribution<Clock::rep> jitter(0, std::max<Clock::rep>(interval_.count(), 1));
    next_send_ += Clock::duration(jitter(rng_));
  }
  schedule_next();
}

void LoadSession::schedule_next() {
  if (ctx_.counters->stopping.load(std::memory_order_relaxed)) return;
  if (interval_ == Clock::duration::zero()) return issue();
  // A session whose answer came late sends at once but does not catch up on
  // the sends it missed: bursts would only grow the queue it waited in.
  const auto now = Clock::now();
  if (next_send_ < now) next_send_ = now;
  timer_.expires_at(next_send_);
  next_send_ += interval_;
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->issue();
  });
}

void LoadSession::completed(Clock::time_point sent, const Status& result, const char* op, Moved moved,
                            std::uint64_t bytes) {
  outstanding_ = false;
  LoadCounters& c = *ctx_.counters;
  if (c.measuring.load(std::memory_order_relaxed)) {
    if (result) {
      const auto now = Clock::now();
      ctx_.histogram.record(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count()));
      c.ops.fetch_add(1, std::memory_order_relaxed);
      if (moved == Moved::offload) {
        c.offload_bytes.fetch_add(bytes, std::memory_order_relaxed);
        c.offload_ops.fetch_add(1, std::memory_order_relaxed);
      } else if (moved == Moved::onboard) {
        c.onboard_bytes.fetch_add(bytes, std::memory_order_relaxed);
        c.onboard_ops.fetch_add(1, std::memory_order_relaxed);
      }
      if (moved != Moved::none && !std::exchange(moved_, true)) ctx_.first_moves.push_back({bytes, now});
    } else {
      if (c.errors.fetch_add(1, std::memory_order_relaxed) < 5)
        std::fprintf(stderr, "load: session %u: %s failed: %s\n", index_, op, result.error().to_string().c_str());
    }
  }
  schedule_next();
}

void LoadSession::issue() {
  if (ctx_.counters->stopping.load(std::memory_order_relaxed) || !session_->is_open()) return;
  const LoadConfig& cfg = *ctx_.config;
  const auto& prefix = *ctx_.prefix;
  LoadMix op = cfg.mix;
  if (op == LoadMix::mixed) {  // 60 % lookup, 20 % onboard, 20 % offload
    const auto r = rng_() % 10;
    op = r < 6 ? LoadMix::lookup : (r < 8 ? LoadMix::onboard : LoadMix::offload);
  }
  outstanding_ = true;
  const auto sent = Clock::now();
  auto self = shared_from_this();
  switch (op) {
    case LoadMix::lookup:
      session_->async_lookup(prefix, false, [self, sent](Result<client::LookupResult> r) {
        Status st = r ? ok() : Status(tl::unexpected(r.error()));
        if (r && r->prefix_blocks != self->ctx_.prefix->size())
          st = fail(Errc::internal, "lookup matched {} of {} prefix blocks", r->prefix_blocks,
                    self->ctx_.prefix->size());
        self->completed(sent, st, "lookup");
      });
      return;
    case LoadMix::onboard: {
      // Blocks of the prefix in turn, each session from its own place: the
      // sources are the whole prefix's, not a few blocks that stay in the
      // caches (give it more than the last-level cache: --prefix-blocks).
      std::vector<client::OnboardItem> items;
      const auto p = static_cast<std::uint32_t>(prefix.size());
      const std::uint32_t n = std::min<std::uint32_t>(cfg.onboard_blocks, p);
      const std::uint64_t first = (std::uint64_t{index_} * 7919 + onboards_++ * n) % (p - n + 1);
      for (std::uint32_t i = 0; i < n; ++i) items.push_back({prefix[first + i], BlockId{i}});
      const std::uint64_t bytes = n * client::block_bytes(cfg.shape);
      session_->async_onboard(items, [self, sent, bytes](const Status& st) {
        self->completed(sent, st, "onboard", Moved::onboard, bytes);
      });
      return;
    }
    case LoadMix::offload: {
      // Fresh hashes from the region's blocks in turn: the source bytes are
      // the whole region's, not one block's that would stay in the caches.
      std::vector<client::OffloadItem> items;
      for (std::uint32_t i = 0; i < cfg.offload_blocks; ++i) {
        const std::uint64_t k = counter_++;
        items.push_back({BlockId{static_cast<std::uint32_t>(k % region_->num_blocks())},
                         mix64((std::uint64_t{index_} << 32) ^ k ^ 0x0FF10ADULL)});
      }
      const std::uint64_t bytes = items.size() * client::block_bytes(cfg.shape);
      session_->async_offload(items, [self, sent, bytes](const Status& st) {
        self->completed(sent, st, "offload", Moved::offload, bytes);
      });
      return;
    }
    case LoadMix::replay: {
      // Engine behaviour on one trace request: look the prefix up, then offload
      // the blocks it missed (as many as the engine region holds).
      const auto& trace = *ctx_.trace;
      if (cfg.passes > 0 && static_cast<double>(t_trace_cursor) >= cfg.passes * static_cast<double>(trace.size())) {
        outstanding_ = false;  // this thread's passes are done: the session stops
        return;
      }
      const auto& ids = trace[t_trace_cursor++ % trace.size()];
      session_->async_lookup(ids, false, [self, sent, &ids](Result<client::LookupResult> r) {
        if (!r) return self->completed(sent, tl::unexpected(r.error()), "replay lookup");
        if (self->ctx_.counters->measuring.load(std::memory_order_relaxed)) {
          self->ctx_.counters->replay_requests.fetch_add(1, std::memory_order_relaxed);
          self->ctx_.counters->replay_blocks.fetch_add(ids.size(), std::memory_order_relaxed);
          self->ctx_.counters->replay_hit_blocks.fetch_add(r->prefix_blocks, std::memory_order_relaxed);
        }
        std::vector<client::OffloadItem> items;
        const std::uint32_t cap = self->region_->num_blocks();
        for (std::size_t i = r->prefix_blocks; i < ids.size() && items.size() < cap; ++i)
          items.push_back({BlockId{static_cast<std::uint32_t>(items.size())}, ids[i]});
        if (items.empty()) return self->completed(sent, ok(), "replay");
        const std::uint64_t bytes = items.size() * client::block_bytes(self->ctx_.config->shape);
        self->session_->async_offload(items, [self, sent, bytes](const Status& st) {
          self->completed(sent, st, "replay offload", Moved::offload, bytes);
        });
      });
      return;
    }
    case LoadMix::mixed: break;
  }
}

void LoadSession::finish() {
  timer_.cancel();
  if (!session_ || !session_->is_open()) return;
  session_->async_bye([self = shared_from_this()](const Status&) { self->session_->close(); });
}

}  // namespace kvb::bench
