// float32 gathers (the row convolutions of cpu/conv_tile.h) on AMX's bfloat16 tile units, as
// accurate as float32 multiply-adds. Each float is split into three bfloat16 parts,
// x = hi + mid + lo exactly (hi rounded to nearest, so that the rest has either sign; mid and lo
// 8 significant bits each), and a product a b is summed as the six part products of size about
// 2^-16 of it or more: hi hi, hi mid, mid hi, mid mid, hi lo, lo hi. The three dropped sum to
// at most about 2^-22 of |a b|, a few float32 roundings, with either sign, and the tiles
// accumulate in float32. A tile unit does 16 x 16 x 32 multiply-adds per instruction, so six
// of them still beat AVX-512 FMAs on the same core: the Row LSTM backward's gathers run at
// 330-360 float32 GFLOP/s a core this way, against about 205 with FMAs.
//
// Used where the hardware has AMX-BF16 (Intel Sapphire Rapids and later) and Linux grants the
// process its tile state; GENFAST_CPU_AMX=0 in the environment turns it off (read at each
// call). Results do not depend on where a column sits in the tiles, so they are independent of
// the batch chunking and the thread count, but differ in the last bits from the FMA path's.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "conv_tile.h"
#include "scratch.h"

namespace genfast::cpu::amx {

// True when the CPU has AMX-BF16 and AVX512-BF16, the OS lets this process use the tiles, and
// GENFAST_CPU_AMX is not "0".
bool enabled();

// Rows and columns of the tiles' output come in blocks of 32 (2 x 2 tiles of 16 x 16).
constexpr int64_t kBlock = 32;
inline int64_t round_up_block(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// The left operand of `gather`: for each segment s (a kernel tap), a float32 matrix of `rows`
// rows and kdim columns, row n at a + segs[s].a + n * a_stride, split into its three parts and
// packed as 16 x 32 tiles, zero beyond rows and kdim. Built once per call (assign reuses the
// buffer of the previous call), read by every thread.
struct SplitRows {
  int64_t rows = 0, kdim = 0, segments = 0, row_tiles = 0, k_blocks = 0;
  AlignedVector<uint16_t> tiles;  // [part][row tile][segment][k block][16][32]
  void assign(const float* a, int64_t rows, int64_t a_stride, int64_t kdim,
              const std::vector<Segment>& segs);
};

// The right operand: kdim rows of a float32 matrix (row stride b_stride), its first `width`
// columns split into parts and paired along k as the tiles read them ([part][k / 2][column][2]
// bfloat16), zero beyond width and kdim up to `columns`. In the calling thread's scratch memory,
// one buffer per slot, so valid until that thread's next split_columns into the same slot.
struct SplitColumns {
  int64_t kdim = 0, columns = 0, stride = 0;  // stride: of a k pair's row, in pairs (>= columns)
  const uint32_t* pairs = nullptr;
};
constexpr int kColumnSlots = 2;
// The columns of b a gather of `cols` output columns reads through segs: up to the last
// segment's offset and whole tiles from there (split_columns' `columns`).
int64_t columns_read(const std::vector<Segment>& segs, int64_t cols);
SplitColumns split_columns(const float* b, int64_t kdim, int64_t b_stride, int64_t width,
                           int64_t columns, int slot = 0);

// out[n][j] = sum over segments s, sum over k < kdim of a_s[n][k] * b[k][segs[s].b + j], for
// n < round_up_block(a.rows) and j < cols rounded up to 16 (out must hold that many; the rows
// and columns past a.rows and cols are scratch). b must hold segs[s].b + cols rounded up to 16
// columns for every s.
void gather(const SplitRows& a, const SplitColumns& b, const std::vector<Segment>& segs,
            int64_t cols, float* out, int64_t out_stride);

// One product of a sum of gathers: a's rows through b's columns, at segs' offsets.
struct Term {
  const SplitRows& a;
  const SplitColumns& b;
  const std::vector<Segment>& segs;
};
// out = the sum of the terms' gathers (as above), summed in the same tiles before one store:
// the terms' a must have the same rows. Cheaper than a gather each and an addition when the
// k of each is short (each block of out costs about as much to start and store as a few dozen
// tile products).
void gather(std::initializer_list<Term> terms, int64_t cols, float* out, int64_t out_stride);

}  // namespace genfast::cpu::amx
