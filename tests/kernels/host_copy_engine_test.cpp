// HostCopyEngine against the naive byte-by-byte reference.
#include "kvb/kernels/host_copy_engine.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "block_space_fixture.h"

namespace kvb {
namespace {

using namespace std::chrono_literals;

// Submits and waits (bounded) for the one completion.
Status run_and_wait(CopyEngine& engine, TransferPlan plan) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  engine.submit(std::move(plan), [&promise](Status s) { promise.set_value(std::move(s)); });
  if (future.wait_for(60s) != std::future_status::ready) return fail(Errc::timeout, "copy did not complete in 60 s");
  return future.get();
}

// Options that split even tiny plans into many pieces and stream every copy.
HostCopyEngineOptions splitting_options() {
  HostCopyEngineOptions o;
  o.workers = 3;
  o.min_piece_bytes = 64;
  o.streaming_min_copy_bytes = 16;
  o.streaming_min_plan_bytes = 0;
  return o;
}

TEST(HostCopyEngine, RandomLayoutsMatchNaiveReferenceForEveryLayoutPair) {
  HostCopyEngine split_engine(splitting_options());
  HostCopyEngine default_engine;
  std::mt19937_64 rng(1234);
  for (int iter = 0; iter < 80; ++iter) {
    const LayoutSpec spec = test::random_spec(rng);
    for (auto sk : test::kAllKinds) {
      for (auto dk : test::kAllKinds) {
        for (HostCopyEngine* engine : {&split_engine, &default_engine}) {
          const auto sb = 1 + static_cast<std::uint32_t>(rng() % 8), db = 1 + static_cast<std::uint32_t>(rng() % 8);
          test::HostSpace src(spec, sk, sb, static_cast<std::uint32_t>(rng() % 16));
          test::HostSpace dst(spec, dk, db, static_cast<std::uint32_t>(rng() % 16));
          src.fill(rng);
          dst.fill(rng);
          const auto pairs = test::random_pairs(rng, sb, db);
          const LayerRange layers = test::random_layers(rng, spec.num_layers);  // sometimes a layer group
          const auto want = test::naive_copy(src, dst, pairs, layers);
          auto plan = TransferPlan::build(src.space, dst.space, pairs, layers);
          ASSERT_TRUE(plan) << plan.error().to_string();
          auto st = run_and_wait(*engine, std::move(*plan));
          ASSERT_TRUE(st) << st.error().to_string();
          ASSERT_EQ(dst.storage, want) << to_string(sk) << " -> " << to_string(dk) << " outer " << spec.outer_dim
                                       << " chunk " << spec.chunk_bytes() << " layers " << layers.first << "+"
                                       << layers.count << " iteration " << iter;
        }
      }
    }
  }
}

TEST(HostCopyEngine, OddChunksAndMlaWithUnalignedTails) {
  HostCopyEngine engine(splitting_options());
  std::mt19937_64 rng(99);
  // 3-byte chunks (u8, 1 x 3) and f16 with an odd inner dim, MLA and K,V.
  const LayoutSpec specs[] = {
      {.num_layers = 4, .outer_dim = 1, .page_size = 1, .inner_dim = 3, .dtype = DType::u8, .alignment = 1},
      {.num_layers = 3, .outer_dim = 2, .page_size = 3, .inner_dim = 7, .dtype = DType::f16, .alignment = 16},
      {.num_layers = 5, .outer_dim = 1, .page_size = 5, .inner_dim = 129, .dtype = DType::f16, .alignment = 256}};
  for (const auto& spec : specs) {
    for (auto sk : test::kAllKinds) {
      for (auto dk : test::kAllKinds) {
        test::HostSpace src(spec, sk, 7, 5), dst(spec, dk, 6, 11);
        src.fill(rng);
        dst.fill(rng);
        const std::vector<BlockPair> pairs{
            {BlockId{6}, BlockId{0}}, {BlockId{2}, BlockId{5}}, {BlockId{3}, BlockId{1}}};
        const auto want = test::naive_copy(src, dst, pairs);
        auto plan = TransferPlan::build(src.space, dst.space, pairs);
        ASSERT_TRUE(plan) << plan.error().to_string();
        ASSERT_TRUE(run_and_wait(engine, std::move(*plan)));
        ASSERT_EQ(dst.storage, want) << to_string(sk) << " -> " << to_string(dk) << " chunk " << spec.chunk_bytes();
      }
    }
  }
}

TEST(HostCopyEngine, StreamingCopiesOfEverySizeAndAlignment) {
  // One chunk per block, one block: a single run of exactly `n` bytes, so
  // the streaming head (to a cache line), four-page groups, line body and
  // tail all get exercised, at every relative alignment.
  HostCopyEngineOptions o = splitting_options();
  o.workers = 1;
  o.min_piece_bytes = std::uint64_t{1} << 30;  // one piece: the whole run
  HostCopyEngine engine(o);
  std::mt19937_64 rng(8);
  for (std::uint32_t n : {1U, 63U, 64U, 65U, 4095U, 16384U, 16447U, 40000U, 70001U}) {
    for (std::uint32_t src_mis : {0U, 7U, 32U}) {
      for (std::uint32_t dst_mis : {0U, 3U, 48U}) {
        const LayoutSpec spec{
            .num_layers = 1, .outer_dim = 1, .page_size = 1, .inner_dim = n, .dtype = DType::u8, .alignment = 1};
        test::HostSpace src(spec, LayoutKind::fully_contiguous, 1, src_mis);
        test::HostSpace dst(spec, LayoutKind::fully_contiguous, 1, dst_mis);
        src.fill(rng);
        dst.fill(rng);
        const std::vector<BlockPair> pairs{{BlockId{0}, BlockId{0}}};
        const auto want = test::naive_copy(src, dst, pairs);
        auto plan = TransferPlan::build(src.space, dst.space, pairs);
        ASSERT_TRUE(plan);
        ASSERT_TRUE(run_and_wait(engine, std::move(*plan)));
        ASSERT_EQ(dst.storage, want) << n << " bytes, src+" << src_mis << " dst+" << dst_mis;
      }
    }
  }
}

TEST(HostCopyEngine, SplitsOneHugeRunAcrossWorkers) {
  HostCopyEngineOptions o;
  o.workers = 4;
  o.min_piece_bytes = 1 << 20;
  HostCopyEngine engine(o);
  // 16 consecutive fully contiguous blocks of 1 MiB: a single 16 MiB run.
  const LayoutSpec spec{.num_layers = 8, .outer_dim = 2, .page_size = 16, .inner_dim = 4096, .dtype = DType::u8};
  test::HostSpace src(spec, LayoutKind::fully_contiguous, 16), dst(spec, LayoutKind::fully_contiguous, 16, 3);
  std::mt19937_64 rng(5);
  src.fill(rng);
  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < 16; ++i) pairs.push_back({BlockId{i}, BlockId{i}});
  const auto want = test::naive_copy(src, dst, pairs);
  auto plan = TransferPlan::build(src.space, dst.space, pairs);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->runs().size(), 1U);
  EXPECT_EQ(engine.pieces_for(plan->total_bytes()), 4U);
  const auto before = engine.stats();
  ASSERT_TRUE(run_and_wait(engine, std::move(*plan)));
  const auto after = engine.stats();
  EXPECT_EQ(after.pieces - before.pieces, 4U);
  EXPECT_EQ(after.plans - before.plans, 1U);
  EXPECT_EQ(after.bytes - before.bytes, 16U << 20);
  EXPECT_EQ(dst.storage, want);
}

TEST(HostCopyEngine, ConcurrentSubmitsFromSeveralThreadsEachCompleteOnce) {
  HostCopyEngine engine(splitting_options());
  const LayoutSpec spec{.num_layers = 4, .outer_dim = 2, .page_size = 4, .inner_dim = 33, .dtype = DType::f16};
  constexpr int kThreads = 4, kPlansPerThread = 25;
  test::HostSpace src(spec, LayoutKind::layer_separate_block_outer, 8);
  std::mt19937_64 rng(77);
  src.fill(rng);
  std::vector<std::unique_ptr<test::HostSpace>> dsts;
  std::vector<std::vector<BlockPair>> pairs;
  for (int i = 0; i < kThreads * kPlansPerThread; ++i) {
    dsts.push_back(std::make_unique<test::HostSpace>(spec, test::kAllKinds[i % 3], 8, i % 16));
    dsts.back()->fill(rng);
    pairs.push_back(test::random_pairs(rng, 8, 8));
  }
  std::vector<std::vector<std::vector<std::byte>>> want;
  for (std::size_t i = 0; i < dsts.size(); ++i) want.push_back(test::naive_copy(src, *dsts[i], pairs[i]));

  std::mutex m;
  std::condition_variable cv;
  std::vector<int> calls(dsts.size(), 0);
  int finished = 0, failures = 0;
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int k = 0; k < kPlansPerThread; ++k) {
        const int i = t * kPlansPerThread + k;
        auto plan = TransferPlan::build(src.space, dsts[i]->space, pairs[i]);
        engine.submit(std::move(*plan), [&, i](Status s) {
          std::lock_guard lock(m);
          ++calls[i];
          ++finished;
          if (!s) ++failures;
          cv.notify_all();
        });
      }
    });
  }
  for (auto& t : submitters) t.join();
  {
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return finished == kThreads * kPlansPerThread; }))
        << finished << " of " << kThreads * kPlansPerThread << " completed";
  }
  EXPECT_EQ(failures, 0);
  for (std::size_t i = 0; i < dsts.size(); ++i) {
    EXPECT_EQ(calls[i], 1) << "plan " << i;
    EXPECT_EQ(dsts[i]->storage, want[i]) << "plan " << i;
  }
}

TEST(HostCopyEngine, DeviceMemoryIsRefusedWithOneErrorCompletion) {
  std::atomic<int> calls{0};
  Status seen;
  {
    HostCopyEngine engine;
    const LayoutSpec spec{.num_layers = 2, .outer_dim = 2, .page_size = 1, .inner_dim = 8, .dtype = DType::u8};
    // Labelled device memory: the engine must refuse without touching it.
    test::HostSpace src(spec, LayoutKind::fully_contiguous, 2, 0, MemoryKind::device);
    test::HostSpace dst(spec, LayoutKind::fully_contiguous, 2);
    const std::vector<BlockPair> pairs{{BlockId{0}, BlockId{1}}};
    auto plan = TransferPlan::build(src.space, dst.space, pairs);
    ASSERT_TRUE(plan);
    EXPECT_FALSE(engine.supports(MemoryKind::device, MemoryKind::host));
    engine.submit(std::move(*plan), [&](Status s) {
      seen = std::move(s);
      calls.fetch_add(1);
    });
  }  // the engine is gone: no late second completion can follow
  EXPECT_EQ(calls.load(), 1);
  ASSERT_FALSE(seen);
  EXPECT_EQ(seen.error().code, Errc::unsupported);
  EXPECT_NE(seen.error().message.find("device"), std::string::npos) << seen.error().message;
}

TEST(HostCopyEngine, EmptyPlanCompletesOkOnce) {
  HostCopyEngine engine;
  const LayoutSpec spec{.num_layers = 1, .outer_dim = 1, .page_size = 1, .inner_dim = 4, .dtype = DType::u8};
  test::HostSpace src(spec, LayoutKind::fully_contiguous, 1), dst(spec, LayoutKind::fully_contiguous, 1);
  auto plan = TransferPlan::build(src.space, dst.space, {});
  ASSERT_TRUE(plan);
  int calls = 0;
  engine.submit(std::move(*plan), [&](Status s) {
    EXPECT_TRUE(s);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

TEST(HostCopyEngine, DestructorFinishesEveryQueuedPlan) {
  const LayoutSpec spec{.num_layers = 4, .outer_dim = 2, .page_size = 16, .inner_dim = 512, .dtype = DType::u8};
  test::HostSpace src(spec, LayoutKind::layer_separate_outer_block, 16);
  std::mt19937_64 rng(3);
  src.fill(rng);
  std::vector<std::unique_ptr<test::HostSpace>> dsts;
  std::atomic<int> ok_calls{0};
  std::vector<BlockPair> pairs;
  for (std::uint32_t i = 0; i < 16; ++i) pairs.push_back({BlockId{i}, BlockId{15 - i}});
  {
    HostCopyEngineOptions o;
    o.workers = 2;
    HostCopyEngine engine(o);
    for (int i = 0; i < 20; ++i) {
      dsts.push_back(std::make_unique<test::HostSpace>(spec, LayoutKind::fully_contiguous, 16));
      auto plan = TransferPlan::build(src.space, dsts.back()->space, pairs);
      engine.submit(std::move(*plan), [&](Status s) {
        if (s) ok_calls.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(ok_calls.load(), 20);
  const auto want = test::naive_copy(src, *dsts.front(), pairs);
  for (const auto& d : dsts) EXPECT_EQ(d->storage, want);
}

}  // namespace
}  // namespace kvb
