// The register-blocked inner kernel of genfast's CPU convolutions: one tile of C accumulates
//   C[r][v] += sum over segments s, sum over k < K of  A[s.a + r * rs + k * ks] * B[s.b + k * bs + v]
// for R rows and V SIMD vectors of columns, holding the R x V accumulators in registers across all
// segments. A "segment" is one kernel tap (forward and grad-input: k runs over channels) or one
// image row (grad-weight: k runs over pixels), so a tile sums every visible tap before it stores.
// Only the columns are vectorised, so padding is needed along them alone (to whole vectors).
#pragma once
#include <array>
#include <utility>

#include "../tile_types.h"
#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS {

template <typename T>
struct Vec {
  static constexpr int kLanes = GENFAST_VECTOR_BYTES / sizeof(T);
  typedef T type __attribute__((vector_size(GENFAST_VECTOR_BYTES)));
};

// The tile shape follows from the register file. Each k step loads V vectors of B and
// broadcasts R elements of A for R x V FMAs, so a tile of R rows and V vectors needs
//   R * V accumulators + V loaded vectors + 1 broadcast (+ 1 for the product without FMA)
// registers at most. Among the V that fit, the one whose largest tile does the most FMAs per
// load, R V / (R + V), is the widest used (AVX-512: 6 x 4; AVX2: 4 x 3; SSE2: 6 x 2); narrower
// tiles serve the last columns. Rows are capped at 14: more gain nothing.
constexpr int kRegisters = GENFAST_VECTOR_REGISTERS - (GENFAST_VECTOR_FMA ? 0 : 1);
constexpr int max_rows(int v) {
  const int fit = (kRegisters - v - 1) / v;
  return fit < 14 ? fit : 14;
}
constexpr int best_vectors() {
  int best = 1;
  for (int v = 2; v <= kMostTileVectors; ++v)
    if (max_rows(v) >= 1 && max_rows(v) * v * (max_rows(best) + best) >
                                max_rows(best) * best * (max_rows(v) + v))
      best = v;
  return best;
}
constexpr int kMaxVectors = best_vectors();

// kUnitK: A is contiguous along k (ks == 1, forward and grad-input) rather than along rows
// (rs == 1, grad-weight). Fixing the unit stride at compile time keeps the addressing cheap.
template <typename T, int R, int V, bool kUnitK>
void conv_tile(const T* __restrict A, const T* __restrict B, const Segment* segs, int64_t nseg,
               const TileArgs& t, T* __restrict C) {
  using vec = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  // Accumulators start at zero and C is added at the end, and B's vectors are loaded where
  // they are used (the compiler keeps them in registers across the rows or folds the loads into
  // the FMAs): either way round, GCC kept most accumulators of a full register file (AVX2's
  // 4 x 3) on the stack.
  vec acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = vec{};
  for (int64_t s = 0; s < nseg; ++s) {
    const T* a = A + segs[s].a;
    const T* b = B + segs[s].b;
    for (int64_t k = 0; k < t.k; ++k) {
      for (int r = 0; r < R; ++r) {
        // s - 0 is s for every s (-0 included), so this folds to a plain broadcast load;
        // 0 + s would not (it turns -0 into +0) and costs an add before every broadcast.
        const vec x = (kUnitK ? a[r * t.rs + k] : a[r + k * t.ks]) - vec{};
        for (int v = 0; v < V; ++v) {
          vec w;
          std::memcpy(&w, b + k * t.bs + v * L, sizeof(vec));
          acc[r][v] += x * w;
        }
      }
    }
  }
  if (t.accumulate) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) {
        vec before;
        std::memcpy(&before, C + r * t.cs + v * L, sizeof(vec));
        acc[r][v] += before;
      }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) std::memcpy(C + r * t.cs + v * L, &acc[r][v], sizeof(vec));
}

template <typename T, int V, bool kUnitK, int... Rm1>
constexpr std::array<TileFn<T>, sizeof...(Rm1)> row_table(std::integer_sequence<int, Rm1...>) {
  return {&conv_tile<T, Rm1 + 1, V, kUnitK>...};
}

template <typename T, bool kUnitK, int V>
TileFn<T> tile_of_rows(int rows) {
  if constexpr (V > kMaxVectors) {
    return nullptr;
  } else {
    static constexpr auto table =
        row_table<T, V, kUnitK>(std::make_integer_sequence<int, max_rows(V)>{});
    return table[rows - 1];
  }
}

template <typename T>
TileFn<T> tile(int rows, int vectors, bool unit_k) {
  switch (vectors) {
    case 1: return unit_k ? tile_of_rows<T, true, 1>(rows) : tile_of_rows<T, false, 1>(rows);
    case 2: return unit_k ? tile_of_rows<T, true, 2>(rows) : tile_of_rows<T, false, 2>(rows);
    case 3: return unit_k ? tile_of_rows<T, true, 3>(rows) : tile_of_rows<T, false, 3>(rows);
    default: return unit_k ? tile_of_rows<T, true, 4>(rows) : tile_of_rows<T, false, 4>(rows);
  }
}

}  // namespace genfast::cpu::GENFAST_ISA_NS
