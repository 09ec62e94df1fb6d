// The extern "C" op entry points: validate every argument the kernels rely on (the Python layer
// validates first; this is the last line before device code), then launch on the caller's
// device and stream.
#include "common/launchers.h"
#include "common/splitk_tail.h"
#include "fp8_compute/fp8_compute.h"
#include "fp8_marlin/fp8_mm.h"
#include "gemv/gemv.h"
#include "int8/int8.h"
#include "int8/int8_gemm.h"
#include "int8/int8_mm.h"
#include "launch.h"

// The internal enums carry the ABI's codes unchanged (casts between them are free and safe).
static_assert(static_cast<int32_t>(qk::DType::F16) == QK_DTYPE_FLOAT16, "DType::F16 must match QK_DTYPE_FLOAT16");
static_assert(static_cast<int32_t>(qk::DType::BF16) == QK_DTYPE_BFLOAT16, "DType::BF16 must match QK_DTYPE_BFLOAT16");
static_assert(static_cast<int32_t>(qk::kFp8ComputeNone) == QK_FP8_COMPUTE_NONE, "kFp8ComputeNone mismatch");
static_assert(static_cast<int32_t>(qk::kFp8ComputeMma) == QK_FP8_COMPUTE_MMA, "kFp8ComputeMma mismatch");
static_assert(static_cast<int32_t>(qk::kFp8ComputeWgmma) == QK_FP8_COMPUTE_WGMMA, "kFp8ComputeWgmma mismatch");
static_assert(static_cast<int32_t>(qk::ScalePerm::None) == QK_SCALE_PERM_NONE, "ScalePerm::None mismatch");
static_assert(static_cast<int32_t>(qk::ScalePerm::Block32) == QK_SCALE_PERM_BLOCK32, "ScalePerm::Block32 mismatch");
static_assert(static_cast<int32_t>(qk::ScalePerm::Block64) == QK_SCALE_PERM_BLOCK64, "ScalePerm::Block64 mismatch");

namespace {

using qk::aligned16;

constexpr int64_t kMaxDim = int64_t(1) << 40;  // far past any real layer; keeps products in int64

int32_t check_dtype(int32_t dtype) {
  QK_REQUIRE(dtype == QK_DTYPE_FLOAT16 || dtype == QK_DTYPE_BFLOAT16,
             "dtype: code %d is not QK_DTYPE_FLOAT16 (1) or QK_DTYPE_BFLOAT16 (2)", dtype);
  return QK_STATUS_OK;
}

int32_t check_nk(int64_t n, int64_t k) {
  QK_REQUIRE(n > 0 && n < kMaxDim, "n: must be in [1, 2^40), got %lld", static_cast<long long>(n));
  QK_REQUIRE(k > 0 && k < kMaxDim, "k: must be in [1, 2^40), got %lld", static_cast<long long>(k));
  QK_REQUIRE(n <= kMaxDim / k, "n * k: %lld x %lld elements is too large", static_cast<long long>(n),
             static_cast<long long>(k));
  return QK_STATUS_OK;
}

int32_t check_gemv_m(int64_t m, int64_t limit = qk::kMaxGemvM) {
  QK_REQUIRE(m >= 1 && m <= limit, "m: the fused kernels take 1 <= m <= %lld, got %lld",
             static_cast<long long>(limit), static_cast<long long>(m));
  return QK_STATUS_OK;
}

int32_t check_group(int64_t k, int64_t group_size, int64_t multiple) {
  QK_REQUIRE(group_size > 0 && group_size % multiple == 0 && k % group_size == 0,
             "group_size: must be a positive multiple of %lld dividing k=%lld, got %lld",
             static_cast<long long>(multiple), static_cast<long long>(k), static_cast<long long>(group_size));
  return QK_STATUS_OK;
}

int32_t check_workspace(const void* ws, int64_t ws_bytes, int64_t need) {
  QK_REQUIRE(ws_bytes >= need, "workspace: %lld bytes needed, %lld given", static_cast<long long>(need),
             static_cast<long long>(ws_bytes));
  QK_REQUIRE(need == 0 || (ws != nullptr && aligned16(ws)), "workspace: must be a 16-byte aligned device pointer");
  return QK_STATUS_OK;
}

int64_t splitk_bytes(int splits, int64_t m, int64_t n) { return splits > 1 ? int64_t(splits) * m * n * 4 : 0; }

#define QK_TRY(expr)                                \
  do {                                              \
    const int32_t qk_status_ = (expr);              \
    if (qk_status_ != QK_STATUS_OK) return qk_status_; \
  } while (0)

// FP8 on GEMV engine v4 instead of the split-K kernel: a test / benchmark override
// (QK_GEMV_FP8_ENGINE=1, csrc/gemv/schedule.h) until measurements decide; the workspace query and
// the launch ask the same question, so the caller's workspace fits the path taken.
bool fp8_on_engine(int64_t m) { return m <= qk::kMaxEngineGemvM && qk::gemv::fp8_engine_requested(); }

int fp8_splits(int64_t m, int64_t n, int64_t k, int32_t device) {
  return qk::plan_fp8_gemv_splits(m, n, k, qk::sm_count(device));
}

// The GEMV engine's plan for a validated shape on a checked device; the workspace query and the
// launch use the same function, so the caller's workspace always fits the launch.
template <typename PlanFn>
int32_t engine_plan(PlanFn plan_fn, int64_t m, int64_t n, int64_t k, int32_t device, qk::gemv::GemvPlan* plan) {
  const cudaError_t err = plan_fn(m, n, k, device, plan);
  if (err != cudaSuccess) return qk::fail_cuda(err, "planning the GEMV grid");
  return QK_STATUS_OK;
}
int awq_splits(int64_t m, int64_t n, int64_t k, int64_t g, int32_t device) {
  return qk::plan_awq_gemv_splits(m, n, k, g, qk::sm_count(device));
}
int marlin_i4_splits(int64_t m, int64_t n, int64_t k, int64_t g, int32_t device) {
  return qk::plan_marlin_i4_gemv_splits(m, n, k, g, qk::sm_count(device));
}

int32_t check_fp8_shape(int64_t n, int64_t k) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(n % 64 == 0, "n: the FP8 Marlin layout needs n %% 64 == 0, got %lld", static_cast<long long>(n));
  QK_REQUIRE(k % 16 == 0, "k: the FP8 Marlin layout needs k %% 16 == 0, got %lld", static_cast<long long>(k));
  return QK_STATUS_OK;
}

int32_t check_awq_shape(int64_t n, int64_t k, int64_t group_size) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(n % 4 == 0, "n: the AWQ layout needs n %% 4 == 0, got %lld", static_cast<long long>(n));
  QK_REQUIRE(k % 64 == 0, "k: the AWQ layout needs k %% 64 == 0, got %lld", static_cast<long long>(k));
  return check_group(k, group_size, 32);
}

int32_t check_marlin_i4_shape(int64_t n, int64_t k, int64_t group_size, int32_t scale_perm) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(n % 64 == 0, "n: the Marlin int4 layout needs n %% 64 == 0, got %lld", static_cast<long long>(n));
  QK_REQUIRE(k % 16 == 0, "k: the Marlin int4 layout needs k %% 16 == 0, got %lld", static_cast<long long>(k));
  QK_REQUIRE(scale_perm == QK_SCALE_PERM_NONE || scale_perm == QK_SCALE_PERM_BLOCK32 ||
                 scale_perm == QK_SCALE_PERM_BLOCK64,
             "scale_perm: code %d is not 0 (none), 1 (block32) or 2 (block64)", scale_perm);
  return check_group(k, group_size, 16);
}

int32_t check_int8_gemv_shape(int64_t n, int64_t k) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(k % 32 == 0, "k: the int8 GEMV needs k %% 32 == 0, got %lld", static_cast<long long>(k));
  return QK_STATUS_OK;
}

int32_t check_ptrs16(const void* a, const char* an, const void* b, const char* bn, const void* c, const char* cn) {
  QK_REQUIRE(a != nullptr && aligned16(a), "%s: must be a non-null 16-byte aligned device pointer", an);
  QK_REQUIRE(b != nullptr && aligned16(b), "%s: must be a non-null 16-byte aligned device pointer", bn);
  QK_REQUIRE(c != nullptr && aligned16(c), "%s: must be a non-null 16-byte aligned device pointer", cn);
  return QK_STATUS_OK;
}

int32_t check_ptr2(const void* p, const char* name) {
  QK_REQUIRE(p != nullptr && reinterpret_cast<uintptr_t>(p) % 2 == 0, "%s: must be a non-null 2-byte aligned pointer",
             name);
  return QK_STATUS_OK;
}

}  // namespace

extern "C" {

QK_API int64_t qk_max_gemv_m(void) { return qk::kMaxGemvM; }
QK_API int64_t qk_fp8_marlin_max_gemv_m(void) { return qk::kMaxFp8GemvM; }
QK_API int64_t qk_int8_max_gemv_m(void) { return qk::kMaxEngineGemvM; }

QK_API int32_t qk_unpack(const void* in, void* out, int64_t numel, int32_t bits, int32_t device, void* stream) {
  QK_REQUIRE(bits == 2 || bits == 4, "bits: must be 2 or 4, got %d", bits);
  QK_REQUIRE(numel >= 0 && numel < kMaxDim, "numel: must be in [0, 2^40), got %lld", static_cast<long long>(numel));
  QK_REQUIRE(numel == 0 || (in != nullptr && out != nullptr), "in/out: must not be null");
  return qk::launch_on(device, stream, "unpack", [&](cudaStream_t s) {
    return qk::launch_unpack(static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), numel, bits, s);
  });
}

QK_API int32_t qk_marlin_repack(const void* in, const void* perm, void* out, int64_t size_k, int64_t size_n,
                                int32_t num_bits, int32_t device, void* stream) {
  QK_REQUIRE(num_bits == 4 || num_bits == 8, "num_bits: must be 4 or 8, got %d", num_bits);
  QK_TRY(check_nk(size_n, size_k));
  QK_REQUIRE(size_k % 16 == 0, "size_k: must be a multiple of 16, got %lld", static_cast<long long>(size_k));
  QK_REQUIRE(size_n % 64 == 0, "size_n: must be a multiple of 64, got %lld", static_cast<long long>(size_n));
  QK_REQUIRE(in != nullptr && out != nullptr, "b_q_weight/out: must not be null");
  QK_REQUIRE(perm == nullptr || reinterpret_cast<uintptr_t>(perm) % 4 == 0, "perm: must be 4-byte aligned");
  return qk::launch_on(device, stream, "marlin_repack", [&](cudaStream_t s) {
    return qk::launch_marlin_repack(static_cast<const uint32_t*>(in), static_cast<const int32_t*>(perm),
                                    static_cast<uint32_t*>(out), size_k, size_n, num_bits, s);
  });
}

// ---- FP8 Marlin ----

QK_API int32_t qk_fp8_marlin_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                                        int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_fp8_shape(n, k));
  QK_TRY(check_ptrs16(w, "w", out, "out", w, "w"));
  QK_TRY(check_ptr2(scales, "scales"));
  return qk::launch_on(device, stream, "fp8_marlin_dequantize", [&](cudaStream_t s) {
    return qk::launch_fp8_dequant(static_cast<const uint32_t*>(w), scales, out, n, k, static_cast<qk::DType>(dtype),
                                  s);
  });
}

QK_API int32_t qk_fp8_marlin_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device,
                                                  int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_gemv_m(m, qk::kMaxFp8GemvM));
  QK_TRY(check_fp8_shape(n, k));
  QK_TRY(qk::check_device(device));
  if (fp8_on_engine(m)) {
    qk::gemv::GemvPlan plan;
    QK_TRY(engine_plan(qk::plan_fp8_engine_gemv, m, n, k, device, &plan));
    *bytes = plan.workspace_bytes();
    return qk::ok();
  }
  *bytes = qk::splitk_tail::workspace_bytes(fp8_splits(m, n, k, device), m, n, n / 64);
  return qk::ok();
}

QK_API int32_t qk_fp8_marlin_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                                  void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                  int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_gemv_m(m, qk::kMaxFp8GemvM));
  QK_TRY(check_fp8_shape(n, k));
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_REQUIRE(bias == nullptr || reinterpret_cast<uintptr_t>(bias) % 2 == 0, "bias: must be 2-byte aligned or null");
  QK_TRY(qk::check_device(device));
  if (fp8_on_engine(m)) {
    qk::gemv::GemvPlan plan;
    QK_TRY(engine_plan(qk::plan_fp8_engine_gemv, m, n, k, device, &plan));
    QK_TRY(check_workspace(workspace, workspace_bytes, plan.workspace_bytes()));
    return qk::launch_on(device, stream, "fp8_marlin_gemv", [&](cudaStream_t s) {
      return qk::launch_fp8_engine_gemv(a, static_cast<const uint32_t*>(w), scales, bias, out, workspace, plan,
                                        static_cast<qk::DType>(dtype), s);
    });
  }
  const int splits = fp8_splits(m, n, k, device);
  // Partials and, for the register-loaded kernel's in-launch finish, one arrival word per column tile.
  QK_TRY(check_workspace(workspace, workspace_bytes, qk::splitk_tail::workspace_bytes(splits, m, n, n / 64)));
  return qk::launch_on(device, stream, "fp8_marlin_gemv", [&](cudaStream_t s) {
    return qk::launch_fp8_gemv(a, static_cast<const uint32_t*>(w), scales, bias, out, static_cast<float*>(workspace),
                               m, n, k, splits, static_cast<qk::DType>(dtype), s);
  });
}

namespace {
// The weight-only tensor-core kernels (FP8 Marlin, int8) are sm_90a code: they run on sm_90 GPUs when the
// library was built for sm_90a.
bool sm90_tc_runs_on(int32_t device) {
#if defined(QK_HAS_SM90A)
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return false;
  }
  return major == 9 && minor == 0;
#else
  (void)device;
  return false;
#endif
}

// The pointer, device and availability checks of a weight-only tensor-core call (after its size checks).
int32_t check_sm90_mm_call(const char* name, const void* a, const void* w, const void* scales, const void* bias,
                           const void* out, int32_t device) {
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_REQUIRE(bias == nullptr || reinterpret_cast<uintptr_t>(bias) % 2 == 0, "bias: must be 2-byte aligned or null");
  QK_TRY(qk::check_device(device));
  if (!sm90_tc_runs_on(device)) {
    return qk::fail(QK_STATUS_UNSUPPORTED,
                    "%s: device %d cannot run the tensor-core kernel (needs sm_90 and a library built with sm_90a; "
                    "see qk_%s_available)", name, device, name);
  }
  return QK_STATUS_OK;
}

int32_t report_sm90_tc(int32_t device, int32_t* available) {
  QK_REQUIRE(available != nullptr, "available: must not be null");
  QK_TRY(qk::check_device(device));
  *available = sm90_tc_runs_on(device) ? 1 : 0;
  return qk::ok();
}

// The rows of a weight-only tensor-core call, after its family's shape check (n, k): 1..kMaxRows and
// small enough for int64 products.
int32_t check_sm90_mm_rows(int64_t m, int64_t n, int64_t k) {
  QK_REQUIRE(m >= 1 && m <= qk::sm90_marlin::kMaxRows, "m: must be in [1, %lld], got %lld",
             static_cast<long long>(qk::sm90_marlin::kMaxRows), static_cast<long long>(m));
  QK_REQUIRE(m <= kMaxDim / k && m <= kMaxDim / n, "m: %lld rows is too large for n=%lld, k=%lld",
             static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k));
  return QK_STATUS_OK;
}
}  // namespace

QK_API int32_t qk_fp8_marlin_mm_available(int32_t device, int32_t* available) {
  return report_sm90_tc(device, available);
}

QK_API int64_t qk_fp8_marlin_mm_max_m(void) { return qk::kFp8MmMaxM; }

namespace {
// Shape checks shared by the workspace query and the call.
int32_t check_fp8_mm_sizes(int64_t m, int64_t n, int64_t k) {
  QK_TRY(check_fp8_shape(n, k));
  return check_sm90_mm_rows(m, n, k);
}
}  // namespace

QK_API int32_t qk_fp8_marlin_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_fp8_mm_sizes(m, n, k));
  QK_TRY(qk::check_device(device));
  *bytes = qk::plan_fp8_mm_sm90(m, n, k, qk::sm_count(device)).workspace_bytes();
  return qk::ok();
}

QK_API int32_t qk_fp8_marlin_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                                void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_fp8_mm_sizes(m, n, k));
  QK_TRY(check_sm90_mm_call("fp8_marlin_mm", a, w, scales, bias, out, device));
  const qk::sm90_marlin::SplitPlan plan = qk::plan_fp8_mm_sm90(m, n, k, qk::sm_count(device));
  QK_TRY(check_workspace(workspace, workspace_bytes, plan.workspace_bytes()));
  return qk::launch_on(device, stream, "fp8_marlin_mm", [&](cudaStream_t s) {
    return qk::launch_fp8_mm_sm90(a, static_cast<const uint32_t*>(w), scales, bias, out, workspace, plan, m, n, k,
                                  static_cast<qk::DType>(dtype), s);
  });
}

// ---- int8 (quanto's own layout) ----

QK_API int32_t qk_int8_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                                  int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(w != nullptr, "w: must not be null");
  QK_REQUIRE(out != nullptr && reinterpret_cast<uintptr_t>(out) % 2 == 0, "out: must be a non-null 2-byte aligned pointer");
  QK_TRY(check_ptr2(scales, "scales"));
  return qk::launch_on(device, stream, "int8_dequantize", [&](cudaStream_t s) {
    return qk::launch_int8_dequant(static_cast<const int8_t*>(w), scales, out, n, k, static_cast<qk::DType>(dtype), s);
  });
}

QK_API int32_t qk_int8_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_gemv_m(m, qk::kMaxEngineGemvM));
  QK_TRY(check_int8_gemv_shape(n, k));
  QK_TRY(qk::check_device(device));
  qk::gemv::GemvPlan plan;
  QK_TRY(engine_plan(qk::plan_int8_gemv, m, n, k, device, &plan));
  *bytes = plan.workspace_bytes();
  return qk::ok();
}

QK_API int32_t qk_int8_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                            void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                            int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_gemv_m(m, qk::kMaxEngineGemvM));
  QK_TRY(check_int8_gemv_shape(n, k));
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_REQUIRE(bias == nullptr || reinterpret_cast<uintptr_t>(bias) % 2 == 0, "bias: must be 2-byte aligned or null");
  QK_TRY(qk::check_device(device));
  qk::gemv::GemvPlan plan;
  QK_TRY(engine_plan(qk::plan_int8_gemv, m, n, k, device, &plan));
  QK_TRY(check_workspace(workspace, workspace_bytes, plan.workspace_bytes()));
  return qk::launch_on(device, stream, "int8_gemv", [&](cudaStream_t s) {
    return qk::launch_int8_gemv(a, static_cast<const int8_t*>(w), scales, bias, out, workspace, plan,
                                static_cast<qk::DType>(dtype), s);
  });
}

QK_API int32_t qk_int8_mm_available(int32_t device, int32_t* available) {
  return report_sm90_tc(device, available);
}

QK_API int64_t qk_int8_mm_max_m(void) { return qk::kInt8MmMaxM; }

namespace {
int32_t check_int8_mm_sizes(int64_t m, int64_t n, int64_t k) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(n % 64 == 0, "n: the int8 tensor-core kernel needs n %% 64 == 0, got %lld", static_cast<long long>(n));
  QK_REQUIRE(k % 16 == 0, "k: the int8 tensor-core kernel needs k %% 16 == 0, got %lld", static_cast<long long>(k));
  return check_sm90_mm_rows(m, n, k);
}
}  // namespace

QK_API int32_t qk_int8_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_int8_mm_sizes(m, n, k));
  QK_TRY(qk::check_device(device));
  *bytes = qk::plan_int8_mm_sm90(m, n, k, qk::sm_count(device)).workspace_bytes();
  return qk::ok();
}

QK_API int32_t qk_int8_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                          void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                          int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_int8_mm_sizes(m, n, k));
  QK_TRY(check_sm90_mm_call("int8_mm", a, w, scales, bias, out, device));
  const qk::sm90_marlin::SplitPlan plan = qk::plan_int8_mm_sm90(m, n, k, qk::sm_count(device));
  QK_TRY(check_workspace(workspace, workspace_bytes, plan.workspace_bytes()));
  return qk::launch_on(device, stream, "int8_mm", [&](cudaStream_t s) {
    return qk::launch_int8_mm_sm90(a, static_cast<const int8_t*>(w), scales, bias, out, workspace, plan, m, n, k,
                                   static_cast<qk::DType>(dtype), s);
  });
}

// ---- int8 GEMM (larger M; CUTLASS mixed-input mainloop, sm_90a) ----

namespace {
bool int8_gemm_runs_on(int32_t device) { return qk::int8_gemm_built() && sm90_tc_runs_on(device); }

int32_t check_int8_gemm_sizes(int64_t m, int64_t n, int64_t k) {
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(m >= 1 && m < (int64_t(1) << 31), "m: must be in [1, 2^31), got %lld", static_cast<long long>(m));
  QK_REQUIRE(n < (int64_t(1) << 31) && k < (int64_t(1) << 31), "n, k: must be below 2^31, got %lld x %lld",
             static_cast<long long>(n), static_cast<long long>(k));
  QK_REQUIRE(n % 8 == 0, "n: the int8 GEMM needs n %% 8 == 0, got %lld", static_cast<long long>(n));
  QK_REQUIRE(k % 16 == 0, "k: the int8 GEMM needs k %% 16 == 0, got %lld", static_cast<long long>(k));
  return QK_STATUS_OK;
}

// Workspace bytes of the configuration `tile` (the stream-K schedules need one).
int32_t int8_gemm_need(qk::Int8GemmTile tile, int64_t m, int64_t n, int64_t k, int32_t dtype, int sms, int64_t* need) {
  size_t bytes = 0;
  const cudaError_t e =
      qk::int8_gemm_workspace_bytes(tile, m, n, k, static_cast<qk::DType>(dtype), sms, &bytes);
  if (e != cudaSuccess) {
    return qk::fail(QK_STATUS_CUDA_ERROR, "int8_gemm: workspace query failed: %s", cudaGetErrorString(e));
  }
  *need = static_cast<int64_t>(bytes);
  return QK_STATUS_OK;
}
}  // namespace

QK_API int32_t qk_int8_gemm_available(int32_t device, int32_t* available) {
  QK_REQUIRE(available != nullptr, "available: must not be null");
  QK_TRY(qk::check_device(device));
  *available = int8_gemm_runs_on(device) ? 1 : 0;
  return qk::ok();
}

QK_API int32_t qk_int8_gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t dtype, int32_t device,
                                            int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_int8_gemm_sizes(m, n, k));
  QK_TRY(qk::check_device(device));
  if (!int8_gemm_runs_on(device)) {
    *bytes = 0;
    return qk::ok();
  }
  const int sms = qk::sm_count(device);
  QK_TRY(int8_gemm_need(qk::plan_int8_gemm(m, n, k, sms), m, n, k, dtype, sms, bytes));
  return qk::ok();
}

QK_API int32_t qk_int8_gemm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                            void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                            int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_int8_gemm_sizes(m, n, k));
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_REQUIRE(scales != nullptr && aligned16(scales), "scales: must be a non-null 16-byte aligned device pointer");
  QK_REQUIRE(bias == nullptr || aligned16(bias), "bias: must be 16-byte aligned or null");
  QK_TRY(qk::check_device(device));
  if (!int8_gemm_runs_on(device)) {
    return qk::fail(QK_STATUS_UNSUPPORTED,
                    "int8_gemm: device %d cannot run it (needs sm_90 and a library built with sm_90a and CUTLASS; "
                    "see qk_int8_gemm_available)", device);
  }
  // Planned once here: a workspace sized for another plan (an override changed since the query) is refused
  // as an invalid argument, which the Python layer answers by asking again.
  const int sms = qk::sm_count(device);
  const qk::Int8GemmTile tile = qk::plan_int8_gemm(m, n, k, sms);
  int64_t need = 0;
  QK_TRY(int8_gemm_need(tile, m, n, k, dtype, sms, &need));
  QK_TRY(check_workspace(workspace, workspace_bytes, need));
  return qk::launch_on(device, stream, "int8_gemm", [&](cudaStream_t s) {
    return qk::launch_int8_gemm(tile, a, static_cast<const int8_t*>(w), scales, bias, out,
                                workspace, static_cast<size_t>(workspace_bytes), m, n, k,
                                static_cast<qk::DType>(dtype), sms, s);
  });
}

// ---- AWQ int4 ----

QK_API int32_t qk_awq_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out, int64_t n,
                                      int64_t k, int64_t group_size, int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_awq_shape(n, k, group_size));
  QK_TRY(check_ptrs16(w, "w", out, "out", w, "w"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_TRY(check_ptr2(zeros, "zeros"));
  return qk::launch_on(device, stream, "awq_int4_dequantize", [&](cudaStream_t s) {
    return qk::launch_awq_dequant(static_cast<const uint16_t*>(w), scales, zeros, out, n, k, group_size,
                                  static_cast<qk::DType>(dtype), s);
  });
}

QK_API int32_t qk_awq_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                                int32_t device, int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_gemv_m(m));
  QK_TRY(check_awq_shape(n, k, group_size));
  QK_TRY(qk::check_device(device));
  *bytes = splitk_bytes(awq_splits(m, n, k, group_size, device), m, n);
  return qk::ok();
}

QK_API int32_t qk_awq_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                                void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                int64_t group_size, int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_gemv_m(m));
  QK_TRY(check_awq_shape(n, k, group_size));
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_TRY(check_ptr2(zeros, "zeros"));
  QK_TRY(qk::check_device(device));
  const int splits = awq_splits(m, n, k, group_size, device);
  QK_TRY(check_workspace(workspace, workspace_bytes, splitk_bytes(splits, m, n)));
  return qk::launch_on(device, stream, "awq_int4_gemv", [&](cudaStream_t s) {
    return qk::launch_awq_gemv(a, static_cast<const uint16_t*>(w), scales, zeros, out, static_cast<float*>(workspace),
                               m, n, k, group_size, splits, static_cast<qk::DType>(dtype), s);
  });
}

// ---- Marlin int4 ----

QK_API int32_t qk_marlin_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out,
                                         int64_t n, int64_t k, int64_t group_size, int32_t scale_perm,
                                         int32_t dtype, int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_marlin_i4_shape(n, k, group_size, scale_perm));
  QK_TRY(check_ptrs16(w, "w", out, "out", w, "w"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_TRY(check_ptr2(zeros, "zeros"));
  return qk::launch_on(device, stream, "marlin_int4_dequantize", [&](cudaStream_t s) {
    return qk::launch_marlin_i4_dequant(static_cast<const uint32_t*>(w), scales, zeros, out, n, k, group_size,
                                        static_cast<qk::ScalePerm>(scale_perm), static_cast<qk::DType>(dtype), s);
  });
}

QK_API int32_t qk_marlin_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                                   int32_t device, int64_t* bytes) {
  QK_REQUIRE(bytes != nullptr, "bytes: must not be null");
  QK_TRY(check_gemv_m(m));
  QK_TRY(check_marlin_i4_shape(n, k, group_size, QK_SCALE_PERM_NONE));
  QK_TRY(qk::check_device(device));
  *bytes = splitk_bytes(marlin_i4_splits(m, n, k, group_size, device), m, n);
  return qk::ok();
}

QK_API int32_t qk_marlin_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                                   void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                   int64_t group_size, int32_t scale_perm, int32_t dtype, int32_t device,
                                   void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_TRY(check_gemv_m(m));
  QK_TRY(check_marlin_i4_shape(n, k, group_size, scale_perm));
  QK_TRY(check_ptrs16(a, "a", w, "w", out, "out"));
  QK_TRY(check_ptr2(scales, "scales"));
  QK_TRY(check_ptr2(zeros, "zeros"));
  QK_TRY(qk::check_device(device));
  const int splits = marlin_i4_splits(m, n, k, group_size, device);
  QK_TRY(check_workspace(workspace, workspace_bytes, splitk_bytes(splits, m, n)));
  return qk::launch_on(device, stream, "marlin_int4_gemv", [&](cudaStream_t s) {
    return qk::launch_marlin_i4_gemv(a, static_cast<const uint32_t*>(w), scales, zeros, out,
                                     static_cast<float*>(workspace), m, n, k, group_size,
                                     static_cast<qk::ScalePerm>(scale_perm), splits, static_cast<qk::DType>(dtype), s);
  });
}

}  // extern "C"

// ---- FP8 compute ----

QK_API int32_t qk_fp8_compute_kernel(int32_t device, int32_t* kernel) {
  QK_REQUIRE(kernel != nullptr, "kernel: must not be null");
  QK_TRY(qk::check_device(device));
  *kernel = static_cast<int32_t>(qk::fp8_compute_kernel_for(device));
  return qk::ok();
}

QK_API int32_t qk_fp8_act_quant(const void* x, int64_t ldx, void* xq, void* xs, int64_t m, int64_t k, int32_t dtype,
                                int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_REQUIRE(m >= 0 && m < kMaxDim, "m: must be in [0, 2^40), got %lld", static_cast<long long>(m));
  QK_REQUIRE(k > 0 && k < kMaxDim && k % 16 == 0, "k: must be a positive multiple of 16, got %lld",
             static_cast<long long>(k));
  QK_REQUIRE(ldx >= k && ldx % 8 == 0, "ldx: must be >= k and a multiple of 8 (16-byte rows), got %lld",
             static_cast<long long>(ldx));
  QK_REQUIRE(m == 0 || m <= kMaxDim / ldx, "m * ldx: too large");
  QK_TRY(check_ptrs16(x, "x", xq, "xq", x, "x"));
  QK_REQUIRE(xs != nullptr && reinterpret_cast<uintptr_t>(xs) % 4 == 0, "xs: must be a non-null 4-byte aligned pointer");
  QK_REQUIRE(m <= 0x7fffffff, "m: at most 2^31 - 1 rows, got %lld", static_cast<long long>(m));
  return qk::launch_on(device, stream, "fp8_act_quant", [&](cudaStream_t s) {
    return qk::launch_fp8_act_quant(x, ldx, static_cast<uint8_t*>(xq), static_cast<float*>(xs), m, k,
                                    static_cast<qk::DType>(dtype), s);
  });
}

QK_API int32_t qk_fp8_compute_gemm(const void* xq, const void* xs, const void* w, const void* scales,
                                   const void* bias, void* out, int64_t m, int64_t n, int64_t k, int32_t dtype,
                                   int32_t device, void* stream) {
  QK_TRY(check_dtype(dtype));
  QK_REQUIRE(m >= 0 && m < kMaxDim, "m: must be in [0, 2^40), got %lld", static_cast<long long>(m));
  QK_TRY(check_nk(n, k));
  QK_REQUIRE(k % qk::kFp8ComputeKMultiple == 0, "k: must be a multiple of %lld, got %lld",
             static_cast<long long>(qk::kFp8ComputeKMultiple), static_cast<long long>(k));
  QK_REQUIRE(n % qk::kFp8ComputeNMultiple == 0, "n: must be a multiple of %lld, got %lld",
             static_cast<long long>(qk::kFp8ComputeNMultiple), static_cast<long long>(n));
  QK_REQUIRE(m <= qk::kFp8ComputeMaxM, "m: at most %lld rows per call, got %lld",
             static_cast<long long>(qk::kFp8ComputeMaxM), static_cast<long long>(m));
  QK_REQUIRE(m == 0 || (m <= kMaxDim / k && m <= kMaxDim / n), "m: %lld rows is too large for n=%lld, k=%lld",
             static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k));
  QK_TRY(check_ptrs16(xq, "xq", w, "w", out, "out"));
  QK_REQUIRE(xs != nullptr && reinterpret_cast<uintptr_t>(xs) % 4 == 0, "xs: must be a non-null 4-byte aligned pointer");
  QK_TRY(check_ptr2(scales, "scales"));
  QK_REQUIRE(bias == nullptr || reinterpret_cast<uintptr_t>(bias) % 2 == 0, "bias: must be 2-byte aligned or null");
  QK_TRY(qk::check_device(device));
  const qk::Fp8ComputeKernel kernel = qk::fp8_compute_kernel_for(device);
  if (kernel == qk::kFp8ComputeNone) {
    return qk::fail(QK_STATUS_UNSUPPORTED, "fp8_compute_gemm: device %d has no FP8 tensor cores (needs compute capability 8.9+)",
                    device);
  }
  return qk::launch_on(device, stream, "fp8_compute_gemm", [&](cudaStream_t s) {
    return qk::launch_fp8_compute_gemm(static_cast<const uint8_t*>(xq), static_cast<const float*>(xs),
                                       static_cast<const uint32_t*>(w), scales, bias, out, m, n, k,
                                       static_cast<qk::DType>(dtype), kernel, s);
  });
}
