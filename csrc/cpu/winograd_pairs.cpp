// Winograd transforms of a row convolution's weight gradient: see winograd_pairs.h.
#include "winograd_pairs.h"

#include <cstring>

#include "simd_math.h"

namespace genfast::cpu::winograd {
namespace {

typedef float vf __attribute__((vector_size(64)));
typedef uint32_t vfu __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(64)));
typedef uint64_t vdu __attribute__((vector_size(64)));

// The even and the odd elements of the 2N values a, b (one vector each).
GENFAST_SIMD_INLINE void split(vf a, vf b, vf& even, vf& odd) {
  even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
GENFAST_SIMD_INLINE void split(vd a, vd b, vd& even, vd& odd) {
  even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
  odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}

// Lane numbers 0..N-1 of the vector types, unsigned: a lane is inside [0, n) when its number
// plus an offset is below n, one comparison (GCC split `x >= 0` of a 512-bit vector lane by lane).
GENFAST_SIMD_INLINE vfu lane_numbers(vf) {
  return vfu{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
}
GENFAST_SIMD_INLINE vdu lane_numbers(vd) { return vdu{0, 1, 2, 3, 4, 5, 6, 7}; }

// Unaligned whole-vector loads and stores. Plain functions forced inline rather than lambdas:
// a lambda is a function of its own, compiled for the baseline ISA rather than the caller's
// target_clones level, and its 512-bit vectors then went lane by lane.
template <typename V, typename T>
GENFAST_SIMD_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
GENFAST_SIMD_INLINE void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// v where mask (a comparison's all-ones lanes), zero elsewhere: a bitwise and, which compiles to
// one instruction where `mask ? v : 0` came out lane by lane.
template <typename V, typename M>
GENFAST_SIMD_INLINE V keep(V v, M mask) {
  return reinterpret_cast<V>(reinterpret_cast<M>(v) & mask);
}

template <typename T, typename V>
GENFAST_SIMD_INLINE void gradient_pairs_body(const T* g, int64_t g_stride, int64_t rows,
                                             int64_t length, int64_t taps, const T* readable,
                                             T* out, int64_t out_stride) {
  constexpr int64_t N = sizeof(V) / sizeof(T);
  using lane_t = decltype(lane_numbers(V{})[0]);
  const int64_t block = rows * out_stride;  // between the products j
  for (int64_t n = 0; n < rows; ++n) {
    const T* row = g + n * g_stride;
    T* o = out + n * out_stride;
    for (int64_t p0 = 0; p0 < length; p0 += 2 * N) {
      const int64_t left = length - p0;
      V a, b;
      if (row + p0 + 2 * N <= readable) {
        a = load<V>(row + p0);
        b = load<V>(row + p0 + N);
        if (left < 2 * N) {  // the next row's values: zero, as g[length] of an odd length is
          const auto lanes = lane_numbers(V{});
          const lane_t live = static_cast<lane_t>(left);
          a = keep(a, lanes < live);
          b = keep(b, lanes + static_cast<lane_t>(N) < live);
        }
      } else {
        T values[2 * N] = {};
        for (int64_t i = 0; i < left && i < 2 * N; ++i) values[i] = row[p0 + i];
        a = load<V>(values);
        b = load<V>(values + N);
      }
      V even, odd;
      split(a, b, even, odd);
      T* at = o + p0 / 2;
      store(at, even);
      store(at + block, even + odd);
      if (taps == 3) {
        store(at + 2 * block, even - odd);
        store(at + 3 * block, odd);
      } else {
        store(at + 2 * block, odd);
      }
    }
  }
}

// Whole vectors (width is a multiple of the SIMD width), spelled out: the plain loop's stores to
// one buffer at run-time offsets apart stayed scalar.
template <typename T, typename V>
GENFAST_SIMD_INLINE void source_pairs_body(const T* s, int64_t pairs, int64_t width,
                                           int64_t taps, T* out) {
  constexpr int64_t N = sizeof(V) / sizeof(T);
  const int64_t block = pairs * width;  // between the products j
  for (int64_t m = 0; m < pairs; ++m) {
    const T* s0 = s + 2 * m * width;
    T* o = out + m * width;
    for (int64_t c = 0; c < width; c += N) {
      const V x0 = load<V>(s0 + c), x1 = load<V>(s0 + width + c);
      const V x2 = load<V>(s0 + 2 * width + c);
      if (taps == 3) {
        const V x3 = load<V>(s0 + 3 * width + c);
        store(o + c, x0 - x2);
        store(o + block + c, x1 + x2);
        store(o + 2 * block + c, x2 - x1);
        store(o + 3 * block + c, x3 - x1);
      } else {
        store(o + c, x0 - x1);
        store(o + block + c, x1);
        store(o + 2 * block + c, x2 - x1);
      }
    }
  }
}

}  // namespace

GENFAST_TARGET_CLONES
void gradient_pairs(const float* g, int64_t g_stride, int64_t rows, int64_t length,
                    int64_t taps, const float* readable, float* out, int64_t out_stride) {
  gradient_pairs_body<float, vf>(g, g_stride, rows, length, taps, readable, out, out_stride);
}
void gradient_pairs(const double* g, int64_t g_stride, int64_t rows, int64_t length,
                    int64_t taps, const double* readable, double* out, int64_t out_stride) {
  gradient_pairs_body<double, vd>(g, g_stride, rows, length, taps, readable, out, out_stride);
}

GENFAST_TARGET_CLONES
void source_pairs(const float* s, int64_t pairs, int64_t width, int64_t taps, float* out) {
  source_pairs_body<float, vf>(s, pairs, width, taps, out);
}
void source_pairs(const double* s, int64_t pairs, int64_t width, int64_t taps, double* out) {
  source_pairs_body<double, vd>(s, pairs, width, taps, out);
}

}  // namespace genfast::cpu::winograd
