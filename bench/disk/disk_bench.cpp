// kvblockd-bench disk: GB/s of the disk tier's SlotStore writing and reading
// whole blocks (durable writes: payload, header and their fdatasyncs; reads
// checked against both checksums), fio in the same invocation on the same
// file system with the same block size, O_DIRECT and queue depth as the
// baseline, and the restart time of the full tier (reopen = index rebuild).
// Rounds alternate fio and the store so that noise hits both; medians and
// ratios go to stdout, the last line is one JSON object.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fio_baseline.h"
#include "kvb/storage/slot_store.h"
#include "subcommands.h"

namespace kvb::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir;  // default: a fresh dir under $TMPDIR
  std::uint64_t block_bytes = 2ULL << 20;
  std::uint64_t bytes = 2ULL << 30;
  std::uint32_t queue_depth = 32;
  std::string backend = "auto";
  std::string fio = "fio";
  int rounds = 1;
  bool keep = false;
};

// Keeps `depth` operations in flight: acquire() before each, release() in
// its completion (any thread).
class Window {
 public:
  explicit Window(std::uint32_t depth) : free_(depth), depth_(depth) {}
  void acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void release(bool ok) {
    std::lock_guard lock(mu_);
    ++free_;
    if (!ok) ++failures_;
    cv_.notify_all();
  }
  std::uint64_t drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return free_ == depth_; });
    return failures_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint32_t free_;
  std::uint32_t depth_;
  std::uint64_t failures_ = 0;
};

LayoutSpec spec_for(std::uint64_t block_bytes) {
  LayoutSpec spec;  // one layer, one chunk: block_bytes of u8
  spec.num_layers = 1;
  spec.outer_dim = 1;
  spec.page_size = 512;
  spec.inner_dim = static_cast<std::uint32_t>(block_bytes / 512);
  spec.dtype = DType::u8;
  spec.alignment = 4096;
  return spec;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct StoreRun {
  double write_gbps = 0;
  double read_gbps = 0;
  double restart_seconds = 0;
  std::uint32_t intact = 0;
  std::uint64_t syncs = 0;
  std::string backend;
  bool direct = true;
};

Result<StoreRun> run_store(const Args& a, const storage::SlotStoreOptions& opts) {
  StoreRun out;
  std::uint32_t blocks = 0;
  {
    auto opened = storage::SlotStore::open(opts);
    if (!opened) return tl::unexpected(opened.error());
    auto& store = **opened;
    blocks = store.slot_count();
    out.backend = std::string(store.name());
    out.direct = store.direct_io();
    std::vector<std::byte> src(a.block_bytes);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 131 + 7);
    // The device sees queue_depth I/Os (the ring); the store holds more
    // blocks than that, since each one also waits for its syncs and its
    // header: keep 4 x queue_depth accepted so the device queue stays full.
    Window window(4 * a.queue_depth);
    const auto w0 = Clock::now();
    for (std::uint32_t i = 0; i < blocks; ++i) {
      window.acquire();
      src[0] = static_cast<std::byte>(i);  // every block differs
      auto started =
          store.write(BlockId{i}, SequenceHash{i + 1}, src, [&](const Status& s) { window.release(bool(s)); });
      if (!started) return fail(started.error().code, "write of block {}: {}", i, started.error().message);
    }
    if (auto failed = window.drain(); failed != 0) return fail(Errc::io_error, "{} writes failed", failed);
    out.write_gbps =
        static_cast<double>(blocks) * a.block_bytes / 1e9 / std::chrono::duration<double>(Clock::now() - w0).count();
    out.syncs = store.counters().syncs;
    std::vector<std::byte*> buffers(a.queue_depth);
    for (auto& b : buffers) b = static_cast<std::byte*>(std::aligned_alloc(4096, a.block_bytes));
    std::vector<std::uint32_t> free_buffers(a.queue_depth);
    for (std::uint32_t i = 0; i < a.queue_depth; ++i) free_buffers[i] = i;
    std::mutex mu;
    Window reads(a.queue_depth);
    const auto r0 = Clock::now();
    for (std::uint32_t i = 0; i < blocks; ++i) {
      reads.acquire();
      std::uint32_t slot_buffer = 0;
      {
        std::lock_guard lock(mu);
        slot_buffer = free_buffers.back();
        free_buffers.pop_back();
      }
      store.read(BlockId{i}, SequenceHash{i + 1}, {buffers[slot_buffer], a.block_bytes},
                 [&, slot_buffer](const Status& s) {
                   {
                     std::lock_guard lock(mu);
                     free_buffers.push_back(slot_buffer);
                   }
                   reads.release(bool(s));
                 });
    }
    const auto read_failures = reads.drain();
    out.read_gbps =
        static_cast<double>(blocks) * a.block_bytes / 1e9 / std::chrono::duration<double>(Clock::now() - r0).count();
    for (auto* b : buffers) std::free(b);
    if (read_failures != 0) return fail(Errc::io_error, "{} reads failed their checks", read_failures);
  }
  // Restart: reopen the full tier and rebuild its index from the headers.
  const auto t0 = Clock::now();
  auto reopened = storage::SlotStore::open(opts);
  out.restart_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!reopened) return tl::unexpected(reopened.error());
  out.intact = (*reopened)->recovery().intact;
  if (out.intact != blocks) return fail(Errc::internal, "restart found {} of {} blocks", out.intact, blocks);
  return out;
}

}  // namespace

int run_disk(int argc, char** argv) {
  Args a;
  CLI::App app{"kvblockd-bench disk: the disk tier (G3) against fio, same file system, block size, O_DIRECT, depth"};
  app.add_option("--dir", a.dir, "directory on the file system to test (default: a new dir under $TMPDIR)");
  app.add_option("--block-bytes", a.block_bytes, "block size (default 2 MiB)")->check(CLI::Range(4096ULL, 1ULL << 30));
  app.add_option("--bytes", a.bytes, "size of the tier and of fio's file, e.g. 512MiB (default 2 GiB)")
      ->transform(CLI::AsSizeValue(true));
  app.add_option("--queue-depth", a.queue_depth, "I/Os in flight, both sides (default 32)")->check(CLI::Range(1, 1024));
  app.add_option("--backend", a.backend, "slot store I/O backend: auto, io_uring, threads");
  app.add_option("--fio", a.fio, "fio program (default: fio on PATH; 'none' skips the baseline)");
  app.add_option("--rounds", a.rounds, "rounds of fio + store, alternating (medians reported)")
      ->check(CLI::Range(1, 20));
  app.add_flag("--keep", a.keep, "keep the slot file (default: removed at the end)");
  CLI11_PARSE(app, argc, argv);
  if (a.block_bytes % 4096 != 0) {
    std::fprintf(stderr, "disk: --block-bytes must be a multiple of 4096\n");
    return 2;
  }
  auto backend = storage::parse_io_backend(a.backend);
  if (!backend) {
    std::fprintf(stderr, "disk: %s\n", backend.error().message.c_str());
    return 2;
  }
  bool made_dir = false;
  if (a.dir.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvb-bench-disk-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    a.dir = pattern;
    made_dir = true;
  }
  storage::SlotStoreOptions opts;
  opts.directory = a.dir;
  opts.spec = spec_for(a.block_bytes);
  opts.bytes = a.bytes;
  opts.backend = *backend;
  opts.queue_depth = a.queue_depth;
  opts.write_queue_bytes = 4ULL * a.queue_depth * (a.block_bytes + 4096);
  opts.sync_batch = a.queue_depth;
  const auto geometry = storage::FileHeader::plan(opts.spec, storage::FileHeader::slots_for_bytes(opts.spec, a.bytes));
  const std::string slot_file = a.dir + "/" + storage::slot_file_name(geometry.shape_id);
  const std::uint64_t payload_bytes = std::uint64_t{geometry.slot_count} * a.block_bytes;
  std::fprintf(stderr, "disk: %s, %u blocks of %llu bytes (%.2f GB), queue depth %u, %d round(s)\n", a.dir.c_str(),
               geometry.slot_count, static_cast<unsigned long long>(a.block_bytes), payload_bytes / 1e9, a.queue_depth,
               a.rounds);

  std::vector<double> ours_w, ours_r, fio_w, fio_r, restart;
  StoreRun last;
  std::string fio_write_cmd, fio_read_cmd, fio_note;
  const std::string ioengine =
      *backend == storage::IoBackend::threads || !storage::io_uring_available() ? "psync" : "io_uring";
  int rc = 0;
  for (int round = 0; round < a.rounds && rc == 0; ++round) {
    FioJob job{a.fio, a.dir + "/fio-baseline.dat", payload_bytes, a.block_bytes, a.queue_depth, ioengine, true};
    auto fw = a.fio == "none" ? Result<FioResult>(fail(Errc::unavailable, "--fio none")) : run_fio(job);
    job.write = false;
    auto fr = fw ? run_fio(job) : fw;
    std::filesystem::remove(job.file);
    if (fw && fr) {
      fio_w.push_back(fw->gbps);
      fio_r.push_back(fr->gbps);
      fio_write_cmd = fw->command;
      fio_read_cmd = fr->command;
    } else {
      fio_note = (fw ? fr : fw).error().message;
      std::fprintf(stderr, "disk: fio baseline skipped: %s\n", fio_note.c_str());
    }
    std::filesystem::remove(slot_file);
    auto ours = run_store(a, opts);
    if (!ours) {
      std::fprintf(stderr, "disk: slot store failed: %s\n", ours.error().to_string().c_str());
      rc = 1;
      break;
    }
    last = *ours;
    ours_w.push_back(ours->write_gbps);
    ours_r.push_back(ours->read_gbps);
    restart.push_back(ours->restart_seconds);
    std::fprintf(stderr,
                 "round %d: store write %.3f GB/s read %.3f GB/s restart %.3f s (%u blocks) | fio write %.3f read "
                 "%.3f GB/s\n",
                 round + 1, ours->write_gbps, ours->read_gbps, ours->restart_seconds, ours->intact,
                 fio_w.empty() ? 0.0 : fio_w.back(), fio_r.empty() ? 0.0 : fio_r.back());
  }
  if (!a.keep) std::filesystem::remove(slot_file);
  if (made_dir && !a.keep) std::filesystem::remove_all(a.dir);
  if (rc != 0) return rc;

  const double w = median(ours_w), r = median(ours_r), fw = median(fio_w), fr = median(fio_r);
  const double rs = median(restart);
  const double per10k = last.intact == 0 ? 0 : rs * 10000.0 / last.intact;
  std::printf("%-22s %10s %10s %8s\n", "", "slot store", "fio", "ratio");
  std::printf("%-22s %10.3f %10.3f %8.3f\n", "write GB/s (durable)", w, fw, fw > 0 ? w / fw : 0);
  std::printf("%-22s %10.3f %10.3f %8.3f\n", "read GB/s (checked)", r, fr, fr > 0 ? r / fr : 0);
  std::printf("restart (index rebuild) of %u blocks: %.3f s = %.4f s per 10,000 blocks\n", last.intact, rs, per10k);
  std::printf("store backend %s, O_DIRECT %s, %llu fdatasyncs for %u writes\n", last.backend.c_str(),
              last.direct ? "yes" : "no (buffered)", static_cast<unsigned long long>(last.syncs), last.intact);
  if (!fio_write_cmd.empty()) std::printf("fio: %s\nfio: %s\n", fio_write_cmd.c_str(), fio_read_cmd.c_str());
  nlohmann::json j;
  j["bench"] = "disk";
  j["dir"] = a.dir;
  j["block_bytes"] = a.block_bytes;
  j["blocks"] = last.intact;
  j["queue_depth"] = a.queue_depth;
  j["rounds"] = a.rounds;
  j["backend"] = last.backend;
  j["direct_io"] = last.direct;
  j["write_gbps"] = w;
  j["read_gbps"] = r;
  j["fio_write_gbps"] = fw;
  j["fio_read_gbps"] = fr;
  j["write_ratio"] = fw > 0 ? w / fw : 0;
  j["read_ratio"] = fr > 0 ? r / fr : 0;
  j["fio_ioengine"] = ioengine;
  if (!fio_note.empty()) j["fio_skipped"] = fio_note;
  j["restart_seconds"] = rs;
  j["restart_seconds_per_10k_blocks"] = per10k;
  j["syncs"] = last.syncs;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace kvb::bench
