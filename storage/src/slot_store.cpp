// SlotStore's I/O pipeline: staged writes through tombstone / payload /
// header phases under group-committed fdatasyncs, and checked reads.
#include "kvb/storage/slot_store.h"

#include <sys/mman.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstdlib>
#include <cstring>

namespace kvb::storage {

struct SlotStore::WriteOp {
  enum class Phase : std::uint8_t { tombstone, payload, header } phase = Phase::payload;
  std::uint32_t slot = 0;
  SequenceHash hash{};
  std::uint64_t generation = 0;
  std::uint64_t checksum = 0;
  std::byte* buffer = nullptr;  // [header page][payload, stride bytes]
  CopyDone done;
};

struct SlotStore::ReadOp {
  std::uint32_t slot = 0;
  SequenceHash hash{};
  SlotInfo expect;
  std::span<std::byte> dst;
  std::byte* bounce = nullptr;  // payload staging when dst cannot take O_DIRECT I/O
  std::string error;            // the I/O error, if any
  CopyDone done;
};

namespace {

// Logs the first ten of a kind, then every thousandth: failures under a
// full or failing disk must not flood the log.
bool worth_logging(std::uint64_t count) { return count <= 10 || count % 1000 == 0; }

}  // namespace

SlotStore::~SlotStore() {
  {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [&] { return ops_ == 0; });
  }
  io_.reset();
  if (staging_ != nullptr) ::munmap(staging_, staging_bytes_);
  if (fd_ >= 0) ::close(fd_);
}

SlotStoreCounters SlotStore::counters() const {
  SlotStoreCounters c;
  c.writes = writes_.load();
  c.write_failures = write_failures_.load();
  c.write_busy = write_busy_.load();
  c.reads = reads_.load();
  c.read_failures = read_failures_.load();
  c.checksum_failures = checksum_failures_.load();
  c.io_errors = io_errors_.load();
  c.bytes_written = bytes_written_.load();
  c.bytes_read = bytes_read_.load();
  c.syncs = syncs_.load();
  c.writes_in_flight = writes_in_flight_.load();
  c.reads_in_flight = reads_in_flight_.load();
  c.io_queue_depth = io_ ? io_->in_flight() : 0;
  return c;
}

void SlotStore::run(Callbacks& callbacks) {
  for (auto& [done, status] : callbacks) done(std::move(status));
  callbacks.clear();
}

Status SlotStore::write(BlockId slot, SequenceHash hash, std::span<const std::byte> src, CopyDone done) {
  if (slot.value() >= file_.slot_count)
    return fail(Errc::invalid_argument, "disk: slot {} is out of range ({} slots)", slot, file_.slot_count);
  if (src.size() != file_.block_bytes)
    return fail(Errc::invalid_argument, "disk: a block is {} bytes, not {}", file_.block_bytes, src.size());
  std::byte* buffer = nullptr;
  {
    std::lock_guard lock(mu_);
    if (free_buffers_.empty()) {
      write_busy_.fetch_add(1);
      return fail(Errc::busy, "disk: the write queue is full ({} blocks wait to become durable)",
                  writes_in_flight_.load());
    }
    buffer = free_buffers_.back();
    free_buffers_.pop_back();
    slots_[slot.value()].valid = false;  // its old block is gone for readers from now on
    ++ops_;
  }
  writes_in_flight_.fetch_add(1);
  // Copy into the staging buffer and checksum each piece while it is hot.
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  std::byte* payload = buffer + kPageBytes;
  constexpr std::size_t kPiece = std::size_t{256} * 1024;
  for (std::size_t off = 0; off < src.size(); off += kPiece) {
    const std::size_t n = std::min(kPiece, src.size() - off);
    std::memcpy(payload + off, src.data() + off, n);
    XXH3_64bits_update(&state, payload + off, n);
  }
  std::memset(payload + src.size(), 0, file_.stride - src.size());
  auto* op =
      new WriteOp{WriteOp::Phase::payload, slot.value(), hash, 0, XXH3_64bits_digest(&state), buffer, std::move(done)};
  std::lock_guard lock(mu_);
  op->generation = next_generation_++;
  if (header_live_[op->slot] != 0) op->phase = WriteOp::Phase::tombstone;
  submit_phase(op);
  return ok();
}

void SlotStore::submit_phase(WriteOp* op) {
  ++writes_in_io_;
  auto on_done = [this, op](Result<std::size_t> result) { on_write_io(op, std::move(result)); };
  std::span<std::byte> page(op->buffer, kPageBytes);
  SlotHeader h;
  h.slot = op->slot;
  h.shape_id = file_.shape_id;
  h.generation = op->generation;
  switch (op->phase) {
    case WriteOp::Phase::tombstone:
      h.state = SlotState::tombstone;
      h.encode(page);
      io_->write(file_.header_offset(op->slot), page, std::move(on_done));
      break;
    case WriteOp::Phase::payload:
      io_->write(file_.payload_offset(op->slot), {op->buffer + kPageBytes, file_.stride}, std::move(on_done));
      break;
    case WriteOp::Phase::header:
      h.state = SlotState::committed;
      h.hash = op->hash;
      h.payload_bytes = file_.block_bytes;
      h.payload_xxh3 = op->checksum;
      h.encode(page);
      io_->write(file_.header_offset(op->slot), page, std::move(on_done));
      break;
  }
}

void SlotStore::fail_write(WriteOp* op, Error error, Callbacks& out) {
  header_live_[op->slot] = 1;  // unknown on disk now: tombstone it before the next write
  free_buffers_.push_back(op->buffer);
  --ops_;
  writes_in_flight_.fetch_sub(1);
  if (worth_logging(write_failures_.fetch_add(1) + 1))
    spdlog::warn("disk: writing block {} to slot {} of {} failed: {} ({} write failures so far)", op->hash, op->slot,
                 path_, error.message, write_failures_.load());
  out.emplace_back(std::move(op->done),
                   fail(Errc::io_error, "disk write of block {} failed: {}", op->hash, error.message));
  delete op;
  idle_.notify_all();
}

void SlotStore::on_write_io(WriteOp* op, Result<std::size_t> result) {
  Callbacks callbacks;
  {
    std::lock_guard lock(mu_);
    --writes_in_io_;
    if (!result) {
      io_errors_.fetch_add(1);
      fail_write(op, std::move(result.error()), callbacks);
    } else {
      awaiting_sync_.push_back(op);
    }
    maybe_sync();
  }
  run(callbacks);
}

void SlotStore::maybe_sync() {
  if (sync_in_flight_ || awaiting_sync_.empty()) return;
  if (writes_in_io_ != 0 && awaiting_sync_.size() < sync_batch_) return;  // more will join this sync
  syncing_.swap(awaiting_sync_);
  sync_in_flight_ = true;
  io_->datasync([this](Result<std::size_t> result) { on_sync(std::move(result)); });
}

void SlotStore::on_sync(Result<std::size_t> result) {
  Callbacks callbacks;
  {
    std::lock_guard lock(mu_);
    sync_in_flight_ = false;
    std::vector<WriteOp*> batch;
    batch.swap(syncing_);
    if (result) {
      syncs_.fetch_add(1);
    } else {
      io_errors_.fetch_add(1);
    }
    for (WriteOp* op : batch) {
      if (!result) {
        fail_write(op, result.error(), callbacks);
        continue;
      }
      switch (op->phase) {
        case WriteOp::Phase::tombstone:
          header_live_[op->slot] = 0;  // the old header is durably gone: the payload may change
          op->phase = WriteOp::Phase::payload;
          submit_phase(op);
          break;
        case WriteOp::Phase::payload:
          op->phase = WriteOp::Phase::header;  // the payload is durable: now name it
          submit_phase(op);
          break;
        case WriteOp::Phase::header:
          header_live_[op->slot] = 1;
          slots_[op->slot] = SlotInfo{op->hash, op->generation, op->checksum, true};
          free_buffers_.push_back(op->buffer);
          --ops_;
          writes_in_flight_.fetch_sub(1);
          writes_.fetch_add(1);
          bytes_written_.fetch_add(file_.block_bytes);
          callbacks.emplace_back(std::move(op->done), ok());
          delete op;
          idle_.notify_all();
          break;
      }
    }
    maybe_sync();
  }
  run(callbacks);
}

void SlotStore::read(BlockId slot, SequenceHash hash, std::span<std::byte> dst, CopyDone done) {
  if (slot.value() >= file_.slot_count || dst.size() != file_.block_bytes) {
    read_failures_.fetch_add(1);
    return done(fail(Errc::invalid_argument, "disk: read of slot {} ({} bytes) is out of range", slot, dst.size()));
  }
  SlotInfo expect;
  {
    std::lock_guard lock(mu_);
    expect = slots_[slot.value()];
    if (expect.valid && expect.hash == hash) ++ops_;
  }
  if (!expect.valid || expect.hash != hash) {
    read_failures_.fetch_add(1);
    return done(fail(Errc::not_found, "disk: slot {} does not hold block {}", slot, hash));
  }
  reads_in_flight_.fetch_add(1);
  auto* op = new ReadOp;
  op->slot = slot.value();
  op->hash = hash;
  op->expect = expect;
  op->dst = dst;
  op->done = std::move(done);
  const bool direct_into_dst =
      reinterpret_cast<std::uintptr_t>(dst.data()) % kPageBytes == 0 && file_.block_bytes == file_.stride;
  if (!direct_into_dst) op->bounce = static_cast<std::byte*>(std::aligned_alloc(kPageBytes, file_.stride));
  // One I/O per block: the payload. What it must hash to is in the index
  // (recorded when the block became durable, or read from its checked header
  // at restart), so the header page is not read again.
  io_->read(file_.payload_offset(op->slot), {direct_into_dst ? dst.data() : op->bounce, file_.stride},
            [this, op](Result<std::size_t> result) {
              if (!result) {
                io_errors_.fetch_add(1);
                op->error = result.error().message;
              }
              finish_read(op);
            });
}

void SlotStore::finish_read(ReadOp* op) {
  Status result = ok();
  const std::byte* payload = op->bounce != nullptr ? op->bounce : op->dst.data();
  if (!op->error.empty()) {
    if (worth_logging(read_failures_.load() + 1))
      spdlog::warn("disk: reading block {} from slot {} of {} failed: {}", op->hash, op->slot, path_, op->error);
    result = fail(Errc::io_error, "disk read of block {} failed: {}", op->hash, op->error);
  } else if (payload_checksum({payload, file_.block_bytes}) != op->expect.checksum) {
    checksum_failures_.fetch_add(1);
    spdlog::warn("disk: block {} in slot {} of {} failed its payload checksum check: dropped (served as a miss)",
                 op->hash, op->slot, path_);
    result = fail(Errc::io_error, "disk block {} failed its payload checksum check", op->hash);
  } else {
    if (op->bounce != nullptr) std::memcpy(op->dst.data(), op->bounce, file_.block_bytes);
    reads_.fetch_add(1);
    bytes_read_.fetch_add(file_.block_bytes);
  }
  if (!result) read_failures_.fetch_add(1);
  CopyDone done = std::move(op->done);
  std::free(op->bounce);
  {
    std::lock_guard lock(mu_);
    if (!result) slots_[op->slot].valid = false;
    --ops_;
    idle_.notify_all();
  }
  delete op;
  reads_in_flight_.fetch_sub(1);
  done(std::move(result));
}

}  // namespace kvb::storage
