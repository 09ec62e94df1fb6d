// Status codes plus the calling thread's last error message, shared by every C entry point.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace qk {

// Records a printf-style message for this thread and returns `status`.
int32_t fail(int32_t status, const char* fmt, ...);
// Records "<what>: <CUDA error name>: <description>" and returns QK_STATUS_CUDA_ERROR.
int32_t fail_cuda(cudaError_t err, const char* what);
// Clears the thread's message; returns QK_STATUS_OK.
int32_t ok();
const char* last_error();

}  // namespace qk
