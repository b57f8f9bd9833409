// The few CUDA driver API entry points kernels/ needs beyond the runtime
// (address ranges of IPC imports, VMM import / map / export), looked up at
// run time through the statically linked runtime
// (cudaGetDriverEntryPointByVersion), so nothing links libcuda: a machine
// without a driver still loads every binary. Internal to kernels/.
#pragma once

#include <cuda.h>

#include <string_view>

#include "kvb/common/error.h"

namespace kvb::detail {

struct DriverApi {
  decltype(&::cuGetErrorString) get_error_string = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;
  decltype(&::cuMemGetAddressRange) mem_get_address_range = nullptr;
  decltype(&::cuMemCreate) mem_create = nullptr;
  decltype(&::cuMemRelease) mem_release = nullptr;
  decltype(&::cuMemAddressReserve) mem_address_reserve = nullptr;
  decltype(&::cuMemAddressFree) mem_address_free = nullptr;
  decltype(&::cuMemMap) mem_map = nullptr;
  decltype(&::cuMemUnmap) mem_unmap = nullptr;
  decltype(&::cuMemSetAccess) mem_set_access = nullptr;
  decltype(&::cuMemExportToShareableHandle) mem_export_to_shareable_handle = nullptr;
  decltype(&::cuMemImportFromShareableHandle) mem_import_from_shareable_handle = nullptr;
  decltype(&::cuMemGetAllocationGranularity) mem_get_allocation_granularity = nullptr;
  decltype(&::cuMemGetAllocationPropertiesFromHandle) mem_get_allocation_properties_from_handle = nullptr;
};

/// The entry points, looked up once (thread-safe). unavailable with the
/// reason when the driver (or one entry point) is missing.
[[nodiscard]] Result<const DriverApi*> driver_api();

/// invalid_argument for CUDA_ERROR_INVALID_VALUE / INVALID_HANDLE,
/// out_of_capacity for CUDA_ERROR_OUT_OF_MEMORY, unsupported for
/// CUDA_ERROR_NOT_SUPPORTED, else internal; the message names the call and
/// carries the driver's text.
[[nodiscard]] Error driver_error(const DriverApi& api, CUresult result, std::string_view what);

/// ok, or driver_error().
[[nodiscard]] inline Status driver_check(const DriverApi& api, CUresult result, std::string_view what) {
  if (result == CUDA_SUCCESS) return ok();
  return tl::unexpected(driver_error(api, result, what));
}

}  // namespace kvb::detail
