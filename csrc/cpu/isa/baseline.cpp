// The CPU kernels for the compiler's default target: 16-byte vectors (SSE2 on x86-64, NEON on
// aarch64), 16 registers assumed (x86-64 has 16; aarch64's 32 only leave tiles smaller than
// they could be).
#include "prelude.h"

#define GENFAST_ISA_NS baseline
#define GENFAST_ISA_LEVEL IsaLevel::baseline
#define GENFAST_ISA_TABLE kBaselineKernels
#define GENFAST_VECTOR_BYTES 16
#define GENFAST_VECTOR_REGISTERS 16
#include "kernels.inc"
