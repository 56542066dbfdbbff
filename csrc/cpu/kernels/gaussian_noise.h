// genfast's Gaussian stream (csrc/philox.h) at this ISA level's width: one philox block per
// lane, Box-Muller on the vector maths layer, the normals stored in stream order, so every
// level draws the same stream (to the last bits of its maths).
#pragma once
#include <algorithm>
#include <utility>

#include "../../philox.h"
#include "../gaussian_noise.h"
#include "vector_math.h"

namespace genfast::cpu::GENFAST_ISA_NS::noise {

using simd::kLanes;
using simd::vfloat;
using simd::vint;
using simd::vuint;

typedef uint64_t vulong __attribute__((vector_size(kLanes * sizeof(uint64_t))));
typedef uint64_t vulong_half __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// 32 x 32 -> 64-bit products of every lane with a constant, split into high and low words.
// Even and odd lanes are multiplied separately as 64-bit lanes whose top halves are zero.
GENFAST_SIMD_INLINE void mul_hi_lo(vuint x, uint32_t factor, vuint* hi, vuint* lo) {
  const uint64_t low_word = 0xFFFFFFFFull, high_word = ~low_word;
  vulong_half wide = reinterpret_cast<vulong_half>(x);
  vulong_half even = (wide & low_word) * uint64_t{factor};
  vulong_half odd = (wide >> 32) * uint64_t{factor};
  *hi = reinterpret_cast<vuint>((even >> 32) | (odd & high_word));
  *lo = reinterpret_cast<vuint>((even & low_word) | (odd << 32));
}

// Philox blocks for groups [group, group + kChains * kLanes): one block per lane. Each round
// depends on the one before, so kChains independent vectors go through the rounds together
// to hide the multiply latency.
constexpr int kChains = 4;
constexpr int kBlockGroups = kChains * kLanes;
constexpr int kBlockNormals = 4 * kBlockGroups;

GENFAST_SIMD_INLINE void philox_lanes(NoiseStream stream, uint64_t group, vuint out[kChains][4]) {
  vulong lane;
  for (int l = 0; l < kLanes; ++l) lane[l] = l;
  vuint c0[kChains], c1[kChains], c2[kChains], c3[kChains];
  for (int b = 0; b < kChains; ++b) {
    vulong counter = lane + (stream.offset + group + static_cast<uint64_t>(b) * kLanes);
    c0[b] = __builtin_convertvector(counter, vuint);
    c1[b] = __builtin_convertvector(counter >> 32, vuint);
    c2[b] = c3[b] = vuint{};
  }
  uint32_t k0 = static_cast<uint32_t>(stream.seed), k1 = static_cast<uint32_t>(stream.seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int b = 0; b < kChains; ++b) {
      vuint hi0, lo0, hi1, lo1;
      mul_hi_lo(c2[b], kPhiloxRoundB, &hi0, &lo0);
      mul_hi_lo(c0[b], kPhiloxRoundA, &hi1, &lo1);
      c0[b] = hi0 ^ c1[b] ^ k0;
      c2[b] = hi1 ^ c3[b] ^ k1;
      c1[b] = lo0;
      c3[b] = lo1;
    }
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  for (int b = 0; b < kChains; ++b) {
    out[b][0] = c0[b];
    out[b][1] = c1[b];
    out[b][2] = c2[b];
    out[b][3] = c3[b];
  }
}

GENFAST_SIMD_INLINE vfloat to_uniform(vuint x) {
  vint v = reinterpret_cast<vint>(x);
  v ^= v >> 31;  // ~v for negative v, as Triton's uint_to_uniform_float
  return __builtin_convertvector(v, vfloat) * kUintToUniform;
}

GENFAST_SIMD_INLINE void box_muller(vuint a, vuint b, vfloat* n0, vfloat* n1) {
  vfloat u1 = to_uniform(a), u2 = to_uniform(b);
  const vfloat floor = simd::splat(kMinUniform);
  u1 = u1 > floor ? u1 : floor;
  vfloat radius = simd::sqrt(-2.0f * simd::log(u1));
  vfloat c, s;
  simd::sincos_turns(u2, &c, &s);
  *n0 = radius * c;
  *n1 = radius * s;
}

// Shuffles of two vectors whose lane i takes lane Pick::at(i) of the pair.
template <typename Pick, int... I>
GENFAST_SIMD_INLINE vfloat shuffle(vfloat a, vfloat b, std::integer_sequence<int, I...>) {
  return __builtin_shufflevector(a, b, Pick::at(I)...);
}
template <typename Pick>
GENFAST_SIMD_INLINE vfloat shuffle(vfloat a, vfloat b) {
  return shuffle<Pick>(a, b, std::make_integer_sequence<int, kLanes>{});
}
// a0 b0 a1 b1 ... from the first (kHalf = 0) or second half of a and b.
template <int kHalf>
struct Pairs {
  static constexpr int at(int i) { return (i % 2 ? kLanes : 0) + kHalf * kLanes / 2 + i / 2; }
};
// From two outputs of Pairs, p and q: p0 p1 q0 q1 p2 p3 q2 q3 ... from the first or second half.
template <int kHalf>
struct Quads {
  static constexpr int at(int i) {
    return (i % 4 < 2 ? 0 : kLanes) + 2 * (i / 4 + kHalf * kLanes / 4) + i % 2;
  }
};

// Stores normals n[0..3] of kLanes groups in stream order, out[4 * lane + j] = n[j][lane]. The
// 4 x kLanes transpose is done with shuffles: a scalar scatter spills every vector to the stack.
GENFAST_SIMD_INLINE void store_interleaved(const vfloat n[4], float* out) {
  const vfloat n01_lo = shuffle<Pairs<0>>(n[0], n[1]), n01_hi = shuffle<Pairs<1>>(n[0], n[1]);
  const vfloat n23_lo = shuffle<Pairs<0>>(n[2], n[3]), n23_hi = shuffle<Pairs<1>>(n[2], n[3]);
  simd::store(out, shuffle<Quads<0>>(n01_lo, n23_lo));
  simd::store(out + kLanes, shuffle<Quads<1>>(n01_lo, n23_lo));
  simd::store(out + 2 * kLanes, shuffle<Quads<0>>(n01_hi, n23_hi));
  simd::store(out + 3 * kLanes, shuffle<Quads<1>>(n01_hi, n23_hi));
}

// The kBlockNormals normals of groups [group, group + kBlockGroups), in stream order.
GENFAST_SIMD_INLINE void normals_block(NoiseStream stream, uint64_t group, float* out) {
  vuint bits[kChains][4];
  philox_lanes(stream, group, bits);
  for (int b = 0; b < kChains; ++b) {
    vfloat n[4];
    box_muller(bits[b][0], bits[b][1], &n[0], &n[1]);
    box_muller(bits[b][2], bits[b][3], &n[2], &n[3]);
    store_interleaved(n, out + b * 4 * kLanes);
  }
}

void gaussian_noise(NoiseStream stream, int64_t first, int64_t count, float* out) {
  constexpr int kBlock = kBlockNormals;
  uint64_t group = static_cast<uint64_t>(first) / 4;
  int skip = static_cast<int>(first % 4);
  float block[kBlock];
  while (count > 0) {
    if (skip == 0 && count >= kBlock) {
      normals_block(stream, group, out);
    } else {
      normals_block(stream, group, block);
      std::memcpy(out, block + skip, sizeof(float) * std::min<int64_t>(kBlock - skip, count));
    }
    int64_t written = std::min<int64_t>(kBlock - skip, count);
    out += written;
    count -= written;
    group += kBlockGroups;
    skip = 0;
  }
}

}  // namespace genfast::cpu::GENFAST_ISA_NS::noise
