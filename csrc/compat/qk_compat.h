// Compiler detection for quanto-kernels: the only file that knows which compiler builds us.
// Every other source uses the portable QK_* names below, so that nvcc with gcc, clang or MSVC
// as host compiler all accept the same code (see docs on MSVC in README "How it works").
#pragma once

#if defined(_MSC_VER)
#define QK_COMPILER_MSVC 1
#elif defined(__clang__)
#define QK_COMPILER_CLANG 1
#elif defined(__GNUC__)
#define QK_COMPILER_GCC 1
#endif

// Symbol export for the C ABI. Linux builds use -fvisibility=hidden, so only QK_API symbols leave the .so.
#if defined(_WIN32)
#if defined(QK_BUILDING_LIBRARY)
#define QK_API __declspec(dllexport)
#else
#define QK_API __declspec(dllimport)
#endif
#elif (defined(QK_COMPILER_GCC) || defined(QK_COMPILER_CLANG)) && defined(__cplusplus)
#define QK_API [[gnu::visibility("default")]]  // standard attribute syntax for the ELF export
#else
#define QK_API
#endif

// Thread-local storage spelled the standard way (no __thread / __declspec(thread)).
#define QK_THREAD_LOCAL thread_local

#if defined(__CUDACC__)
// CUDA's own spellings are portable across host compilers; we only rename them once.
#define QK_DEVICE __device__
#define QK_HOST_DEVICE __host__ __device__
#define QK_FORCEINLINE __forceinline__
#define QK_RESTRICT __restrict__
#define QK_ALIGN(n) __align__(n)
// Inline PTX: `asm volatile` is accepted by nvcc under gcc, clang and MSVC; the GNU spelling
// with double underscores is not (MSVC front end). Keep all inline PTX behind these two macros.
#define QK_ASM_VOLATILE(...) asm volatile(__VA_ARGS__)
#define QK_ASM(...) asm(__VA_ARGS__)
// Hopper's arch-specific instructions (wgmma, setmaxnreg) exist only in the sm_90a device pass.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QK_SM90A_DEVICE 1
#endif
// Thread-block clusters (cluster barrier, distributed shared memory): every device pass for sm_90+.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define QK_CLUSTER_DEVICE 1
#endif
#else
#define QK_DEVICE
#define QK_HOST_DEVICE
#define QK_FORCEINLINE inline
#define QK_RESTRICT
#define QK_ALIGN(n) alignas(n)
#endif

// MSVC flags getenv as unsafe (C4996); the library reads only test and benchmark overrides with it.
#if defined(QK_COMPILER_MSVC)
#define QK_GETENV_BEGIN __pragma(warning(push)) __pragma(warning(disable : 4996))
#define QK_GETENV_END __pragma(warning(pop))
#else
#define QK_GETENV_BEGIN
#define QK_GETENV_END
#endif
