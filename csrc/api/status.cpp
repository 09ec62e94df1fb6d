#include "status.h"

#include <cstdarg>
#include <cstdio>
#include "quanto_kernels.h"

namespace qk {
namespace {
QK_THREAD_LOCAL char g_message[1024] = {0};
}

int32_t fail(int32_t status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(g_message, sizeof(g_message), fmt, args);
  va_end(args);
  return status;
}

int32_t fail_cuda(cudaError_t err, const char* what) {
  const int32_t status = err == cudaErrorNoKernelImageForDevice ? QK_STATUS_UNSUPPORTED : QK_STATUS_CUDA_ERROR;
  return fail(status, "%s: %s: %s", what, cudaGetErrorName(err), cudaGetErrorString(err));
}

int32_t ok() {
  g_message[0] = '\0';
  return QK_STATUS_OK;
}

const char* last_error() { return g_message; }

}  // namespace qk
