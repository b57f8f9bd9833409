// kvb_fuzz_replay: runs the fuzz target (protocol_fuzz.cpp) over corpus
// files without libFuzzer, so `make test` replays the committed corpus with
// the ordinary compiler (and, in the asan preset, under ASan + UBSan).
//   kvb_fuzz_replay FILE_OR_DIR...        exit 0 when every input ran
//   kvb_fuzz_replay --write-seeds DIR     writes one valid frame of every
//                                         message type (the seed corpus)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvb/common/protocol_frame.h"
#include "kvb/common/protocol_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;
using namespace kvb;
using namespace kvb::proto;

int run_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    std::fprintf(stderr, "kvb_fuzz_replay: cannot read %s\n", path.c_str());
    return 1;
  }
  (void)LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return 0;
}

template <class M>
std::vector<std::byte> frame_of(const M& message, std::uint64_t id) {
  auto payload = encode_payload(message);
  auto frame = encode_frame(M::kType, RequestId{id}, *payload);
  return *frame;
}

template <class Body>
std::vector<std::byte> reply_frame(const Body& body, std::uint64_t id) {
  return frame_of(make_reply(body), id);
}

int write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, std::vector<std::byte>>> seeds;
  seeds.emplace_back("hello", frame_of(HelloRequest{1, 1, "engine", 7, WireLayout{32, 2, 16, 1024, 2, 256}}, 1));
  RegisterKvRequest reg;
  reg.layout_kind = LayoutKind::layer_separate_block_outer;
  reg.num_blocks = 64;
  reg.region_bytes = 1 << 20;
  reg.fd_count = 2;
  seeds.emplace_back("register_kv", frame_of(reg, 2));
  reg.memory = MemoryHandle::cuda_ipc;
  reg.fd_count = 0;
  reg.cuda_ipc_handles = {std::vector<std::byte>(kCudaIpcHandleBytes, std::byte{1})};
  reg.device_uuid = std::vector<std::byte>(kDeviceUuidBytes, std::byte{2});
  reg.allocation_bytes = {1 << 20};
  reg.regions = {{0, 0}, {0, 4096}};
  seeds.emplace_back("register_kv_ipc", frame_of(reg, 3));
  seeds.emplace_back("lookup", frame_of(LookupRequest{true, {1, 2, 3}}, 4));
  seeds.emplace_back("offload", frame_of(OffloadRequest{{{BlockId{0}, 11}, {BlockId{1}, 12}}}, 5));
  seeds.emplace_back("onboard", frame_of(OnboardRequest{{{11, BlockId{2}}}}, 6));
  seeds.emplace_back("onboard_layers", frame_of(OnboardLayersRequest{2, {{11, BlockId{2}}}}, 7));
  seeds.emplace_back("release", frame_of(ReleaseRequest{{11}}, 8));
  seeds.emplace_back("status", frame_of(StatusRequest{RequestId{5}}, 9));
  seeds.emplace_back("wait", frame_of(WaitRequest{RequestId{5}, 100}, 10));
  seeds.emplace_back("stats", frame_of(StatsRequest{}, 11));
  seeds.emplace_back("bye", frame_of(ByeRequest{}, 12));
  seeds.emplace_back("drain", frame_of(DrainRequest{}, 13));
  seeds.emplace_back("config", frame_of(ConfigRequest{}, 14));
  seeds.emplace_back("locate", frame_of(LocateRequest{{1, 2, 3}}, 15));
  seeds.emplace_back("reply_hello", reply_frame(HelloReply{SessionId{1}, 1, 1 << 24, 256, false, "kvblockd"}, 1));
  seeds.emplace_back("reply_lookup", reply_frame(LookupReply{2, {{WireTier::g2, 2}}}, 4));
  seeds.emplace_back("reply_locate", reply_frame(LocateReply{{{"A", 2}, {"B", 0}}}, 15));
  seeds.emplace_back("reply_stats", reply_frame(StatsReply{R"({"sessions":1})"}, 11));
  seeds.emplace_back("accepted", frame_of(make_accepted_reply(), 5));
  seeds.emplace_back("refused", frame_of(make_error_reply(Error{Errc::busy, "full"}), 5));
  seeds.emplace_back("notification", frame_of(Notification{Errc::ok, "5:ok"}, 5));
  seeds.emplace_back("notification_err", frame_of(Notification{Errc::not_found, "6:err(not_found: 11)"}, 6));
  seeds.emplace_back("progress", frame_of(Progress{0, 2, 4}, 7));
  seeds.emplace_back("error", frame_of(ErrorFrame{Errc::protocol_error, "bad magic"}, 0));
  for (const auto& [name, frame] : seeds) {
    // The target's first byte picks the feed step; the frame follows it.
    std::ofstream out(dir / name, std::ios::binary);
    const char step = 3;
    out.write(&step, 1);
    out.write(reinterpret_cast<const char*>(frame.data()), static_cast<std::streamsize>(frame.size()));
  }
  std::printf("kvb_fuzz_replay: wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") return write_seeds(argv[2]);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR... | --write-seeds DIR\n", argv[0]);
    return 2;
  }
  std::size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg(argv[i]);
    if (fs::is_directory(arg)) {
      for (const auto& entry : fs::directory_iterator(arg)) {
        if (!entry.is_regular_file()) continue;
        if (run_file(entry.path()) != 0) return 1;
        ++inputs;
      }
    } else {
      if (run_file(arg) != 0) return 1;
      ++inputs;
    }
  }
  std::printf("kvb_fuzz_replay: %zu inputs ran, no property violated\n", inputs);
  return inputs == 0 ? 1 : 0;
}
