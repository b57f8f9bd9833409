// CudaDriver: the few CUDA driver API calls the client needs to export an
// engine's device KV cache, loaded from libcuda.so.1 at run time (dlopen).
//
// No CUDA header is included (only kernels/ includes them): the types and
// enum values below are the driver ABI's, which is stable; a test built in
// CUDA builds (tests/client/cuda_driver_abi_test.cpp) checks them against
// cuda.h. Internal to the client library.
#pragma once

#include <cstdint>
#include <string>

#include "kvb/common/error.h"

namespace kvb::client::detail {

// ABI types and values (cuda.h).
using CuResult = int;                               // CUresult; 0 = CUDA_SUCCESS
using CuDevicePtr = unsigned long long;             // CUdeviceptr
using CuDevice = int;                               // CUdevice
using CuContext = void*;                            // CUcontext
using CuAllocationHandle = unsigned long long;      // CUmemGenericAllocationHandle
inline constexpr int kAttrMemoryType = 2;           // CU_POINTER_ATTRIBUTE_MEMORY_TYPE
inline constexpr int kAttrDeviceOrdinal = 9;        // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
inline constexpr int kAttrIsLegacyIpcCapable = 10;  // CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE
inline constexpr unsigned kMemoryTypeDevice = 2;    // CU_MEMORYTYPE_DEVICE
inline constexpr int kHandleTypePosixFd = 1;        // CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
inline constexpr std::size_t kIpcHandleBytes = 64;  // CU_IPC_HANDLE_SIZE
struct CuUuid {
  unsigned char bytes[16];
};
struct CuIpcMemHandle {
  unsigned char reserved[kIpcHandleBytes];
};

struct CudaDriver {
  CuResult (*init)(unsigned) = nullptr;
  CuResult (*pointer_get_attribute)(void*, int, CuDevicePtr) = nullptr;
  CuResult (*mem_get_address_range)(CuDevicePtr*, std::size_t*, CuDevicePtr) = nullptr;
  CuResult (*ipc_get_mem_handle)(CuIpcMemHandle*, CuDevicePtr) = nullptr;
  CuResult (*mem_retain_allocation_handle)(CuAllocationHandle*, void*) = nullptr;
  CuResult (*mem_export_to_shareable_handle)(void*, CuAllocationHandle, int, unsigned long long) = nullptr;
  CuResult (*mem_release)(CuAllocationHandle) = nullptr;
  CuResult (*device_get)(CuDevice*, int) = nullptr;
  CuResult (*device_get_uuid)(CuUuid*, CuDevice) = nullptr;
  CuResult (*device_primary_ctx_retain)(CuContext*, CuDevice) = nullptr;
  CuResult (*device_primary_ctx_release)(CuDevice) = nullptr;
  CuResult (*ctx_push_current)(CuContext) = nullptr;
  CuResult (*ctx_pop_current)(CuContext*) = nullptr;
  CuResult (*get_error_string)(CuResult, const char**) = nullptr;

  /// "<what>: <driver text> (CUresult n)".
  [[nodiscard]] Error error(CuResult result, std::string_view what, Errc code = Errc::internal) const;
};

/// The driver, loaded and initialized once (cuInit). unavailable with the
/// reason (dlopen's, or cuInit's) when there is none. Safe from any thread.
[[nodiscard]] Result<const CudaDriver*> cuda_driver();

}  // namespace kvb::client::detail
