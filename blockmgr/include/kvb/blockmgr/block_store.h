// BlockStore: where the disk tier (G3) keeps its blocks. blockmgr declares
// it; storage/ implements it (SlotStore: preallocated slot files, O_DIRECT
// I/O through io_uring or a thread pool, a checksummed header per slot).
//
// A store has slot_count() fixed slots of block_bytes() each. BlockManager
// owns the slot numbers (its G3 Pool) and issues at most one write or read
// per slot at a time; a slot it reads holds a block that an earlier write
// completed, or one that recovered() listed.
//
// Contract of write(): the store copies the source bytes before write()
// returns (the caller may reuse or free them at once) and calls `done`
// exactly once. done(ok) means *durable*: the payload, then the header that
// names it, reached stable storage in that order; after a crash the slot is
// found again as this block. done(error) means the slot holds nothing that a
// later open would list under this hash.
//
// Contract of read(): `done` is called exactly once. done(ok) means every
// byte of `dst` holds exactly what was written, checked against the slot's
// header (magic, version, shape, hash, generation, header checksum) and its
// payload checksum. done(error) means `dst` holds nothing trustworthy (an
// I/O error, or a block that failed a check: the store counts and logs it);
// the caller must treat the block as gone.
//
// `done` runs on a store thread (BlockManager hands it to its owning thread
// through its `post`). write() and read() are safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvb/blockmgr/copy_engine.h"
#include "kvb/blockmgr/sequence_hash.h"
#include "kvb/common/error.h"
#include "kvb/common/ids.h"

namespace kvb {

/// A block a store found intact when it was opened.
struct StoredBlock {
  BlockId slot;
  SequenceHash hash;
};

class BlockStore {
 public:
  BlockStore() = default;
  BlockStore(const BlockStore&) = delete;
  BlockStore& operator=(const BlockStore&) = delete;
  /// Waits for every write and read in flight to call its `done`.
  virtual ~BlockStore() = default;

  /// Short stable name for logs and stats ("slot-store/io_uring", ...).
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  [[nodiscard]] virtual std::uint32_t slot_count() const noexcept = 0;
  /// Payload bytes of one block (the shape's block_bytes).
  [[nodiscard]] virtual std::uint64_t block_bytes() const noexcept = 0;
  /// The intact blocks found at open, oldest write first; each slot and each
  /// hash at most once.
  [[nodiscard]] virtual std::vector<StoredBlock> recovered() const = 0;

  /// Starts a durable write of `src` (block_bytes() long) into `slot` as
  /// `hash`; see the contract above. Errors (done is then not called): busy
  /// (the write queue is full: nothing was written), invalid_argument (slot
  /// out of range, wrong size).
  [[nodiscard]] virtual Status write(BlockId slot, SequenceHash hash, std::span<const std::byte> src,
                                     CopyDone done) = 0;
  /// Starts a checked read of `slot` (which holds `hash`) into `dst`
  /// (block_bytes() long, valid until done); see the contract above.
  virtual void read(BlockId slot, SequenceHash hash, std::span<std::byte> dst, CopyDone done) = 0;
};

}  // namespace kvb
