// Philox-4x32-10 and the Box-Muller transform, written to give the same stream as Triton's
// tl.randn4x (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
//
// genfast's Gaussian stream: element e of a sampled tensor takes output (e % 4) of the philox
// block with counter (offset + e / 4, 0, 0) and key (seed_lo, seed_hi); outputs (0, 1) and
// (2, 3) are Box-Muller pairs. Every backend follows it, so one seed gives one z everywhere.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define GENFAST_HD __host__ __device__ __forceinline__
#else
#define GENFAST_HD inline
#endif

namespace genfast {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr int kPhiloxRounds = 10;
// Scale that maps a non-negative int32 onto [0, 1), as Triton's uint_to_uniform_float.
constexpr float kUintToUniform = 4.6566127342e-10f;
constexpr float kTwoPi = 6.283185307179586f;
// Box-Muller's log(u) needs u > 0: Triton clamps u from below at this value.
constexpr float kMinUniform = 1.0e-7f;

struct PhiloxOut {
  uint32_t x[4];
};

GENFAST_HD PhiloxOut philox4x32(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    uint64_t p0 = static_cast<uint64_t>(kPhiloxRoundB) * c2;
    uint64_t p1 = static_cast<uint64_t>(kPhiloxRoundA) * c0;
    uint32_t n0 = static_cast<uint32_t>(p0 >> 32) ^ c1 ^ k0;
    uint32_t n2 = static_cast<uint32_t>(p1 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p0);
    c3 = static_cast<uint32_t>(p1);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return PhiloxOut{{c0, c1, c2, c3}};
}

GENFAST_HD float uint_to_uniform(uint32_t x) {
  int32_t v = static_cast<int32_t>(x);
  v = v < 0 ? ~v : v;
  return static_cast<float>(v) * kUintToUniform;
}

}  // namespace genfast
