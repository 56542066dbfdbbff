// Which vector ISA level the CPU kernels run at. Each level has its own build of every kernel
// (csrc/cpu/isa/*.cpp), with its native vector width and register tiles sized for its register
// file. The level in use is the best the CPU supports unless GENFAST_CPU_ISA (read here and
// nowhere else) or set_active_isa asks for a lower one: tests and benchmarks use that to run the
// AVX2 kernels on an AVX-512 machine.
#pragma once
#include <string>
#include <vector>

namespace genfast::cpu {

enum class IsaLevel : int {
  baseline = 0,  // x86-64 (SSE2, 16 bytes) or any other CPU, with the compiler's default ISA
  avx2 = 1,      // x86-64-v3: AVX2 and FMA, 16 registers of 32 bytes
  avx512 = 2,    // x86-64-v4: AVX-512 F/BW/DQ/VL, 32 registers of 64 bytes
};

const char* isa_name(IsaLevel level);
// The levels this CPU and this build can run, lowest first.
std::vector<IsaLevel> supported_isas();
IsaLevel active_isa();
// Throws (TORCH_CHECK) for a name that is not a level or a level the CPU lacks.
void set_active_isa(const std::string& name);

}  // namespace genfast::cpu
