#include "kvb/kernels/host_copy_engine.h"

#include <algorithm>
#include <cstring>

#include "finish_copy.h"
#include "stream_copy.h"

namespace kvb {

struct HostCopyEngine::Job {
  TransferPlan plan;
  CopyDone done;
  std::vector<std::uint64_t> run_starts;  // byte offset of each run in the concatenated plan
  std::atomic<std::uint64_t> remaining{0};
  bool streaming = false;

  Job(TransferPlan p, CopyDone d) : plan(std::move(p)), done(std::move(d)) {}
};

HostCopyEngine::HostCopyEngine(HostCopyEngineOptions options) : options_(options) {
  if (options_.workers == 0) options_.workers = std::max(1U, std::thread::hardware_concurrency());
  if (options_.min_piece_bytes == 0) options_.min_piece_bytes = 1;
  threads_.reserve(options_.workers);
  try {
    for (unsigned i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

HostCopyEngine::~HostCopyEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

std::uint64_t HostCopyEngine::pieces_for(std::uint64_t bytes) const noexcept {
  const std::uint64_t by_size = bytes / options_.min_piece_bytes;
  return std::clamp<std::uint64_t>(by_size, 1, threads_.size());
}

HostCopyEngineStats HostCopyEngine::stats() const noexcept {
  return {plans_.load(std::memory_order_relaxed), pieces_.load(std::memory_order_relaxed),
          bytes_.load(std::memory_order_relaxed)};
}

void HostCopyEngine::submit(TransferPlan plan, CopyDone done) {
  if (!supports(plan.src().kind(), plan.dst().kind())) {
    detail::finish_copy(name(), done,
                        fail(Errc::unsupported, "host copy engine cannot copy {} -> {} memory",
                             to_string(plan.src().kind()), to_string(plan.dst().kind())));
    return;
  }
  const std::uint64_t total = plan.total_bytes();
  if (total == 0) {
    detail::finish_copy(name(), done, ok());
    return;
  }
  auto job = std::make_shared<Job>(std::move(plan), std::move(done));
  job->run_starts.reserve(job->plan.runs().size());
  std::uint64_t at = 0;
  for (const auto& run : job->plan.runs()) {
    job->run_starts.push_back(at);
    at += run.bytes;
  }
  job->streaming = total >= options_.streaming_min_plan_bytes;
  const std::uint64_t pieces = pieces_for(total);
  job->remaining.store(pieces, std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      // Only reachable from a `done` that submits during destruction.
      detail::finish_copy(name(), job->done, fail(Errc::shutting_down, "host copy engine is shutting down"));
      return;
    }
    // Piece boundaries at multiples of 64 bytes keep streaming stores whole.
    const std::uint64_t step = (total / pieces + 63) / 64 * 64;
    for (std::uint64_t p = 0; p < pieces; ++p) {
      const std::uint64_t begin = std::min(total, p * step);
      const std::uint64_t end = p + 1 == pieces ? total : std::min(total, (p + 1) * step);
      queue_.push_back({job, begin, end});
    }
  }
  if (pieces == 1) {
    wake_.notify_one();
  } else {
    wake_.notify_all();
  }
}

void HostCopyEngine::worker_loop() {
  for (;;) {
    Piece piece;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      piece = std::move(queue_.front());
      queue_.pop_front();
    }
    run_piece(piece);
    Job& job = *piece.job;
    if (job.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      plans_.fetch_add(1, std::memory_order_relaxed);
      detail::finish_copy(name(), job.done, ok());
    }
  }
}

void HostCopyEngine::run_piece(const Piece& piece) {
  Job& job = *piece.job;
  const auto runs = job.plan.runs();
  // First run that holds byte `begin`.
  std::size_t idx = static_cast<std::size_t>(
      std::upper_bound(job.run_starts.begin(), job.run_starts.end(), piece.begin) - job.run_starts.begin() - 1);
  std::uint64_t pos = piece.begin;
  // Streaming copies are handed over in batches so that short runs can be
  // copied four at a time (stream_copy_segments).
  constexpr std::size_t kBatch = 64;
  detail::CopySegment batch[kBatch];
  std::size_t batched = 0;
  bool streamed = false;
  while (pos < piece.end) {
    const CopyRun& run = runs[idx];
    const std::uint64_t off = pos - job.run_starts[idx];
    const std::uint64_t n = std::min(run.bytes - off, piece.end - pos);
    std::byte* dst = job.plan.dst_address(run) + off;
    const std::byte* src = job.plan.src_address(run) + off;
    if (job.streaming && n >= options_.streaming_min_copy_bytes) {
      batch[batched++] = {dst, src, static_cast<std::size_t>(n)};
      if (batched == kBatch) {
        detail::stream_copy_segments(batch, batched);
        batched = 0;
      }
      streamed = true;
    } else {
      std::memcpy(dst, src, n);
    }
    pos += n;
    ++idx;
  }
  if (batched != 0) detail::stream_copy_segments(batch, batched);
  if (streamed) detail::stream_fence();
  pieces_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(piece.end - piece.begin, std::memory_order_relaxed);
}

}  // namespace kvb
