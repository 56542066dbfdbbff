#include "isa.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "kernel_table.h"
#include "transpose.h"

namespace genfast::cpu {

// One table per level, defined by csrc/cpu/isa/<level>.cpp; the x86 levels only on x86-64.
extern const CpuKernels kBaselineKernels;
#if defined(__x86_64__)
extern const CpuKernels kAvx2Kernels;
extern const CpuKernels kAvx512Kernels;
#endif

namespace {

bool cpu_has(IsaLevel level) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  switch (level) {
    case IsaLevel::avx512:
      // x86-64-v4's AVX-512 subsets, on top of x86-64-v3.
      if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512cd")))
        return false;
      [[fallthrough]];
    case IsaLevel::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe");
    default:
      return true;
  }
#else
  return level == IsaLevel::baseline;
#endif
}

const CpuKernels& table_of(IsaLevel level) {
#if defined(__x86_64__)
  if (level == IsaLevel::avx512) return kAvx512Kernels;
  if (level == IsaLevel::avx2) return kAvx2Kernels;
#endif
  return kBaselineKernels;
}

IsaLevel level_named(const std::string& name) {
  for (IsaLevel level : {IsaLevel::baseline, IsaLevel::avx2, IsaLevel::avx512})
    if (name == isa_name(level)) return level;
  TORCH_CHECK(false, "genfast: unknown CPU ISA level '", name,
              "'; the levels are baseline, avx2 and avx512");
}

IsaLevel checked(IsaLevel level) {
  TORCH_CHECK(cpu_has(level), "genfast: this CPU cannot run the '", isa_name(level),
              "' kernels; it supports up to '", isa_name(supported_isas().back()), "'");
  return level;
}

// The level in use: GENFAST_CPU_ISA if set (checked on first use, so a bad value is a clear
// error at the first kernel call, which genfast's import makes), else the best the CPU has.
std::atomic<const CpuKernels*> active{nullptr};
std::once_flag from_environment;

const CpuKernels& active_table() {
  const CpuKernels* t = active.load(std::memory_order_acquire);
  if (t != nullptr) return *t;
  std::call_once(from_environment, [] {
    const char* forced = std::getenv("GENFAST_CPU_ISA");
    const IsaLevel level = forced != nullptr && *forced != '\0'
                               ? checked(level_named(forced))
                               : supported_isas().back();
    const CpuKernels* expected = nullptr;
    active.compare_exchange_strong(expected, &table_of(level));
  });
  return *active.load(std::memory_order_acquire);
}

}  // namespace

const char* isa_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::avx512: return "avx512";
    case IsaLevel::avx2: return "avx2";
    default: return "baseline";
  }
}

std::vector<IsaLevel> supported_isas() {
  std::vector<IsaLevel> levels;
  for (IsaLevel level : {IsaLevel::baseline, IsaLevel::avx2, IsaLevel::avx512})
    if (cpu_has(level)) levels.push_back(level);
  return levels;
}

IsaLevel active_isa() { return active_table().level; }

void set_active_isa(const std::string& name) {
  const IsaLevel level = checked(level_named(name));
  active_table();  // the environment's choice is made (and checked) once, before it is replaced
  active.store(&table_of(level), std::memory_order_release);
}

const CpuKernels& kernels() { return active_table(); }

void gaussian_noise(NoiseStream stream, int64_t first, int64_t count, float* out) {
  kernels().gaussian_noise(stream, first, count, out);
}

void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
               int64_t rows, int64_t cols) {
  kernels().transpose(src, src_stride, dst, dst_stride, rows, cols);
}

}  // namespace genfast::cpu
