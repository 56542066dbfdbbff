// genfast::cpu_isa, cpu_isa_levels, set_cpu_isa and cpu_vector_math: the CPU kernels' ISA
// level (csrc/cpu/isa.h) for genfast.cpu_isa(), the tests and `genfast bench`.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/kernel_table.h"

namespace genfast {
namespace {

std::string cpu_isa() { return cpu::isa_name(cpu::active_isa()); }

std::vector<std::string> cpu_isa_levels() {
  std::vector<std::string> names;
  for (cpu::IsaLevel level : cpu::supported_isas()) names.emplace_back(cpu::isa_name(level));
  return names;
}

void set_cpu_isa(const std::string& level) { cpu::set_active_isa(level); }

at::Tensor cpu_vector_math(const at::Tensor& x, const std::string& fn) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "cpu_vector_math takes a float32 CPU tensor");
  const std::vector<std::pair<const char*, cpu::VectorFunction>> names = {
      {"exp", cpu::VectorFunction::exp},         {"log", cpu::VectorFunction::log},
      {"sigmoid", cpu::VectorFunction::sigmoid}, {"tanh", cpu::VectorFunction::tanh},
      {"sin_turns", cpu::VectorFunction::sin_turns}, {"cos_turns", cpu::VectorFunction::cos_turns}};
  for (const auto& [name, function] : names) {
    if (fn != name) continue;
    const at::Tensor in = x.contiguous();
    at::Tensor out = at::empty_like(in);
    cpu::kernels().vector_math(function, in.const_data_ptr<float>(), out.data_ptr<float>(),
                               in.numel());
    return out;
  }
  TORCH_CHECK(false, "cpu_vector_math: unknown function '", fn, "'");
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CatchAll, m) {
  m.impl("cpu_isa", &cpu_isa);
  m.impl("cpu_isa_levels", &cpu_isa_levels);
  m.impl("set_cpu_isa", &set_cpu_isa);
}

TORCH_LIBRARY_IMPL(genfast, CPU, m) { m.impl("cpu_vector_math", &cpu_vector_math); }

}  // namespace genfast
