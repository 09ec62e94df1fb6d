// The AWQ v2 int4 kernels with fp16 activations: one instantiation of the int4 templates.
#include "int4/awq_layout.cuh"
#include "int4/int4_dequant.cuh"
#include "int4/int4_gemv.cuh"

namespace qk {
namespace i4 {
template cudaError_t launch_int4_gemv<AwqLayout, DType::F16>(GemvArgs, cudaStream_t);
template cudaError_t launch_int4_dequant<AwqLayout, DType::F16>(DequantArgs, cudaStream_t);
}  // namespace i4
}  // namespace qk
