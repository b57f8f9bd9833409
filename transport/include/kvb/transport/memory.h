// MemoryRegistration (ucp_mem_map of existing memory, with its packed rkey)
// and RemoteKey (a peer's rkey unpacked for one endpoint).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kvb/common/error.h"
#include "kvb/transport/context.h"
#include "kvb/transport/endpoint.h"
#include "kvb/transport/ucx_fwd.h"

namespace kvb::transport {

class MemoryRegistration {
 public:
  /// Registers [address, address + length) for RMA. Throws TransportError.
  MemoryRegistration(Context& context, void* address, std::size_t length);
  /// Allocates through UCX (see allocate()). Throws TransportError.
  MemoryRegistration(Context& context, std::size_t length);
  MemoryRegistration(const MemoryRegistration&) = delete;
  MemoryRegistration& operator=(const MemoryRegistration&) = delete;
  ~MemoryRegistration();

  [[nodiscard]] static Result<std::unique_ptr<MemoryRegistration>> create(Context& context, void* address,
                                                                          std::size_t length);
  /// Lets UCX allocate `length` bytes (UCP_MEM_MAP_ALLOCATE) and registers
  /// them; freed with the registration. On sm, UCX allocates shareable
  /// memory a peer maps directly, so a put is a plain memcpy (see
  /// docs/transport.md); malloc'd memory falls back to slower paths.
  [[nodiscard]] static Result<std::unique_ptr<MemoryRegistration>> allocate(Context& context, std::size_t length);

  [[nodiscard]] std::byte* address() const noexcept { return address_; }
  [[nodiscard]] std::size_t length() const noexcept { return length_; }
  [[nodiscard]] ucp_mem* handle() const noexcept { return memh_; }
  /// The packed remote key a peer unpacks with RemoteKey.
  [[nodiscard]] const std::vector<std::byte>& packed_rkey() const noexcept { return packed_rkey_; }
  /// Whether [address, address + length) lies inside this registration.
  [[nodiscard]] bool contains(std::uint64_t address, std::uint64_t length) const noexcept;

 private:
  void pack_rkey();
  Context& context_;
  std::byte* address_;
  std::size_t length_;
  ucp_mem* memh_ = nullptr;
  std::vector<std::byte> packed_rkey_;
};

class RemoteKey {
 public:
  /// Unpacks a peer's packed rkey for `endpoint`. Throws TransportError.
  RemoteKey(Endpoint& endpoint, std::span<const std::byte> packed);
  RemoteKey(const RemoteKey&) = delete;
  RemoteKey& operator=(const RemoteKey&) = delete;
  ~RemoteKey();

  [[nodiscard]] static Result<std::unique_ptr<RemoteKey>> unpack(Endpoint& endpoint, std::span<const std::byte> packed);
  [[nodiscard]] ucp_rkey* handle() const noexcept { return rkey_; }

 private:
  ucp_rkey* rkey_ = nullptr;
};

}  // namespace kvb::transport
