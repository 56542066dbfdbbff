// genfast::cpu_amx_enabled: what the CPU kernels may use on this machine, for tests and reports.
#include <torch/library.h>

#include "cpu/amx_split.h"

namespace genfast {
namespace {

bool cpu_amx_enabled() { return cpu::amx::enabled(); }

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CatchAll, m) { m.impl("cpu_amx_enabled", &cpu_amx_enabled); }

}  // namespace genfast
