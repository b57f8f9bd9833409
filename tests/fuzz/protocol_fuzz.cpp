// Fuzz target over everything the daemon decodes from a client's bytes: the
// frame parser (fed in pieces whose sizes come from the input), every
// request decoder, the answers a client decodes (reply bodies, notifications,
// progress, error frames) and the completion text parser.
//
// Properties checked beyond "no crash, no sanitizer report": a payload that
// decodes re-encodes to the very same bytes (decoders and encoders agree, so
// nothing a decoder accepts is silently altered), and the parser never
// returns a frame longer than its limit.
//
// Built two ways: with libFuzzer (`make fuzz`, clang; tests/fuzz/README.md)
// and, without it, into kvb_fuzz_replay, which runs this function over the
// committed corpus in `make test`.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <variant>

#include "kvb/common/protocol_frame.h"
#include "kvb/common/protocol_messages.h"

namespace {

using namespace kvb;
using namespace kvb::proto;

constexpr std::uint32_t kMaxFrame = 1U << 20;

[[noreturn]] void violated() { std::abort(); }

/// decode, then encode again: the bytes must be the same.
template <class M>
void round_trip(std::span<const std::byte> payload) {
  auto decoded = decode_payload<M>(payload);
  if (!decoded) return;
  auto again = encode_payload(*decoded);
  if (!again || again->size() != payload.size() || !std::equal(again->begin(), again->end(), payload.begin())) {
    violated();
  }
}

void decode_answer_bodies(std::span<const std::byte> payload) {
  round_trip<Reply>(payload);
  round_trip<Notification>(payload);
  round_trip<ErrorFrame>(payload);
  round_trip<Progress>(payload);
  round_trip<HelloReply>(payload);
  round_trip<LookupReply>(payload);
  round_trip<LocateReply>(payload);
  round_trip<ReleaseReply>(payload);
  round_trip<RequestStateReply>(payload);
  round_trip<StatsReply>(payload);
  round_trip<ConfigReply>(payload);
}

void decode_frame(const Frame& frame) {
  if (frame.payload.size() > kMaxFrame || frame.header.length != frame.payload.size()) violated();
  auto request = decode_request(frame.header.type, frame.payload);
  if (request) {
    std::visit(
        [&](const auto& message) {
          auto again = encode_payload(message);
          if (!again || *again != frame.payload) violated();
        },
        *request);
  }
  if (!is_request_type(frame.header.type)) decode_answer_bodies(frame.payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  // 1. The stream, cut into pieces of 1..16 bytes after the first 24 (so
  //    headers and payloads straddle feed() calls), through the parser.
  if (!bytes.empty()) {
    const std::size_t step = (static_cast<std::size_t>(bytes[0]) % 16) + 1;
    FrameParser parser(kMaxFrame);
    std::size_t at = 1;
    bool failed = false;
    while (at < bytes.size() && !failed) {
      const std::size_t n = std::min(at < 25 ? std::size_t{24} : step, bytes.size() - at);
      parser.feed(bytes.subspan(at, n));
      at += n;
      for (;;) {
        auto next = parser.next();
        if (!next) {
          failed = true;
          if (parser.next()) violated();  // a failed parser stays failed
          break;
        }
        if (!next->has_value()) break;
        decode_frame(**next);
      }
    }
  }
  // 2. The whole input as one payload of every kind, and as a completion text.
  for (std::uint16_t t = 1; t <= static_cast<std::uint16_t>(MsgType::locate); ++t) {
    auto request = decode_request(static_cast<MsgType>(t), bytes);
    if (request) {
      std::visit(
          [&](const auto& message) {
            auto again = encode_payload(message);
            if (!again || again->size() != bytes.size() || !std::equal(again->begin(), again->end(), bytes.begin()))
              violated();
          },
          *request);
    }
  }
  decode_answer_bodies(bytes);
  // A parsed completion formats to a text that parses to the same thing
  // (the input itself may be non-canonical, e.g. "007:ok").
  auto completion = parse_completion(std::string_view(reinterpret_cast<const char*>(data), size));
  if (completion) {
    const Status result =
        completion->ok ? Status{} : Status(tl::unexpected(Error{Errc::internal, completion->message}));
    auto again = parse_completion(format_completion(completion->request_id, result));
    if (!again || again->request_id != completion->request_id || again->ok != completion->ok ||
        again->message != completion->message) {
      violated();
    }
  }
  return 0;
}
