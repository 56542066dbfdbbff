// The genfast_cuda_emu op library: every genfast schema (csrc/op_schemas.h), implemented for CPU
// tensors by the emulated csrc/cuda kernels where the CUDA backend implements it, plus the
// emulator's controls.
#include <torch/library.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "../../csrc/op_schemas.h"
#include "scheduler.h"

namespace genfast::emu {
namespace {

void set_schedule_op(const std::string& order, int64_t seed) {
  if (order == "forward") {
    set_schedule(Order::kForward, seed);
  } else if (order == "reverse") {
    set_schedule(Order::kReverse, seed);
  } else if (order == "random") {
    set_schedule(Order::kRandom, static_cast<uint64_t>(seed));
  } else {
    throw std::invalid_argument("CUDA emulator: order must be forward, reverse or random, got " +
                                order);
  }
}

// One "file.cu:kernel count" line per kernel launched so far.
std::string launches_op() {
  std::ostringstream out;
  for (const auto& [kernel, count] : launches()) out << kernel << " " << count << "\n";
  return out.str();
}

}  // namespace
}  // namespace genfast::emu

TORCH_LIBRARY(genfast_cuda_emu, m) {
  genfast::define_op_schemas(m);
  m.def("emu_set_schedule(str order, int seed) -> ()", &genfast::emu::set_schedule_op);
  m.def("emu_launches() -> str", &genfast::emu::launches_op);
}
