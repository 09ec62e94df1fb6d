// The Marlin int4 kernels with fp16 activations: one instantiation of the int4 templates (both
// unit depths of the fused product; the dequantize kernel does not depend on it).
#include "int4/int4_dequant.cuh"
#include "int4/int4_gemv.cuh"
#include "int4/marlin_layout.cuh"

namespace qk {
namespace i4 {
template cudaError_t launch_int4_gemv<MarlinLayout<4>, DType::F16>(GemvArgs, cudaStream_t);
template cudaError_t launch_int4_gemv<MarlinLayout<1>, DType::F16>(GemvArgs, cudaStream_t);
template cudaError_t launch_int4_dequant<MarlinLayout<4>, DType::F16>(DequantArgs, cudaStream_t);
}  // namespace i4
}  // namespace qk
