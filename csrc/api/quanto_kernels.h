/* quanto-kernels C ABI.
 *
 * Plain C: raw device pointers, int64_t sizes, int32_t codes, a cudaStream_t passed as void*.
 * Every function returns a qk_status; on failure qk_last_error() returns a message for the calling
 * thread. Kernels are enqueued on `stream` on device `device`; the caller's current device is
 * restored before returning. Nothing here allocates device memory: the caller passes outputs and
 * workspaces (sized with the *_workspace_bytes queries).
 */
#ifndef QUANTO_KERNELS_H_
#define QUANTO_KERNELS_H_

#include <stdint.h>
#include "../compat/qk_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QK_ABI_VERSION 6

enum {
  QK_STATUS_OK = 0,
  QK_STATUS_INVALID_ARGUMENT = 1, /* a size, pointer, code or alignment is not acceptable */
  QK_STATUS_UNSUPPORTED = 2,      /* valid request this build or device cannot serve */
  QK_STATUS_CUDA_ERROR = 3        /* the CUDA runtime reported an error */
};

enum { QK_DTYPE_FLOAT16 = 1, QK_DTYPE_BFLOAT16 = 2 };

/* Storage order of per-channel scales/zeros (quanto's Marlin permutations). */
enum { QK_SCALE_PERM_NONE = 0, QK_SCALE_PERM_BLOCK32 = 1, QK_SCALE_PERM_BLOCK64 = 2 };

/* ---- library information ---- */
QK_API int32_t qk_abi_version(void);
QK_API const char* qk_build_info(void); /* JSON object: version, cuda_runtime, archs, git_revision, compiler */
QK_API const char* qk_last_error(void); /* "" when the thread's last call succeeded */
/* CUDA driver and (static) runtime versions, as 1000*major + 10*minor. Works without a GPU. */
QK_API int32_t qk_cuda_versions(int32_t* driver_version, int32_t* runtime_version);
/* Checks that `device` exists, has compute capability >= 8.0 and runs this build's kernels. */
QK_API int32_t qk_device_check(int32_t device);

/* ---- quanto::unpack: in has numel bytes, out has (8/bits)*numel bytes ---- */
QK_API int32_t qk_unpack(const void* in, void* out, int64_t numel, int32_t bits, int32_t device, void* stream);

/* ---- Marlin repack (quanto::pack_fp8_marlin): num_bits 8 -> out (K/16, 4N); 4 -> out (K/16, 2N).
 * perm: NULL, or size_k int32 source rows. ---- */
QK_API int32_t qk_marlin_repack(const void* in, const void* perm, void* out, int64_t size_k, int64_t size_n,
                                int32_t num_bits, int32_t device, void* stream);

/* ---- FP8 Marlin weight: w (K/16, 4N) int32, scales N values (dtype), Block32-permuted ---- */
QK_API int32_t qk_fp8_marlin_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                                        int32_t dtype, int32_t device, void* stream);
QK_API int32_t qk_fp8_marlin_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device,
                                                  int64_t* bytes);
/* out (M, N) dtype = scales[n] * (a . W) + bias[n], rounded once; bias N values (dtype) or NULL. */
QK_API int32_t qk_fp8_marlin_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                                  void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                  int32_t dtype, int32_t device, void* stream);
/* Tensor-core product for medium and large M (weight decoded in registers, no dense copy): *available = 1
 * when `device` can run it (an sm_90 GPU and a library built with sm_90a), else 0. */
QK_API int32_t qk_fp8_marlin_mm_available(int32_t device, int32_t* available);
/* Workspace of qk_fp8_marlin_mm (split-K partial sums; 0 when the call runs unsplit). */
QK_API int32_t qk_fp8_marlin_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
/* out (M, N) dtype = scales[n] * (a . W) + bias[n]; a (M, K) dtype, dense rows, 16-byte aligned; bias N values
 * (dtype) or NULL; 1 <= M <= qk_fp8_marlin_mm_max_m(); workspace: the bytes the query gave, 16-byte aligned. */
QK_API int32_t qk_fp8_marlin_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                                void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                int32_t dtype, int32_t device, void* stream);
QK_API int64_t qk_fp8_marlin_mm_max_m(void);

/* ---- int8 weight in quanto's own layout: w (N, K) int8 row-major, scales N values (dtype) in channel order ---- */
QK_API int32_t qk_int8_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                                  int32_t dtype, int32_t device, void* stream);
QK_API int32_t qk_int8_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
/* out (M, N) dtype = scales[n] * (a . W^T) + bias[n], rounded once; bias N values (dtype) or NULL. */
QK_API int32_t qk_int8_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                            void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                            int32_t device, void* stream);

/* Tensor-core product for medium M (codes converted in registers, no dense copy): *available = 1 where
 * `device` runs it (sm_90 and a library built with sm_90a). N % 64 == 0, K % 16 == 0, w 16-byte aligned. */
QK_API int32_t qk_int8_mm_available(int32_t device, int32_t* available);
/* Workspace of qk_int8_mm (split-K partial sums; 0 when the call runs unsplit). */
QK_API int32_t qk_int8_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
/* out (M, N) dtype = scales[n] * (a . W) + bias[n]; a (M, K) dtype, dense rows, 16-byte aligned; bias N values
 * (dtype) or NULL; 1 <= M <= qk_int8_mm_max_m(); workspace: the bytes the query gave, 16-byte aligned. */
QK_API int32_t qk_int8_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                          void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                          int32_t device, void* stream);
QK_API int64_t qk_int8_mm_max_m(void);

/* int8 GEMM for larger M (CUTLASS's mixed-input warp-specialised mainloop, codes converted in registers, no
 * dense copy): *available = 1 where `device` runs it (sm_90 and a library built with sm_90a and CUTLASS).
 * out (M, N) dtype = scales[n] * (a . W) + bias[n]; a (M, K) dtype, dense rows; W (N, K) int8 row-major;
 * N % 8 == 0, K % 16 == 0; a, w, scales, bias (or NULL), out and workspace 16-byte aligned; workspace: the
 * bytes the query gave (may be 0). */
QK_API int32_t qk_int8_gemm_available(int32_t device, int32_t* available);
QK_API int32_t qk_int8_gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t dtype, int32_t device,
                                            int64_t* bytes);
QK_API int32_t qk_int8_gemm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                            void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                            int32_t device, void* stream);

/* ---- AWQ v2 int4: w (N/4, K) int16; scales, zeros (K/group, N); a, scales, zeros, out of dtype ---- */
QK_API int32_t qk_awq_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out, int64_t n,
                                      int64_t k, int64_t group_size, int32_t dtype, int32_t device, void* stream);
QK_API int32_t qk_awq_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                                int32_t device, int64_t* bytes);
QK_API int32_t qk_awq_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                                void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                int64_t group_size, int32_t dtype, int32_t device, void* stream);

/* ---- Marlin int4 with zero points: w (K/16, 2N) int32; scales, zeros (K/group, N); a, scales, zeros, out
 * of dtype ---- */
QK_API int32_t qk_marlin_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out,
                                         int64_t n, int64_t k, int64_t group_size, int32_t scale_perm,
                                         int32_t dtype, int32_t device, void* stream);
QK_API int32_t qk_marlin_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                                   int32_t device, int64_t* bytes);
QK_API int32_t qk_marlin_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                                   void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                                   int64_t group_size, int32_t scale_perm, int32_t dtype, int32_t device,
                                   void* stream);

/* Largest M served by the int4 *_gemv entry points; larger M: dequantize, then a dense GEMM. */
QK_API int64_t qk_max_gemv_m(void);
/* ---- FP8 compute: qfloat8 weights (FP8 Marlin layout) times activations quantized per row to e4m3, on
 * FP8 tensor cores (compute capability 8.9 and newer). Numerics: docs/numerics.md, "FP8 compute". ---- */
/* Which kernel serves `device`: QK_FP8_COMPUTE_NONE (no FP8 tensor cores), _MMA or _WGMMA. */
enum { QK_FP8_COMPUTE_NONE = 0, QK_FP8_COMPUTE_MMA = 1, QK_FP8_COMPUTE_WGMMA = 2 };
QK_API int32_t qk_fp8_compute_kernel(int32_t device, int32_t* kernel);
/* x (M, K) dtype, row stride ldx elements (16-byte aligned rows), K % 16 == 0 -> xq (M, K) e4m3 codes in
 * fragment order, xs M fp32 row scales. */
QK_API int32_t qk_fp8_act_quant(const void* x, int64_t ldx, void* xq, void* xs, int64_t m, int64_t k, int32_t dtype,
                                int32_t device, void* stream);
/* out (M, N) dtype = xs[m] * scales[n] * (xq . W) + bias[n]; w (K/16, 4N) int32 FP8 Marlin layout, scales N
 * values (dtype, 32-block permuted), bias N values (dtype) or NULL; K % 32 == 0, N % 64 == 0. */
QK_API int32_t qk_fp8_compute_gemm(const void* xq, const void* xs, const void* w, const void* scales,
                                   const void* bias, void* out, int64_t m, int64_t n, int64_t k, int32_t dtype,
                                   int32_t device, void* stream);

/* Largest M served by qk_fp8_marlin_gemv and qk_int8_gemv (the GEMV engine covers more rows than the
 * int4 kernels). */
QK_API int64_t qk_fp8_marlin_max_gemv_m(void);
QK_API int64_t qk_int8_max_gemv_m(void);

#ifdef __cplusplus
}
#endif

#endif /* QUANTO_KERNELS_H_ */
