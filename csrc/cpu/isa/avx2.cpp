// The CPU kernels for x86-64-v3: AVX2 and FMA, 16 vector registers of 32 bytes.
#if defined(__x86_64__)
#include "prelude.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe"))), \
                             apply_to = function)
#else
#pragma GCC target("arch=x86-64-v3")
#endif

#define GENFAST_ISA_NS avx2
#define GENFAST_ISA_LEVEL IsaLevel::avx2
#define GENFAST_ISA_TABLE kAvx2Kernels
#define GENFAST_VECTOR_BYTES 32
#define GENFAST_VECTOR_REGISTERS 16
#define GENFAST_VECTOR_FMA 1
#include "kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
