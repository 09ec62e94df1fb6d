// Device selection and per-device facts for the C entry points.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace qk {

// Makes `device` current for the guard's lifetime and restores the caller's device afterwards,
// so a call with tensors on cuda:1 never launches on cuda:0 by accident.
class DeviceGuard {
 public:
  explicit DeviceGuard(int32_t device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  cudaError_t error() const { return error_; }

 private:
  int previous_ = -1;
  bool switched_ = false;
  cudaError_t error_ = cudaSuccess;
};

// QK_STATUS_OK when `device` exists and has compute capability >= 8.0; else records why.
int32_t check_device(int32_t device);
// Multiprocessor count of `device` (cached); 0 if it cannot be read.
int sm_count(int32_t device);

}  // namespace qk
