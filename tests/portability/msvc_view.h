// Forced-include header for the MSVC-view check (tests/test_portability.py).
// 1. Read every third-party header our sources use first, so their own GNU spellings are accepted.
// 2. Switch the preprocessor to what MSVC would see, so #ifdef _MSC_VER branches get checked.
// 3. Poison GNU-only identifiers: any later use in project code, host or device pass, is an error.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <cstdint>
#include <cstdarg>
#include <cstdio>
#include <cstddef>
#include <atomic>

#define _MSC_VER 1940
#define _WIN32 1
#define _WIN64 1
#undef __GNUC__
#undef __GNUG__
#undef __GNUC_MINOR__
#undef __linux__
#undef __unix__
#undef __clang__

#pragma GCC poison __asm__ __volatile__ __attribute__ __attribute typeof __typeof__ __typeof
#pragma GCC poison uint ushort ulong u_int u_char u_short u_long u_int8_t u_int16_t u_int32_t u_int64_t
#pragma GCC poison ssize_t __int128 __int128_t __uint128_t __float128 __thread __label__ __alignof__
#pragma GCC poison __signed__ __const__ __complex__ __real__ __imag__ __builtin_offsetof __builtin_expect
#pragma GCC poison __builtin_unreachable __builtin_clz __builtin_ctz __builtin_popcount __builtin_assume_aligned
