// CPU kernels of genfast::lstm_rows: the row recurrence of PixelRNN's Row LSTM and Diagonal BiLSTM
// (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.1, eq. 3), fused:
//   pre_r = gates_in_r + bias + K_ss (*) h_{r-1}   (a 1-D convolution along the row, k taps)
//   [i, f, o, g] = [sigmoid, sigmoid, sigmoid, tanh](pre_r)
//   c_r = f c_{r-1} + i g,   h_r = o tanh(c_r)
// and its backpropagation through the rows in reverse. The loop over rows runs here, in C++.
//
// Batch elements never interact, so each thread takes a contiguous chunk of the batch and runs the
// whole recurrence for it without any synchronisation between rows. The state-to-state
// convolution of a row is one gather of cpu/conv_tile.h over "columns": batch element b of the
// chunk owns columns [b * Lp, (b + 1) * Lp), and the state buffer holds h(b, l) at column
// b * Lp + pad_left + l with zeros in the other Lp - L columns, so output column j = b * Lp + l
// reads tap t at column j + t and the zeros between batch elements are the convolution's padding
// (rows = the 4D gate channels, k = the D hidden channels of each tap, columns vectorised; the
// columns per batch element with l >= L are computed and unused). The zeros after an element are
// its right padding (k - 1 - pad_left) and the next one's left padding (pad_left) at once, so
// Lp = L + max(pad_left, k - 1 - pad_left).
// The cell maths then walks each (batch element, hidden channel): it reads the four gate rows of
// the convolution, gates_in and c_{r-1} straight from their tensors and writes the gates, c, h
// and the state buffer, in whole SIMD vectors along the row (the last one overlapping the one
// before it when L is not a multiple of the width), so the exponentials hide the latency of the
// scattered rows of the [B, C, R, L] tensors. A single row shorter than a vector (a sampler's few
// columns around a pixel) has its own layout, batch-minor, and runs the cell maths of a batch
// element in one run over (hidden channel, position), in full vectors: see forward_one_row. Both
// give every output the same bits, whatever the batch, chunking or row length.
//
// Backward runs the rows in reverse with the same layout: the gate gradients dpre go into a
// zero-bordered buffer shifted so that dL/dh_{r-1} is again a k-tap gather (the taps mirrored,
// the weight transposed). dL/dweight is one reduction over every pixel after the loop, tiled over
// (tap, gate channels, hidden channels) with one owner per element, and dL/dbias is summed per
// batch element, so no result depends on the thread count. float16/bfloat16 inputs are computed
// in float32: c and the gates stay float32, h is rounded to the input dtype, and the next row
// reads that rounded h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/conv_tile.h"
#include "cpu/scratch.h"
#include "cpu/lstm_cell.h"
#include "cpu/simd_math.h"
#include "cpu/strided_copy.h"

namespace genfast::lstm_row {
namespace {

using at::Tensor;
using cpu::Segment;
using cpu::TileArgs;
using simd::kLanes;
using simd::vfloat;
using simd::vint;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Calls with less work than this many multiply-adds per thread run on the calling thread. A
// launch costs microseconds while the other threads spin, far more when another process holds
// their cores: a one-row call of 16 x 128 gates, 3 wide (about 15 us of multiply-adds on one
// core), split over two threads, saved 7 us with both cores free and lost up to 200 us while a
// second process ran.
constexpr int64_t kParallelMacs = int64_t{1} << 20;
constexpr int64_t kParallelCopies = int64_t{1} << 15;  // or copied values

// Splits n items into `count` near-equal parts: part i is [start(i), start(i + 1)).
struct EvenSplit {
  int64_t n, count;
  int64_t start(int64_t i) const { return count == 0 ? 0 : i * n / count; }
};
EvenSplit tiles_of(int64_t n, int64_t most) { return {n, (n + most - 1) / most}; }

// acc[j] += x[j] for j < n (a plain loop, cloned per ISA level to vectorise wide).
GENFAST_TARGET_CLONES
void add_to(float* __restrict acc, const float* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
}
void add_to(double* __restrict acc, const double* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
}

// ----------------------------------------------------------------------------- layout

struct Shape {
  int64_t batch, hidden, gates, rows, length, taps, pad_left;
};

// A chunk of nb batch elements in columns (see the file comment).
template <typename acc_t>
struct Columns {
  static constexpr int64_t kVector = cpu::Vec<acc_t>::kLanes;
  int64_t lp;          // columns per batch element: L, then the zeros before the next one
  int64_t count;       // nb * lp rounded up to whole vectors: the columns each row computes
  int64_t stride;      // row stride of the convolution's output
  int64_t pad_stride;  // row stride of the zero-bordered buffers, read up to count + k - 1

  Columns(const Shape& s, int64_t nb)
      : lp(s.length + std::max(s.pad_left, s.taps - 1 - s.pad_left)) {
    count = round_up(nb * lp, kVector);
    stride = count;
    pad_stride = round_up(count + s.taps - 1, kVector) + kVector;
  }
};

// The offset of the L contiguous values of (b, channel, row) in a contiguous [B][C][R][L] tensor.
inline int64_t run(const Shape& s, int64_t b, int64_t channels, int64_t channel, int64_t row) {
  return ((b * channels + channel) * s.rows + row) * s.length;
}

// out[n][j] = sum over segments, sum over kk < kdim of A[n][seg.a + kk] * B[seg.b + kk][j] for
// n < rows and the `cols` columns (a multiple of the SIMD width), tiled by conv_tile.
template <typename acc_t>
void gather(const acc_t* a, int64_t rows, int64_t a_stride, int64_t kdim, const acc_t* b,
            int64_t b_stride, const std::vector<Segment>& segs, int64_t cols, acc_t* out,
            int64_t out_stride) {
  constexpr int64_t lanes = cpu::Vec<acc_t>::kLanes;
  const TileArgs args{a_stride, 1, b_stride, kdim, out_stride, false};
  for (int64_t c0 = 0; c0 < cols; c0 += cpu::kMaxVectors * lanes) {
    const int vectors = static_cast<int>(std::min<int64_t>(cpu::kMaxVectors, (cols - c0) / lanes));
    const EvenSplit tiles = tiles_of(rows, cpu::max_rows(vectors));
    const auto tile = [&](int64_t i) {
      const int64_t n0 = tiles.start(i);
      cpu::conv_tile<acc_t>(static_cast<int>(tiles.start(i + 1) - n0), vectors, true)(
          a + n0 * a_stride, b + c0, segs.data(), static_cast<int64_t>(segs.size()), args,
          out + n0 * out_stride + c0);
    };
    for (int64_t i = 0; i < tiles.count; ++i) tile(i);
  }
}

// Work buffers are kept per thread and reused (cpu/scratch.h). Returns n elements, zeroed if asked.
enum Slot { kSlot0, kSlot1, kSlot2, kSlot3, kSlot4, kSlots };
struct LstmRowsScratch;

template <typename T>
T* scratch(Slot slot, int64_t n, bool zero = true) {
  return cpu::thread_scratch<LstmRowsScratch, kSlots, T>(slot, n, zero);
}

// ----------------------------------------------------------------------------- forward

template <typename acc_t>
struct ForwardArgs {
  Shape s;
  const acc_t *gates_in, *bias, *h0, *c0;
  acc_t *h, *c, *gates;
  // h's dtype: for float16/bfloat16, h is rounded to it before the next row reads it, so the
  // recurrence reads exactly the h it returns (row-by-row stepping gives the same result).
  at::ScalarType h_type;
  cpu::AlignedVector<acc_t> weight;  // [4D][k][D]: the taps' weights, input channels contiguous
  std::vector<Segment> segs;
  // [4D][L] and a vector more: bias[n] along a row, the cell maths' bias runs (a flat run's
  // too, R being 1 there), readable a vector past any run's start.
  std::vector<acc_t> bias_runs;
};

// Rounds x[0, n) to T and back.
template <typename T, typename acc_t>
void round_to(acc_t* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = static_cast<acc_t>(static_cast<T>(x[j]));
}

// Rounds h to float16/bfloat16 when that is its dtype.
template <typename acc_t>
void round_h(at::ScalarType h_type, acc_t* x, int64_t n) {
  if (h_type == at::kHalf) round_to<at::Half>(x, n);
  if (h_type == at::kBFloat16) round_to<at::BFloat16>(x, n);
}

// The cell maths of batch element b in forward_one_row: with one row, the values of every gate,
// of c0, c and h are contiguous over (hidden channel, position) in their tensors, so one run of
// D * L values covers them in full vectors, where a run per hidden channel would fill L of each
// vector's lanes. `pre` is the element's convolution output in that order, [4D][L]. Lanes never
// interact, so every value is the one the run per channel gives. No next row reads the state
// buffer: h takes its place.
template <typename acc_t>
void forward_flat(const ForwardArgs<acc_t>& p, int64_t b, const acc_t* pre) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length;
  ForwardRun<acc_t> q;
  for (int g = 0; g < 4; ++g) {
    q.pre[g] = pre + g * D * L;
    q.in[g] = p.gates_in + run(s, b, G, g * D, 0);
    q.bias[g] = p.bias_runs.data() + g * D * L;
    q.gates[g] = p.gates + run(s, b, G, g * D, 0);
  }
  q.c_prev = p.c0 + b * D * L;
  q.c = p.c + run(s, b, D, 0, 0);
  q.h = q.state = p.h + run(s, b, D, 0, 0);
  q.ahead = 0;
  forward_run(q, D * L);
  round_h(p.h_type, q.h, D * L);
}

// One row (R = 1) shorter than a SIMD vector, as a sampler's few columns around a pixel. The
// state's columns are batch-minor: h0(b0 + bi, l) at column (pad_left + l) * nb + bi, so tap t
// is t * nb columns on and no zeros sit between batch elements (the pad_left and
// k - 1 - pad_left blocks of nb zero columns at the ends are the padding): 16 rows of 3 are 48
// columns, where forward_chunk's layout computes 64. Each output still sums the taps in order,
// each over the hidden channels in order, with zeros for the same padding, so its bits are
// forward_chunk's. The output is then reordered for forward_flat.
template <typename acc_t>
void forward_one_row(const ForwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, k = s.taps;
  constexpr int64_t kVector = cpu::Vec<acc_t>::kLanes;
  const int64_t count = round_up(L * nb, kVector);
  const int64_t pad_stride = round_up(count + (k - 1) * nb, kVector);
  acc_t* pre = scratch<acc_t>(kSlot0, G * count);
  acc_t* state = scratch<acc_t>(kSlot1, D * pad_stride);
  const acc_t* h0 = p.h0 + b0 * D * L;
  // A zero initial state adds nothing (as in forward_chunk): pre stays zero.
  if (!std::all_of(h0, h0 + nb * D * L, [](acc_t v) { return v == acc_t(0); })) {
    for (int64_t bi = 0; bi < nb; ++bi)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t l = 0; l < L; ++l)
          state[d * pad_stride + (s.pad_left + l) * nb + bi] = h0[(bi * D + d) * L + l];
    std::vector<Segment> segs;
    for (int64_t t = 0; t < k; ++t) segs.push_back({t * D, t * nb});
    gather(p.weight.data(), G, k * D, D, state, pad_stride, segs, count, pre, count);
  }
  acc_t* flat = scratch<acc_t>(kSlot2, nb * G * L, false);
  for (int64_t n = 0; n < G; ++n)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t bi = 0; bi < nb; ++bi)
        flat[(bi * G + n) * L + l] = pre[n * count + l * nb + bi];
  for (int64_t bi = 0; bi < nb; ++bi) forward_flat(p, b0 + bi, flat + bi * G * L);
}

template <typename acc_t>
void forward_chunk(const ForwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length;
  const Columns<acc_t> col(s, nb);
  acc_t* pre = scratch<acc_t>(kSlot0, G * col.stride);
  acc_t* state = scratch<acc_t>(kSlot1, D * col.pad_stride);
  const bool h0_zero = std::all_of(p.h0 + b0 * D * L, p.h0 + (b0 + nb) * D * L,
                                   [](acc_t v) { return v == acc_t(0); });
  for (int64_t bi = 0; bi < nb; ++bi)
    for (int64_t d = 0; d < D; ++d)
      std::copy_n(p.h0 + ((b0 + bi) * D + d) * L, L,
                  state + d * col.pad_stride + bi * col.lp + s.pad_left);
  ForwardRun<acc_t> q;
  for (int64_t r = 0; r < s.rows; ++r) {
    // A zero initial state (the default) adds nothing to the first row: pre stays zero.
    if (r > 0 || !h0_zero)
      gather(p.weight.data(), G, s.taps * D, D, state, col.pad_stride, p.segs, col.count, pre,
             col.stride);
    q.ahead = r + 1 < s.rows ? L : 0;
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          const int64_t n = g * D + d;
          q.pre[g] = pre + n * col.stride + bi * col.lp;
          q.in[g] = p.gates_in + run(s, b, G, n, r);
          q.bias[g] = p.bias_runs.data() + n * L;
          q.gates[g] = p.gates + run(s, b, G, n, r);
        }
        q.c_prev = r > 0 ? p.c + run(s, b, D, d, r - 1) : p.c0 + (b * D + d) * L;
        q.c = p.c + run(s, b, D, d, r);
        q.h = p.h + run(s, b, D, d, r);
        q.state = state + d * col.pad_stride + bi * col.lp + s.pad_left;
        forward_run(q, L);
        round_h(p.h_type, q.h, L);
        round_h(p.h_type, q.state, L);
      }
    }
  }
}

// Chunks of the batch: one per thread, unless the call is too little work to pay for a
// parallel launch (a sampler's one-row call), and small enough that the rows of a chunk the
// next step reads (about 11 values per hidden channel and position, prefetched a step ahead)
// stay in a core's L2 cache; a 16-image chunk of a 28-wide, 64-channel layer did not.
int64_t chunk_count(const Shape& s) {
  constexpr int64_t kChunkBytes = int64_t{256} << 10;  // measured: 600 KB 5%, 300 KB 10% faster
  const int64_t per_image = 11 * s.hidden * s.length * static_cast<int64_t>(sizeof(float));
  const int64_t by_cache = (s.batch * per_image + kChunkBytes - 1) / kChunkBytes;
  const int64_t macs = s.batch * s.rows * s.length * s.gates * s.hidden * s.taps;
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), macs / kParallelMacs));
  // A whole number of chunks per thread: a thread with one chunk more would finish last (16
  // images in 5 chunks on 2 threads ran 25% slower than in 6).
  const int64_t count = (std::max(by_cache, threads) + threads - 1) / threads * threads;
  return std::max<int64_t>(1, std::min<int64_t>(s.batch, count));
}

// w [4D][D][k] as [4D][k][D], for the gather. A one-row call spends a fair part of its time here:
// with k a constant the compiler turns the strided reads into vector shuffles.
template <int K, typename acc_t>
void transpose_taps_fixed(const acc_t* w, int64_t rows, acc_t* out) {
  for (int64_t i = 0; i < rows; ++i)
    for (int t = 0; t < K; ++t) out[t * rows + i] = w[i * K + t];
}
template <typename acc_t>
void transpose_taps(const acc_t* w, int64_t G, int64_t D, int64_t k, acc_t* out) {
  for (int64_t n = 0; n < G; ++n) {
    const acc_t* src = w + n * D * k;
    acc_t* dst = out + n * k * D;
    if (k == 2) {
      transpose_taps_fixed<2>(src, D, dst);
    } else if (k == 3) {
      transpose_taps_fixed<3>(src, D, dst);
    } else {
      for (int64_t t = 0; t < k; ++t)
        for (int64_t d = 0; d < D; ++d) dst[t * D + d] = src[d * k + t];
    }
  }
}

template <typename acc_t>
void forward(ForwardArgs<acc_t>& p, const acc_t* w) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, k = s.taps;
  p.weight.resize(G * k * D);
  transpose_taps(w, G, D, k, p.weight.data());
  for (int64_t t = 0; t < k; ++t) p.segs.push_back({t * D, t});
  p.bias_runs.assign(G * s.length + kLanes, acc_t(0));
  if (p.bias)
    for (int64_t n = 0; n < G; ++n)
      std::fill_n(p.bias_runs.data() + n * s.length, s.length, p.bias[n]);
  const EvenSplit chunks{s.batch, chunk_count(s)};
  const bool one_row = s.rows == 1 && s.length < kLanes;
  at::parallel_for(0, chunks.count, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b0 = chunks.start(i), nb = chunks.start(i + 1) - b0;
      one_row ? forward_one_row(p, b0, nb) : forward_chunk(p, b0, nb);
    }
  });
}

// ----------------------------------------------------------------------------- backward

template <typename acc_t>
struct BackwardArgs {
  Shape s;
  // grad_h and grad_c are null when uniform (an expanded scalar: the zeros of an unused output,
  // or the gradient of a sum); their value is then in grad_h_value and grad_c_value.
  const acc_t *grad_h, *grad_c, *c, *gates, *c0;
  acc_t grad_h_value, grad_c_value;
  acc_t *grad_gates_in, *grad_h0, *grad_c0;
  acc_t* grad_bias_parts;  // [B][4D]: dL/dbias of each batch element
  cpu::AlignedVector<acc_t> weight;  // [D][k][4D]: tap k - 1 - s of the weight, transposed, at s
  std::vector<Segment> segs;
};

template <typename acc_t>
void backward_chunk(const BackwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length;
  const Columns<acc_t> col(s, nb);
  // dL/dpre of pixel (b, l) sits at column b * Lp + shift + l of `dpre`, so that dL/dh_{r-1} at
  // column j gathers tap t from column j + k - 1 - t.
  const int64_t shift = s.taps - 1 - s.pad_left, ps = col.pad_stride;
  acc_t* dh = scratch<acc_t>(kSlot0, D * col.stride);
  acc_t* dpre = scratch<acc_t>(kSlot1, G * ps);
  acc_t* bias_sum = scratch<acc_t>(kSlot2, G * ps);  // dpre summed over the rows, per column
  acc_t* dc_in = scratch<acc_t>(kSlot3, nb * D * L);  // [nb][D][L]
  acc_t* dc_out = scratch<acc_t>(kSlot4, nb * D * L);
  BackwardRun<acc_t> q;
  q.grad_h_value = p.grad_h_value;
  q.grad_c_value = p.grad_c_value;
  for (int64_t r = s.rows - 1; r >= 0; --r) {
    q.ahead = r > 0 ? -L : 0;
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          const int64_t n = g * D + d;
          q.act[g] = p.gates + run(s, b, G, n, r);
          q.dpre[g] = dpre + n * ps + bi * col.lp + shift;
          q.grad_in[g] = p.grad_gates_in + run(s, b, G, n, r);
        }
        q.c = p.c + run(s, b, D, d, r);
        q.c_prev = r > 0 ? p.c + run(s, b, D, d, r - 1) : p.c0 + (b * D + d) * L;
        q.grad_h = p.grad_h ? p.grad_h + run(s, b, D, d, r) : nullptr;
        q.grad_c = p.grad_c ? p.grad_c + run(s, b, D, d, r) : nullptr;
        q.dh = dh + d * col.stride + bi * col.lp;
        q.dc_in = dc_in + (bi * D + d) * L;
        q.dc_out = dc_out + (bi * D + d) * L;
        backward_run(q, L);
      }
    }
    std::swap(dc_in, dc_out);
    // Zero outside the pixels, so whole rows can be summed.
    add_to(bias_sum, dpre, G * ps);
    gather(p.weight.data(), D, s.taps * G, G, dpre, ps, p.segs, col.count, dh, col.stride);
  }
  // dL/dbias of each batch element: its columns' sums, in column order.
  for (int64_t bi = 0; bi < nb; ++bi)
    for (int64_t n = 0; n < G; ++n) {
      acc_t total = 0;
      for (int64_t l = 0; l < L; ++l) total += bias_sum[n * ps + bi * col.lp + shift + l];
      p.grad_bias_parts[(b0 + bi) * G + n] = total;
    }
  for (int64_t bi = 0; bi < nb; ++bi)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t dst = ((b0 + bi) * D + d) * L;
      std::copy_n(dh + d * col.stride + bi * col.lp, L, p.grad_h0 + dst);
      std::copy_n(dc_in + (bi * D + d) * L, L, p.grad_c0 + dst);
    }
}

// Hidden-channel vectors per dL/dweight tile (by up to 6 gate channels): 4 measured a little
// faster than 2 (by 12), the gate channels being rows R * L apart.
constexpr int64_t kGradWeightVectors = 4;
constexpr int64_t kGradWeightParts = 2;

// dL/dweight[n][d][t] = sum over pixels (b, r, l) of dpre[b][n][r][l] * h_{r-1}[b][d][l + t - pad]:
// h_{r-1} is copied pixel-major with its zero border, hp[b][r][q][d] (q < Lp), and each task owns
// one (tap, gate-channel tile, hidden-channel block) and walks the pixels in chunks of rows that
// stay in cache across the thread's tasks.
template <typename acc_t>
void grad_weight(const Shape& s, const acc_t* dpre, const acc_t* h, const acc_t* h0,
                 acc_t* grad_w) {
  constexpr int64_t lanes = cpu::Vec<acc_t>::kLanes;
  const int64_t D = s.hidden, G = s.gates, R = s.rows, L = s.length, k = s.taps;
  const int64_t lp = L + k - 1, dpad = round_up(D, lanes);
  // The segments are the (b, r) image rows, b-major; those of row 0 are left out when h0 is zero.
  const bool h0_zero = std::all_of(h0, h0 + s.batch * D * L, [](acc_t v) { return v == acc_t(0); });
  std::vector<int64_t> image_rows;
  for (int64_t i = 0; i < s.batch * R; ++i)
    if (i % R > 0 || !h0_zero) image_rows.push_back(i);
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
      std::fill_n(seg, s.pad_left * dpad, acc_t(0));
      std::fill(seg + (s.pad_left + L) * dpad, seg + lp * dpad, acc_t(0));
      for (int64_t l = 0; l < L && dpad > D; ++l)
        std::fill_n(seg + (s.pad_left + l) * dpad + D, dpad - D, acc_t(0));
      const acc_t* src = r == 0 ? h0 + b * D * L : h + run(s, b, D, 0, r - 1);
      cpu::copy_2d(src, r == 0 ? L : R * L, int64_t{1}, hp + (i * lp + s.pad_left) * dpad,
                   int64_t{1}, dpad, D, L);
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
  // The image rows are cut into kGradWeightParts fixed parts, summed apart and added in order
  // at the end: each thread then reads the half of dpre and hp its own core wrote, and the
  // result still does not depend on the thread count.
  const int64_t part_size = k * G * dpad;
  acc_t* packed = scratch<acc_t>(kSlot1, kGradWeightParts * part_size, false);  // all written
  const int64_t seg_bytes = static_cast<int64_t>(sizeof(acc_t)) * (G * L + lp * dpad);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{192} << 10) / seg_bytes);
  const int64_t per_part = static_cast<int64_t>(tasks.size());
  const int64_t ntasks = kGradWeightParts * per_part;
  const int64_t task_grain =
      std::max<int64_t>(1, kParallelMacs / (segments * L * G * dpad * k / ntasks + 1));
  at::parallel_for(0, ntasks, task_grain, [&](int64_t t0, int64_t t1) {
    std::vector<Segment> segs(chunk);
    for (int64_t part = t0 / per_part; part * per_part < t1; ++part) {
      const int64_t seg0 = part * segments / kGradWeightParts;
      const int64_t seg1 = (part + 1) * segments / kGradWeightParts;
      const int64_t first = std::max(t0, part * per_part) - part * per_part;
      const int64_t last = std::min(t1, (part + 1) * per_part) - part * per_part;
      acc_t* out = packed + part * part_size;
      // An empty part still writes its zeros: the tile stores what it summed, nothing.
      for (int64_t c0 = seg0; c0 < seg1 || c0 == seg0; c0 += chunk) {
        const int64_t nseg = std::min(chunk, seg1 - c0);
        for (int64_t ti = first; ti < last; ++ti) {
          const Task& task = tasks[ti];
          for (int64_t i = 0; i < nseg; ++i) {
            const int64_t row = image_rows[c0 + i], b = row / R, r = row % R;
            segs[i] = {run(s, b, G, 0, r), (row * lp + task.tap) * dpad + task.d0};
          }
          const TileArgs args{R * L, 1, dpad, L, dpad, c0 > seg0};
          cpu::conv_tile<acc_t>(static_cast<int>(task.rows), task.vectors, true)(
              dpre + task.n0 * R * L, hp, segs.data(), nseg, args,
              out + (task.tap * G + task.n0) * dpad + task.d0);
        }
      }
    }
  });
  for (int64_t part = 1; part < kGradWeightParts; ++part)
    for (int64_t i = 0; i < part_size; ++i) packed[i] += packed[part * part_size + i];
  for (int64_t n = 0; n < G; ++n)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t t = 0; t < k; ++t) grad_w[(n * D + d) * k + t] = packed[(t * G + n) * dpad + d];
}

// ----------------------------------------------------------------------------- the ops

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

Shape check_shapes(const Tensor& gates_in, const Tensor& weight, const Tensor& h0,
                   const Tensor& c0, int64_t pad_left) {
  TORCH_CHECK(gates_in.dim() == 4, "genfast: gates_in must be [B, 4D, R, L], got shape ",
              gates_in.sizes());
  TORCH_CHECK(gates_in.size(1) % 4 == 0, "genfast: gates_in has ", gates_in.size(1),
              " channels, not a multiple of 4 (the gates i, f, o, g)");
  const int64_t B = gates_in.size(0), D = gates_in.size(1) / 4, R = gates_in.size(2),
                L = gates_in.size(3);
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == 4 * D && weight.size(1) == D &&
                  weight.size(2) >= 1,
              "genfast: weight must be [4D, D, k] = [", 4 * D, ", ", D, ", k >= 1], got ",
              weight.sizes());
  const int64_t k = weight.size(2);
  TORCH_CHECK(0 <= pad_left && pad_left < k, "genfast: pad_left must be in [0, ", k, "), got ",
              pad_left);
  for (const Tensor* t : {&h0, &c0})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({B, D, L}), "genfast: h0 and c0 must be [", B, ", ",
                D, ", ", L, "], got ", t->sizes());
  for (const Tensor* t : {&gates_in, &weight, &h0, &c0})
    TORCH_CHECK(t->device().is_cpu(), "genfast: the cpu backend of lstm_rows needs CPU tensors");
  return {B, D, 4 * D, R, L, k, pad_left};
}

Tensor as_compute(const Tensor& t, at::ScalarType type) { return t.to(type).contiguous(); }

std::tuple<Tensor, Tensor, Tensor> lstm_rows_cpu(const Tensor& gates_in, const Tensor& weight,
                                                  const std::optional<Tensor>& bias,
                                                  const Tensor& h0, const Tensor& c0,
                                                  int64_t pad_left) {
  const Shape s = check_shapes(gates_in, weight, h0, c0, pad_left);
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.gates && bias->device().is_cpu(),
                "genfast: bias must be a CPU tensor of shape [", s.gates, "]");
  const at::ScalarType acc = compute_type(gates_in.scalar_type());
  const auto opts = gates_in.options().dtype(acc);
  Tensor h = at::empty({s.batch, s.hidden, s.rows, s.length}, opts);
  Tensor c = at::empty({s.batch, s.hidden, s.rows, s.length}, opts);
  Tensor gates = at::empty({s.batch, s.gates, s.rows, s.length}, opts);
  if (h.numel() > 0) {
    const Tensor gi = as_compute(gates_in, acc), w = as_compute(weight, acc);
    const Tensor h0c = as_compute(h0, acc), c0c = as_compute(c0, acc);
    const Tensor bc = bias.has_value() ? as_compute(*bias, acc) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_rows", [&] {
      ForwardArgs<scalar_t> p{s,
                              gi.const_data_ptr<scalar_t>(),
                              bias.has_value() ? bc.const_data_ptr<scalar_t>() : nullptr,
                              h0c.const_data_ptr<scalar_t>(),
                              c0c.const_data_ptr<scalar_t>(),
                              h.mutable_data_ptr<scalar_t>(),
                              c.mutable_data_ptr<scalar_t>(),
                              gates.mutable_data_ptr<scalar_t>(),
                              gates_in.scalar_type(),
                              {},
                              {},
                              {}};
      forward(p, w.const_data_ptr<scalar_t>());
    });
  }
  return {h.to(gates_in.scalar_type()), c, gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_rows_backward_cpu(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& weight, const Tensor& h,
    const Tensor& c, const Tensor& gates, const Tensor& h0, const Tensor& c0, int64_t pad_left) {
  TORCH_CHECK(gates.dim() == 4, "genfast: gates must be [B, 4D, R, L], got ", gates.sizes());
  const Shape s = check_shapes(gates, weight, h0, c0, pad_left);
  for (const Tensor* t : {&grad_h, &grad_c, &h, &c})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({s.batch, s.hidden, s.rows, s.length}) &&
                    t->device().is_cpu(),
                "genfast: grad_h, grad_c, h and c must be CPU tensors of shape [", s.batch, ", ",
                s.hidden, ", ", s.rows, ", ", s.length, "], got ", t->sizes());
  const at::ScalarType acc = compute_type(h.scalar_type());
  const auto opts = h.options().dtype(acc);
  // Every element is written below, unless there is no work: then every gradient is zero.
  const bool work = s.batch * s.gates * s.rows * s.length > 0;
  const auto make = [&](at::IntArrayRef sizes) {
    return work ? at::empty(sizes, opts) : at::zeros(sizes, opts);
  };
  Tensor ggi = make({s.batch, s.gates, s.rows, s.length});
  Tensor gw = make(weight.sizes()), gb = make({s.gates});
  Tensor gh0 = make(h0.sizes()), gc0 = make(c0.sizes());
  if (work) {
    // An expanded scalar is read as its value rather than materialised.
    const auto uniform = [](const Tensor& t) {
      for (int64_t d = 0; d < t.dim(); ++d)
        if (t.stride(d) != 0 && t.size(d) != 1) return false;
      return true;
    };
    const bool gh_uniform = uniform(grad_h), gc_uniform = uniform(grad_c);
    const Tensor gh = gh_uniform ? grad_h.as_strided({1}, {1}).to(acc) : as_compute(grad_h, acc);
    const Tensor gc = gc_uniform ? grad_c.as_strided({1}, {1}).to(acc) : as_compute(grad_c, acc);
    const Tensor w = as_compute(weight, acc), hc = as_compute(h, acc), cc = as_compute(c, acc);
    const Tensor gt = as_compute(gates, acc), h0c = as_compute(h0, acc);
    const Tensor c0c = as_compute(c0, acc);
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_rows_backward", [&] {
      using acc_t = scalar_t;
      const int64_t D = s.hidden, G = s.gates, k = s.taps;
      BackwardArgs<acc_t> p{s,
                            gh_uniform ? nullptr : gh.const_data_ptr<acc_t>(),
                            gc_uniform ? nullptr : gc.const_data_ptr<acc_t>(),
                            cc.const_data_ptr<acc_t>(),
                            gt.const_data_ptr<acc_t>(),
                            c0c.const_data_ptr<acc_t>(),
                            gh.const_data_ptr<acc_t>()[0],
                            gc.const_data_ptr<acc_t>()[0],
                            ggi.mutable_data_ptr<acc_t>(),
                            gh0.mutable_data_ptr<acc_t>(),
                            gc0.mutable_data_ptr<acc_t>(),
                            nullptr,
                            cpu::AlignedVector<acc_t>(D * k * G, acc_t(0)),
                            {}};
      std::vector<acc_t> bias_parts(s.batch * G);
      p.grad_bias_parts = bias_parts.data();
      const acc_t* wp = w.const_data_ptr<acc_t>();
      for (int64_t n = 0; n < G; ++n)
        for (int64_t d = 0; d < D; ++d)
          for (int64_t t = 0; t < k; ++t)
            p.weight[(d * k + (k - 1 - t)) * G + n] = wp[(n * D + d) * k + t];
      for (int64_t t = 0; t < k; ++t) p.segs.push_back({t * G, t});
      const EvenSplit chunks{s.batch, chunk_count(s)};
      at::parallel_for(0, chunks.count, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          backward_chunk(p, chunks.start(i), chunks.start(i + 1) - chunks.start(i));
      });
      grad_weight(s, ggi.const_data_ptr<acc_t>(), hc.const_data_ptr<acc_t>(),
                  h0c.const_data_ptr<acc_t>(), gw.mutable_data_ptr<acc_t>());
      acc_t* gbp = gb.mutable_data_ptr<acc_t>();
      for (int64_t n = 0; n < G; ++n) {
        acc_t total = 0;
        for (int64_t b = 0; b < s.batch; ++b) total += bias_parts[b * G + n];
        gbp[n] = total;
      }
    });
  }
  return {ggi.to(h.scalar_type()), gw.to(weight.scalar_type()), gb.to(weight.scalar_type()),
          gh0.to(h0.scalar_type()), gc0.to(c0.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("lstm_rows", &lstm_rows_cpu);
  m.impl("lstm_rows_backward", &lstm_rows_backward_cpu);
}

}  // namespace genfast::lstm_row
