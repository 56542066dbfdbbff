// CPU backward of genfast::lstm_rows and lstm_rows_conv: backpropagation through the rows in
// reverse, then the weights' gradients as one reduction over every pixel each
// (lstm_row_weight_grad.cpp). The design (layout, chunks, determinism) is described at the top
// of lstm_row.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/interleave.h"
#include "cpu/lstm_cell.h"
#include "cpu/kernel_table.h"
#include "lstm_row_common.h"
#include "lstm_row_weight_grad.h"

namespace genfast::lstm_row {
namespace {

// acc[j] += x[j] for j < n (float at the CPU's ISA level).
void add_to(float* acc, const float* x, int64_t n) { cpu::kernels().add_to(acc, x, n); }
void add_to(double* __restrict acc, const double* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
}

// ----------------------------------------------------------------------------- backward

struct GateGradients;  // the scratch tag of lstm_rows_conv's dL/dpre

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
  // lstm_rows_conv: dL/dx [B, C, R, L], gathered from dpre as dL/dh_{r-1} is, with in_weight
  // laid out as weight ([C][k_in][4D], mirrored).
  acc_t* grad_x = nullptr;
  GateLayout gl{};  // of gates and grad_gates_in
  cpu::AlignedVector<acc_t> in_weight;
};

// dL/dpre of position l sits dpre_shift positions right of it in the zero-bordered buffers the
// gathers read: far enough that every gather from it reads its taps mirrored at non-negative
// offsets.
inline int64_t dpre_shift(const Shape& s) {
  return std::max(s.taps - 1 - s.pad_left, s.in_taps - 1 - s.in_pad_left);
}

// The mirrored segments of a gather from dpre (positions `step` columns apart) through a weight
// of `taps` taps laid out [.][taps][4D], tap taps - 1 - t at t.
inline std::vector<Segment> mirrored(const Shape& s, int64_t taps, int64_t pad_left,
                                     int64_t step) {
  return lstm_row::taps(taps, s.gates, (dpre_shift(s) - (taps - 1 - pad_left)) * step, step);
}

// A row's gathers from the zero-bordered gate gradients dpre (ps columns, `count` computed):
// dL/dh_{r-1} through the weight (dh null: none) and, for lstm_rows_conv, dL/dx through
// in_weight.
template <typename acc_t>
void row_gathers(const BackwardArgs<acc_t>& p, const acc_t* dpre, int64_t ps, int64_t count,
                 const std::vector<Segment>& segs, acc_t* dh, int64_t dh_stride,
                 const std::vector<Segment>& in_segs, acc_t* dx, int64_t dx_stride) {
  const Shape& s = p.s;
  const int64_t G = s.gates;
  if (dh) gather(p.weight.data(), s.hidden, s.taps * G, G, dpre, ps, segs, count, dh, dh_stride);
  if (p.grad_x)
    gather(p.in_weight.data(), s.in_channels, s.in_taps * G, G, dpre, ps, in_segs, count, dx,
           dx_stride);
}

// The backward of forward_chunk (lstm_row.cpp), rows in reverse. The cell maths run per
// (element, hidden channel) on the tensors, reading the activations, c and the output gradients
// and writing the gate gradients to grad_gates_in, with dL/dh and dL/dc [nb][D][L] from the
// chunk's buffers. Each row's gate gradients are then interleaved into the zero-bordered
// buffer that the gathers of dL/dh_{r-1} and dL/dx read (batch-minor, as the forward's), and
// the gathers' dL/dh goes back to [nb][D][L] for the next row; dL/dx is de-interleaved into
// grad_x. Every value sums the same terms in the same order whatever the chunk.
template <typename acc_t>
void backward_chunk(const BackwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, R = s.rows, C = s.in_channels;
  const Interleaved<acc_t> col(s, nb);
  // dL/dpre of position l at column (shift + l) * nb + b.
  const int64_t count = col.count, ps = col.pad_stride, first = dpre_shift(s) * nb;
  acc_t* dh_cols = scratch<acc_t>(kSlot0, D * count, false);
  acc_t* dpre = scratch<acc_t>(kSlot1, G * ps);
  acc_t* bias_sum = scratch<acc_t>(kSlot2, G * ps);  // dpre summed over the rows, per column
  acc_t* dc_in = scratch<acc_t>(kSlot3, nb * D * L);  // [nb][D][L]
  acc_t* dc_out = scratch<acc_t>(kSlot4, nb * D * L);
  acc_t* dx = p.grad_x ? scratch<acc_t>(kSlot5, C * count, false) : nullptr;
  acc_t* dh = scratch<acc_t>(kSlot6, nb * D * L);  // [nb][D][L], zero after the last row
  const auto segs = mirrored(s, s.taps, s.pad_left, nb);
  const auto in_segs = mirrored(s, s.in_taps, s.in_pad_left, nb);
  BackwardRun<acc_t> q;
  q.grad_h_value = p.grad_h_value;
  q.grad_c_value = p.grad_c_value;
  for (int64_t r = R - 1; r >= 0; --r) {
    q.ahead = r > 0 ? -L : 0;
    q.gates_ahead = r > 0 ? -p.gl.r : 0;
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          q.act[g] = p.gates + p.gl.at(b, g * D + d, r);
          q.dpre[g] = q.grad_in[g] = p.grad_gates_in + p.gl.at(b, g * D + d, r);
        }
        q.c = p.c + run(s, b, D, d, r);
        q.c_prev = r > 0 ? p.c + run(s, b, D, d, r - 1) : p.c0 + (b * D + d) * L;
        q.grad_h = p.grad_h ? p.grad_h + run(s, b, D, d, r) : nullptr;
        q.grad_c = p.grad_c ? p.grad_c + run(s, b, D, d, r) : nullptr;
        q.dh = dh + (bi * D + d) * L;
        q.dc_in = dc_in + (bi * D + d) * L;
        q.dc_out = dc_out + (bi * D + d) * L;
        backward_run(q, L);
      }
    }
    std::swap(dc_in, dc_out);
    cpu::interleave(p.grad_gates_in + p.gl.at(b0, 0, r), p.gl.b, p.gl.n, G, nb, L, dpre + first,
                    ps);
    // Zero outside the pixels, so whole rows can be summed.
    add_to(bias_sum, dpre, G * ps);
    row_gathers(p, dpre, ps, count, segs, dh_cols, count, in_segs, dx, count);
    cpu::deinterleave(dh_cols, count, D, nb, L, dh, D * L, L);
    if (dx)
      cpu::deinterleave(dx, count, C, nb, L, p.grad_x + run(s, b0, C, 0, r), C * R * L, R * L);
  }
  // dL/dbias of each batch element: its columns' sums, in column order.
  for (int64_t bi = 0; bi < nb; ++bi)
    for (int64_t n = 0; n < G; ++n) {
      acc_t total = 0;
      for (int64_t l = 0; l < L; ++l) total += bias_sum[n * ps + first + l * nb + bi];
      p.grad_bias_parts[(b0 + bi) * G + n] = total;
    }
  std::copy_n(dh, nb * D * L, p.grad_h0 + b0 * D * L);
  std::copy_n(dc_in, nb * D * L, p.grad_c0 + b0 * D * L);
}

// The backward of forward_chunk_skewed (lstm_row.cpp), rows in reverse. Row r's gate gradients
// go into the layout of the gather that makes dL/dh_{r-1}: batch element bi's positions
// first(r - 1)..last(r - 1) + 2 at columns bi * span + (l - first(r - 1)), span = computed(r - 1)
// + 2, so that dL/dh_{r-1} at position l (column bi * span + l - first(r - 1), through the
// position last(r - 1) + 1 it copied to) reads tap 1 at its own column and tap 0 one column on.
// The gradient that reached the copy is the original's. The gate gradients of positions not
// computed are zero; dL/dh0 and dL/dc0 are zero (the op requires zero initial states).
template <typename acc_t>
void backward_chunk_skewed(const BackwardArgs<acc_t>& p, int64_t b0, int64_t nb) {
  const Shape& s = p.s;
  const int64_t D = s.hidden, G = s.gates, L = s.length, C = s.in_channels;
  constexpr int64_t kVector = cpu::kPadLanes<acc_t>;
  const int64_t stride = round_up(nb * (L + 2), kVector), ps = stride + 2 * kVector;
  // dL/dh_r, zero after the last row
  acc_t* dh = scratch<acc_t>(kSlot0, D * stride);
  acc_t* dpre = scratch<acc_t>(kSlot1, G * ps);
  acc_t* bias_sum = scratch<acc_t>(kSlot2, nb * G * L);  // [nb][4D][L]: dpre summed over rows
  acc_t* dc_in = scratch<acc_t>(kSlot3, nb * D * L);  // [nb][D][L]
  acc_t* dc_out = scratch<acc_t>(kSlot4, nb * D * L);
  acc_t* dx = scratch<acc_t>(kSlot5, C * stride, false);
  // Mirrored taps at columns j and j + 1 (dpre_shift is 0 here).
  const auto segs = mirrored(s, 2, 1, 1), in_segs = mirrored(s, 1, 0, 1);
  BackwardRun<acc_t> q;
  q.grad_h_value = p.grad_h_value;
  q.grad_c_value = p.grad_c_value;
  int64_t span = s.computed(s.rows - 1) + 2;  // of dh: row r's positions from first(r)
  for (int64_t r = s.rows - 1; r >= 0; --r) {
    const int64_t first = s.first(r), last = s.last(r), n = last - first + 1;
    const int64_t prev_first = r > 0 ? s.first(r - 1) : 0;
    const int64_t prev_span = r > 0 ? s.computed(r - 1) + 2 : n + 2;
    q.ahead = r > 0 ? -L : 0;
    q.gates_ahead = 0;  // rows of different lengths: no fixed distance
    for (int64_t bi = 0; bi < nb; ++bi) {
      const int64_t b = b0 + bi;
      acc_t* dpre_bi = dpre + bi * prev_span;  // position prev_first
      for (int64_t d = 0; d < D; ++d) {
        for (int g = 0; g < 4; ++g) {
          const int64_t ch = g * D + d;
          q.act[g] = p.gates + (p.gl.at(b, ch, r) + first);
          q.dpre[g] = dpre_bi + ch * ps + first - prev_first;
          q.grad_in[g] = p.grad_gates_in + (p.gl.at(b, ch, r) + first);
        }
        q.c = p.c + run(s, b, D, d, r) + first;
        q.c_prev = (r > 0 ? p.c + run(s, b, D, d, r - 1) : p.c0 + (b * D + d) * L) + first;
        q.grad_h = p.grad_h ? p.grad_h + run(s, b, D, d, r) + first : nullptr;
        q.grad_c = p.grad_c ? p.grad_c + run(s, b, D, d, r) + first : nullptr;
        acc_t* dh_row = dh + d * stride + bi * span;  // position first
        acc_t* dc_row = dc_in + (bi * D + d) * L;
        if (s.has_copy(r)) {
          const int64_t copy = run(s, b, D, d, r) + last + 1;
          dh_row[n - 1] += dh_row[n] + (p.grad_h ? p.grad_h[copy] : p.grad_h_value);
          dc_row[last] += dc_row[last + 1] + (p.grad_c ? p.grad_c[copy] : p.grad_c_value);
        }
        q.dh = dh_row;
        q.dc_in = dc_row + first;
        q.dc_out = dc_out + (bi * D + d) * L + first;
        backward_run(q, n);
        // grad_gates_in holds the computed positions alone: grad_weights reads no others.
        for (int g = 0; g < 4; ++g) {
          // The other positions of the gather's layout: not computed in this row.
          acc_t* row = dpre_bi + (g * D + d) * ps;
          std::fill(row, row + first - prev_first, acc_t(0));
          std::fill(row + last + 1 - prev_first, row + prev_span, acc_t(0));
          add_to(bias_sum + (bi * G + g * D + d) * L + first, q.dpre[g], n);
        }
      }
    }
    std::swap(dc_in, dc_out);
    const int64_t count = round_up(nb * prev_span, kVector);
    row_gathers(p, dpre, ps, count, segs, r > 0 ? dh : nullptr, stride, in_segs, dx, stride);
    const int64_t live = s.live_last(r) - first + 1;
    for (int64_t bi = 0; bi < nb; ++bi)
      for (int64_t ci = 0; ci < C; ++ci)  // grad_x is zero at the padding (run_backward)
        std::copy_n(dx + ci * stride + bi * prev_span + first - prev_first, live,
                    p.grad_x + run(s, b0 + bi, C, ci, r) + first);
    span = prev_span;
  }
  for (int64_t bi = 0; bi < nb; ++bi) {
    for (int64_t ch = 0; ch < G; ++ch) {
      const acc_t* sums = bias_sum + (bi * G + ch) * L;
      acc_t total = 0;
      for (int64_t l = 0; l < L; ++l) total += sums[l];
      p.grad_bias_parts[(b0 + bi) * G + ch] = total;
    }
    std::fill_n(p.grad_h0 + (b0 + bi) * D * L, D * L, acc_t(0));
    std::fill_n(p.grad_c0 + (b0 + bi) * D * L, D * L, acc_t(0));
  }
}

// The backward of both ops; x and in_weight are undefined for lstm_rows. Returns dL/dgates_in
// (lstm_rows) or dL/dx (lstm_rows_conv), dL/din_weight (undefined for lstm_rows), dL/dweight,
// dL/dbias, dL/dh0, dL/dc0.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> run_backward(
    const Shape& s, const Tensor& grad_h, const Tensor& grad_c, const Tensor& x,
    const Tensor& in_weight, const Tensor& weight, const Tensor& h, const Tensor& c,
    const Tensor& gates, const Tensor& h0, const Tensor& c0) {
  for (const Tensor* t : {&grad_h, &grad_c, &h, &c})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({s.batch, s.hidden, s.rows, s.length}) &&
                    t->device().is_cpu(),
                "genfast: grad_h, grad_c, h and c must be CPU tensors of shape [", s.batch, ", ",
                s.hidden, ", ", s.rows, ", ", s.length, "], got ", t->sizes());
  const bool conv = x.defined();
  // lstm_rows_conv saves its activations row-major (see GateLayout).
  const GateLayout gl = gate_layout(s, conv);
  TORCH_CHECK(gates.sizes() == at::IntArrayRef(gl.sizes) && gates.device().is_cpu(),
              "genfast: gates must be a CPU tensor of shape ", at::IntArrayRef(gl.sizes),
              ", got ", gates.sizes());
  const at::ScalarType acc = compute_type(h.scalar_type());
  const auto opts = h.options().dtype(acc);
  // Every element is written below, unless there is no work: then every gradient is zero.
  const bool work = s.batch * s.gates * s.rows * s.length > 0;
  const auto make = [&](at::IntArrayRef sizes) {
    return work ? at::empty(sizes, opts) : at::zeros(sizes, opts);
  };
  // dL/dpre of every pixel: lstm_rows' dL/dgates_in, or lstm_rows_conv's input to its weights'
  // gradients, kept in a reused buffer (fresh pages cost a fault each: 3 ms of 16 for 12.8 MB).
  Tensor ggi = conv ? Tensor() : make({s.batch, s.gates, s.rows, s.length});
  // A skewed map's dL/dx is zero at the padding, where the kernel writes nothing.
  Tensor gx = !conv ? Tensor() : s.skew_width ? at::zeros(x.sizes(), opts) : make(x.sizes());
  Tensor gwi = conv ? make(in_weight.sizes()) : Tensor();
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
    const Tensor xc = conv ? as_compute(x, acc) : Tensor();
    const Tensor wic = conv ? as_compute(in_weight, acc) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(acc, "lstm_rows_backward", [&] {
      using acc_t = scalar_t;
      const int64_t D = s.hidden, G = s.gates, k = s.taps;
      acc_t* dpre = conv ? cpu::thread_scratch<GateGradients, 1, acc_t>(
                               0, s.batch * s.gates * s.rows * s.length)
                         : ggi.mutable_data_ptr<acc_t>();
      BackwardArgs<acc_t> p{s,
                            gh_uniform ? nullptr : gh.const_data_ptr<acc_t>(),
                            gc_uniform ? nullptr : gc.const_data_ptr<acc_t>(),
                            cc.const_data_ptr<acc_t>(),
                            gt.const_data_ptr<acc_t>(),
                            c0c.const_data_ptr<acc_t>(),
                            gh.const_data_ptr<acc_t>()[0],
                            gc.const_data_ptr<acc_t>()[0],
                            dpre,
                            gh0.mutable_data_ptr<acc_t>(),
                            gc0.mutable_data_ptr<acc_t>(),
                            nullptr,
                            cpu::AlignedVector<acc_t>(D * k * G, acc_t(0))};
      p.gl = gl;
      std::vector<acc_t> bias_parts(s.batch * G);
      p.grad_bias_parts = bias_parts.data();
      // Each tap's weight transposed, tap taps - 1 - t at t: [rows][taps][4D], written in
      // order (scattered writes took 0.1 ms for a 64-channel layer, alone on one thread).
      const auto mirror = [&](const acc_t* wp, int64_t rows, int64_t taps, acc_t* out) {
        for (int64_t d = 0; d < rows; ++d)
          for (int64_t t = 0; t < taps; ++t)
            for (int64_t n = 0; n < G; ++n)
              out[(d * taps + (taps - 1 - t)) * G + n] = wp[(n * rows + d) * taps + t];
      };
      mirror(w.const_data_ptr<acc_t>(), D, k, p.weight.data());
      if (conv) {
        p.grad_x = gx.mutable_data_ptr<acc_t>();
        p.in_weight.resize(s.in_channels * s.in_taps * G);
        mirror(wic.const_data_ptr<acc_t>(), s.in_channels, s.in_taps, p.in_weight.data());
      }
      for_each_chunk<acc_t>(s, [&](int64_t b0, int64_t nb) {
        s.skew_width ? backward_chunk_skewed(p, b0, nb) : backward_chunk(p, b0, nb);
      });
      std::vector<WeightSource<acc_t>> sources{
          {hc.const_data_ptr<acc_t>(), h0c.const_data_ptr<acc_t>(), D, k, s.pad_left, false,
           gw.mutable_data_ptr<acc_t>()}};
      if (conv)
        sources.push_back({xc.const_data_ptr<acc_t>(), nullptr, s.in_channels, s.in_taps,
                           s.in_pad_left, s.skew_width > 0, gwi.mutable_data_ptr<acc_t>()});
      grad_weights(s, dpre, p.gl, sources);
      acc_t* gbp = gb.mutable_data_ptr<acc_t>();
      for (int64_t n = 0; n < G; ++n) {
        acc_t total = 0;
        for (int64_t b = 0; b < s.batch; ++b) total += bias_parts[b * G + n];
        gbp[n] = total;
      }
    });
  }
  const at::ScalarType out_type = h.scalar_type(), w_type = weight.scalar_type();
  return {conv ? gx.to(x.scalar_type()) : ggi.to(out_type),
          conv ? gwi.to(in_weight.scalar_type()) : Tensor(),
          gw.to(w_type),
          gb.to(w_type),
          gh0.to(h0.scalar_type()),
          gc0.to(c0.scalar_type())};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_rows_backward_cpu(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& weight, const Tensor& h,
    const Tensor& c, const Tensor& gates, const Tensor& h0, const Tensor& c0, int64_t pad_left) {
  TORCH_CHECK(gates.dim() == 4, "genfast: gates must be [B, 4D, R, L], got ", gates.sizes());
  const Shape s = check_shapes(gates, weight, h0, c0, pad_left);
  auto [ggi, unused, gw, gb, gh0, gc0] =
      run_backward(s, grad_h, grad_c, Tensor(), Tensor(), weight, h, c, gates, h0, c0);
  return {ggi, gw, gb, gh0, gc0};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_rows_conv_backward_cpu(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& x, const Tensor& in_weight,
    const Tensor& weight, const Tensor& h, const Tensor& c, const Tensor& gates, const Tensor& h0,
    const Tensor& c0, int64_t in_pad_left, int64_t pad_left, int64_t skew_width) {
  const Shape s =
      check_conv_shapes(x, in_weight, weight, h0, c0, in_pad_left, pad_left, skew_width);
  return run_backward(s, grad_h, grad_c, x, in_weight, weight, h, c, gates, h0, c0);
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("lstm_rows_backward", &lstm_rows_backward_cpu);
  m.impl("lstm_rows_conv_backward", &lstm_rows_conv_backward_cpu);
}

}  // namespace genfast::lstm_row
