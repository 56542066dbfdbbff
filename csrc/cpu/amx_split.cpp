// See amx_split.h. The tile loops follow the AMX programming model: eight tile registers of
// 16 rows x 64 bytes, C (16 x 16 float32) += A (16 x 32 bfloat16) B (16 pairs x 16 x 2
// bfloat16), B's k pairs interleaved per column.
#include "amx_split.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "amx_tiles.h"

#ifdef GENFAST_HAS_AMX_CODE
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace genfast::cpu::amx {
namespace {

using namespace tiles;

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
      const __mmask16 live = lanes_below(j, width);
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

// SplitRows::assign's packing: each tile row is 32 values of a row along k, zero past the
// matrix (rows past `rows` too).
GENFAST_AVX512_BF16 void split_tile_rows(const float* a, int64_t a_stride,
                                         const std::vector<Segment>& segs, SplitRows& out) {
  const int64_t part = out.row_tiles * out.segments * out.k_blocks * kTileElems;
  for (int64_t n = 0; n < out.row_tiles * kTile; ++n)
    for (int64_t s = 0; s < out.segments; ++s)
      for (int64_t kb = 0; kb < out.k_blocks; ++kb) {
        __m512i parts[kParts] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                                 _mm512_setzero_si512()};
        if (n < out.rows)
          split_run32(a + segs[s].a + n * a_stride + kb * kTileK, out.kdim - kb * kTileK, parts);
        uint16_t* row = out.tiles.data() +
                        (((n / kTile) * out.segments + s) * out.k_blocks + kb) * kTileElems +
                        (n % kTile) * kTileK;
        for (int p = 0; p < kParts; ++p) _mm512_storeu_si512(row + p * part, parts[p]);
      }
}

// One block of out: row tiles mt, mt + 1 and kColumns column tiles from nt, the terms' products
// summed in the same tiles.
template <int kColumns>
GENFAST_AMX inline void gather_block(std::initializer_list<Term> terms, int64_t mt, int64_t nt,
                                     float* out, int64_t out_stride) {
  zero_block<kColumns>();
  for (const Term& t : terms) {
    const SplitRows& a = t.a;
    const SplitColumns& b = t.b;
    const int64_t nseg = a.segments, kb_count = a.k_blocks;
    const uint16_t* a_row_tile = a.tiles.data() + mt * nseg * kb_count * kTileElems;
    add_products<kColumns>(
        nseg * kb_count,
        [&](int64_t i) GENFAST_AMX_LAMBDA {
          const int64_t s = i / kb_count, kb = i % kb_count;
          const uint16_t* a0 = a_row_tile + i * kTileElems;
          return KBlock{a0, a0 + nseg * kb_count * kTileElems,  // row tile mt + 1
                        b.pairs + kb * kTile * b.stride + t.segs[s].b + nt * kTile};
        },
        a.row_tiles * nseg * kb_count * kTileElems, 64,
        b.stride * (round_up(b.kdim, kTileK) / 2), b.stride * 4);
  }
  store_block<kColumns>(out + mt * kTile * out_stride + nt * kTile, out_stride);
}

GENFAST_AMX void gather_tiles(std::initializer_list<Term> terms, int64_t cols, float* out,
                              int64_t out_stride) {
  _tile_loadconfig(&kTileConfig);
  const int64_t row_tiles = terms.begin()->a.row_tiles;
  const int64_t col_tiles = round_up(cols, kTile) / kTile;
  for (int64_t mt = 0; mt < row_tiles; mt += 2) {
    int64_t nt = 0;
    for (; nt + 2 <= col_tiles; nt += 2) gather_block<2>(terms, mt, nt, out, out_stride);
    if (nt < col_tiles) gather_block<1>(terms, mt, nt, out, out_stride);
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

void SplitRows::assign(const float* a, int64_t rows_, int64_t a_stride, int64_t kdim_,
                       const std::vector<Segment>& segs) {
  rows = rows_, kdim = kdim_, segments = static_cast<int64_t>(segs.size());
  row_tiles = round_up_block(rows) / kTile, k_blocks = round_up(kdim, kTileK) / kTileK;
  tiles.resize(kParts * row_tiles * segments * k_blocks * kTileElems);
#ifdef GENFAST_HAS_AMX_CODE
  split_tile_rows(a, a_stride, segs, *this);
#else
  (void)a, (void)a_stride;
#endif
}

int64_t columns_read(const std::vector<Segment>& segs, int64_t cols) {
  int64_t last = 0;
  for (const Segment& seg : segs) last = std::max(last, seg.b);
  return last + round_up(cols, kTile);
}

SplitColumns split_columns(const float* b, int64_t kdim, int64_t b_stride, int64_t width,
                           int64_t columns, int slot) {
  TORCH_CHECK(0 <= slot && slot < kColumnSlots, "genfast: split_columns slot ", slot);
  SplitColumns out;
  out.kdim = kdim;
  out.columns = columns;
  // Rows of a whole number of cache lines and a half, so that a tile's 16 rows fall in
  // different cache sets (the Row LSTM's 240 columns: 15.5 lines 5% faster than 15 or 17,
  // 10% faster than 16).
  out.stride = round_up(columns, kTile) + kTile / 2;
  const int64_t pairs = round_up(kdim, kTileK) / 2;
  uint32_t* data = thread_scratch<SplitColumnsScratch, kColumnSlots, uint32_t>(
      slot, kParts * pairs * out.stride);
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
  gather({Term{a, b, segs}}, cols, out, out_stride);
}

void gather(std::initializer_list<Term> terms, int64_t cols, float* out, int64_t out_stride) {
  for (const Term& t : terms)
    TORCH_CHECK(t.a.row_tiles == terms.begin()->a.row_tiles,
                "genfast: amx::gather's terms need the same rows");
#ifdef GENFAST_HAS_AMX_CODE
  gather_tiles(terms, cols, out, out_stride);
#else
  (void)cols, (void)out, (void)out_stride;
#endif
}

}  // namespace genfast::cpu::amx
