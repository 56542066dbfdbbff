// What every ISA translation unit includes before it switches its target: the standard headers
// and genfast's level-independent headers. Functions defined in them must stay compiled for the
// default target, or the linker could hand an AVX-512 copy of one to code running on an AVX2
// CPU. Everything defined after the switch lives in the level's own namespace.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../../philox.h"
#include "../gaussian_noise.h"
#include "../kernel_table.h"
#include "../lstm_cell.h"
#include "../tile_types.h"
