// The AMX tile code of cpu/amx_split.cpp, apart from its interface: the split of
// float32 vectors into three bfloat16 parts, the tile configuration, and the six part products
// of a block of C tiles. Internal: include it from .cpp files only.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define GENFAST_HAS_AMX_CODE 1
// GCC 12's own AVX-512 conversions warn of an uninitialised temporary (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace genfast::cpu::amx::tiles {

constexpr int64_t kTile = 16;   // rows of a tile; columns of a float32 C tile
constexpr int64_t kTileK = 32;  // bfloat16 values along k in an A tile row
constexpr int64_t kTileElems = kTile * kTileK;
constexpr int kParts = 3;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

#ifdef GENFAST_HAS_AMX_CODE

#define GENFAST_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define GENFAST_AMX __attribute__((target("amx-tile,amx-bf16")))
// A lambda is compiled for the baseline ISA unless it is given the target and inlined itself.
#define GENFAST_AMX_LAMBDA __attribute__((target("amx-tile,amx-bf16"), always_inline))

// x rounded to bfloat16 (the low 16 bits zero).
GENFAST_AVX512_BF16 inline __m512i round_bf16(__m512 x) {
  const __m256bh h = _mm512_cvtneps_pbh(x);
  __m256i rounded;
  std::memcpy(&rounded, &h, sizeof rounded);  // a register move
  return _mm512_slli_epi32(_mm512_cvtepu16_epi32(rounded), 16);
}

// The three parts of x, each a float32 whose low 16 bits are zero: hi rounded to nearest, mid
// the rest cut to 8 bits, lo what remains (8 bits at most). An infinite or NaN hi stands alone.
GENFAST_AVX512_BF16 inline void split3(__m512 x, __m512i parts[kParts]) {
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  parts[0] = round_bf16(x);
  const __mmask16 finite =
      _mm512_cmpneq_epi32_mask(_mm512_and_si512(parts[0], exponent), exponent);
  const __m512 rest = _mm512_maskz_sub_ps(finite, x, _mm512_castsi512_ps(parts[0]));
  parts[1] = _mm512_and_si512(_mm512_castps_si512(rest), high_half);
  // lo fits a bfloat16 unless the rest is subnormal (the conversion flushes a subnormal x to a
  // zero hi, leaving all of x); cut, so that no low bits reach a neighbour's half. The tiles
  // count subnormal bfloat16 values as zero anyway.
  parts[2] = _mm512_and_si512(
      _mm512_castps_si512(_mm512_sub_ps(rest, _mm512_castsi512_ps(parts[1]))), high_half);
}

// The bfloat16 halves of 32 floats (lo, hi: their high 16 bits) as 32 values in order.
GENFAST_AVX512_BF16 inline __m512i high_halves(__m512i lo, __m512i hi) {
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35,
                                       33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3,
                                       1);
  return _mm512_permutex2var_epi16(lo, odd, hi);
}

// The lanes of the 16 values from `from` that lie below `length`, as a load mask.
inline __mmask16 lanes_below(int64_t from, int64_t length) {
  return from + kTile <= length ? __mmask16(0xffff)
         : from < length        ? __mmask16((1u << (length - from)) - 1)
                                : __mmask16(0);
}

// 32 consecutive floats, the first `length` of src and zeros after, split: parts[p] holds part p
// of the 32 as bfloat16 values in order (one A tile row).
GENFAST_AVX512_BF16 inline void split_run32(const float* src, int64_t length,
                                            __m512i parts[kParts]) {
  __m512i first[kParts], second[kParts];
  split3(_mm512_maskz_loadu_ps(lanes_below(0, length), src), first);
  split3(_mm512_maskz_loadu_ps(lanes_below(kTile, length), src + kTile), second);
  for (int p = 0; p < kParts; ++p) parts[p] = high_halves(first[p], second[p]);
}

// Eight tiles of 16 rows x 64 bytes. A constant in memory: GCC's _tile_loadconfig tells the
// compiler it reads 8 bytes of the configuration, so stores to a local one could be dropped.
struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};
inline constexpr TileConfig kTileConfig{1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64},
                                        {16, 16, 16, 16, 16, 16, 16, 16}};

// Where one k block of a C block reads: A's two row tiles (part 0; part p at + p * a_part
// elements, rows a_bytes apart) and B's first column tile (part p at + p * b_part words, the
// second column tile 16 words on, rows b_bytes apart).
struct KBlock {
  const uint16_t *a0, *a1;
  const uint32_t* b;
};

// Adds the six part products of `count` k blocks (block(i) says where the i-th reads) to the
// C tiles in registers 0 and 2 (row tiles 0 and 1 of column tile 0) and, for kColumns 2, 1 and 3
// (column tile 1). Registers 4-5 take A's two row tiles, 6-7 B's column tiles. Per k block the
// four C tiles take 14 tile loads for 24 products, each load replacing A or B alone, so that it
// can overlap the products still reading the other: (hi, hi) (hi, lo) (hi, mid) (mid, mid)
// (mid, hi) (lo, hi). (16 loads, replacing both at once before (mid, mid), ran 6% slower on the
// Row LSTM's gathers: a tile register is reloaded only once its last reader is done.)
template <int kColumns, typename BlockAt>
GENFAST_AMX inline void add_products(int64_t count, BlockAt&& block, int64_t a_part,
                                     int64_t a_bytes, int64_t b_part, int64_t b_bytes) {
  for (int64_t i = 0; i < count; ++i) {
    const KBlock k = block(i);
    const auto load_a = [&](int part) GENFAST_AMX_LAMBDA {
      _tile_loadd(4, k.a0 + part * a_part, a_bytes);
      _tile_loadd(5, k.a1 + part * a_part, a_bytes);
    };
    const auto load_b = [&](int part) GENFAST_AMX_LAMBDA {
      _tile_loadd(6, k.b + part * b_part, b_bytes);
      if constexpr (kColumns == 2) _tile_loadd(7, k.b + part * b_part + kTile, b_bytes);
    };
    // The products of the loaded tiles, those reading the operand loaded next first, so that
    // its load can start while the others run (kFreeA: A's, else B's).
    const auto products = [&](auto free_a) GENFAST_AMX_LAMBDA {
      if constexpr (kColumns == 1) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
      } else if constexpr (decltype(free_a)::value) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      } else {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
    };
    constexpr std::true_type kFreeA{};
    constexpr std::false_type kFreeB{};
    load_a(0), load_b(0), products(kFreeB);  // hi hi
    load_b(2), products(kFreeB);             // hi lo
    load_b(1), products(kFreeA);             // hi mid
    load_a(1), products(kFreeB);             // mid mid
    load_b(0), products(kFreeA);             // mid hi
    load_a(2), products(kFreeA);             // lo hi
  }
}

// C tiles 0-3 (kColumns 1: 0 and 2) to c: row tile 0 at c, row tile 1 16 rows on.
template <int kColumns>
GENFAST_AMX inline void store_block(float* c, int64_t c_stride) {
  const int64_t bytes = c_stride * 4;
  _tile_stored(0, c, bytes);
  _tile_stored(2, c + kTile * c_stride, bytes);
  if constexpr (kColumns == 2) {
    _tile_stored(1, c + kTile, bytes);
    _tile_stored(3, c + kTile * c_stride + kTile, bytes);
  }
}
template <int kColumns>
GENFAST_AMX inline void zero_block() {
  _tile_zero(0);
  _tile_zero(2);
  if constexpr (kColumns == 2) {
    _tile_zero(1);
    _tile_zero(3);
  }
}

#endif  // GENFAST_HAS_AMX_CODE

}  // namespace genfast::cpu::amx::tiles
