#include "driver_api.h"

#include <cuda_runtime_api.h>

#include <mutex>

#include "cuda_handles.h"

namespace kvb::detail {
namespace {

// The driver ABI these prototypes come from (CUDA 12.0): the entry point of
// that version is returned even when the driver is newer.
constexpr unsigned kDriverAbi = 12000;

template <class Fn>
Status load(Fn& fn, const char* symbol) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
  const cudaError_t err = cudaGetDriverEntryPointByVersion(symbol, &p, kDriverAbi, cudaEnableDefault, &found);
#else
  const cudaError_t err = cudaGetDriverEntryPoint(symbol, &p, cudaEnableDefault, &found);
#endif
  if (err != cudaSuccess) {
    cudaGetLastError();
    return tl::unexpected(cuda_error(err, fmt::format("CUDA driver entry point {}", symbol)));
  }
  if (found != cudaDriverEntryPointSuccess || p == nullptr)
    return fail(Errc::unavailable, "CUDA driver entry point {} not found (driver too old?)", symbol);
  fn = reinterpret_cast<Fn>(p);
  return ok();
}

Result<DriverApi> load_all() {
  DriverApi api;
  for (auto st : {load(api.get_error_string, "cuGetErrorString"), load(api.get_error_name, "cuGetErrorName"),
                  load(api.mem_get_address_range, "cuMemGetAddressRange"), load(api.mem_create, "cuMemCreate"),
                  load(api.mem_release, "cuMemRelease"), load(api.mem_address_reserve, "cuMemAddressReserve"),
                  load(api.mem_address_free, "cuMemAddressFree"), load(api.mem_map, "cuMemMap"),
                  load(api.mem_unmap, "cuMemUnmap"), load(api.mem_set_access, "cuMemSetAccess"),
                  load(api.mem_export_to_shareable_handle, "cuMemExportToShareableHandle"),
                  load(api.mem_import_from_shareable_handle, "cuMemImportFromShareableHandle"),
                  load(api.mem_get_allocation_granularity, "cuMemGetAllocationGranularity"),
                  load(api.mem_get_allocation_properties_from_handle, "cuMemGetAllocationPropertiesFromHandle")}) {
    if (!st) return tl::unexpected(st.error());
  }
  return api;
}

}  // namespace

Result<const DriverApi*> driver_api() {
  static const Result<DriverApi> api = load_all();
  if (!api) return tl::unexpected(api.error());
  return &*api;
}

Error driver_error(const DriverApi& api, CUresult result, std::string_view what) {
  const char* text = nullptr;
  const char* name = nullptr;
  if (api.get_error_string(result, &text) != CUDA_SUCCESS || text == nullptr) text = "unknown CUDA driver error";
  if (api.get_error_name(result, &name) != CUDA_SUCCESS || name == nullptr) name = "?";
  Errc code = Errc::internal;
  switch (result) {
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_INVALID_HANDLE: code = Errc::invalid_argument; break;
    case CUDA_ERROR_OUT_OF_MEMORY: code = Errc::out_of_capacity; break;
    case CUDA_ERROR_NOT_SUPPORTED: code = Errc::unsupported; break;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_INVALID_DEVICE: code = Errc::unavailable; break;
    default: break;
  }
  return Error{code, fmt::format("{}: {} ({})", what, text, name)};
}

}  // namespace kvb::detail
