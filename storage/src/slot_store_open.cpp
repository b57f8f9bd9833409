// SlotStore::open: create or reopen a slot file, rebuild the index from its
// headers (restart recovery), and list the slot files of a directory.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "kvb/storage/slot_store.h"

namespace kvb::storage {
namespace {

struct AlignedPages {
  explicit AlignedPages(std::size_t bytes)
      : data(static_cast<std::byte*>(std::aligned_alloc(kPageBytes, bytes))), size(bytes) {}
  ~AlignedPages() { std::free(data); }
  AlignedPages(const AlignedPages&) = delete;
  AlignedPages& operator=(const AlignedPages&) = delete;
  std::byte* data;
  std::size_t size;
};

// Reads exactly `bytes` at `offset` (blocking; open time only).
Status pread_all(int fd, std::byte* dst, std::size_t bytes, std::uint64_t offset, const std::string& path) {
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, dst + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Errc::io_error, "reading '{}' at {}: {}", path, offset + done, std::strerror(errno));
    if (n == 0) return fail(Errc::io_error, "reading '{}' at {}: the file ends early", path, offset + done);
    done += static_cast<std::size_t>(n);
  }
  return ok();
}

Status pwrite_all(int fd, const std::byte* src, std::size_t bytes, std::uint64_t offset, const std::string& path) {
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pwrite(fd, src + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return fail(Errc::io_error, "writing '{}' at {}: {}", path, offset + done, std::strerror(n < 0 ? errno : EIO));
    done += static_cast<std::size_t>(n);
  }
  return ok();
}

// Opens `path` with O_DIRECT when the file system allows it.
int open_file(const std::string& path, int flags, bool& direct) {
  int fd = ::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC, 0600);
  direct = true;
  if (fd < 0 && errno == EINVAL) {  // tmpfs and friends: no O_DIRECT
    fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
    direct = false;
  }
  return fd;
}

Errc errc_of_open(int err) {
  return err == EACCES || err == EROFS || err == EPERM || err == ENOSPC || err == EDQUOT ? Errc::unavailable
                                                                                         : Errc::io_error;
}

// Sizes a fresh file and writes its header: fallocate (so that later writes
// cannot run out of space), page 0, fdatasync, and the directory entry.
Status initialise(int fd, const FileHeader& header, const std::string& path, const std::string& directory) {
  if (::ftruncate(fd, 0) != 0) return fail(Errc::io_error, "truncating '{}': {}", path, std::strerror(errno));
  if (::fallocate(fd, 0, 0, static_cast<off_t>(header.file_bytes)) != 0) {
    const int err = errno;
    if (err != EOPNOTSUPP)
      return fail(errc_of_open(err), "preallocating {} bytes for '{}': {} (lower disk.bytes or free space)",
                  header.file_bytes, path, std::strerror(err));
    spdlog::warn("disk: {} cannot preallocate (fallocate unsupported); later writes may hit ENOSPC", path);
    if (::ftruncate(fd, static_cast<off_t>(header.file_bytes)) != 0)
      return fail(Errc::io_error, "sizing '{}': {}", path, std::strerror(errno));
  }
  AlignedPages page(kPageBytes);
  header.encode({page.data, kPageBytes});
  if (auto s = pwrite_all(fd, page.data, kPageBytes, 0, path); !s) return s;
  if (::fdatasync(fd) != 0) return fail(Errc::io_error, "fdatasync '{}': {}", path, std::strerror(errno));
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return ok();
}

}  // namespace

Result<std::unique_ptr<SlotStore>> SlotStore::open(const SlotStoreOptions& options) {
  if (auto valid = options.spec.validate(); !valid) return tl::unexpected(valid.error());
  struct stat st {};
  if (::stat(options.directory.c_str(), &st) != 0)
    return fail(Errc::unavailable, "disk directory '{}': {}", options.directory, std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return fail(Errc::unavailable, "disk directory '{}' is not a directory", options.directory);

  std::unique_ptr<SlotStore> s(new SlotStore());
  const FileHeader wanted = FileHeader::plan(options.spec, FileHeader::slots_for_bytes(options.spec, options.bytes));
  s->path_ = options.directory + "/" + slot_file_name(wanted.shape_id);
  s->sync_batch_ = std::max<std::uint32_t>(1, options.sync_batch);

  bool reuse = false;
  s->fd_ = open_file(s->path_, O_RDWR, s->direct_);
  if (s->fd_ >= 0) {
    AlignedPages page(kPageBytes);
    struct stat fst {};
    auto read = pread_all(s->fd_, page.data, kPageBytes, 0, s->path_);
    auto header = read ? FileHeader::decode({page.data, kPageBytes}) : Result<FileHeader>(tl::unexpected(read.error()));
    if (!header) {
      spdlog::warn("disk: {}: {}; starting it empty", s->path_, header.error().message);
    } else if (header->shape_id != wanted.shape_id || !header->spec.same_block_shape(options.spec)) {
      spdlog::warn("disk: {} holds another block shape; starting it empty", s->path_);
    } else if (::fstat(s->fd_, &fst) != 0 || static_cast<std::uint64_t>(fst.st_size) < header->file_bytes) {
      spdlog::warn("disk: {} is shorter than its {} slots; starting it empty", s->path_, header->slot_count);
    } else {
      reuse = true;
      s->file_ = *header;
      if (header->slot_count != wanted.slot_count)
        spdlog::info("disk: {} keeps its {} slots (disk.bytes asks for {}; remove the file to resize)", s->path_,
                     header->slot_count, wanted.slot_count);
    }
  } else if (errno == ENOENT) {
    s->fd_ = open_file(s->path_, O_RDWR | O_CREAT | O_EXCL, s->direct_);
    if (s->fd_ < 0) {
      const int err = errno;
      return fail(errc_of_open(err), "cannot create slot file '{}': {}", s->path_, std::strerror(err));
    }
  } else {
    const int err = errno;
    return fail(errc_of_open(err), "cannot open slot file '{}': {}", s->path_, std::strerror(err));
  }
  // One process per slot file: a second daemon on the same directory would
  // overwrite this one's blocks under its index.
  if (::flock(s->fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    return fail(Errc::unavailable, "slot file '{}' is in use by another process ({}): one kvblockd per disk.path",
                s->path_, std::strerror(err));
  }
  if (!reuse) {
    if (wanted.slot_count == 0) {
      ::unlink(s->path_.c_str());
      return fail(Errc::invalid_argument, "disk bytes {} hold no slot of {} bytes (need at least {})", options.bytes,
                  wanted.block_bytes, FileHeader::plan(options.spec, 1).file_bytes);
    }
    s->file_ = wanted;
    if (auto init = initialise(s->fd_, wanted, s->path_, options.directory); !init) {
      ::unlink(s->path_.c_str());
      return tl::unexpected(init.error());
    }
    s->report_.created = true;
  }
  if (!s->direct_)
    spdlog::warn("disk: {} does not support O_DIRECT; using buffered I/O (still fdatasync'ed)", s->path_);

  s->slots_.assign(s->file_.slot_count, SlotInfo{});
  s->header_live_.assign(s->file_.slot_count, 0);
  s->report_.slots = s->file_.slot_count;
  if (reuse) {
    if (auto rec = s->recover(); !rec) return tl::unexpected(rec.error());
  }

  auto io = make_file_io(s->fd_, options.backend, options.queue_depth);
  if (!io) return tl::unexpected(io.error());
  s->io_ = std::move(*io);
  if (options.faults) {
    auto wrapped = std::make_unique<FaultInjectingFileIo>(std::move(s->io_), *options.faults);
    s->faults_ = wrapped.get();
    s->io_ = std::move(wrapped);
    spdlog::warn("disk: {} runs through the fault-injecting backend ({})", s->path_, options.faults->to_string());
  }
  s->name_ = fmt::format("slot-store/{}", s->io_->name());

  const std::uint64_t buffer_bytes = kPageBytes + s->file_.stride;
  const std::uint64_t buffers = std::max<std::uint64_t>(1, options.write_queue_bytes / buffer_bytes);
  s->staging_bytes_ = static_cast<std::size_t>(buffers * buffer_bytes);
  void* mem = ::mmap(nullptr, s->staging_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    return fail(Errc::out_of_capacity, "disk: {} bytes of write staging: {}", s->staging_bytes_, std::strerror(errno));
  s->staging_ = static_cast<std::byte*>(mem);
  for (std::uint64_t i = buffers; i > 0; --i) s->free_buffers_.push_back(s->staging_ + (i - 1) * buffer_bytes);
  return s;
}

Status SlotStore::recover() {
  const auto start = std::chrono::steady_clock::now();
  const std::uint32_t n = file_.slot_count;
  constexpr std::uint32_t kPagesPerRead = 1024;  // 4 MiB per read
  AlignedPages buffer(kPageBytes * kPagesPerRead);
  struct Found {
    std::uint32_t slot;
    std::uint64_t generation;
  };
  std::unordered_map<SequenceHash, Found> by_hash;
  by_hash.reserve(n);
  std::uint64_t max_generation = 0;
  for (std::uint32_t first = 0; first < n; first += kPagesPerRead) {
    const std::uint32_t count = std::min(kPagesPerRead, n - first);
    if (auto s = pread_all(fd_, buffer.data, std::size_t{count} * kPageBytes, file_.header_offset(first), path_); !s)
      return s;
    for (std::uint32_t k = 0; k < count; ++k) {
      const std::uint32_t slot = first + k;
      const auto d = decode_slot_header({buffer.data + std::size_t{k} * kPageBytes, kPageBytes});
      if (d.page == SlotPage::empty) {
        ++report_.empty;
        continue;
      }
      if (d.page == SlotPage::torn) {
        ++report_.torn;
        continue;
      }
      const SlotHeader& h = d.header;
      max_generation = std::max(max_generation, h.generation);
      if (h.state == SlotState::tombstone) {
        ++report_.empty;
        continue;
      }
      header_live_[slot] = 1;  // a valid committed header: tombstone it before reusing the slot
      if (h.slot != slot || h.shape_id != file_.shape_id || h.payload_bytes != file_.block_bytes) {
        ++report_.foreign;
        continue;
      }
      auto [it, inserted] = by_hash.try_emplace(h.hash, Found{slot, h.generation});
      if (!inserted) {
        ++report_.duplicates;  // keep the newer copy
        if (it->second.generation > h.generation) continue;
        slots_[it->second.slot] = SlotInfo{};
        it->second = Found{slot, h.generation};
      }
      slots_[slot] = SlotInfo{h.hash, h.generation, h.payload_xxh3, true};
    }
  }
  next_generation_ = max_generation + 1;
  std::vector<std::pair<std::uint64_t, StoredBlock>> found;
  found.reserve(by_hash.size());
  for (const auto& [hash, f] : by_hash) found.push_back({f.generation, StoredBlock{BlockId{f.slot}, hash}});
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  recovered_.reserve(found.size());
  for (const auto& [gen, block] : found) recovered_.push_back(block);
  report_.intact = static_cast<std::uint32_t>(recovered_.size());
  report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return ok();
}

Result<std::vector<LayoutSpec>> SlotStore::list_shapes(const std::string& directory) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return fail(Errc::unavailable, "disk directory '{}': {}", directory, std::strerror(errno));
  std::vector<LayoutSpec> shapes;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (!name.starts_with("g3-") || !name.ends_with(".slots")) continue;
    const std::string path = directory + "/" + std::string(name);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      spdlog::warn("disk: cannot open {}: {}", path, std::strerror(errno));
      continue;
    }
    AlignedPages page(kPageBytes);
    auto read = pread_all(fd, page.data, kPageBytes, 0, path);
    ::close(fd);
    auto header = read ? FileHeader::decode({page.data, kPageBytes}) : Result<FileHeader>(tl::unexpected(read.error()));
    if (!header || slot_file_name(header->shape_id) != name) {
      spdlog::warn("disk: {} is not a usable slot file ({}); skipped", path,
                   header ? std::string("its name does not match its shape") : header.error().message);
      continue;
    }
    shapes.push_back(header->spec);
  }
  ::closedir(dir);
  return shapes;
}

}  // namespace kvb::storage
