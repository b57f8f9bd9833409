// The IPC protocol codec: round trips of every message and every malformed
// case the daemon must refuse (docs/protocol.md).
#include <array>
#include <cstring>

#include <gtest/gtest.h>

#include "kvb/common/protocol.h"

namespace kvb::proto {
namespace {

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

template <class M>
void expect_round_trip(const M& message) {
  auto payload = encode_payload(message);
  ASSERT_TRUE(payload) << payload.error().to_string();
  auto decoded = decode_payload<M>(*payload);
  ASSERT_TRUE(decoded) << decoded.error().to_string();
  EXPECT_EQ(*decoded, message);
  // Every strict prefix is truncated, and one trailing byte is too many.
  for (std::size_t n = 0; n < payload->size(); ++n) {
    auto cut = decode_payload<M>(std::span(payload->data(), n));
    if (cut) {
      // Only messages whose tail is "the rest of the payload" may decode a
      // prefix (Reply bodies); everything else must fail.
      if constexpr (!std::is_same_v<M, Reply>) ADD_FAILURE() << "prefix of " << n << " bytes decoded";
    } else {
      EXPECT_EQ(cut.error().code, Errc::protocol_error);
    }
  }
  auto longer = *payload;
  longer.push_back(std::byte{0});
  if constexpr (!std::is_same_v<M, Reply> && !std::is_same_v<M, StatsReply> && !std::is_same_v<M, ConfigReply>) {
    auto extra = decode_payload<M>(longer);
    ASSERT_FALSE(extra);
    EXPECT_EQ(extra.error().code, Errc::protocol_error);
    EXPECT_NE(extra.error().message.find("trailing"), std::string::npos) << extra.error().message;
  }
}

TEST(Wire, LittleEndianLayout) {
  WireWriter out;
  out.u8(0x01);
  out.u16(0x0302);
  out.u32(0x07060504);
  out.u64(0x0F0E0D0C0B0A0908ULL);
  out.string("hi", "s");
  auto bytes = std::move(out).finish();
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, bytes_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 2, 0, 0, 0, 'h', 'i'}));
  WireReader in(*bytes);
  EXPECT_EQ(in.u8("a"), 0x01);
  EXPECT_EQ(in.u16("b"), 0x0302);
  EXPECT_EQ(in.u32("c"), 0x07060504U);
  EXPECT_EQ(in.u64("d"), 0x0F0E0D0C0B0A0908ULL);
  EXPECT_EQ(in.string("s"), "hi");
  EXPECT_TRUE(in.finish());
}

TEST(Wire, WriterRefusesPastItsLimitAndLongStrings) {
  WireWriter small(6);
  small.u32(1);
  small.u32(2);
  auto result = std::move(small).finish();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::out_of_capacity);

  WireWriter out;
  out.string(std::string(kMaxStringBytes + 1, 'x'), "client_name");
  auto long_string = std::move(out).finish();
  ASSERT_FALSE(long_string);
  EXPECT_NE(long_string.error().message.find("client_name"), std::string::npos);
}

TEST(Wire, ReaderNamesTheTruncatedFieldAndKeepsTheFirstError) {
  const auto bytes = bytes_of({1, 0});
  WireReader in(bytes);
  (void)in.u32("num_blocks");
  (void)in.u64("later");
  auto status = in.finish();
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, Errc::protocol_error);
  EXPECT_NE(status.error().message.find("num_blocks"), std::string::npos) << status.error().message;
}

TEST(Wire, ReaderRefusesHugeCountsAndStrings) {
  WireWriter out;
  out.u32(1000000);  // a list count with no elements behind it
  auto bytes = std::move(out).finish();
  WireReader in(*bytes);
  EXPECT_EQ(in.count("hashes", 8), 0U);
  EXPECT_FALSE(in.finish());

  WireWriter big;
  big.u32(kMaxStringBytes + 1);
  auto big_bytes = std::move(big).finish();
  WireReader big_in(*big_bytes);
  (void)big_in.string("client_name");
  auto status = big_in.finish();
  ASSERT_FALSE(status);
  EXPECT_NE(status.error().message.find("over the limit"), std::string::npos);
}

TEST(Protocol, EveryRequestRoundTrips) {
  expect_round_trip(HelloRequest{1, 1, "engine-0", 0xABCDEFULL, WireLayout{32, 2, 16, 1024, 2, 256}});
  RegisterKvRequest reg;
  reg.memory = MemoryHandle::memfd;
  reg.layout_kind = LayoutKind::layer_separate_block_outer;
  reg.num_blocks = 100;
  reg.region_bytes = 1 << 20;
  reg.fd_count = 32;
  expect_round_trip(reg);
  reg.memory = MemoryHandle::cuda_ipc;
  reg.fd_count = 0;
  reg.cuda_ipc_handles = {std::vector<std::byte>(64, std::byte{7}), std::vector<std::byte>(64, std::byte{9})};
  reg.device_uuid = std::vector<std::byte>(16, std::byte{0xAB});
  reg.allocation_bytes = {1 << 30, 2 << 20};
  reg.regions = {{0, 0}, {0, 1 << 20}, {1, 4096}};
  expect_round_trip(reg);
  reg.memory = MemoryHandle::cuda_vmm;
  reg.cuda_ipc_handles.clear();
  reg.fd_count = 2;
  expect_round_trip(reg);
  expect_round_trip(LookupRequest{true, {1, 2, 3, 0xFFFFFFFFFFFFFFFFULL}});
  expect_round_trip(LookupRequest{false, {}});
  expect_round_trip(OffloadRequest{{{BlockId{3}, 11}, {BlockId{4}, 12}}});
  expect_round_trip(OnboardRequest{{{11, BlockId{5}}, {12, BlockId{6}}}});
  expect_round_trip(OnboardLayersRequest{4, {{11, BlockId{5}}, {12, BlockId{6}}}});
  expect_round_trip(ReleaseRequest{{7, 8}});
  expect_round_trip(ReleaseRequest{});
  expect_round_trip(StatusRequest{RequestId{42}});
  expect_round_trip(WaitRequest{RequestId{42}, 250});
  expect_round_trip(StatsRequest{});
  expect_round_trip(ByeRequest{});
  expect_round_trip(DrainRequest{});
  expect_round_trip(ConfigRequest{});
  expect_round_trip(LocateRequest{{5, 6, 0xFFFFFFFFFFFFFFFFULL}});
  expect_round_trip(LocateRequest{});
}

TEST(Protocol, EveryAnswerRoundTrips) {
  expect_round_trip(HelloReply{SessionId{9}, 1, 1 << 24, 128, false, "kvblockd 0.1.0"});
  expect_round_trip(LookupReply{3, {{WireTier::g2, 3}, {WireTier::g1, 1}}});
  expect_round_trip(ReleaseReply{4});
  expect_round_trip(LocateReply{{{"gpu-node-3:7000", 12}, {"", 0}, {"B", 4}}});
  expect_round_trip(LocateReply{});
  expect_round_trip(RequestStateReply{RequestState::err, "timeout after 5 ms"});
  expect_round_trip(StatsReply{R"({"sessions":1})"});
  expect_round_trip(ConfigReply{"socket = \"/tmp/x\"\n"});
  expect_round_trip(make_reply(ReleaseReply{2}));
  expect_round_trip(make_accepted_reply());
  expect_round_trip(make_error_reply(Error{Errc::busy, "session has 128 requests in flight"}));
  expect_round_trip(Notification{Errc::timeout, "5:err(timeout)"});
  expect_round_trip(ErrorFrame{Errc::protocol_error, "bad magic"});
  expect_round_trip(Progress{4, 8, 32});
}

TEST(Protocol, ReplyBodyDecodesByType) {
  const Reply reply = make_reply(LookupReply{2, {{WireTier::g2, 2}}});
  auto frame = encode_message(RequestId{77}, reply);
  ASSERT_TRUE(frame);
  FrameParser parser;
  parser.feed(*frame);
  auto next = parser.next();
  ASSERT_TRUE(next && next->has_value());
  EXPECT_EQ((*next)->header.type, MsgType::reply);
  EXPECT_EQ((*next)->header.request_id, RequestId{77});
  auto decoded = decode_payload<Reply>((*next)->payload);
  ASSERT_TRUE(decoded);
  auto body = decode_reply_body<LookupReply>(*decoded);
  ASSERT_TRUE(body);
  EXPECT_EQ(body->prefix_blocks, 2U);

  auto refused = decode_reply_body<LookupReply>(make_error_reply(Error{Errc::busy, "full"}));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_FALSE(decode_reply_body<LookupReply>(make_accepted_reply()));
}

TEST(Protocol, InvalidFieldValuesAreRefused) {
  auto payload = *encode_payload(LookupRequest{true, {1}});
  payload[0] = std::byte{2};  // pin must be 0 or 1
  EXPECT_FALSE(decode_payload<LookupRequest>(payload));

  auto reg = *encode_payload(RegisterKvRequest{});
  reg[0] = std::byte{5};  // memory
  EXPECT_FALSE(decode_payload<RegisterKvRequest>(reg));
  reg = *encode_payload(RegisterKvRequest{});
  reg[1] = std::byte{3};  // layout_kind
  EXPECT_FALSE(decode_payload<RegisterKvRequest>(reg));
  reg = *encode_payload(RegisterKvRequest{});
  reg[0] = std::byte{3};  // memory past cuda_vmm
  EXPECT_FALSE(decode_payload<RegisterKvRequest>(reg));
  for (Progress bad : {Progress{4, 4, 8}, Progress{5, 4, 8}, Progress{0, 9, 8}})
    EXPECT_FALSE(decode_payload<Progress>(*encode_payload(bad))) << bad.layer_begin << " " << bad.layer_end;
  RegisterKvRequest many_fds;
  many_fds.fd_count = kMaxFdsPerFrame + 1;
  EXPECT_FALSE(decode_payload<RegisterKvRequest>(*encode_payload(many_fds)));

  HelloRequest hello;
  hello.min_version = 2;
  hello.max_version = 1;
  EXPECT_FALSE(decode_payload<HelloRequest>(*encode_payload(hello)));
  hello = HelloRequest{};
  hello.layout.dtype = 6;
  EXPECT_FALSE(decode_payload<HelloRequest>(*encode_payload(hello)));

  auto note = *encode_payload(Notification{Errc::ok, "1:ok"});
  note[0] = std::byte{99};  // not an Errc
  EXPECT_FALSE(decode_payload<Notification>(note));

  auto state = *encode_payload(RequestStateReply{});
  state[0] = std::byte{4};
  EXPECT_FALSE(decode_payload<RequestStateReply>(state));
}

TEST(Protocol, DecodeRequestDispatchesByTypeAndRefusesAnswers) {
  auto payload = *encode_payload(WaitRequest{RequestId{5}, 10});
  auto request = decode_request(MsgType::wait, payload);
  ASSERT_TRUE(request);
  ASSERT_TRUE(std::holds_alternative<WaitRequest>(*request));
  EXPECT_EQ(std::get<WaitRequest>(*request).timeout_ms, 10U);

  auto wrong = decode_request(MsgType::status, payload);  // 12 bytes for an 8-byte message
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("status"), std::string::npos) << wrong.error().message;
  EXPECT_FALSE(decode_request(MsgType::reply, {}));
  EXPECT_FALSE(decode_request(MsgType::notification, {}));

  auto locate = decode_request(MsgType::locate, *encode_payload(LocateRequest{{1, 2}}));
  ASSERT_TRUE(locate);
  ASSERT_TRUE(std::holds_alternative<LocateRequest>(*locate));
  EXPECT_EQ(std::get<LocateRequest>(*locate).hashes, (std::vector<std::uint64_t>{1, 2}));
  EXPECT_TRUE(is_request_type(MsgType::locate));
  EXPECT_EQ(to_string(MsgType::locate), "locate");
  // A reply listing more workers than its bytes can hold is refused, not allocated.
  WireWriter lying;
  lying.u32(1'000'000);
  EXPECT_FALSE(decode_payload<LocateReply>(*std::move(lying).finish()));
}

TEST(Frame, HeaderRoundTripsAndHasTheDocumentedLayout) {
  FrameHeader header;
  header.type = MsgType::lookup;
  header.length = 0x0102;
  header.request_id = RequestId{0x1122334455667788ULL};
  const auto bytes = encode_header(header);
  EXPECT_EQ(std::memcmp(bytes.data(), "KVBD", 4), 0);
  EXPECT_EQ(bytes[4], std::byte{1});
  EXPECT_EQ(bytes[6], std::byte{3});
  EXPECT_EQ(bytes[8], std::byte{0x02});
  EXPECT_EQ(bytes[16], std::byte{0x88});
  auto decoded = decode_header(bytes, kDefaultMaxFrameBytes);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(*decoded, header);
}

struct BadHeader {
  const char* name;
  void (*mutate)(FrameHeader&);
  RequestId echoed;
};

TEST(Frame, EveryMalformedHeaderIsAProtocolError) {
  const BadHeader cases[] = {
      {"bad magic", [](FrameHeader& h) { h.magic = 0x12345678; }, RequestId{0}},
      {"wrong version", [](FrameHeader& h) { h.version = 2; }, RequestId{0}},
      {"unknown type", [](FrameHeader& h) { h.type = static_cast<MsgType>(99); }, RequestId{5}},
      {"unknown type 0", [](FrameHeader& h) { h.type = static_cast<MsgType>(0); }, RequestId{5}},
      {"flags", [](FrameHeader& h) { h.flags = 1; }, RequestId{5}},
      {"oversize", [](FrameHeader& h) { h.length = 1025; }, RequestId{5}},
  };
  for (const auto& c : cases) {
    FrameHeader header;
    header.request_id = RequestId{5};
    c.mutate(header);
    auto decoded = decode_header(encode_header(header), 1024);
    ASSERT_FALSE(decoded) << c.name;
    EXPECT_EQ(decoded.error().code, Errc::protocol_error) << c.name;

    FrameParser parser(1024);
    parser.feed(encode_header(header));
    auto next = parser.next();
    ASSERT_FALSE(next) << c.name;
    EXPECT_EQ(parser.failed_request_id(), c.echoed) << c.name;
    EXPECT_FALSE(parser.next()) << c.name << ": the parser stays failed";
  }
  EXPECT_FALSE(decode_header(std::vector<std::byte>(23), 1024));
}

TEST(Frame, ParserAssemblesFramesFedByteByByte) {
  std::vector<std::byte> stream;
  for (std::uint64_t id = 1; id <= 3; ++id) {
    auto frame = encode_message(RequestId{id}, LookupRequest{false, {id, id + 1}});
    stream.insert(stream.end(), frame->begin(), frame->end());
  }
  FrameParser parser;
  std::vector<Frame> frames;
  for (const auto byte : stream) {
    parser.feed(std::span(&byte, 1));
    while (true) {
      auto next = parser.next();
      ASSERT_TRUE(next);
      if (!next->has_value()) break;
      frames.push_back(std::move(**next));
    }
  }
  ASSERT_EQ(frames.size(), 3U);
  EXPECT_FALSE(parser.mid_frame());
  for (std::uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(frames[i].header.request_id, RequestId{i + 1});
    auto lookup = decode_payload<LookupRequest>(frames[i].payload);
    ASSERT_TRUE(lookup);
    EXPECT_EQ(lookup->hashes, (std::vector<std::uint64_t>{i + 1, i + 2}));
  }
}

TEST(Frame, TruncatedFrameWaitsForMoreBytes) {
  auto frame = *encode_message(RequestId{1}, StatusRequest{RequestId{2}});
  FrameParser parser;
  parser.feed(std::span(frame.data(), frame.size() - 1));
  auto next = parser.next();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has_value());
  EXPECT_TRUE(parser.mid_frame());
}

TEST(Completion, OkTextWithoutAllocationHoldsTheLargestId) {
  std::array<char, kCompletionOkBytes> text;
  EXPECT_EQ(format_completion_ok(RequestId{~std::uint64_t{0}}, text), "18446744073709551615:ok");
  EXPECT_EQ(format_completion_ok(RequestId{0}, text), "0:ok");
  auto parsed = parse_completion(format_completion_ok(RequestId{~std::uint64_t{0}}, text));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->request_id, RequestId{~std::uint64_t{0}});
}

TEST(Completion, FormatsAndParsesBothShapes) {
  EXPECT_EQ(format_completion(RequestId{12}, ok()), "12:ok");
  EXPECT_EQ(format_completion(RequestId{13}, make_error(Errc::timeout, "timeout")), "13:err(timeout)");
  auto done = parse_completion("12:ok");
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->ok);
  EXPECT_EQ(done->request_id, RequestId{12});
  auto failed = parse_completion("13:err(copy failed: (nested) parens)");
  ASSERT_TRUE(failed);
  EXPECT_FALSE(failed->ok);
  EXPECT_EQ(failed->message, "copy failed: (nested) parens");
  for (const char* bad : {"", "ok", ":ok", "x:ok", "12:fine", "12:err(", "12:err)", "12 :ok"}) {
    EXPECT_FALSE(parse_completion(bad)) << bad;
  }
  const auto note = make_notification(RequestId{4}, make_error(Errc::shutting_down, "shutting down"));
  EXPECT_EQ(note.code, Errc::shutting_down);
  EXPECT_EQ(note.text, "4:err(shutting down)");
}

}  // namespace
}  // namespace kvb::proto
