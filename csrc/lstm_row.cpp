// CPU kernels of genfast::lstm_rows: the row recurrence of PixelRNN's Row LSTM and Diagonal BiLSTM
// (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.1, eq. 3), fused:
//   pre_r = gates_in_r + bias + K_ss (*) h_{r-1}   (a 1-D convolution along the row, k taps)
//   [i, f, o, g] = [sigmoid, sigmoid, sigmoid, tanh](pre_r)
//   c_r = f c_{r-1} + i g,   h_r = o tanh(c_r)
// and its backpropagation through the rows in reverse. The loop over rows runs here, in C++.
//
// Batch elements never interact, so each thread takes a contiguous chunk of the batch and runs the
// whole recurrence for it without any synchronisation between rows. The chunk's rows are held
// batch-minor (Interleaved in lstm_row_common.h): position l of element b at column l * nb + b,
// so that a row of nb elements fills whole SIMD vectors with no columns between the elements.
// The state-to-state convolution of a row is then one gather of kernels/conv_tile.h (rows = the 4D
// gate channels, k = the D hidden channels of each tap, columns vectorised) from a state buffer
// with a zero border of whole positions each side, where tap t is t * nb columns on. The cell
// maths take a hidden channel's nb * L values as one run, with c_{r-1} from the chunk's own
// batch-minor copy, and h, c and the gates go back to their tensors after each row. Each output
// sums the taps in order, each over the hidden channels in order, with zeros at the padding,
// so its bits are the same whatever the batch, chunking or row length: a sampler's one-row call
// on a few columns around a pixel reproduces the full pass.
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
// done inside it: each row's part is a second gather (from x in the same column layout) into the
// buffer the cell maths read gates_in from, and its backward gathers dL/dx from the gate
// gradients in the row loop. Its saved activations and gate gradients are row-major (GateLayout).
// On a skewed map (the Diagonal BiLSTM, Shape::skew_width) it computes each row's pixels and one
// padding position only, in a column layout that changes from row to row (forward_chunk_skewed).
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
#include "cpu/kernel_table.h"
#include "cpu/strided_copy.h"
#include "lstm_row_common.h"

namespace genfast::lstm_row {
namespace {


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
  // lstm_rows_conv: x [B, C, R, L] and its convolution's weight [4D][in_taps][C]; gates_in is
  // then unused (null).
  const acc_t* x = nullptr;
  GateLayout gl{};  // of `gates`
  cpu::AlignedVector<acc_t> in_weight;
  // [4D][L] and a vector more: bias[n] along a row, the cell maths' bias runs, readable a vector
  // past any run's start.
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

// The chunk [b0, b0 + nb) on an unskewed map, in batch-minor columns (see the file comment).
// gates_in, or the convolution of x, goes to a buffer of its own that the cell maths add to the
// state's convolution, so that lstm_rows_conv sums every pre-activation as lstm_rows sums it
// after a separate convolution (the samplers rely on that).
template <typename acc_t>
void forward_chunk(const ForwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, R = s.rows, C = s.in_channels;
  const Interleaved<acc_t> col(s, nb);
  const int64_t n = nb * L, count = col.count, ps = col.pad_stride, first = col.padded(0);
  acc_t* pre = scratch<acc_t>(kSlot0, G * count);
  acc_t* state = scratch<acc_t>(kSlot1, D * ps);
  acc_t* x_cols = p.x ? scratch<acc_t>(kSlot2, C * ps) : nullptr;
  acc_t* in = scratch<acc_t>(kSlot3, G * count, false);  // gates_in, or x's convolution
  acc_t* c_prev = scratch<acc_t>(kSlot4, 2 * D * count, false);
  acc_t* c_next = c_prev + D * count;
  acc_t* gates = scratch<acc_t>(kSlot5, G * count, false);
  acc_t* bias = scratch<acc_t>(kSlot6, G * count, false);  // bias[i] along row i
  for (int64_t i = 0; i < G; ++i) std::fill_n(bias + i * count, count, p.bias_runs[i * L]);
  const auto segs = taps(s.taps, D, col.padded(-s.pad_left), nb);
  const auto in_segs = taps(s.in_taps, C, col.padded(-s.in_pad_left), nb);
  const acc_t* h0 = p.h0 + b0 * D * L;
  const bool h0_zero = std::all_of(h0, h0 + nb * D * L, [](acc_t v) { return v == acc_t(0); });
  cpu::interleave(h0, D * L, L, D, nb, L, state + first, ps);
  cpu::interleave(p.c0 + b0 * D * L, D * L, L, D, nb, L, c_prev, count);
  ForwardRun<acc_t> q;
  q.ahead = q.gates_ahead = 0;  // all in the chunk's buffers
  for (int64_t r = 0; r < R; ++r) {
    if (p.x) {
      cpu::interleave(p.x + run(s, b0, C, 0, r), C * R * L, R * L, C, nb, L, x_cols + first, ps);
      gather(p.in_weight.data(), G, s.in_taps * C, C, x_cols, ps, in_segs, count, in, count);
    } else {
      cpu::interleave(p.gates_in + run(s, b0, G, 0, r), G * R * L, R * L, G, nb, L, in, count);
    }
    // A zero initial state (the default) adds nothing to the first row: pre stays zero.
    if (r > 0 || !h0_zero)
      gather(p.weight.data(), G, s.taps * D, D, state, ps, segs, count, pre, count);
    for (int64_t d = 0; d < D; ++d) {
      for (int g = 0; g < 4; ++g) {
        const int64_t i = g * D + d;
        q.pre[g] = pre + i * count;
        q.in[g] = in + i * count;
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
  constexpr int64_t kVector = cpu::kPadLanes<acc_t>;
  const int64_t stride = round_up(nb * (L + 1), kVector), ps = stride + 2 * kVector;
  acc_t* pre = scratch<acc_t>(kSlot0, G * stride);
  acc_t* state = scratch<acc_t>(kSlot1, D * ps);  // zero: the state before row 0
  acc_t* x_cols = scratch<acc_t>(kSlot2, C * ps);
  acc_t* x_pre = scratch<acc_t>(kSlot3, G * stride, false);
  const auto segs = taps(2, D, 0, 1), in_segs = taps(1, C, 0, 1);
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
    // The taps at columns j and j + 1.
    gather(p.in_weight.data(), G, C, C, x_cols, ps, in_segs, count, x_pre, stride);
    gather(p.weight.data(), G, 2 * D, D, state, ps, segs, count, pre, stride);
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
  if (p.x) {
    p.in_weight.resize(G * s.in_taps * s.in_channels);
    transpose_taps(w_in, G, s.in_channels, s.in_taps, p.in_weight.data());
  }
  p.bias_runs.assign(G * s.length + cpu::kPadLanes<float>, acc_t(0));
  if (p.bias)
    for (int64_t n = 0; n < G; ++n)
      std::fill_n(p.bias_runs.data() + n * s.length, s.length, p.bias[n]);
  for_each_chunk<acc_t>(s, [&](int64_t b0, int64_t nb) {
    s.skew_width ? forward_chunk_skewed(p, b0, nb) : forward_chunk(p, b0, nb);
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
  Tensor gates = at::empty(gl.sizes, opts);
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
                              input.scalar_type()};
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
