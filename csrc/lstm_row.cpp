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
//
// genfast::lstm_rows_conv is the same recurrence with the input-to-state convolution along the row
// done inside it: each row's part is a second gather (from x in the same column layout) into a
// buffer the cell maths read in place of gates_in, and its backward gathers dL/dx from the gate
// gradients in the row loop. Its saved activations and gate gradients are row-major (GateLayout).
// Its columns are batch-minor (Interleaved, forward_chunk_interleaved), which wastes no columns
// between batch elements, and on a skewed map (the Diagonal BiLSTM, Shape::skew_width) it
// computes each row's pixels and one padding position only, in a column layout that changes
// from row to row (forward_chunk_skewed).
//
// This file holds the forward; lstm_row_backward.cpp the backward, lstm_row_weight_grad.cpp the
// weights' gradients, lstm_row_common.h what they share.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/interleave.h"
#include "cpu/lstm_cell.h"
#include "cpu/simd_math.h"
#include "cpu/strided_copy.h"
#include "lstm_row_common.h"

namespace genfast::lstm_row {
namespace {

using simd::kLanes;

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
  // lstm_rows_conv: x [B, C, R, L] and its convolution's weight [4D][in_taps][C]; gates_in is
  // then unused (null).
  const acc_t* x = nullptr;
  GateLayout gl{};  // of `gates`
  cpu::AlignedVector<acc_t> in_weight;
  std::vector<Segment> in_segs;
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
    q.gates[g] = p.gates + p.gl.at(b, g * D, 0);
  }
  q.c_prev = p.c0 + b * D * L;
  q.c = p.c + run(s, b, D, 0, 0);
  q.h = q.state = p.h + run(s, b, D, 0, 0);
  q.ahead = q.gates_ahead = 0;
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
    q.gates_ahead = r + 1 < s.rows ? p.gl.r : 0;
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          const int64_t n = g * D + d;
          q.pre[g] = pre + n * col.stride + bi * col.lp;
          q.in[g] = p.gates_in + run(s, b, G, n, r);
          q.bias[g] = p.bias_runs.data() + n * L;
          q.gates[g] = p.gates + p.gl.at(b, n, r);
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

// lstm_rows_conv on an unskewed map: the chunk in batch-minor columns (Interleaved), which fill
// whole vectors where forward_chunk's pad each element's row. Every output sums the same terms
// in the same order as there, so the bits are the same. The input's convolution goes to a
// buffer of its own that the cell maths read in place of gates_in, so that every pre-activation
// is summed as lstm_rows sums it after a separate convolution (the samplers rely on that). The
// cell maths take a hidden channel's nb * L values in one run, with c_{r-1} from the chunk's
// own interleaved copy; h, c and the gates are then de-interleaved into their tensors.
template <typename acc_t>
void forward_chunk_interleaved(const ForwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, R = s.rows, C = s.in_channels;
  const Interleaved<acc_t> col(s, nb);
  const int64_t n = nb * L, count = col.count, ps = col.pad_stride, first = col.padded(0);
  acc_t* pre = scratch<acc_t>(kSlot0, G * count);
  acc_t* state = scratch<acc_t>(kSlot1, D * ps);
  acc_t* x_cols = scratch<acc_t>(kSlot2, C * ps);
  acc_t* x_pre = scratch<acc_t>(kSlot3, G * count, false);
  acc_t* c_prev = scratch<acc_t>(kSlot4, 2 * D * count, false);
  acc_t* c_next = c_prev + D * count;
  acc_t* gates = scratch<acc_t>(kSlot5, G * count, false);
  acc_t* bias = scratch<acc_t>(kSlot6, G * count, false);  // bias[i] along row i
  for (int64_t i = 0; i < G; ++i) std::fill_n(bias + i * count, count, p.bias_runs[i * L]);
  std::vector<Segment> segs, in_segs;
  for (int64_t t = 0; t < s.taps; ++t) segs.push_back({t * D, col.padded(t - s.pad_left)});
  for (int64_t t = 0; t < s.in_taps; ++t)
    in_segs.push_back({t * C, col.padded(t - s.in_pad_left)});
  const acc_t* h0 = p.h0 + b0 * D * L;
  const bool h0_zero = std::all_of(h0, h0 + nb * D * L, [](acc_t v) { return v == acc_t(0); });
  cpu::interleave(h0, D * L, L, D, nb, L, state + first, ps);
  cpu::interleave(p.c0 + b0 * D * L, D * L, L, D, nb, L, c_prev, count);
  ForwardRun<acc_t> q;
  q.ahead = q.gates_ahead = 0;  // all in the chunk's buffers
  for (int64_t r = 0; r < R; ++r) {
    cpu::interleave(p.x + run(s, b0, C, 0, r), C * R * L, R * L, C, nb, L, x_cols + first, ps);
    // A zero initial state (the default) adds nothing to the first row.
    const bool with_state = r > 0 || !h0_zero;
    gather(p.in_weight.data(), G, s.in_taps * C, C, x_cols, ps, in_segs, count, x_pre, count);
    if (with_state)  // else pre stays zero
      gather(p.weight.data(), G, s.taps * D, D, state, ps, segs, count, pre, count);
    for (int64_t d = 0; d < D; ++d) {
      for (int g = 0; g < 4; ++g) {
        const int64_t i = g * D + d;
        q.pre[g] = pre + i * count;
        q.in[g] = x_pre + i * count;
        q.bias[g] = bias + i * count;
        q.gates[g] = gates + i * count;
      }
      q.c_prev = c_prev + d * count;
      q.c = c_next + d * count;
      q.h = q.state = state + d * ps + first;
      forward_run(q, n);
      round_h(p.h_type, q.state, n);  // the h the next row reads
    }
    cpu::deinterleave(gates, count, G, nb, L, p.gates + p.gl.at(b0, 0, r), p.gl.b, p.gl.n);
    cpu::deinterleave(state + first, ps, D, nb, L, p.h + run(s, b0, D, 0, r), D * R * L, R * L);
    cpu::deinterleave(c_next, count, D, nb, L, p.c + run(s, b0, D, 0, r), D * R * L, R * L);
    std::swap(c_prev, c_next);
  }
}

// A skewed map (Shape::skew_width, the Diagonal BiLSTM) computes only positions first(r)..last(r)
// of each row, about half of a square map, so its column layout changes from row to row: batch
// element bi's computed positions take columns bi * span + (l - first(r)), span = computed(r) + 1,
// back to back, and the state the row reads holds position l - 1 one column left of output l
// (column bi * span + (l - first(r)), the tap-0 one; tap 1 is one column on), so the two taps
// are the same columns for every batch element. The cell maths write the state straight into
// the next row's layout. x is copied at its live positions, zero at the padding one.
template <typename acc_t>
void forward_chunk_skewed(const ForwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, C = s.in_channels;
  constexpr int64_t kVector = cpu::Vec<acc_t>::kLanes;
  const int64_t stride = round_up(nb * (L + 1), kVector), ps = stride + 2 * kVector;
  acc_t* pre = scratch<acc_t>(kSlot0, G * stride);
  acc_t* state = scratch<acc_t>(kSlot1, D * ps);  // zero: the state before row 0
  acc_t* x_cols = scratch<acc_t>(kSlot2, C * ps);
  acc_t* x_pre = scratch<acc_t>(kSlot3, G * stride, false);
  ForwardRun<acc_t> q;
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t first = s.first(r), n = s.computed(r), span = n + 1;
    const int64_t live = s.live_last(r) - first + 1, count = round_up(nb * span, kVector);
    for (int64_t bi = 0; bi < nb; ++bi)
      for (int64_t ci = 0; ci < C; ++ci) {
        acc_t* dst = x_cols + ci * ps + bi * span;
        std::copy_n(p.x + run(s, b0 + bi, C, ci, r) + first, live, dst);
        std::fill(dst + live, dst + n, acc_t(0));
      }
    // The taps at columns j and j + 1 (p.segs, p.in_segs as for the other rows).
    gather(p.in_weight.data(), G, C, C, x_cols, ps, p.in_segs, count, x_pre, stride);
    gather(p.weight.data(), G, 2 * D, D, state, ps, p.segs, count, pre, stride);
    // The next row's layout: where this row's positions go in the state it reads.
    const bool next = r + 1 < s.rows;
    const int64_t next_first = next ? s.first(r + 1) : first;
    const int64_t next_span = next ? s.computed(r + 1) + 1 : span;
    q.ahead = next ? L : 0;
    q.gates_ahead = 0;  // rows of different lengths: no fixed distance
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          const int64_t ch = g * D + d;
          q.pre[g] = pre + ch * stride + bi * span;
          q.in[g] = x_pre + ch * stride + bi * span;
          q.bias[g] = p.bias_runs.data() + ch * L + first;
          q.gates[g] = p.gates + (p.gl.at(b, ch, r) + first);
        }
        acc_t* st = state + d * ps + bi * next_span;  // position next_first - 1
        q.c_prev = (r > 0 ? p.c + run(s, b, D, d, r - 1) : p.c0 + (b * D + d) * L) + first;
        q.c = p.c + run(s, b, D, d, r) + first;
        q.h = p.h + run(s, b, D, d, r) + first;
        q.state = st + 1 + first - next_first;
        forward_run(q, n);
        round_h(p.h_type, q.h, n);
        round_h(p.h_type, q.state, n);
        if (next_first == 0) st[0] = acc_t(0);  // position -1: the zero padding
        if (s.has_copy(r)) {  // (h and c are zero at the other positions: run_forward)
          q.state[n] = q.state[n - 1];
          q.h[n] = q.h[n - 1];
          q.c[n] = q.c[n - 1];
        }
      }
    }
  }
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
void forward(ForwardArgs<acc_t>& p, const acc_t* w, const acc_t* w_in) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, k = s.taps;
  p.weight.resize(G * k * D);
  transpose_taps(w, G, D, k, p.weight.data());
  for (int64_t t = 0; t < k; ++t) p.segs.push_back({t * D, t});
  if (p.x) {
    const int64_t C = s.in_channels;
    p.in_weight.resize(G * s.in_taps * C);
    transpose_taps(w_in, G, C, s.in_taps, p.in_weight.data());
    for (int64_t t = 0; t < s.in_taps; ++t) p.in_segs.push_back({t * C, t});
  }
  p.bias_runs.assign(G * s.length + kLanes, acc_t(0));
  if (p.bias)
    for (int64_t n = 0; n < G; ++n)
      std::fill_n(p.bias_runs.data() + n * s.length, s.length, p.bias[n]);
  const bool interleaved = p.x && !s.skew_width;
  const bool one_row = s.rows == 1 && s.length < kLanes && !p.x;
  for_each_chunk(s, interleaved ? cpu::Vec<acc_t>::kLanes : 0, [&](int64_t b0, int64_t nb) {
    if (s.skew_width) {
      forward_chunk_skewed(p, b0, nb);
    } else if (interleaved) {
      forward_chunk_interleaved(p, b0, nb);
    } else {
      one_row ? forward_one_row(p, b0, nb) : forward_chunk(p, b0, nb);
    }
  });
}

// The forward of both ops: gates_in is the pre-activations (lstm_rows) or, with x, undefined
// (lstm_rows_conv).
std::tuple<Tensor, Tensor, Tensor> run_forward(const Shape& s, const Tensor& gates_in,
                                               const Tensor& x, const Tensor& in_weight,
                                               const Tensor& weight,
                                               const std::optional<Tensor>& bias,
                                               const Tensor& h0, const Tensor& c0) {
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.gates && bias->device().is_cpu(),
                "genfast: bias must be a CPU tensor of shape [", s.gates, "]");
  const Tensor& input = x.defined() ? x : gates_in;
  const at::ScalarType acc = compute_type(input.scalar_type());
  const auto opts = input.options().dtype(acc);
  // A skewed map leaves h and c zero where it computes nothing.
  const auto make = [&](at::IntArrayRef sizes) {
    return s.skew_width ? at::zeros(sizes, opts) : at::empty(sizes, opts);
  };
  Tensor h = make({s.batch, s.hidden, s.rows, s.length});
  Tensor c = make({s.batch, s.hidden, s.rows, s.length});
  // lstm_rows_conv's activations are only read by its backward: row-major, a skewed map's at
  // the computed positions alone (see GateLayout).
  const GateLayout gl = gate_layout(s, x.defined());
  Tensor gates = s.skew_width  ? at::empty({gl.row_start.back()}, opts)
                 : x.defined() ? at::empty({s.rows, s.batch, s.gates, s.length}, opts)
                               : at::empty({s.batch, s.gates, s.rows, s.length}, opts);
  if (h.numel() > 0) {
    const Tensor gi = x.defined() ? Tensor() : as_compute(gates_in, acc);
    const Tensor xc = x.defined() ? as_compute(x, acc) : Tensor();
    const Tensor wi = x.defined() ? as_compute(in_weight, acc) : Tensor();
    const Tensor w = as_compute(weight, acc);
    const Tensor h0c = as_compute(h0, acc), c0c = as_compute(c0, acc);
    const Tensor bc = bias.has_value() ? as_compute(*bias, acc) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_rows", [&] {
      ForwardArgs<scalar_t> p{s,
                              x.defined() ? nullptr : gi.const_data_ptr<scalar_t>(),
                              bias.has_value() ? bc.const_data_ptr<scalar_t>() : nullptr,
                              h0c.const_data_ptr<scalar_t>(),
                              c0c.const_data_ptr<scalar_t>(),
                              h.mutable_data_ptr<scalar_t>(),
                              c.mutable_data_ptr<scalar_t>(),
                              gates.mutable_data_ptr<scalar_t>(),
                              input.scalar_type(),
                              {},
                              {},
                              {}};
      p.x = x.defined() ? xc.const_data_ptr<scalar_t>() : nullptr;
      p.gl = gl;
      forward(p, w.const_data_ptr<scalar_t>(),
              x.defined() ? wi.const_data_ptr<scalar_t>() : nullptr);
    });
  }
  return {h.to(input.scalar_type()), c, gates};
}

std::tuple<Tensor, Tensor, Tensor> lstm_rows_cpu(const Tensor& gates_in, const Tensor& weight,
                                                  const std::optional<Tensor>& bias,
                                                  const Tensor& h0, const Tensor& c0,
                                                  int64_t pad_left) {
  const Shape s = check_shapes(gates_in, weight, h0, c0, pad_left);
  return run_forward(s, gates_in, Tensor(), Tensor(), weight, bias, h0, c0);
}

std::tuple<Tensor, Tensor, Tensor> lstm_rows_conv_cpu(const Tensor& x, const Tensor& in_weight,
                                                       const Tensor& weight,
                                                       const std::optional<Tensor>& bias,
                                                       const Tensor& h0, const Tensor& c0,
                                                       int64_t in_pad_left, int64_t pad_left,
                                                       int64_t skew_width) {
  const Shape s =
      check_conv_shapes(x, in_weight, weight, h0, c0, in_pad_left, pad_left, skew_width);
  return run_forward(s, Tensor(), x, in_weight, weight, bias, h0, c0);
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("lstm_rows", &lstm_rows_cpu);
  m.impl("lstm_rows_conv", &lstm_rows_conv_cpu);
}

}  // namespace genfast::lstm_row
