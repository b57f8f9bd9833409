#include "kvb/transport/memory.h"

#include <cstring>

#include "ucx_request.h"

namespace kvb::transport {

MemoryRegistration::MemoryRegistration(Context& context, void* address, std::size_t length)
    : context_(context), address_(static_cast<std::byte*>(address)), length_(length) {
  if (address == nullptr || length == 0) {
    throw TransportError(
        Error{Errc::invalid_argument, fmt::format("memory registration needs a non-empty range (length {})", length)});
  }
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = address;
  params.length = length;
  ucs_status_t st = ucp_mem_map(context.handle(), &params, &memh_);
  if (st != UCS_OK) detail::throw_ucx(fmt::format("ucp_mem_map of {} bytes", length), st);
  pack_rkey();
}

MemoryRegistration::MemoryRegistration(Context& context, std::size_t length)
    : context_(context), address_(nullptr), length_(length) {
  if (length == 0) throw TransportError(Error{Errc::invalid_argument, "allocation length must be > 0"});
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = nullptr;
  params.length = length;
  params.flags = UCP_MEM_MAP_ALLOCATE;
  ucs_status_t st = ucp_mem_map(context.handle(), &params, &memh_);
  if (st != UCS_OK) detail::throw_ucx(fmt::format("ucp_mem_map (allocate) of {} bytes", length), st);
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  st = ucp_mem_query(memh_, &attr);
  if (st != UCS_OK) {
    ucp_mem_unmap(context.handle(), memh_);
    detail::throw_ucx("ucp_mem_query", st);
  }
  address_ = static_cast<std::byte*>(attr.address);
  pack_rkey();
}

Result<std::unique_ptr<MemoryRegistration>> MemoryRegistration::allocate(Context& context, std::size_t length) {
  try {
    return std::make_unique<MemoryRegistration>(context, length);
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

void MemoryRegistration::pack_rkey() {
  void* packed = nullptr;
  std::size_t packed_size = 0;
  const ucs_status_t st = ucp_rkey_pack(context_.handle(), memh_, &packed, &packed_size);
  if (st != UCS_OK) {
    ucp_mem_unmap(context_.handle(), memh_);
    detail::throw_ucx("ucp_rkey_pack", st);
  }
  packed_rkey_.resize(packed_size);
  std::memcpy(packed_rkey_.data(), packed, packed_size);
  ucp_rkey_buffer_release(packed);
}

MemoryRegistration::~MemoryRegistration() { ucp_mem_unmap(context_.handle(), memh_); }

Result<std::unique_ptr<MemoryRegistration>> MemoryRegistration::create(Context& context, void* address,
                                                                       std::size_t length) {
  try {
    return std::make_unique<MemoryRegistration>(context, address, length);
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

bool MemoryRegistration::contains(std::uint64_t address, std::uint64_t length) const noexcept {
  const auto base = reinterpret_cast<std::uint64_t>(address_);
  return address >= base && length <= length_ && address - base <= length_ - length;
}

RemoteKey::RemoteKey(Endpoint& endpoint, std::span<const std::byte> packed) {
  if (packed.empty()) throw TransportError(Error{Errc::invalid_argument, "packed rkey is empty"});
  const ucs_status_t st = ucp_ep_rkey_unpack(endpoint.handle(), packed.data(), &rkey_);
  if (st != UCS_OK) {
    detail::throw_ucx(fmt::format("ucp_ep_rkey_unpack ({} bytes) for peer {}", packed.size(), endpoint.peer()), st);
  }
}

RemoteKey::~RemoteKey() { ucp_rkey_destroy(rkey_); }

Result<std::unique_ptr<RemoteKey>> RemoteKey::unpack(Endpoint& endpoint, std::span<const std::byte> packed) {
  try {
    return std::make_unique<RemoteKey>(endpoint, packed);
  } catch (const TransportError& e) {
    return tl::unexpected(e.error());
  }
}

}  // namespace kvb::transport
