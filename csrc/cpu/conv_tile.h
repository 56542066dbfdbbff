// The register-blocked inner kernel of genfast's CPU convolutions: one tile of C accumulates
//   C[r][v] += sum over segments s, sum over k < K of  A[s.a + r * rs + k * ks] * B[s.b + k * bs + v]
// for R rows and V SIMD vectors of columns, holding the R x V accumulators in registers across all
// segments. A "segment" is one kernel tap (forward and grad-input: k runs over channels) or one
// image row (grad-weight: k runs over pixels), so a tile sums every visible tap before it stores.
// Only the columns are vectorised, so padding is needed along them alone (to whole vectors).
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "simd_math.h"
#include "tile_types.h"

namespace genfast::cpu {

template <typename T>
struct Vec {
  static constexpr int kLanes = 64 / sizeof(T);  // one 512-bit vector (or two 256-bit halves)
  typedef T type __attribute__((vector_size(64)));
};

// kUnitK: A is contiguous along k (ks == 1, forward and grad-input) rather than along rows
// (rs == 1, grad-weight). Fixing the unit stride at compile time keeps the addressing cheap.
template <typename T, int R, int V, bool kUnitK>
GENFAST_SIMD_INLINE void conv_tile_body(const T* __restrict A, const T* __restrict B,
                                        const Segment* segs, int64_t nseg, const TileArgs& t,
                                        T* __restrict C) {
  using vec = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  vec acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      if (t.accumulate) {
        std::memcpy(&acc[r][v], C + r * t.cs + v * L, sizeof(vec));
      } else {
        acc[r][v] = vec{};
      }
    }
  for (int64_t s = 0; s < nseg; ++s) {
    const T* a = A + segs[s].a;
    const T* b = B + segs[s].b;
    for (int64_t k = 0; k < t.k; ++k) {
      vec w[V];
      for (int v = 0; v < V; ++v) std::memcpy(&w[v], b + k * t.bs + v * L, sizeof(vec));
      for (int r = 0; r < R; ++r) {
        // s - 0 is s for every s (-0 included), so this folds to a plain broadcast load;
        // 0 + s would not (it turns -0 into +0) and costs an add before every broadcast.
        const vec x = (kUnitK ? a[r * t.rs + k] : a[r + k * t.ks]) - vec{};
        for (int v = 0; v < V; ++v) acc[r][v] += x * w[v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) std::memcpy(C + r * t.cs + v * L, &acc[r][v], sizeof(vec));
}

// Rows per tile for V column vectors: R x V accumulators, V loaded vectors and one broadcast must
// fit in AVX-512's 32 registers (7 x 4 does not: measured 211 against 226 GFLOP/s per core for
// 6 x 4). On narrower targets the compiler splits each vector and spills a little.
constexpr int max_rows(int v) { return v == 4 ? 6 : v == 3 ? 8 : v == 2 ? 12 : 14; }
constexpr int kMaxVectors = 4;

// One function per (rows, vectors, unit stride); float versions are cloned per x86 ISA level.
template <int R, int V, bool kUnitK>
GENFAST_TARGET_CLONES void conv_tile_f32(const float* A, const float* B, const Segment* segs,
                                         int64_t nseg, const TileArgs& t, float* C) {
  conv_tile_body<float, R, V, kUnitK>(A, B, segs, nseg, t, C);
}
template <int R, int V, bool kUnitK>
void conv_tile_f64(const double* A, const double* B, const Segment* segs, int64_t nseg,
                   const TileArgs& t, double* C) {
  conv_tile_body<double, R, V, kUnitK>(A, B, segs, nseg, t, C);
}

template <typename T, int R, int V, bool kUnitK>
constexpr TileFn<T> tile_fn() {
  if constexpr (std::is_same_v<T, float>) {
    return &conv_tile_f32<R, V, kUnitK>;
  } else {
    return &conv_tile_f64<R, V, kUnitK>;
  }
}

template <typename T, int V, bool kUnitK, int... Rm1>
constexpr std::array<TileFn<T>, sizeof...(Rm1)> row_table(std::integer_sequence<int, Rm1...>) {
  return {tile_fn<T, Rm1 + 1, V, kUnitK>()...};
}

template <typename T, bool kUnitK>
TileFn<T> conv_tile_of(int rows, int vectors) {
  static const auto t1 = row_table<T, 1, kUnitK>(std::make_integer_sequence<int, max_rows(1)>{});
  static const auto t2 = row_table<T, 2, kUnitK>(std::make_integer_sequence<int, max_rows(2)>{});
  static const auto t3 = row_table<T, 3, kUnitK>(std::make_integer_sequence<int, max_rows(3)>{});
  static const auto t4 = row_table<T, 4, kUnitK>(std::make_integer_sequence<int, max_rows(4)>{});
  switch (vectors) {
    case 1: return t1[rows - 1];
    case 2: return t2[rows - 1];
    case 3: return t3[rows - 1];
    default: return t4[rows - 1];
  }
}

// The tile function for `rows` (1..max_rows(vectors)) rows and `vectors` (1..4) column vectors;
// unit_k says A is contiguous along k (TileArgs::ks == 1) rather than along rows (rs == 1).
template <typename T>
TileFn<T> conv_tile(int rows, int vectors, bool unit_k) {
  return unit_k ? conv_tile_of<T, true>(rows, vectors) : conv_tile_of<T, false>(rows, vectors);
}

}  // namespace genfast::cpu
