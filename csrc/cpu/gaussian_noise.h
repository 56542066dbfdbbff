// genfast's Gaussian stream (see csrc/philox.h) generated 16 philox blocks at a time.
#pragma once
#include <cstdint>

namespace genfast::cpu {

struct NoiseStream {
  uint64_t seed;    // philox key
  uint64_t offset;  // first philox counter
};

// Writes the normals of stream elements [first, first + count) to out[0, count).
void gaussian_noise(NoiseStream stream, int64_t first, int64_t count, float* out);

}  // namespace genfast::cpu
