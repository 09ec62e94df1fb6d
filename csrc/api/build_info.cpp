// Library identity: ABI version, build facts and CUDA versions.
#include <cuda_runtime.h>
#include "quanto_kernels.h"
#include "device.h"
#include "status.h"

#ifndef QK_VERSION_STR
#define QK_VERSION_STR "0.0.0+unknown"
#endif
#ifndef QK_CUDA_ARCHS_STR
#define QK_CUDA_ARCHS_STR "unknown"
#endif
#ifndef QK_GIT_REV_STR
#define QK_GIT_REV_STR "unknown"
#endif

#if defined(QK_COMPILER_MSVC)
#define QK_COMPILER_NAME "msvc"
#elif defined(QK_COMPILER_CLANG)
#define QK_COMPILER_NAME "clang"
#elif defined(QK_COMPILER_GCC)
#define QK_COMPILER_NAME "gcc"
#else
#define QK_COMPILER_NAME "unknown"
#endif

#define QK_STR2(x) #x
#define QK_STR(x) QK_STR2(x)

extern "C" {

QK_API int32_t qk_abi_version(void) { return QK_ABI_VERSION; }

QK_API const char* qk_build_info(void) {
  return "{\"version\": \"" QK_VERSION_STR "\", \"abi\": " QK_STR(QK_ABI_VERSION) ", \"cuda_runtime\": " QK_STR(
      CUDART_VERSION) ", \"archs\": \"" QK_CUDA_ARCHS_STR "\", \"git_revision\": \"" QK_GIT_REV_STR
                      "\", \"compiler\": \"" QK_COMPILER_NAME "\"}";
}

QK_API const char* qk_last_error(void) { return qk::last_error(); }

QK_API int32_t qk_cuda_versions(int32_t* driver_version, int32_t* runtime_version) {
  if (driver_version == nullptr || runtime_version == nullptr) {
    return qk::fail(QK_STATUS_INVALID_ARGUMENT, "qk_cuda_versions: output pointers must not be null");
  }
  int drv = 0, rt = 0;
  cudaError_t err = cudaRuntimeGetVersion(&rt);
  if (err != cudaSuccess) return qk::fail_cuda(err, "cudaRuntimeGetVersion");
  *runtime_version = rt;
  // 0 means "no driver installed"; that is an answer, not an error.
  err = cudaDriverGetVersion(&drv);
  if (err != cudaSuccess) return qk::fail_cuda(err, "cudaDriverGetVersion");
  *driver_version = drv;
  return qk::ok();
}

QK_API int32_t qk_device_check(int32_t device) {
  const int32_t status = qk::check_device(device);
  return status == QK_STATUS_OK ? qk::ok() : status;
}

}  // extern "C"
