// The CUDA emulator's controls, for its op registration (registration.cpp): the order threads
// and blocks run in, and which kernels have been launched.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "genfast_cuda_emu.h"

namespace genfast::emu {

// The order in which the runnable threads of a block run between synchronisation points, and
// the blocks of a grid run: by increasing or decreasing linear id, or shuffled afresh each time
// from a generator seeded by set_schedule.
enum class Order { kForward, kReverse, kRandom };

void set_schedule(Order order, uint64_t seed);

// Launches so far in this process, keyed "file.cu:kernel_name".
std::map<std::string, int64_t> launches();

}  // namespace genfast::emu
