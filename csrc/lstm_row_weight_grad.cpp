// dL/dweight of the row recurrence's convolutions: see lstm_row_weight_grad.h.
#include "lstm_row_weight_grad.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/reduction_parts.h"
#include "cpu/strided_copy.h"

namespace genfast::lstm_row {
namespace {

// Hidden-channel vectors per dL/dweight tile (by up to 6 gate channels): 4 measured a little
// faster than 2 (by 12), the gate channels being rows R * L apart.
constexpr int64_t kGradWeightVectors = 4;

}  // namespace

// dL/dweight[n][d][t] = sum over pixels (b, r, l) of dpre[b][n][r][l] * src[b][d][r'][l + t - pad]
// (r' = r - 1 for the state, r for x): the source is copied pixel-major with its zero border,
// hp[b][r][q][d] (q < Lp), and each task owns one (tap, gate-channel tile, channel block) and
// walks the pixels in chunks of rows that stay in cache across the thread's tasks.
template <typename acc_t>
void grad_weight(const Shape& s, const acc_t* dpre, const GateLayout& gl,
                 const WeightSource<acc_t>& src, acc_t* grad_w) {
  constexpr int64_t lanes = cpu::Vec<acc_t>::kLanes;
  const int64_t D = src.channels, G = s.gates, R = s.rows, L = s.length, k = src.taps;
  const int64_t pad_left = src.pad_left;
  // pad_left may be k (x of a mask-A row kernel: every tap left of the pixel).
  const int64_t lp = L + std::max(k - 1, pad_left), dpad = round_up(D, lanes);
  // The segments are the (b, r) image rows, b-major; the state's of row 0 are left out when h0
  // is zero.
  const bool h0_zero = src.first && std::all_of(src.first, src.first + s.batch * D * L,
                                                [](acc_t v) { return v == acc_t(0); });
  // A skewed map's are row-major instead, so that runs of them share the row's computed
  // positions, the only ones with gate gradients: each run sums over those alone.
  std::vector<int64_t> image_rows;
  for (int64_t i = 0; i < s.batch * R; ++i) {
    const int64_t row = s.skew_width ? i % s.batch * R + i / s.batch : i;
    if (row % R > 0 || !h0_zero) image_rows.push_back(row);
  }
  const int64_t segments = static_cast<int64_t>(image_rows.size());
  if (segments == 0) {
    std::fill_n(grad_w, G * D * k, acc_t(0));
    return;
  }
  acc_t* hp = scratch<acc_t>(kSlot0, s.batch * R * lp * dpad, false);
  const int64_t copy_grain = std::max<int64_t>(8, kParallelCopies / (lp * dpad));
  at::parallel_for(0, s.batch * R, copy_grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / R, r = i % R;
      acc_t* seg = hp + i * lp * dpad;
      std::fill_n(seg, pad_left * dpad, acc_t(0));
      std::fill(seg + (pad_left + L) * dpad, seg + lp * dpad, acc_t(0));
      for (int64_t l = 0; l < L && dpad > D; ++l)
        std::fill_n(seg + (pad_left + l) * dpad + D, dpad - D, acc_t(0));
      const bool from_h0 = src.first && r == 0;
      const acc_t* row = from_h0 ? src.first + b * D * L
                                 : src.rows + ((b * D) * R + r - (src.first ? 1 : 0)) * L;
      cpu::copy_2d(row, from_h0 ? L : R * L, int64_t{1}, hp + (i * lp + pad_left) * dpad,
                   int64_t{1}, dpad, D, L);
      if (src.live_only) {
        acc_t* at = hp + (i * lp + pad_left) * dpad;
        std::fill(at, at + s.first(r) * dpad, acc_t(0));
        std::fill(at + (s.live_last(r) + 1) * dpad, at + L * dpad, acc_t(0));
      }
    }
  });
  struct Task {
    int64_t tap, n0, rows, d0;
    int vectors;
  };
  std::vector<Task> tasks;
  const int64_t block = kGradWeightVectors * lanes;
  for (int64_t t = 0; t < k; ++t)
    for (int64_t d0 = 0; d0 < dpad; d0 += block) {
      const int vectors = static_cast<int>(std::min<int64_t>(kGradWeightVectors, (dpad - d0) / lanes));
      const EvenSplit tiles = tiles_of(G, cpu::max_rows(vectors));
      for (int64_t i = 0; i < tiles.count; ++i)
        tasks.push_back({t, tiles.start(i), tiles.start(i + 1) - tiles.start(i), d0, vectors});
    }
  // The image rows in fixed parts (cpu/reduction_parts.h), each thread reading what it wrote.
  const int64_t part_size = k * G * dpad;
  acc_t* packed = scratch<acc_t>(kSlot1, cpu::kReductionParts * part_size, false);  // all written
  const int64_t seg_bytes = static_cast<int64_t>(sizeof(acc_t)) * (G * L + lp * dpad);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{192} << 10) / seg_bytes);
  const int64_t per_part = static_cast<int64_t>(tasks.size());
  const int64_t ntasks = cpu::kReductionParts * per_part;
  const int64_t task_grain =
      std::max<int64_t>(1, kParallelMacs / (segments * L * G * dpad * k / ntasks + 1));
  at::parallel_for(0, ntasks, task_grain, [&](int64_t t0, int64_t t1) {
    std::vector<Segment> segs(chunk);
    cpu::for_each_part(t0, t1, per_part, segments, [&](int64_t part, int64_t first, int64_t last,
                                                      int64_t seg0, int64_t seg1) {
      acc_t* out = packed + part * part_size;
      // An empty part still writes its zeros: the tile stores what it summed, nothing.
      for (int64_t c0 = seg0; c0 < seg1 || c0 == seg0; c0 += chunk) {
        const int64_t nseg = std::min(chunk, seg1 - c0);
        for (int64_t ti = first; ti < last; ++ti) {
          const Task& task = tasks[ti];
          // Runs of segments with the same positions first..first + length - 1 (all of them
          // unless the map is skewed), one tile call each.
          for (int64_t i0 = 0; i0 < nseg || i0 == 0; ) {
            const int64_t r0 = nseg ? image_rows[c0 + i0] % R : 0;
            const int64_t first = s.first(r0), length = nseg ? s.computed(r0) : L;
            int64_t i1 = i0;
            for (; i1 < nseg && (!s.skew_width || image_rows[c0 + i1] % R == r0); ++i1) {
              const int64_t row = image_rows[c0 + i1], b = row / R, r = row % R;
              segs[i1 - i0] = {gl.at(b, 0, r) + first,
                               (row * lp + task.tap + first) * dpad + task.d0};
            }
            const int64_t rs = gl.stride(r0);
            const TileArgs args{rs, 1, dpad, length, dpad, c0 > seg0 || i0 > 0};
            cpu::conv_tile<acc_t>(static_cast<int>(task.rows), task.vectors, true)(
                dpre + task.n0 * rs, hp, segs.data(), i1 - i0, args,
                out + (task.tap * G + task.n0) * dpad + task.d0);
            if (i1 == i0) break;  // an empty part: its zeros are stored
            i0 = i1;
          }
        }
      }
    });
  });
  cpu::sum_parts(packed, part_size);
  for (int64_t n = 0; n < G; ++n)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t t = 0; t < k; ++t) grad_w[(n * D + d) * k + t] = packed[(t * G + n) * dpad + d];
}


template void grad_weight<float>(const Shape&, const float*, const GateLayout&,
                                 const WeightSource<float>&, float*);
template void grad_weight<double>(const Shape&, const double*, const GateLayout&,
                                  const WeightSource<double>&, double*);

}  // namespace genfast::lstm_row
