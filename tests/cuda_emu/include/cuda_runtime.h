// Stand-in for the CUDA runtime header under the CUDA emulator (tests/cuda_emu): the launch-shape
// and stream types the host code of csrc/cuda names, nothing that talks to a device.
#pragma once

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

typedef struct CUstream_st* cudaStream_t;
