// dL/dweight of the row recurrence's convolutions: see lstm_row_weight_grad.h.
//
// dL/dweight[n][d][t] = sum over pixels (b, r, l) of dpre[b][n][r][l] * src[b][d][r'][l + t - pad]
// (r' = r - 1 for the state, r for x). The image rows (b, r) are the segments the register tiles
// (kernels/conv_tile.h) sum over, in chunks that stay in cache across the thread's tasks; each task
// owns one (source, tap, gate-channel tile, channel block). A chunk's source rows are copied
// position-major with their zero border, hp[q][d] (q < lp), and tap t reads them t positions on.
#include "lstm_row_weight_grad.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/reduction_parts.h"
#include "cpu/strided_copy.h"

namespace genfast::lstm_row {
namespace {

// How the reduction reads one source.
template <typename acc_t>
struct Plan {
  WeightSource<acc_t> src;
  int64_t dpad;          // its channels rounded up to whole vectors
  int64_t lp;            // positions of a copied row, zero border included
  bool skip_first_row;   // the state's h0 is zero: row 0 adds nothing
  int64_t out;           // where its [taps][4D][dpad] sums start in a part
};

struct Task {
  int64_t source, tap, n0, rows, d0;
  int vectors;
};

// What the convolution of image row (b, r) read: channel 0's L values of it, and the distance
// to the next channel's.
template <typename acc_t>
std::pair<const acc_t*, int64_t> source_row(const Shape& s, const WeightSource<acc_t>& src,
                                            int64_t b, int64_t r) {
  const int64_t D = src.channels, L = s.length, R = s.rows;
  if (src.first && r == 0) return {src.first + b * D * L, L};  // h0
  return {src.rows + ((b * D) * R + r - (src.first ? 1 : 0)) * L, R * L};
}

// Image row (b, r) of the source, position-major with its zero border: position l of channel d
// at seg[(pad_left + l) * dpad + d], every other value of the lp x dpad block zero.
template <typename acc_t>
void copy_row(const Shape& s, const Plan<acc_t>& p, int64_t b, int64_t r, acc_t* seg) {
  const WeightSource<acc_t>& src = p.src;
  const int64_t D = src.channels, L = s.length, dpad = p.dpad;
  const int64_t pad_left = src.pad_left;
  std::fill_n(seg, pad_left * dpad, acc_t(0));
  std::fill(seg + (pad_left + L) * dpad, seg + p.lp * dpad, acc_t(0));
  for (int64_t l = 0; l < L && dpad > D; ++l)
    std::fill_n(seg + (pad_left + l) * dpad + D, dpad - D, acc_t(0));
  const auto [row, channel_stride] = source_row(s, src, b, r);
  cpu::copy_2d(row, channel_stride, int64_t{1}, seg + pad_left * dpad, int64_t{1}, dpad, D, L);
  if (src.live_only) {
    acc_t* at = seg + pad_left * dpad;
    std::fill(at, at + s.first(r) * dpad, acc_t(0));
    std::fill(at + (s.live_last(r) + 1) * dpad, at + L * dpad, acc_t(0));
  }
}

}  // namespace

template <typename acc_t>
void grad_weights(const Shape& s, const acc_t* dpre, const GateLayout& gl,
                  const std::vector<WeightSource<acc_t>>& sources) {
  const int64_t lanes = cpu::lanes<acc_t>();
  constexpr int kSourceSlot = kSlot2;  // chunk buffers: one slot per source from here
  TORCH_CHECK(sources.size() <= static_cast<size_t>(kSlots - kSourceSlot),
              "genfast: too many weight sources");
  const int64_t G = s.gates, R = s.rows, L = s.length;
  std::vector<Plan<acc_t>> plans;
  int64_t part_size = 0;
  for (const WeightSource<acc_t>& src : sources) {
    Plan<acc_t> p{src};
    p.dpad = round_up(src.channels, cpu::kPadLanes<acc_t>);
    // pad_left may be k (x of a mask-A row kernel: every tap left of the pixel).
    p.lp = L + std::max(src.taps - 1, src.pad_left);
    p.skip_first_row = src.first && std::all_of(src.first, src.first + s.batch * src.channels * L,
                                                 [](acc_t v) { return v == acc_t(0); });
    p.out = part_size;
    part_size += src.taps * G * p.dpad;
    plans.push_back(p);
  }
  // The segments: the (b, r) image rows, b-major; a skewed map's row-major instead, so that runs
  // of them share the row's computed positions, the only ones with gate gradients: each run sums
  // over those alone.
  const int64_t segments = s.batch * R;
  std::vector<int64_t> image_rows(segments);
  for (int64_t i = 0; i < segments; ++i)
    image_rows[i] = s.skew_width ? i % s.batch * R + i / s.batch : i;
  std::vector<Task> tasks;
  int64_t macs = 0;
  const int64_t max_vectors = cpu::kernels().max_vectors;  // the level's widest tile
  const int64_t block = max_vectors * lanes;
  for (int64_t si = 0; si < static_cast<int64_t>(plans.size()); ++si) {
    const Plan<acc_t>& p = plans[si];
    macs += segments * L * G * p.dpad * p.src.taps;
    for (int64_t t = 0; t < p.src.taps; ++t)
      for (int64_t d0 = 0; d0 < p.dpad; d0 += block) {
        const int vectors =
            static_cast<int>(std::min<int64_t>(max_vectors, (p.dpad - d0) / lanes));
        const EvenSplit tiles = tiles_of(G, cpu::kernels().max_rows[vectors]);
        for (int64_t i = 0; i < tiles.count; ++i)
          tasks.push_back({si, t, tiles.start(i), tiles.start(i + 1) - tiles.start(i), d0, vectors});
      }
  }
  // The image rows in fixed parts (cpu/reduction_parts.h), each thread reading what it wrote.
  acc_t* packed = scratch<acc_t>(kSlot1, cpu::kReductionParts * part_size, false);
  int64_t seg_bytes = G * L;
  for (const Plan<acc_t>& p : plans) seg_bytes += p.lp * p.dpad;
  seg_bytes *= static_cast<int64_t>(sizeof(acc_t));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{192} << 10) / seg_bytes);
  const int64_t per_part = static_cast<int64_t>(tasks.size());
  const int64_t ntasks = cpu::kReductionParts * per_part;
  const int64_t task_grain = std::max<int64_t>(1, kParallelMacs / (macs / ntasks + 1));
  at::parallel_for(0, ntasks, task_grain, [&](int64_t t0, int64_t t1) {
    std::vector<Segment> segs(chunk);
    std::vector<int64_t> batch_of(chunk), row_of(chunk);  // of the chunk's segments
    std::vector<acc_t*> rows_of(plans.size());
    for (size_t si = 0; si < plans.size(); ++si)
      rows_of[si] = scratch<acc_t>(static_cast<Slot>(kSourceSlot + si),
                                   chunk * plans[si].lp * plans[si].dpad, false);
    cpu::for_each_part(t0, t1, per_part, segments, [&](int64_t part, int64_t first, int64_t last,
                                                      int64_t seg0, int64_t seg1) {
      acc_t* out = packed + part * part_size;
      std::vector<char> needed(plans.size(), 0);
      for (int64_t ti = first; ti < last; ++ti) {  // every tile adds to its sums from zero
        const Task& task = tasks[ti];
        const Plan<acc_t>& p = plans[task.source];
        needed[task.source] = 1;
        for (int64_t n = task.n0; n < task.n0 + task.rows; ++n)
          std::fill_n(out + p.out + (task.tap * G + n) * p.dpad + task.d0, task.vectors * lanes,
                      acc_t(0));
      }
      for (int64_t c0 = seg0; c0 < seg1; c0 += chunk) {
        const int64_t nseg = std::min(chunk, seg1 - c0);
        for (int64_t i = 0; i < nseg; ++i)  // once here: a division costs tens of cycles
          batch_of[i] = image_rows[c0 + i] / R, row_of[i] = image_rows[c0 + i] % R;
        for (size_t si = 0; si < plans.size(); ++si) {
          const Plan<acc_t>& p = plans[si];
          for (int64_t i = 0; needed[si] && i < nseg; ++i) {
            const int64_t b = batch_of[i], r = row_of[i];
            if (p.skip_first_row && r == 0) continue;
            copy_row(s, p, b, r, rows_of[si] + i * p.lp * p.dpad);
          }
        }
        for (int64_t ti = first; ti < last; ++ti) {
          const Task& task = tasks[ti];
          const Plan<acc_t>& p = plans[task.source];
          // One tile call per run of segments with the same positions first..first + length - 1
          // (all of the chunk's unless the map is skewed).
          int64_t n = 0, run_row = 0;
          const auto flush = [&] {
            if (n == 0) return;
            const int64_t rs = gl.stride(run_row);
            const TileArgs args{rs, 1, p.dpad, s.computed(run_row), p.dpad, true};
            cpu::tile_kernel<acc_t>(static_cast<int>(task.rows), task.vectors, true)(
                dpre + task.n0 * rs, rows_of[task.source], segs.data(), n, args,
                out + p.out + (task.tap * G + task.n0) * p.dpad + task.d0);
            n = 0;
          };
          for (int64_t i = 0; i < nseg; ++i) {
            const int64_t b = batch_of[i], r = row_of[i];
            if (p.skip_first_row && r == 0) continue;
            if (r != run_row && s.skew_width) flush();
            run_row = r;
            const int64_t at = s.first(r);
            segs[n++] = {gl.at(b, 0, r) + at, (i * p.lp + task.tap + at) * p.dpad + task.d0};
          }
          flush();
        }
      }
    });
  });
  cpu::sum_parts(packed, part_size);
  for (const Plan<acc_t>& p : plans) {
    const int64_t D = p.src.channels, k = p.src.taps;
    const acc_t* sums = packed + p.out;
    for (int64_t n = 0; n < G; ++n)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t t = 0; t < k; ++t)
          p.src.grad_w[(n * D + d) * k + t] = sums[(t * G + n) * p.dpad + d];
  }
}

template void grad_weights<float>(const Shape&, const float*, const GateLayout&,
                                  const std::vector<WeightSource<float>>&);
template void grad_weights<double>(const Shape&, const double*, const GateLayout&,
                                   const std::vector<WeightSource<double>>&);

}  // namespace genfast::lstm_row
