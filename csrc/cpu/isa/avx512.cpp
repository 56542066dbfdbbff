// The CPU kernels for x86-64-v4: AVX-512 F/BW/DQ/VL, 32 vector registers of 64 bytes.
#if defined(__x86_64__)
#include "prelude.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target( \
    "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,bmi,bmi2,f16c,lzcnt,movbe"))), \
                             apply_to = function)
#else
#pragma GCC target("arch=x86-64-v4")
#endif

#define GENFAST_ISA_NS avx512
#define GENFAST_ISA_LEVEL IsaLevel::avx512
#define GENFAST_ISA_TABLE kAvx512Kernels
#define GENFAST_VECTOR_BYTES 64
#define GENFAST_VECTOR_REGISTERS 32
#define GENFAST_VECTOR_FMA 1
#include "kernels.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
