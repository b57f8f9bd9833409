#include "kvb/transport/am_bulk_writer.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "am_wire.h"
#include "ucx_request.h"

namespace kvb::transport {

using namespace wire;

namespace {

// The chunks of one write call: one completion for all of them. Owned by
// the in-flight UCX requests (the last callback deletes it), so a caller
// that timed out or saw the peer fail may leave before UCX is done.
struct WriteBatch {
  std::size_t outstanding = 1;  // +1 held by the issuing loop until it is done
  ucs_status_t first_error = UCS_OK;
  std::shared_ptr<detail::RequestState> waiter;
  std::shared_ptr<void> headers;

  void complete_one(ucs_status_t status) {
    if (status != UCS_OK && first_error == UCS_OK) first_error = status;
    if (--outstanding > 0) return;
    waiter->status = first_error;
    waiter->done.set();
    delete this;
  }
  static void on_sent(void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    static_cast<WriteBatch*>(user_data)->complete_one(status);
  }
};

}  // namespace

ExposedRanges::ExposedRanges(std::vector<Range> ranges) : ranges_(std::move(ranges)) {
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.address < b.address; });
}

bool ExposedRanges::contains(std::uint64_t address, std::uint64_t length) const noexcept {
  // The last range starting at or before `address`.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), address,
                             [](std::uint64_t a, const Range& r) { return a < r.address; });
  if (it == ranges_.begin()) return false;
  --it;
  return length <= it->bytes && address - it->address <= it->bytes - length;
}

BulkWriter::BulkWriter(Worker& worker, const AmOptions& options, std::uint32_t token)
    : worker_(worker), options_(options), token_(token) {}

BulkWriter::~BulkWriter() { *alive_ = false; }

void BulkWriter::expose(const MemoryRegistration& registration) { exposed_.push_back(&registration); }

void BulkWriter::unexpose(const MemoryRegistration& registration) { std::erase(exposed_, &registration); }

std::shared_ptr<ExposedRanges> BulkWriter::expose_ranges(std::vector<ExposedRanges::Range> ranges) {
  return ranges_.emplace_back(std::make_shared<ExposedRanges>(std::move(ranges)));
}

void BulkWriter::withdraw(const ExposedRanges& ranges) {
  std::erase_if(ranges_, [&ranges](const auto& r) { return r.get() == &ranges; });
}

std::uint64_t BulkWriter::take_refused(std::uint32_t token) {
  auto it = refused_by_token_.find(token);
  if (it == refused_by_token_.end()) return 0;
  const std::uint64_t count = it->second;
  refused_by_token_.erase(it);
  return count;
}

void BulkWriter::refused(std::uint32_t token) {
  ++rejected_writes_;
  ++refused_by_token_[token];  // the sender's next after-writes notification fails
}

asio::awaitable<Status> BulkWriter::write(std::shared_ptr<Endpoint> ep, std::span<const RmaChunk> chunks,
                                          std::chrono::milliseconds timeout) {
  if (chunks.empty()) co_return ok();
  // Issue every chunk, then await them all at once: UCX pipelines the
  // rendezvous; one waiter, one timer and one endpoint watch per call.
  auto waiter = std::make_shared<detail::RequestState>(worker_.executor());
  auto* batch = new WriteBatch;
  batch->waiter = waiter;
  auto headers = std::make_shared<std::vector<WriteHeader>>(chunks.size());
  batch->headers = headers;
  ucs_status_t issue_error = UCS_OK;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto& c = chunks[i];
    (*headers)[i] = WriteHeader{c.remote_address, c.length, token_, 0};
    ucp_request_param_t params{};
    params.op_attr_mask =
        UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.flags = c.length <= options_.bulk_eager_max ? UCP_AM_SEND_FLAG_EAGER : UCP_AM_SEND_FLAG_RNDV;
    params.datatype = ucp_dt_make_contig(1);
    params.cb.send = &WriteBatch::on_sent;
    params.user_data = batch;
    ++batch->outstanding;
    ucs_status_ptr_t req =
        ucp_am_send_nbx(ep->handle(), kAmWrite, &(*headers)[i], sizeof(WriteHeader), c.local, c.length, &params);
    if (req == nullptr) {
      --batch->outstanding;  // done already; the callback will not run
    } else if (UCS_PTR_IS_ERR(req)) {
      --batch->outstanding;
      issue_error = UCS_PTR_STATUS(req);
      break;
    }
  }
  worker_.kick();
  batch->complete_one(issue_error);  // the issuing loop's share; may finish the batch
  ep->track(waiter);
  const bool done = co_await waiter->done.wait_for(timeout);
  if (waiter->aborted) co_return tl::unexpected(ep->failure());
  if (!done) {
    co_return fail(Errc::timeout, "bulk write to peer {}: not complete after {} ms", ep->peer(), timeout.count());
  }
  if (waiter->status != UCS_OK) {
    co_return tl::unexpected(detail::ucx_error(fmt::format("bulk write to peer {}", ep->peer()), waiter->status));
  }
  if (ep->failed()) co_return tl::unexpected(ep->failure());
  co_return ok();
}

void BulkWriter::land(const void* header, std::size_t header_length, void* data, std::size_t length, bool rendezvous) {
  if (header_length != sizeof(WriteHeader)) {
    ++rejected_writes_;
    spdlog::error("transport: rejected a bulk write with a malformed header ({} bytes)", header_length);
    return;
  }
  WriteHeader wh;
  std::memcpy(&wh, header, sizeof(wh));
  const std::uint64_t address = wh.address;
  bool allowed = wh.length == length;
  std::shared_ptr<ExposedRanges> into;  // the ranges it lands in (not a registration)
  if (allowed) {
    allowed = false;
    for (const auto* reg : exposed_) allowed = allowed || reg->contains(address, length);
    for (std::size_t i = 0; !allowed && i < ranges_.size(); ++i) {
      if (ranges_[i]->contains(address, length)) {
        allowed = true;
        into = ranges_[i];
      }
    }
  }
  if (!allowed) {
    refused(wh.token);
    spdlog::error("transport: rejected a bulk write of {} bytes at {:#x}: not in an exposed region", length, address);
    return;
  }
  auto* dest = reinterpret_cast<std::byte*>(address);
  if (!rendezvous) {
    std::memcpy(dest, data, length);
    return;
  }
  // The data lands in place; the completion only frees the request and
  // counts a failure (no executor round trip per chunk). Into exposed
  // ranges, it counts as landing there until UCX ended it.
  struct Landing {
    Landing(std::shared_ptr<bool> a, BulkWriter* s, std::uint32_t t, std::shared_ptr<ExposedRanges> i)
        : alive(std::move(a)), self(s), token(t), into(std::move(i)) {
      if (into) ++into->landing_;
      ++self->landing_writes_;
    }
    Landing(const Landing&) = delete;
    Landing& operator=(const Landing&) = delete;
    ~Landing() {
      if (into) --into->landing_;
      if (*alive) --self->landing_writes_;
    }
    std::shared_ptr<bool> alive;
    BulkWriter* self;
    std::uint32_t token;
    std::shared_ptr<ExposedRanges> into;
    static void done(void* request, ucs_status_t status, size_t, void* user_data) {
      std::unique_ptr<Landing> landing(static_cast<Landing*>(user_data));
      ucp_request_free(request);
      if (status != UCS_OK && *landing->alive) {
        landing->self->refused(landing->token);
        spdlog::error("transport: bulk write failed: {}", ucs_status_string(status));
      }
    }
  };
  auto* landing = new Landing(alive_, this, wh.token, std::move(into));
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.datatype = ucp_dt_make_contig(1);
  params.cb.recv_am = &Landing::done;
  params.user_data = landing;
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(worker_.handle(), data, dest, length, &params);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) {
    delete landing;  // finished at once (or failed): the callback never runs
    if (req != nullptr) {
      refused(wh.token);
      spdlog::error("transport: bulk write failed: {}", ucs_status_string(UCS_PTR_STATUS(req)));
    }
  }
}

}  // namespace kvb::transport
