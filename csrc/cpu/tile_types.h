// The arguments of a register tile of the CPU convolutions (kernels/conv_tile.h explains them).
#pragma once
#include <cstdint>

namespace genfast::cpu {

struct Segment {
  int64_t a, b;  // offsets into A and B
};

struct TileArgs {
  int64_t rs, ks, bs;  // strides of A's rows, of A along k, of B along k
  int64_t k;           // length of every segment
  int64_t cs;          // stride of C's rows
  bool accumulate;     // add to C rather than overwrite it
};

template <typename T>
using TileFn = void (*)(const T*, const T*, const Segment*, int64_t, const TileArgs&, T*);

// Most column vectors in one tile at any ISA level (kernels/conv_tile.h).
constexpr int kMostTileVectors = 4;

// Buffers are padded to whole 64-byte blocks (16 floats, 8 doubles), a multiple of the vector
// width of every level, so the same packed buffers serve whichever level runs.
template <typename T>
constexpr int64_t kPadLanes = 64 / sizeof(T);

}  // namespace genfast::cpu
