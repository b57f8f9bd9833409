// The client library loads the CUDA driver at run time and declares the few
// driver types and values it uses itself (it includes no CUDA header).
// Compiled in CUDA builds only, this test holds them against cuda.h: a
// mismatch fails the build. It needs no GPU.
#include <cuda.h>

#include <type_traits>

#include <gtest/gtest.h>

#include "cuda_driver.h"

namespace kvb::client::detail {
namespace {

static_assert(kAttrMemoryType == CU_POINTER_ATTRIBUTE_MEMORY_TYPE);
static_assert(kAttrDeviceOrdinal == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL);
static_assert(kAttrIsLegacyIpcCapable == CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE);
static_assert(kMemoryTypeDevice == CU_MEMORYTYPE_DEVICE);
static_assert(kHandleTypePosixFd == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
static_assert(kIpcHandleBytes == CU_IPC_HANDLE_SIZE);
static_assert(sizeof(CuIpcMemHandle) == sizeof(CUipcMemHandle));
static_assert(sizeof(CuUuid) == sizeof(CUuuid));
static_assert(std::is_same_v<CuDevicePtr, CUdeviceptr>);
static_assert(std::is_same_v<CuDevice, CUdevice>);
static_assert(std::is_same_v<CuAllocationHandle, CUmemGenericAllocationHandle>);
static_assert(sizeof(CuResult) == sizeof(CUresult) && CUDA_SUCCESS == 0);
static_assert(sizeof(CuContext) == sizeof(CUcontext));

TEST(CudaDriverAbi, TheClientsDeclarationsMatchCudaH) { SUCCEED() << "checked at compile time"; }

}  // namespace
}  // namespace kvb::client::detail
