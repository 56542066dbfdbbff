// The CPU kernels for the compiler's default target: 16-byte vectors, SSE2 on x86-64 (16
// registers, no FMA) and NEON elsewhere (aarch64: 32 registers, FMA).
#include "prelude.h"

#define GENFAST_ISA_NS baseline
#define GENFAST_ISA_LEVEL IsaLevel::baseline
#define GENFAST_ISA_TABLE kBaselineKernels
#define GENFAST_VECTOR_BYTES 16
#if defined(__aarch64__)
#define GENFAST_VECTOR_REGISTERS 32
#define GENFAST_VECTOR_FMA 1
#else
#define GENFAST_VECTOR_REGISTERS 16
#define GENFAST_VECTOR_FMA 0
#endif
#include "kernels.inc"
