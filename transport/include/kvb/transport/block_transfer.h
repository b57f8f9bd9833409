// Block transfer: moves a list of chunks (the runs of a TransferPlan) to or
// from a peer's registered memory, then notifies the peer.
//
// "Complete" for put/write: every byte is in the peer's memory (a put is
// followed by ucp_ep_flush_nbx; an AM rendezvous write completes only after
// the receiver pulled its data). Only then is the notification sent: a flush
// is not a fence, so the notification is never issued alongside the data.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "kvb/blockmgr/transfer_plan.h"
#include "kvb/common/error.h"
#include "kvb/transport/am_manager.h"
#include "kvb/transport/memory.h"

namespace kvb::transport {

/// How bulk data travels (chosen per transport by measurement, see
/// docs/transport.md): one-sided put, or AM rendezvous into exposed memory.
enum class BulkProtocol { rma_put, am_rendezvous };

/// Who allocated the memory peers write into.
enum class Destination {
  ucx_allocated,  // MemoryRegistration::allocate: shared-memory transports map it
  caller_memory,  // registered caller memory (malloc, a memfd mapping: the daemon's pools)
};

/// tcp -> am_rendezvous (UCX 1.13 put of >= 1 MiB collapses on tcp).
/// Into UCX-allocated memory, everything else (sm, self, rc) -> rma_put.
/// Into caller memory, rma_put only where a put lane reaches registered
/// memory (self, RDMA: rc, dc, ib, xpmem); everywhere else (sm, posix,
/// sysv, cma, unknown sets) am_rendezvous: UCX 1.13 emulates a put into
/// memory posix/sysv did not allocate in software (AM fragments the
/// receiver copies, "software emulation" in UCX_PROTO_INFO), while the
/// receiver of a rendezvous pulls the bytes with one CMA read.
[[nodiscard]] BulkProtocol protocol_for_tls(std::string_view tls, Destination destination) noexcept;
[[nodiscard]] std::string_view to_string(BulkProtocol protocol) noexcept;

/// The plan's runs as chunks: local = plan source address, remote = the
/// peer's base address of the run's destination region + offset.
/// Errors: remote_region_bases has fewer entries than the plan's regions.
[[nodiscard]] Result<std::vector<RmaChunk>> chunks_of_plan(const TransferPlan& plan,
                                                           std::span<const std::uint64_t> remote_region_bases);

/// One-sided put of every chunk, then a flush: complete = remote-visible.
/// The local memory must stay valid until this returns; `local`, when given,
/// is the registration covering every chunk's local bytes (zero-copy paths).
boost::asio::awaitable<Status> put_chunks(Endpoint& endpoint, const RemoteKey& rkey, std::span<const RmaChunk> chunks,
                                          std::chrono::milliseconds timeout, const MemoryRegistration* local = nullptr);
/// One-sided get of every chunk (remote -> local), then a flush.
boost::asio::awaitable<Status> get_chunks(Endpoint& endpoint, const RemoteKey& rkey, std::span<const RmaChunk> chunks,
                                          std::chrono::milliseconds timeout, const MemoryRegistration* local = nullptr);

/// Moves `chunks` to `peer` with `protocol` (rma_put needs `rkey`), and only
/// once all of them completed sends the request `type`/`payload` and waits
/// for its `<id>:ok`. A failed transfer sends no notification.
boost::asio::awaitable<Result<Bytes>> write_then_notify(ActiveMessageManager& manager, PeerId peer,
                                                        BulkProtocol protocol, const RemoteKey* rkey,
                                                        std::span<const RmaChunk> chunks, std::string type,
                                                        Bytes payload, std::chrono::milliseconds timeout);

}  // namespace kvb::transport
