// The CPU kernels of one ISA level, as a table of function pointers. csrc/cpu/isa/*.cpp compile
// the kernel bodies (csrc/cpu/kernels/) once per level and each fills one table; isa.h picks
// the table of the level in use. Callers reach the kernels through kernels() only.
#pragma once
#include <cstdint>

#include "gaussian_noise.h"
#include "isa.h"
#include "lstm_cell.h"
#include "tile_types.h"

namespace genfast::cpu {

// The functions the vector maths layer exposes to its accuracy test.
enum class VectorFunction : int { exp, log, sigmoid, tanh, sin_turns, cos_turns };

struct CpuKernels {
  IsaLevel level;
  int lanes_f32, lanes_f64;  // vector width in floats and in doubles
  int max_vectors;           // most column vectors per tile (<= kMostTileVectors)
  int max_rows[kMostTileVectors + 1];  // most rows per tile of v vectors, max_rows[v]

  // The register tile of `rows` (1..max_rows[vectors]) rows and `vectors` column vectors;
  // unit_k says A is contiguous along k (TileArgs::ks == 1) rather than along rows (rs == 1).
  TileFn<float> (*tile_f32)(int rows, int vectors, bool unit_k);
  TileFn<double> (*tile_f64)(int rows, int vectors, bool unit_k);

  // Gated activation, y = tanh(a) * sigmoid(b), and its gradients, over n floats.
  void (*gated_forward)(const float* a, const float* b, float* y, int64_t n);
  void (*gated_backward)(const float* a, const float* b, const float* gy, float* ga, float* gb,
                         int64_t n);

  // The reparameterisation's tile steps (csrc/reparam.cpp): n is padded to whole 64 bytes.
  float (*reparam_std_and_kl)(const float* mu, const float* logvar, int64_t n, float* std_out,
                              float* kl);
  void (*reparam_sample)(const float* mu, const float* std_dev, float* z, int64_t n);
  void (*reparam_accumulate)(const float* grad_z, const float* noise, float* sum_g,
                             float* sum_gn, int64_t n);
  void (*reparam_grads)(const float* mu, const float* std_dev, const float* sum_g,
                        const float* sum_gn, const float* grad_kl, float* grad_mu,
                        float* grad_logvar, int64_t n);

  // The discretized logistic mixture on a tile of n pixels (csrc/logistic_mixture.cpp; n a
  // multiple of 16), each plane `stride` floats after the last: params [P] and levels [C]
  // planes in, log-likelihoods [n] out (scratch holds M planes), or d(grad_nll * NLL)/d params
  // [P] planes and the log-likelihoods too.
  void (*logistic_mixture_forward)(const float* params, const float* levels, int64_t n,
                                   int64_t stride, int channels, int mixtures,
                                   float levels_minus_1, float* scratch, float* log_lik);
  void (*logistic_mixture_backward)(const float* params, const float* levels, int64_t n,
                                    int64_t stride, int channels, int mixtures,
                                    float levels_minus_1, float grad_nll, float* grad,
                                    float* log_lik);

  // The normals of stream elements [first, first + count) (gaussian_noise.h).
  void (*gaussian_noise)(NoiseStream stream, int64_t first, int64_t count, float* out);
  // dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols.
  void (*transpose)(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    int64_t rows, int64_t cols);
  // e[l] = exp(e[l]) for l < n, n a multiple of 16.
  void (*exp_in_place)(float* e, int64_t n);
  // The row recurrence (csrc/lstm_row*.cpp): the cell maths of a run (cpu/lstm_cell.h), the
  // batch-minor moves of four images (cpu/interleave.h), and acc[j] += x[j] for j < n.
  void (*lstm_forward_run)(const lstm_row::ForwardRun<float>& q, int64_t n);
  void (*lstm_backward_run)(const lstm_row::BackwardRun<float>& q, int64_t n);
  void (*interleave_4)(const float* src, int64_t image_stride, int64_t row_stride, int64_t rows,
                       int64_t length, float* out, int64_t out_stride);
  void (*deinterleave_4)(const float* src, int64_t src_stride, int64_t rows, int64_t length,
                         float* out, int64_t image_stride, int64_t row_stride);
  void (*add_to)(float* acc, const float* x, int64_t n);
  // y = fn(x) over n floats, with this level's vector maths.
  void (*vector_math)(VectorFunction fn, const float* x, float* y, int64_t n);
};

// The kernels of the level in use (isa.h: the best the CPU has, or GENFAST_CPU_ISA).
const CpuKernels& kernels();

// Lanes of T in one vector of the level in use.
template <typename T>
int lanes() {
  return sizeof(T) == 4 ? kernels().lanes_f32 : kernels().lanes_f64;
}

template <typename T>
TileFn<T> tile_kernel(int rows, int vectors, bool unit_k) {
  if constexpr (sizeof(T) == 4) {
    return kernels().tile_f32(rows, vectors, unit_k);
  } else {
    return kernels().tile_f64(rows, vectors, unit_k);
  }
}

}  // namespace genfast::cpu
