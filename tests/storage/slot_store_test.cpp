// SlotStore on real files in a temp dir: durable writes, checked reads,
// restart recovery, byte flips, the tombstone rule, faults and start errors.
#include <sys/mount.h>

#include <cstring>
#include <memory>

#include "kvb/storage/slot_store.h"
#include "storage_test_util.h"

namespace kvb::storage {
namespace {

using test::AlignedBuffer;
using test::Completion;
using test::pattern;
using test::TempDir;

class SlotStoreTest : public testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override { KVB_SKIP_WITHOUT_BACKEND(GetParam()); }

  SlotStoreOptions options(const LayoutSpec& spec = test::page_spec(), std::uint32_t slots = 16) const {
    SlotStoreOptions o;
    o.directory = dir_.path();
    o.spec = spec;
    o.bytes = FileHeader::plan(spec, slots).file_bytes;
    o.backend = GetParam();
    o.queue_depth = 8;
    return o;
  }
  std::unique_ptr<SlotStore> open(const SlotStoreOptions& o) {
    auto store = SlotStore::open(o);
    EXPECT_TRUE(store.has_value()) << store.error().to_string();
    return store ? std::move(*store) : nullptr;
  }
  static Status write(SlotStore& s, std::uint32_t slot, std::uint64_t hash, std::uint64_t seed) {
    const auto bytes = pattern(seed, s.block_bytes());
    Completion c;
    if (auto started = s.write(BlockId{slot}, SequenceHash{hash}, bytes, c.callback()); !started) return started;
    return c.wait();
  }
  // Reads a block into an aligned buffer and compares it with pattern(seed).
  static Status read_check(SlotStore& s, std::uint32_t slot, std::uint64_t hash, std::uint64_t seed) {
    AlignedBuffer buf(s.block_bytes());
    Completion c;
    s.read(BlockId{slot}, SequenceHash{hash}, buf.span(), c.callback());
    if (auto st = c.wait(); !st) return st;
    const auto want = pattern(seed, s.block_bytes());
    if (std::memcmp(buf.data, want.data(), want.size()) != 0) return fail(Errc::internal, "bytes differ");
    return kvb::ok();
  }

  TempDir dir_;
};

TEST_P(SlotStoreTest, WritesAndReadsBackByteExact) {
  for (const LayoutSpec& spec : {test::page_spec(), test::odd_spec()}) {
    TempDir dir;
    auto o = options(spec);
    o.directory = dir.path();
    auto s = open(o);
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->recovery().created);
    EXPECT_EQ(s->slot_count(), 16U);
    for (std::uint32_t i = 0; i < 16; ++i) ASSERT_TRUE(write(*s, i, 1000 + i, i)) << i;
    for (std::uint32_t i = 0; i < 16; ++i) EXPECT_TRUE(read_check(*s, i, 1000 + i, i)) << i;
    const auto c = s->counters();
    EXPECT_EQ(c.writes, 16U);
    EXPECT_EQ(c.reads, 16U);
    EXPECT_EQ(c.checksum_failures, 0U);
    EXPECT_GE(c.syncs, 2U);  // payload, then header: at least two syncs
    EXPECT_EQ(c.bytes_written, 16 * s->block_bytes());
  }
}

TEST_P(SlotStoreTest, ManyWritesAtOnceShareSyncs) {
  auto o = options(test::page_spec(), 64);
  o.sync_batch = 64;
  auto s = open(o);
  ASSERT_TRUE(s);
  std::vector<std::unique_ptr<Completion>> done;
  for (std::uint32_t i = 0; i < 64; ++i) {
    done.push_back(std::make_unique<Completion>());
    const auto bytes = pattern(i, s->block_bytes());
    ASSERT_TRUE(s->write(BlockId{i}, SequenceHash{i + 1}, bytes, done.back()->callback()));
  }
  for (auto& c : done) ASSERT_TRUE(c->wait());
  // Group commit: far fewer fdatasyncs than the 128 a sync per step would take.
  EXPECT_LT(s->counters().syncs, 100U);
  for (std::uint32_t i = 0; i < 64; ++i) EXPECT_TRUE(read_check(*s, i, i + 1, i)) << i;
}

TEST_P(SlotStoreTest, ReopenRecoversDurableBlocksOldestFirst) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    for (std::uint32_t slot : {5U, 2U, 9U}) ASSERT_TRUE(write(*s, slot, 100 + slot, slot));
  }
  auto s = open(options());
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->recovery().created);
  EXPECT_EQ(s->recovery().intact, 3U);
  EXPECT_EQ(s->recovery().empty, 13U);
  const auto found = s->recovered();
  ASSERT_EQ(found.size(), 3U);
  EXPECT_EQ(found[0].slot, BlockId{5});  // write order
  EXPECT_EQ(found[1].slot, BlockId{2});
  EXPECT_EQ(found[2].slot, BlockId{9});
  for (std::uint32_t slot : {5U, 2U, 9U}) EXPECT_TRUE(read_check(*s, slot, 100 + slot, slot)) << slot;
}

TEST_P(SlotStoreTest, PayloadByteFlipIsAMissAndNeighboursAreServed) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(write(*s, i, 10 + i, i));
  }
  auto geometry = FileHeader::plan(test::page_spec(), 16);
  test::flip_byte(dir_.path() + "/" + slot_file_name(geometry.shape_id), geometry.payload_offset(1) + 1234);
  auto s = open(options());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->recovery().intact, 3U);  // headers are fine: restart reads no payload
  EXPECT_TRUE(read_check(*s, 0, 10, 0));
  const auto bad = read_check(*s, 1, 11, 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::io_error);
  EXPECT_NE(bad.error().message.find("payload checksum"), std::string::npos) << bad.error().message;
  EXPECT_TRUE(read_check(*s, 2, 12, 2));
  EXPECT_EQ(s->counters().checksum_failures, 1U);
  // The bad block is gone for good: asking again is not_found, not data.
  const auto again = read_check(*s, 1, 11, 1);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::not_found);
}

TEST_P(SlotStoreTest, PayloadByteFlipWhileOpenIsCaught) {
  auto s = open(options());
  ASSERT_TRUE(s);
  ASSERT_TRUE(write(*s, 4, 44, 4));
  test::flip_byte(s->path(), s->geometry().payload_offset(4) + s->block_bytes() - 1);
  EXPECT_FALSE(read_check(*s, 4, 44, 4));
  EXPECT_EQ(s->counters().checksum_failures, 1U);
}

TEST_P(SlotStoreTest, HeaderByteFlipDropsThatSlotAtRestart) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(write(*s, i, 10 + i, i));
  }
  auto geometry = FileHeader::plan(test::page_spec(), 16);
  test::flip_byte(dir_.path() + "/" + slot_file_name(geometry.shape_id),
                  geometry.header_offset(1) + 20);  // its shape id
  auto s = open(options());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->recovery().intact, 2U);
  EXPECT_EQ(s->recovery().torn, 1U);
  for (const auto& b : s->recovered()) EXPECT_NE(b.slot, BlockId{1});
  EXPECT_TRUE(read_check(*s, 0, 10, 0));
  EXPECT_TRUE(read_check(*s, 2, 12, 2));
  EXPECT_EQ(read_check(*s, 1, 11, 1).error().code, Errc::not_found);
}

// A read is one I/O, of the payload, checked against the checksum the index
// holds: a header damaged while the store is open changes nothing that is
// served, and the slot is dropped at the next restart (its header no longer
// checks out).
TEST_P(SlotStoreTest, HeaderByteFlipWhileOpenServesTheCheckedPayloadAndDropsTheSlotAtRestart) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    ASSERT_TRUE(write(*s, 3, 33, 3));
    ASSERT_TRUE(write(*s, 4, 44, 4));
    test::flip_byte(s->path(), s->geometry().header_offset(3) + 8);
    EXPECT_TRUE(read_check(*s, 3, 33, 3));
    EXPECT_EQ(s->counters().checksum_failures, 0U);
  }
  auto reopened = open(options());
  ASSERT_TRUE(reopened);
  EXPECT_EQ(reopened->recovery().intact, 1U);
  EXPECT_EQ(reopened->recovery().torn, 1U);
  EXPECT_EQ(read_check(*reopened, 3, 33, 3).error().code, Errc::not_found);
  EXPECT_TRUE(read_check(*reopened, 4, 44, 4));
}

// A block read is one I/O (its payload): with every read after the first
// failing, one block still reads back whole and the next one fails.
TEST_P(SlotStoreTest, AReadIsOneIoOfThePayload) {
  auto o = options();
  o.faults = FaultPlan{};
  auto s = open(o);
  ASSERT_TRUE(s);
  ASSERT_TRUE(write(*s, 1, 11, 1));
  ASSERT_TRUE(write(*s, 2, 22, 2));
  FaultPlan plan;
  plan.read_errno = EIO;
  plan.reads_before_fault = 1;
  s->fault_injector()->set_plan(plan);
  EXPECT_TRUE(read_check(*s, 1, 11, 1));
  const auto second = read_check(*s, 2, 22, 2);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::io_error);
}

// A rewrite that dies after its payload reached the disk (here: its header
// write fails) must not leave the old header in front of the new bytes.
TEST_P(SlotStoreTest, RewriteTombstonesTheOldHeaderBeforeTouchingThePayload) {
  auto o = options();
  o.faults = FaultPlan{};
  {
    auto s = open(o);
    ASSERT_TRUE(s);
    ASSERT_TRUE(write(*s, 0, 500, 1));  // block A
    FaultPlan plan;
    plan.write_errno = EIO;
    plan.writes_before_fault = 2;  // tombstone and payload pass, the header fails
    s->fault_injector()->set_plan(plan);
    const auto rewrite = write(*s, 0, 600, 2);  // block B into A's slot
    ASSERT_FALSE(rewrite);
    EXPECT_EQ(rewrite.error().code, Errc::io_error);
    EXPECT_EQ(s->counters().write_failures, 1U);
  }
  auto s = open(options());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->recovery().intact, 0U) << "A's header survived over B's payload";
  EXPECT_TRUE(s->recovered().empty());
}

TEST_P(SlotStoreTest, RewriteOfASlotIsFoundAfterRestart) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    ASSERT_TRUE(write(*s, 7, 70, 1));
    ASSERT_TRUE(write(*s, 7, 71, 2));
  }
  auto s = open(options());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->recovered().size(), 1U);
  EXPECT_EQ(s->recovered()[0].hash, SequenceHash{71});
  EXPECT_TRUE(read_check(*s, 7, 71, 2));
}

TEST_P(SlotStoreTest, DuplicateHashKeepsTheNewestCopy) {
  {
    auto s = open(options());
    ASSERT_TRUE(s);
    ASSERT_TRUE(write(*s, 1, 77, 1));
    ASSERT_TRUE(write(*s, 2, 77, 2));
  }
  auto s = open(options());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->recovered().size(), 1U);
  EXPECT_EQ(s->recovered()[0].slot, BlockId{2});
  EXPECT_EQ(s->recovery().duplicates, 1U);
  EXPECT_TRUE(read_check(*s, 2, 77, 2));
}

TEST_P(SlotStoreTest, DiskFullAndIoErrorsAreErrorsNeverBlocks) {
  auto o = options();
  FaultPlan plan;
  plan.write_errno = ENOSPC;
  o.faults = plan;
  auto s = open(o);
  ASSERT_TRUE(s);
  EXPECT_NE(s->name().find("fault-injecting"), std::string_view::npos);
  const auto full = write(*s, 0, 1, 1);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::io_error);
  EXPECT_NE(full.error().message.find("No space left"), std::string::npos) << full.error().message;
  EXPECT_EQ(read_check(*s, 0, 1, 1).error().code, Errc::not_found);  // nothing findable was left
  plan = FaultPlan{};
  plan.read_errno = EIO;
  s->fault_injector()->set_plan(plan);
  ASSERT_TRUE(write(*s, 1, 2, 2));
  const auto eio = read_check(*s, 1, 2, 2);
  ASSERT_FALSE(eio);
  EXPECT_NE(eio.error().message.find("Input/output error"), std::string::npos) << eio.error().message;
  const auto c = s->counters();
  EXPECT_EQ(c.write_failures, 1U);
  EXPECT_EQ(c.read_failures, 2U);  // the not_found and the EIO
  EXPECT_GE(c.io_errors, 2U);
  plan = FaultPlan{};
  plan.sync_errno = EIO;
  s->fault_injector()->set_plan(plan);
  EXPECT_FALSE(write(*s, 2, 3, 3));
}

TEST_P(SlotStoreTest, SlowDiskCompletesAndShowsItsQueue) {
  auto o = options();
  FaultPlan plan;
  plan.delay = std::chrono::milliseconds(100);
  o.faults = plan;
  auto s = open(o);
  ASSERT_TRUE(s);
  Completion c;
  const auto bytes = pattern(3, s->block_bytes());
  ASSERT_TRUE(s->write(BlockId{3}, SequenceHash{3}, bytes, c.callback()));
  EXPECT_EQ(s->counters().writes_in_flight, 1U);
  EXPECT_GE(s->counters().io_queue_depth, 1U);
  ASSERT_TRUE(c.wait());
  EXPECT_TRUE(read_check(*s, 3, 3, 3));
}

TEST_P(SlotStoreTest, FullWriteQueueAnswersBusy) {
  auto o = options();
  o.write_queue_bytes = 1;  // one staging buffer
  FaultPlan plan;
  plan.delay = std::chrono::milliseconds(200);
  o.faults = plan;
  auto s = open(o);
  ASSERT_TRUE(s);
  Completion first;
  const auto bytes = pattern(1, s->block_bytes());
  ASSERT_TRUE(s->write(BlockId{0}, SequenceHash{1}, bytes, first.callback()));
  Completion second;
  const auto busy = s->write(BlockId{1}, SequenceHash{2}, bytes, second.callback());
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, Errc::busy);
  EXPECT_EQ(s->counters().write_busy, 1U);
  ASSERT_TRUE(first.wait());
}

TEST_P(SlotStoreTest, MissingDirectoryIsAClearError) {
  auto o = options();
  o.directory = dir_.path() + "/does-not-exist";
  auto s = SlotStore::open(o);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::unavailable);
  EXPECT_NE(s.error().message.find("does-not-exist"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("No such file"), std::string::npos) << s.error().message;
}

TEST_P(SlotStoreTest, ReadOnlyDirectoryIsAClearError) {
  // A read-only bind mount of a temp dir (a real EROFS); where mounting is
  // not allowed, a directory the kernel refuses files in (sysfs: EACCES).
  std::string ro = dir_.path() + "/ro";
  std::filesystem::create_directory(ro);
  bool mounted = ::mount(ro.c_str(), ro.c_str(), nullptr, MS_BIND, nullptr) == 0;
  if (mounted && ::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    ::umount(ro.c_str());
    mounted = false;
  }
  if (!mounted) ro = "/sys/kernel";
  auto o = options();
  o.directory = ro;
  auto s = SlotStore::open(o);
  if (mounted) ::umount(ro.c_str());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::unavailable);
  EXPECT_NE(s.error().message.find("cannot create slot file"), std::string::npos) << s.error().message;
}

TEST_P(SlotStoreTest, ASecondOpenOfTheSameFileIsRefused) {
  auto first = open(options());
  ASSERT_TRUE(first);
  auto second = SlotStore::open(options());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::unavailable);
  EXPECT_NE(second.error().message.find("in use by another process"), std::string::npos) << second.error().message;
}

TEST_P(SlotStoreTest, TooSmallForOneSlotIsAClearError) {
  auto o = options();
  o.bytes = 4096;
  auto s = SlotStore::open(o);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::invalid_argument);
}

TEST_P(SlotStoreTest, ListsTheShapesOfItsFiles) {
  { auto a = open(options(test::page_spec())); }
  { auto b = open(options(test::odd_spec())); }
  auto shapes = SlotStore::list_shapes(dir_.path());
  ASSERT_TRUE(shapes);
  ASSERT_EQ(shapes->size(), 2U);
  int matched = 0;
  for (const auto& spec : *shapes)
    matched += spec.same_block_shape(test::page_spec()) + spec.same_block_shape(test::odd_spec());
  EXPECT_EQ(matched, 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, SlotStoreTest, testing::ValuesIn(test::backends()), test::backend_name);

}  // namespace
}  // namespace kvb::storage
