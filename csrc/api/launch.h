// Shared plumbing of the C entry points: argument requirements and a guarded launch.
#pragma once

#include <cstdint>
#include "device.h"
#include "quanto_kernels.h"
#include "status.h"

// Returns QK_STATUS_INVALID_ARGUMENT with a formatted message when `cond` is false.
#define QK_REQUIRE(cond, ...)                                          \
  do {                                                                 \
    if (!(cond)) return ::qk::fail(QK_STATUS_INVALID_ARGUMENT, __VA_ARGS__); \
  } while (0)

namespace qk {

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Checks the device, makes it current, runs `enqueue(stream)` and maps any CUDA error to a status
// naming `what`. The caller's current device is restored on return.
template <typename Enqueue>
int32_t launch_on(int32_t device, void* stream, const char* what, Enqueue enqueue) {
  int32_t status = check_device(device);
  if (status != QK_STATUS_OK) return status;
  DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return fail_cuda(guard.error(), "cudaSetDevice");
  const cudaError_t err = enqueue(static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) return fail_cuda(err, what);
  return ok();
}

}  // namespace qk
