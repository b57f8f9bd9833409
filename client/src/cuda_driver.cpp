#include "cuda_driver.h"

#include <dlfcn.h>

#include <fmt/format.h>

namespace kvb::client::detail {
namespace {

template <class Fn>
bool bind(void* lib, Fn& fn, const char* symbol, std::string& missing) {
  fn = reinterpret_cast<Fn>(::dlsym(lib, symbol));
  if (fn == nullptr) missing += missing.empty() ? symbol : fmt::format(", {}", symbol);
  return fn != nullptr;
}

Result<CudaDriver> load() {
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = ::dlerror();
    return fail(Errc::unavailable, "no CUDA driver in this process ({})", why != nullptr ? why : "dlopen failed");
  }
  // Never dlclose'd: the engine's own CUDA use shares this library.
  CudaDriver d;
  std::string missing;
  bind(lib, d.init, "cuInit", missing);
  bind(lib, d.pointer_get_attribute, "cuPointerGetAttribute", missing);
  bind(lib, d.mem_get_address_range, "cuMemGetAddressRange_v2", missing);
  bind(lib, d.ipc_get_mem_handle, "cuIpcGetMemHandle", missing);
  bind(lib, d.mem_retain_allocation_handle, "cuMemRetainAllocationHandle", missing);
  bind(lib, d.mem_export_to_shareable_handle, "cuMemExportToShareableHandle", missing);
  bind(lib, d.mem_release, "cuMemRelease", missing);
  bind(lib, d.device_get, "cuDeviceGet", missing);
  bind(lib, d.device_get_uuid, "cuDeviceGetUuid_v2", missing);
  bind(lib, d.device_primary_ctx_retain, "cuDevicePrimaryCtxRetain", missing);
  bind(lib, d.device_primary_ctx_release, "cuDevicePrimaryCtxRelease_v2", missing);
  bind(lib, d.ctx_push_current, "cuCtxPushCurrent_v2", missing);
  bind(lib, d.ctx_pop_current, "cuCtxPopCurrent_v2", missing);
  bind(lib, d.get_error_string, "cuGetErrorString", missing);
  if (!missing.empty())
    return fail(Errc::unavailable, "the CUDA driver (libcuda.so.1) lacks {}: too old for device KV registration",
                missing);
  if (const CuResult r = d.init(0); r != 0) return tl::unexpected(d.error(r, "cuInit", Errc::unavailable));
  return d;
}

}  // namespace

Error CudaDriver::error(CuResult result, std::string_view what, Errc code) const {
  const char* text = nullptr;
  if (get_error_string == nullptr || get_error_string(result, &text) != 0 || text == nullptr) text = "unknown error";
  return Error{code, fmt::format("{}: {} (CUresult {})", what, text, result)};
}

Result<const CudaDriver*> cuda_driver() {
  static const Result<CudaDriver> driver = load();
  if (!driver) return tl::unexpected(driver.error());
  return &*driver;
}

}  // namespace kvb::client::detail
