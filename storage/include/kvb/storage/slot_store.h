// SlotStore: the disk tier's BlockStore. One preallocated file of fixed
// slots per block shape (slot_format.h), O_DIRECT I/O through a FileIo
// (io_uring, or the thread-pool fallback), a checksummed header per slot,
// durable writes batched under a shared fdatasync, checked reads, and the
// index rebuilt from the headers when the file is opened again.
//
// Write path of one block (docs/disk.md, "Durability"):
//   1. write() copies the block into a staging buffer and computes its
//      XXH3-64 while copying; the caller's memory is free again.
//   2. if the slot's on-disk header may still name an older block, a
//      tombstone header is written first and made durable, so that a crash
//      can never leave an old header in front of new bytes;
//   3. the payload is written, then made durable;
//   4. the header (hash, generation, payload checksum, header checksum) is
//      written, then made durable; only now is done(ok) called.
// Every "made durable" is one fdatasync shared by all writes that reached
// that step meanwhile (group commit): a sync starts when no write is left in
// the device queue or `sync_batch` writes wait for it, and the next one
// starts as soon as it ends. So a burst of writes costs a few syncs, and a
// lone write is durable after three short syncs at most.
//
// Crash: a write whose done(ok) ran is found after a restart. A write in
// flight is either found whole or not at all: the restart finds its slot
// empty, tombstoned, torn (header checksum fails: dropped and counted) or
// holding the *older* block it replaced, which is intact because its
// payload is only overwritten after the tombstone is durable.
//
// Thread-safety: every public method is safe from any thread. Completions
// run on the FileIo's threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kvb/blockmgr/block_store.h"
#include "kvb/blockmgr/layout.h"
#include "kvb/storage/fault_injecting_file_io.h"
#include "kvb/storage/file_io.h"
#include "kvb/storage/slot_format.h"

namespace kvb::storage {

struct SlotStoreOptions {
  std::string directory;  // must exist and be writable; the file is created inside
  LayoutSpec spec;        // the block shape (alignment ignored)
  /// Size of a new slot file (headers + payloads). An existing file keeps
  /// the slots it was created with.
  std::uint64_t bytes = 0;
  IoBackend backend = IoBackend::automatic;
  std::uint32_t queue_depth = 64;  // I/O operations in the kernel at once
  std::uint32_t sync_batch = 32;   // a sync starts when this many writes wait for it
  /// Staging memory for accepted writes that are not durable yet; write()
  /// answers busy when it is all in use. At least one block.
  std::uint64_t write_queue_bytes = 128ULL << 20;
  /// When set, the backend is wrapped in a FaultInjectingFileIo.
  std::optional<FaultPlan> faults;
};

/// What open() found in an existing file.
struct RecoveryReport {
  bool created = false;          // a new file was made (nothing to recover)
  std::uint32_t slots = 0;       // slots in the file
  std::uint32_t intact = 0;      // blocks listed by recovered()
  std::uint32_t empty = 0;       // never written or tombstoned
  std::uint32_t torn = 0;        // header failed its checks (torn or damaged write): dropped
  std::uint32_t foreign = 0;     // a valid header of another slot or shape: dropped
  std::uint32_t duplicates = 0;  // an older copy of a hash found in another slot: dropped
  double seconds = 0;            // time to read and check every header
};

/// Monotonic counters and gauges, readable from any thread.
struct SlotStoreCounters {
  std::uint64_t writes = 0;             // blocks made durable
  std::uint64_t write_failures = 0;     // writes that ended in error (ENOSPC, EIO, ...)
  std::uint64_t write_busy = 0;         // write() refused: staging full
  std::uint64_t reads = 0;              // blocks read and verified
  std::uint64_t read_failures = 0;      // reads that ended in error (I/O or checks)
  std::uint64_t checksum_failures = 0;  // reads whose payload failed its checksum
  std::uint64_t io_errors = 0;          // failed I/O calls (write, read, fdatasync)
  std::uint64_t bytes_written = 0;      // payload bytes of completed writes
  std::uint64_t bytes_read = 0;         // payload bytes of verified reads
  std::uint64_t syncs = 0;              // fdatasync calls completed
  std::uint32_t writes_in_flight = 0;   // accepted, not yet durable
  std::uint32_t reads_in_flight = 0;
  std::uint32_t io_queue_depth = 0;  // operations the FileIo holds now

  /// Sums two stores' counters (the daemon's totals over its slot files).
  SlotStoreCounters& operator+=(const SlotStoreCounters& o) noexcept {
    writes += o.writes;
    write_failures += o.write_failures;
    write_busy += o.write_busy;
    reads += o.reads;
    read_failures += o.read_failures;
    checksum_failures += o.checksum_failures;
    io_errors += o.io_errors;
    bytes_written += o.bytes_written;
    bytes_read += o.bytes_read;
    syncs += o.syncs;
    writes_in_flight += o.writes_in_flight;
    reads_in_flight += o.reads_in_flight;
    io_queue_depth += o.io_queue_depth;
    return *this;
  }
};

class SlotStore final : public BlockStore {
 public:
  /// Opens (or creates) the slot file of `options.spec` in the directory and
  /// rebuilds the index from its headers. Errors name the path and errno:
  /// unavailable (directory missing, not writable, read-only file system,
  /// file system full for the preallocation), invalid_argument (bytes hold
  /// no slot), io_error.
  [[nodiscard]] static Result<std::unique_ptr<SlotStore>> open(const SlotStoreOptions& options);
  /// The block shapes whose slot files `directory` holds (files whose header
  /// does not decode are skipped with a warning).
  [[nodiscard]] static Result<std::vector<LayoutSpec>> list_shapes(const std::string& directory);

  ~SlotStore() override;

  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  [[nodiscard]] std::uint32_t slot_count() const noexcept override { return file_.slot_count; }
  [[nodiscard]] std::uint64_t block_bytes() const noexcept override { return file_.block_bytes; }
  [[nodiscard]] std::vector<StoredBlock> recovered() const override { return recovered_; }
  [[nodiscard]] Status write(BlockId slot, SequenceHash hash, std::span<const std::byte> src, CopyDone done) override;
  void read(BlockId slot, SequenceHash hash, std::span<std::byte> dst, CopyDone done) override;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const FileHeader& geometry() const noexcept { return file_; }
  [[nodiscard]] const RecoveryReport& recovery() const noexcept { return report_; }
  [[nodiscard]] SlotStoreCounters counters() const;
  /// The fault injector when options.faults was set, else nullptr.
  [[nodiscard]] FaultInjectingFileIo* fault_injector() const noexcept { return faults_; }
  /// Whether the file is open with O_DIRECT (false on file systems without it).
  [[nodiscard]] bool direct_io() const noexcept { return direct_; }

 private:
  struct WriteOp;
  struct ReadOp;
  struct SlotInfo {
    SequenceHash hash{};
    std::uint64_t generation = 0;
    std::uint64_t checksum = 0;
    bool valid = false;  // a committed block a read may ask for
  };
  using Callbacks = std::vector<std::pair<CopyDone, Status>>;

  SlotStore() = default;
  Status recover();
  void submit_phase(WriteOp* op);  // mu_ held
  void on_write_io(WriteOp* op, Result<std::size_t> result);
  void on_sync(Result<std::size_t> result);
  void maybe_sync();                                          // mu_ held
  void fail_write(WriteOp* op, Error error, Callbacks& out);  // mu_ held
  void finish_read(ReadOp* op);
  static void run(Callbacks& callbacks);

  std::string path_;
  std::string name_;
  FileHeader file_;
  int fd_ = -1;
  bool direct_ = true;
  std::unique_ptr<FileIo> io_;
  FaultInjectingFileIo* faults_ = nullptr;
  std::uint32_t sync_batch_ = 32;
  RecoveryReport report_;
  std::vector<StoredBlock> recovered_;

  std::byte* staging_ = nullptr;  // n buffers of kPageBytes + stride
  std::size_t staging_bytes_ = 0;

  mutable std::mutex mu_;
  std::condition_variable idle_;
  std::vector<std::byte*> free_buffers_;   // guarded by mu_
  std::vector<SlotInfo> slots_;            // guarded by mu_
  std::vector<std::uint8_t> header_live_;  // guarded by mu_: the on-disk header may name a block
  std::vector<WriteOp*> awaiting_sync_;    // guarded by mu_
  std::vector<WriteOp*> syncing_;          // guarded by mu_
  bool sync_in_flight_ = false;            // guarded by mu_
  std::uint32_t writes_in_io_ = 0;         // guarded by mu_
  std::uint64_t next_generation_ = 1;      // guarded by mu_
  std::uint32_t ops_ = 0;                  // guarded by mu_: writes and reads not yet done

  std::atomic<std::uint64_t> writes_{0}, write_failures_{0}, write_busy_{0}, reads_{0}, read_failures_{0},
      checksum_failures_{0}, io_errors_{0}, bytes_written_{0}, bytes_read_{0}, syncs_{0};
  std::atomic<std::uint32_t> writes_in_flight_{0}, reads_in_flight_{0};
};

}  // namespace kvb::storage
