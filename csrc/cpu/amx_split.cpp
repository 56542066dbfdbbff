// See amx_split.h. The tile loops follow the AMX programming model: eight tile registers of
// 16 rows x 64 bytes, C (16 x 16 float32) += A (16 x 32 bfloat16) B (16 pairs x 16 x 2
// bfloat16), B's k pairs interleaved per column.
#include "amx_split.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#include <cpuid.h>
// GCC 12's own AVX-512 conversions warn of an uninitialised temporary (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define GENFAST_HAS_AMX_CODE 1
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace genfast::cpu::amx {
namespace {

constexpr int64_t kTile = 16;             // rows of a tile; columns of a float32 C tile
constexpr int64_t kTileK = 32;            // bfloat16 values along k in an A tile row
constexpr int64_t kTileElems = kTile * kTileK;
constexpr int kParts = 3;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Round to nearest even, as the hardware's VCVTNEPS2BF16; NaN stays a (quiet) NaN.
uint16_t to_bf16(float x) {
  const uint32_t u = bits_of(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

// x = parts[0] + parts[1] + parts[2] exactly for finite x whose hi part is finite; an infinite or
// NaN hi part stands alone (x - hi would be NaN). hi is x rounded to nearest, so the rest
// (16 significant bits at most) has either sign; mid is the rest cut to 8 bits, which leaves
// lo 8 bits at most: a bfloat16 as it is. (Rounding mid as well costs the vector split half
// again for a bound 2x smaller.)
void split(float x, uint16_t parts[kParts]) {
  parts[0] = to_bf16(x);
  const float hi = from_bf16(parts[0]);
  const float rest = (bits_of(hi) & 0x7f800000u) == 0x7f800000u ? 0.0f : x - hi;
  parts[1] = static_cast<uint16_t>(bits_of(rest) >> 16);
  parts[2] = static_cast<uint16_t>(bits_of(rest - from_bf16(parts[1])) >> 16);
}

#ifdef GENFAST_HAS_AMX_CODE

bool hardware_and_os() {
  unsigned a, b, c, d;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const bool amx = (d >> 22 & 1u) && (d >> 24 & 1u);  // AMX-BF16, AMX-TILE
  __cpuid_count(7, 1, a, b, c, d);
  const bool avx512_bf16 = a >> 5 & 1u;
  // __builtin_cpu_supports also checks that the OS saves the AVX-512 registers.
  if (!amx || !avx512_bf16 || !__builtin_cpu_supports("avx512bw")) return false;
#if defined(__linux__)
  // Linux leaves the 8 KB tile state off until the process asks (ARCH_REQ_XCOMP_PERM for
  // XFEATURE_XTILEDATA); it refuses where the kernel or a sandbox does not support it.
  constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
  return false;
#endif
}

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

// The three parts of x, each a float32 whose low 16 bits are zero (as split()).
GENFAST_AVX512_BF16 inline void split3(__m512 x, __m512i parts[kParts]) {
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  const __m512i high_half = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  parts[0] = round_bf16(x);
  const __mmask16 finite =
      _mm512_cmpneq_epi32_mask(_mm512_and_si512(parts[0], exponent), exponent);
  const __m512 rest = _mm512_maskz_sub_ps(finite, x, _mm512_castsi512_ps(parts[0]));
  parts[1] = _mm512_and_si512(_mm512_castps_si512(rest), high_half);
  parts[2] = _mm512_castps_si512(_mm512_sub_ps(rest, _mm512_castsi512_ps(parts[1])));
}

// out[p][kp][j] = part p of b[2 kp][j] in the low half, of b[2 kp + 1][j] in the high half,
// for j < columns (a multiple of 16).
GENFAST_AVX512_BF16 void split_pairs(const float* b, int64_t kdim, int64_t b_stride,
                                     int64_t width, int64_t pairs, int64_t columns,
                                     int64_t stride, uint32_t* out) {
  const int64_t part = pairs * stride;
  for (int64_t kp = 0; kp < pairs; ++kp) {
    const float* even = 2 * kp < kdim ? b + 2 * kp * b_stride : nullptr;
    const float* odd = 2 * kp + 1 < kdim ? b + (2 * kp + 1) * b_stride : nullptr;
    uint32_t* o = out + kp * stride;
    for (int64_t j = 0; j < columns; j += kTile) {
      const __mmask16 live = j + kTile <= width ? __mmask16(0xffff)
                             : j < width        ? __mmask16((1u << (width - j)) - 1)
                                                : __mmask16(0);
      const __m512 x0 = even ? _mm512_maskz_loadu_ps(live, even + j) : _mm512_setzero_ps();
      const __m512 x1 = odd ? _mm512_maskz_loadu_ps(live, odd + j) : _mm512_setzero_ps();
      __m512i p0[kParts], p1[kParts];
      split3(x0, p0);
      split3(x1, p1);
      for (int p = 0; p < kParts; ++p)
        _mm512_storeu_si512(o + p * part + j, _mm512_or_si512(_mm512_srli_epi32(p0[p], 16), p1[p]));
    }
  }
}

// Eight tiles of 16 rows x 64 bytes. A constant in memory: GCC's _tile_loadconfig tells the
// compiler it reads 8 bytes of the configuration, so stores to a local one could be dropped.
struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};
constexpr TileConfig kTileConfig{1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64},
                                 {16, 16, 16, 16, 16, 16, 16, 16}};

// One block of C: rows tiles mt and mt + 1, column tiles nt and (kColumns 2) nt + 1. Tile
// registers 0-3 hold C (0, 1 the first row tile's), 4-5 A's two row tiles, 6-7 B's column
// tiles. Per k block the six part products of four C tiles take 16 tile loads for 24 products:
// (hi, hi) (hi, mid) (hi, lo) with A's hi loaded once, then (mid, mid) (mid, hi) and (lo, hi)
// reusing what is loaded. Four C tiles keep enough products in flight to cover a product's
// latency; a single column tile (the last of an odd count) takes two.
template <int kColumns>
GENFAST_AMX inline void gather_block(const SplitRows& a, const SplitColumns& b,
                                     const std::vector<Segment>& segs, int64_t mt, int64_t nt,
                                     float* out, int64_t out_stride) {
  const int64_t nseg = a.segments, kb_count = a.k_blocks;
  const int64_t a_part = a.row_tiles * nseg * kb_count * kTileElems;
  const int64_t b_part = b.stride * (round_up(b.kdim, kTileK) / 2);
  const int64_t b_bytes = b.stride * 4;
  _tile_zero(0);
  _tile_zero(2);
  if constexpr (kColumns == 2) {
    _tile_zero(1);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < nseg; ++s)
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const uint16_t* a0 = a.tiles.data() + ((mt * nseg + s) * kb_count + kb) * kTileElems;
      const uint16_t* a1 = a0 + nseg * kb_count * kTileElems;  // row tile mt + 1
      const uint32_t* b0 = b.pairs + kb * kTile * b.stride + segs[s].b + nt * kTile;
      const auto load_a = [&](int part) GENFAST_AMX_LAMBDA {
        _tile_loadd(4, a0 + part * a_part, 64);
        _tile_loadd(5, a1 + part * a_part, 64);
      };
      const auto load_b = [&](int part) GENFAST_AMX_LAMBDA {
        _tile_loadd(6, b0 + part * b_part, b_bytes);
        if constexpr (kColumns == 2) _tile_loadd(7, b0 + part * b_part + kTile, b_bytes);
      };
      const auto products = [&]() GENFAST_AMX_LAMBDA {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        if constexpr (kColumns == 2) {
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(3, 5, 7);
        }
      };
      load_a(0), load_b(0), products();  // hi hi
      load_b(1), products();             // hi mid
      load_b(2), products();             // hi lo
      load_a(1), load_b(1), products();  // mid mid
      load_b(0), products();             // mid hi
      load_a(2), products();             // lo hi
    }
  float* c = out + mt * kTile * out_stride + nt * kTile;
  const int64_t out_bytes = out_stride * 4;
  _tile_stored(0, c, out_bytes);
  _tile_stored(2, c + kTile * out_stride, out_bytes);
  if constexpr (kColumns == 2) {
    _tile_stored(1, c + kTile, out_bytes);
    _tile_stored(3, c + kTile * out_stride + kTile, out_bytes);
  }
}

GENFAST_AMX void gather_tiles(const SplitRows& a, const SplitColumns& b,
                              const std::vector<Segment>& segs, int64_t cols, float* out,
                              int64_t out_stride) {
  _tile_loadconfig(&kTileConfig);
  const int64_t col_tiles = round_up(cols, kTile) / kTile;
  for (int64_t mt = 0; mt < a.row_tiles; mt += 2) {
    int64_t nt = 0;
    for (; nt + 2 <= col_tiles; nt += 2) gather_block<2>(a, b, segs, mt, nt, out, out_stride);
    if (nt < col_tiles) gather_block<1>(a, b, segs, mt, nt, out, out_stride);
  }
  _tile_release();  // so that a context switch need not save the tiles
}

#endif  // GENFAST_HAS_AMX_CODE

struct SplitColumnsScratch;

}  // namespace

bool enabled() {
#ifdef GENFAST_HAS_AMX_CODE
  static const bool available = hardware_and_os();
  if (!available) return false;
  const char* setting = std::getenv("GENFAST_CPU_AMX");
  return setting == nullptr || std::strcmp(setting, "0") != 0;
#else
  return false;
#endif
}

SplitRows::SplitRows(const float* a, int64_t rows_, int64_t a_stride, int64_t kdim_,
                     const std::vector<Segment>& segs)
    : rows(rows_),
      kdim(kdim_),
      segments(static_cast<int64_t>(segs.size())),
      row_tiles(round_up_block(rows_) / kTile),
      k_blocks(round_up(kdim_, kTileK) / kTileK),
      tiles(kParts * row_tiles * segments * k_blocks * kTileElems, uint16_t(0)) {
  const int64_t part = row_tiles * segments * k_blocks * kTileElems;
  for (int64_t s = 0; s < segments; ++s)
    for (int64_t n = 0; n < rows; ++n)
      for (int64_t k = 0; k < kdim; ++k) {
        uint16_t parts[kParts];
        split(a[segs[s].a + n * a_stride + k], parts);
        const int64_t at = (((n / kTile) * segments + s) * k_blocks + k / kTileK) * kTileElems +
                           (n % kTile) * kTileK + k % kTileK;
        for (int p = 0; p < kParts; ++p) tiles[p * part + at] = parts[p];
      }
}

SplitColumns split_columns(const float* b, int64_t kdim, int64_t b_stride, int64_t width,
                           int64_t columns) {
  SplitColumns out;
  out.kdim = kdim;
  out.columns = columns;
  // Rows of a whole number of cache lines and a half, so that a tile's 16 rows fall in
  // different cache sets (the Row LSTM's 240 columns: 15.5 lines 5% faster than 15 or 17,
  // 10% faster than 16).
  out.stride = round_up(columns, kTile) + kTile / 2;
  const int64_t pairs = round_up(kdim, kTileK) / 2;
  uint32_t* data = thread_scratch<SplitColumnsScratch, 1, uint32_t>(0, kParts * pairs * out.stride);
#ifdef GENFAST_HAS_AMX_CODE
  split_pairs(b, kdim, b_stride, width, pairs, round_up(columns, kTile), out.stride, data);
#else
  (void)b, (void)b_stride, (void)width, (void)data;
#endif
  out.pairs = data;
  return out;
}

void gather(const SplitRows& a, const SplitColumns& b, const std::vector<Segment>& segs,
            int64_t cols, float* out, int64_t out_stride) {
#ifdef GENFAST_HAS_AMX_CODE
  gather_tiles(a, b, segs, cols, out, out_stride);
#else
  (void)a, (void)b, (void)segs, (void)cols, (void)out, (void)out_stride;
#endif
}

}  // namespace genfast::cpu::amx
