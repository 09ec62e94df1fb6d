#include "device.h"

#include <atomic>
#include "quanto_kernels.h"
#include "status.h"

namespace qk {
namespace {
constexpr int kMaxDevices = 64;
// 0 = not read yet. Reads are idempotent, so a benign race only repeats a query.
std::atomic<int32_t> g_capability[kMaxDevices];
std::atomic<int32_t> g_sm_count[kMaxDevices];
}  // namespace

DeviceGuard::DeviceGuard(int32_t device) {
  error_ = cudaGetDevice(&previous_);
  if (error_ != cudaSuccess) return;
  if (previous_ != device) {
    error_ = cudaSetDevice(device);
    switched_ = error_ == cudaSuccess;
  }
}

DeviceGuard::~DeviceGuard() {
  if (switched_) cudaSetDevice(previous_);
}

int32_t check_device(int32_t device) {
  if (device < 0 || device >= kMaxDevices) {
    return fail(QK_STATUS_INVALID_ARGUMENT, "device: index %d is out of range", device);
  }
  int32_t cap = g_capability[device].load(std::memory_order_relaxed);
  if (cap == 0) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return fail_cuda(err, "cudaGetDeviceCount (is an NVIDIA driver installed?)");
    if (device >= count) {
      return fail(QK_STATUS_INVALID_ARGUMENT, "device: index %d but only %d CUDA device(s) are visible", device,
                  count);
    }
    int major = 0, minor = 0;
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err != cudaSuccess) return fail_cuda(err, "cudaDeviceGetAttribute(compute capability)");
    cap = 10 * major + minor;
    g_capability[device].store(cap, std::memory_order_relaxed);
  }
  if (cap < 80) {
    return fail(QK_STATUS_UNSUPPORTED, "device %d has compute capability %d.%d; quanto-kernels needs 8.0 or newer",
                device, cap / 10, cap % 10);
  }
  return QK_STATUS_OK;
}

int sm_count(int32_t device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  int32_t n = g_sm_count[device].load(std::memory_order_relaxed);
  if (n == 0) {
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
    n = value;
    g_sm_count[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace qk
