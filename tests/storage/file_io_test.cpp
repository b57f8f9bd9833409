// FileIo backends on a real O_DIRECT file, and the slot format's headers.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "kvb/storage/fault_injecting_file_io.h"
#include "kvb/storage/slot_format.h"
#include "storage_test_util.h"

namespace kvb::storage {
namespace {

using test::AlignedBuffer;
using test::TempDir;

Result<std::size_t> wait_io(const std::function<void(IoDone)>& start) {
  std::promise<Result<std::size_t>> p;
  auto f = p.get_future();
  start([&p](Result<std::size_t> r) { p.set_value(std::move(r)); });
  if (f.wait_for(std::chrono::seconds(20)) != std::future_status::ready) return fail(Errc::timeout, "no completion");
  return f.get();
}

class FileIoTest : public testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    KVB_SKIP_WITHOUT_BACKEND(GetParam());
    path_ = dir_.path() + "/f";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);  // no O_DIRECT (tmpfs)
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, 4 << 20), 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
  }
  TempDir dir_;
  std::string path_;
  int fd_ = -1;
};

TEST_P(FileIoTest, WriteSyncReadRoundTrip) {
  auto io = make_file_io(fd_, GetParam(), 8);
  ASSERT_TRUE(io) << io.error().to_string();
  EXPECT_EQ((*io)->name(), to_string(GetParam()));
  AlignedBuffer out(1 << 20), in(1 << 20);
  const auto bytes = test::pattern(42, out.size);
  std::memcpy(out.data, bytes.data(), bytes.size());
  auto w = wait_io([&](IoDone d) { (*io)->write(8192, {out.data, out.size}, std::move(d)); });
  ASSERT_TRUE(w) << w.error().to_string();
  EXPECT_EQ(*w, out.size);
  ASSERT_TRUE(wait_io([&](IoDone d) { (*io)->datasync(std::move(d)); }));
  auto r = wait_io([&](IoDone d) { (*io)->read(8192, in.span(), std::move(d)); });
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(std::memcmp(in.data, out.data, out.size), 0);
  EXPECT_EQ((*io)->in_flight(), 0U);
}

TEST_P(FileIoTest, ReadPastTheEndIsAnIoError) {
  auto io = make_file_io(fd_, GetParam(), 8);
  ASSERT_TRUE(io);
  AlignedBuffer in(4096);
  auto r = wait_io([&](IoDone d) { (*io)->read(8 << 20, in.span(), std::move(d)); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::io_error);
}

TEST_P(FileIoTest, FaultInjectorFailsTheNthWriteAndSaysSo) {
  auto real = make_file_io(fd_, GetParam(), 8);
  ASSERT_TRUE(real);
  FaultPlan plan;
  plan.write_errno = ENOSPC;
  plan.writes_before_fault = 1;
  FaultInjectingFileIo io(std::move(*real), plan);
  EXPECT_EQ(io.name(), fmt::format("fault-injecting({})", to_string(GetParam())));
  AlignedBuffer out(4096);
  EXPECT_TRUE(wait_io([&](IoDone d) { io.write(0, {out.data, out.size}, std::move(d)); }));
  auto second = wait_io([&](IoDone d) { io.write(4096, {out.data, out.size}, std::move(d)); });
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("No space left on device"), std::string::npos);
  EXPECT_NE(second.error().message.find("injected"), std::string::npos);
  EXPECT_EQ(io.injected(), 1U);
}

INSTANTIATE_TEST_SUITE_P(Backends, FileIoTest, testing::ValuesIn(test::backends()), test::backend_name);

TEST(FaultPlan, ParsesAndPrintsItsKeys) {
  auto plan = FaultPlan::parse("write_errno=ENOSPC,writes_before_fault=4,read_errno=EIO,delay_ms=50");
  ASSERT_TRUE(plan) << plan.error().to_string();
  EXPECT_EQ(plan->write_errno, ENOSPC);
  EXPECT_EQ(plan->writes_before_fault, 4U);
  EXPECT_EQ(plan->read_errno, EIO);
  EXPECT_EQ(plan->delay, std::chrono::milliseconds(50));
  EXPECT_EQ(plan->to_string(),
            "write_errno=ENOSPC,writes_before_fault=4,read_errno=EIO,reads_before_fault=0,delay_ms=50");
  EXPECT_FALSE(FaultPlan::parse("write_errno=EWHAT"));
  EXPECT_FALSE(FaultPlan::parse("bogus=1"));
  EXPECT_FALSE(FaultPlan::parse("delay_ms=x"));
}

TEST(SlotFormat, HeadersRoundTripAndAnyFlippedByteIsCaught) {
  SlotHeader h;
  h.state = SlotState::committed;
  h.slot = 7;
  h.shape_id = shape_id(test::page_spec());
  h.hash = SequenceHash{0x1234567890abcdefULL};
  h.generation = 99;
  h.payload_bytes = 4096;
  h.payload_xxh3 = 0xfeedface;
  std::vector<std::byte> page(kPageBytes);
  h.encode(page);
  auto d = decode_slot_header(page);
  ASSERT_EQ(d.page, SlotPage::valid);
  EXPECT_EQ(d.header.hash, h.hash);
  EXPECT_EQ(d.header.generation, 99U);
  EXPECT_EQ(d.header.payload_xxh3, 0xfeedfaceU);
  for (std::size_t i = 0; i < 64; ++i) {
    auto bad = page;
    bad[i] ^= std::byte{0x01};
    EXPECT_EQ(decode_slot_header(bad).page, SlotPage::torn) << "byte " << i;
  }
  EXPECT_EQ(decode_slot_header(std::vector<std::byte>(kPageBytes)).page, SlotPage::empty);
}

TEST(SlotFormat, FileGeometryFitsItsBudget) {
  const auto spec = test::page_spec();
  const std::uint64_t budget = 64ULL << 20;
  const auto n = FileHeader::slots_for_bytes(spec, budget);
  EXPECT_GT(n, 0U);
  EXPECT_LE(FileHeader::plan(spec, n).file_bytes, budget);
  EXPECT_GT(FileHeader::plan(spec, n + 1).file_bytes, budget);
  const auto g = FileHeader::plan(spec, n);
  EXPECT_EQ(g.data_offset % (1 << 20), 0U);
  EXPECT_EQ(g.stride, 4096U);
  std::vector<std::byte> page(kPageBytes);
  g.encode(page);
  auto back = FileHeader::decode(page);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(back->slot_count, n);
  EXPECT_TRUE(back->spec.same_block_shape(spec));
  page[40] ^= std::byte{1};
  EXPECT_FALSE(FileHeader::decode(page));
  EXPECT_NE(shape_id(spec), shape_id(test::odd_spec()));
}

}  // namespace
}  // namespace kvb::storage
