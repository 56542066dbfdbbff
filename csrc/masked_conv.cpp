// CPU kernels of genfast::masked_conv2d: a PixelCNN masked convolution that spends no work on the
// taps its mask hides (24 of 49 for a 7x7 mask A), in forward, grad-input and grad-weight.
//
// Each pass is a direct convolution over pixel-major (channels-last) buffers: the input window
// with its zero border is copied once into P[b][row][col][channel], and each output tile sums
// only the visible taps with the register-blocked kernel of cpu/kernels/conv_tile.h. Grad-input
// runs the same gather with the taps mirrored over a zero-bordered copy of grad_y; grad-weight
// reduces over pixels, one (tap, input-channel tile) per task so each weight element has one
// owner and the result does not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/kernel_table.h"
#include "cpu/reduction_parts.h"
#include "cpu/scratch.h"
#include "cpu/strided_copy.h"
#include "masked_conv_common.h"
#include "masked_conv_pointwise.h"

namespace genfast::masked_conv {
namespace {

using at::Tensor;
using cpu::Segment;
using cpu::TileArgs;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// A parallel_for launch and join costs microseconds: about what a core does in 2^18
// multiply-adds or 2^15 copied elements. Each pass asks for at least that much work per thread
// (its grain), so that a small call, such as a sampler's one-pixel window, runs on the calling
// thread, while the training shapes split as finely as before.
constexpr int64_t kParallelMacs = int64_t{1} << 18;
constexpr int64_t kParallelCopies = int64_t{1} << 15;

// The grain size for items of `work` each (multiply-adds or copies), at least `least`.
int64_t grain(int64_t per_thread, int64_t work, int64_t least = 1) {
  return std::max(least, per_thread / std::max<int64_t>(1, work));
}

// Splits n items into the fewest tiles of at most `most`, as evenly as possible: tile i covers
// [start(i), start(i + 1)).
struct EvenTiles {
  int64_t n, count;
  EvenTiles(int64_t n_, int64_t most) : n(n_), count((n_ + most - 1) / most) {}
  int64_t start(int64_t i) const { return count == 0 ? 0 : i * n / count; }
};

// The padded buffers (masked_conv_common.h), in the compute dtype, with their channel counts
// rounded up to whole SIMD vectors.
struct Layout : PaddedBuffers {
  int64_t co_pad, ci_pad;

  Layout(const Geometry& g, int64_t lanes)
      : PaddedBuffers(g),
        co_pad(round_up(g.out_channels, lanes)),
        ci_pad(round_up(g.in_channels, lanes)) {}
};

// The big buffers (P and Q) are kept per calling thread and reused (cpu/scratch.h); the small
// ones (packed weights, a tile row of the output) are kept too, to save the allocation that
// would otherwise weigh on a one-pixel call.
enum ScratchSlot { kInputSlot, kGradOutputSlot, kWeightSlot, kRowSlot, kSlots };
struct MaskedConvScratch;

template <typename T>
T* scratch(ScratchSlot slot, int64_t n) {
  return cpu::thread_scratch<MaskedConvScratch, kSlots, T>(slot, n);
}

template <typename scalar_t, typename acc_t>
const acc_t* pack_input(const Tensor& x, const Geometry& g, const Layout& l) {
  const int64_t cin = g.in_channels;
  acc_t* p = scratch<acc_t>(kInputSlot, g.batch * l.ph * l.pw * cin);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t sb = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  // The image columns P holds, as a range of P columns.
  const int64_t pc_lo = l.c_lo(g), pc_hi = l.c_hi(g);
  const int64_t rows_grain = grain(kParallelCopies, l.pw * cin, 16);
  at::parallel_for(0, g.batch * l.ph, rows_grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / l.ph, ir = l.image_row(g, r % l.ph);
      acc_t* dst = p + r * l.pw * cin;
      if (ir < 0 || ir >= g.height || pc_hi <= pc_lo) {
        std::fill(dst, dst + l.pw * cin, acc_t(0));
        continue;
      }
      std::fill(dst, dst + pc_lo * cin, acc_t(0));
      std::fill(dst + pc_hi * cin, dst + l.pw * cin, acc_t(0));
      const scalar_t* src = xp + b * sb + ir * sh + l.image_col(g, pc_lo) * sw;
      cpu::copy_2d(src, sw, sc, dst + pc_lo * cin, cin, int64_t{1}, pc_hi - pc_lo, cin);
    }
  });
  return p;
}

// grad_y in Q: pixel-major, channels padded to co_pad, with a zero border.
template <typename scalar_t, typename acc_t>
const acc_t* pack_grad_output(const Tensor& gy, const Geometry& g, const Layout& l) {
  acc_t* q = scratch<acc_t>(kGradOutputSlot, g.batch * l.qh * l.qw * l.co_pad);
  const scalar_t* gp = gy.data_ptr<scalar_t>();
  const int64_t sb = gy.stride(0), sc = gy.stride(1), sh = gy.stride(2), sw = gy.stride(3);
  const int64_t row_size = l.qw * l.co_pad;
  const int64_t rows_grain = grain(kParallelCopies, row_size, 16);
  at::parallel_for(0, g.batch * l.qh, rows_grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / l.qh, oi = r % l.qh - l.q_row0;
      acc_t* dst = q + r * row_size;
      if (oi < 0 || oi >= g.out_h()) {
        std::fill(dst, dst + row_size, acc_t(0));
        continue;
      }
      // Zero the border and the channel padding, then fill in the row of grad_y.
      std::fill(dst, dst + l.q_col0 * l.co_pad, acc_t(0));
      std::fill(dst + (l.q_col0 + g.out_w()) * l.co_pad, dst + row_size, acc_t(0));
      acc_t* inner = dst + l.q_col0 * l.co_pad;
      if (l.co_pad != g.out_channels) {
        for (int64_t j = 0; j < g.out_w(); ++j)
          std::fill(inner + j * l.co_pad + g.out_channels, inner + (j + 1) * l.co_pad, acc_t(0));
      }
      cpu::copy_2d(gp + b * sb + oi * sh, sw, sc, inner, l.co_pad, int64_t{1}, g.out_w(),
                   g.out_channels);
    }
  });
  return q;
}

constexpr int64_t kPackBlock = 16;

// The visible taps' weights as [tap][k][n_pad]: k = input channel and n = output channel for the
// forward pass (transposed = false), the other way round for grad-input. The centre tap carries
// the colour mask.
template <typename acc_t>
int64_t packed_weight_size(const Geometry& g, bool transposed, int64_t n_pad) {
  return static_cast<int64_t>(g.taps.size()) * (transposed ? g.out_channels : g.in_channels) *
         n_pad;
}

template <typename scalar_t, typename acc_t>
void pack_weight_into(const Tensor& w, const Geometry& g, bool transposed, int64_t n_pad,
                      acc_t* packed) {
  const int64_t nk = transposed ? g.out_channels : g.in_channels;
  const int64_t nn = transposed ? g.in_channels : g.out_channels;
  std::fill_n(packed, packed_weight_size<acc_t>(g, transposed, n_pad), acc_t(0));
  // The strides in locals: the compiler cannot hoist Tensor::stride() past the stores.
  const int64_t k_stride = transposed ? w.stride(0) : w.stride(1);
  const int64_t n_stride = transposed ? w.stride(1) : w.stride(0);
  const std::vector<int64_t> centre = centre_inputs(g);
  const scalar_t* wp = w.data_ptr<scalar_t>();
  const int64_t ty_stride = w.stride(2), tx_stride = w.stride(3);
  // A transpose in blocks of kPackBlock n, the taps innermost: the kPackBlock lines read for one
  // k hold the next k's values and every tap's, so each line of the weight is read from L2 once
  // (once per tap, tap-outermost, cost a one-pixel 64 -> 64 3x3 call 8% more).
  for (int64_t nb = 0; nb < nn; nb += kPackBlock) {
    for (int64_t k = 0; k < nk; ++k) {
      for (size_t t = 0; t < g.taps.size(); ++t) {
        const Tap& tap = g.taps[t];
        const scalar_t* wt = wp + tap.ty * ty_stride + tap.tx * tx_stride + k * k_stride;
        acc_t* dst = packed + (static_cast<int64_t>(t) * nk + k) * n_pad;
        // The centre tap carries input channel ci to the output channels whose count
        // centre[co] exceeds it, a suffix since the counts never decrease, and output channel
        // co from the input channels [0, centre[co]): bounds instead of a test per value.
        int64_t n0 = nb, n1 = std::min(nn, nb + kPackBlock);
        if (tap.centre && transposed) n1 = std::min(n1, centre[k]);
        if (tap.centre && !transposed)
          n0 = std::max<int64_t>(n0, std::upper_bound(centre.begin(), centre.end(), k) -
                                         centre.begin());
        for (int64_t n = n0; n < n1; ++n) dst[n] = static_cast<acc_t>(wt[n * n_stride]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
const acc_t* pack_weight(const Tensor& w, const Geometry& g, bool transposed, int64_t n_pad) {
  acc_t* packed = scratch<acc_t>(kWeightSlot, packed_weight_size<acc_t>(g, transposed, n_pad));
  pack_weight_into<scalar_t, acc_t>(w, g, transposed, n_pad, packed);
  return packed;
}

// Runs one pixel row of a gather pass: out[j][n] = sum_taps sum_k A[j, tap][k] * B[tap][k][n] for
// the row's `width` pixels, tiling pixels by rows and n by up to four SIMD vectors.
template <typename acc_t>
void gather_row(const acc_t* a_row, const acc_t* b, const std::vector<Segment>& segs,
                int64_t width, int64_t n_pad, int64_t a_pixel_stride, int64_t k, acc_t* out) {
  const int64_t lanes = cpu::lanes<acc_t>();
  for (int64_t n0 = 0; n0 < n_pad; n0 += cpu::kernels().max_vectors * lanes) {
    const int vectors =
        static_cast<int>(std::min<int64_t>(cpu::kernels().max_vectors, (n_pad - n0) / lanes));
    const EvenTiles tiles(width, cpu::kernels().max_rows[vectors]);
    const TileArgs args{a_pixel_stride, 1, n_pad, k, n_pad, false};
    for (int64_t i = 0; i < tiles.count; ++i) {
      const int64_t j0 = tiles.start(i), rows = tiles.start(i + 1) - j0;
      cpu::tile_kernel<acc_t>(static_cast<int>(rows), vectors, true)(
          a_row + j0 * a_pixel_stride, b + n0, segs.data(), static_cast<int64_t>(segs.size()),
          args, out + j0 * n_pad + n0);
    }
  }
}

// The forward pass's output pixels as lines of `width` pixels, each line one gather_row: the
// window's rows, or, for a window one pixel wide (a sampler's pixel), the batch, image b's pixel
// being b * ph * pw pixels further on in P, so that one register tile covers several images
// instead of one pixel. Each output element sums the same taps and channels in the same order
// either way, so a window's outputs equal the full map's bit for bit.
struct Lines {
  int64_t count, width;
  int64_t p_stride;  // P's elements from one pixel of a line to the next
  int64_t y_stride;  // y's elements from one pixel of a line to the next
  bool across_batch;

  Lines(const Geometry& g, const Layout& l, const Tensor& y) : across_batch(g.out_w() == 1) {
    count = across_batch ? g.out_h() : g.batch * g.out_h();
    width = across_batch ? g.batch : g.out_w();
    p_stride = (across_batch ? l.ph * l.pw : 1) * g.in_channels;
    y_stride = across_batch ? y.stride(0) : y.stride(3);
  }
  // The image and output row of line r's first pixel.
  int64_t image(const Geometry& g, int64_t r) const { return across_batch ? 0 : r / g.out_h(); }
  int64_t row(const Geometry& g, int64_t r) const { return across_batch ? r : r % g.out_h(); }
};

// The bias in the compute dtype, padded with zeros to co_pad.
template <typename acc_t>
std::vector<acc_t> padded_bias(const std::optional<Tensor>& bias, const Geometry& g,
                               int64_t co_pad) {
  std::vector<acc_t> b(co_pad, acc_t(0));
  if (bias.has_value()) {
    const Tensor bc = bias->scalar_type() == at::CppTypeToScalarType<acc_t>::value
                          ? *bias
                          : bias->to(at::CppTypeToScalarType<acc_t>::value);
    const acc_t* bp = bc.const_data_ptr<acc_t>();
    for (int64_t co = 0; co < g.out_channels; ++co) b[co] = bp[co * bc.stride(0)];
  }
  return b;
}

// prepacked: the forward's packed weight (masked_conv2d_pack_weight), or null to pack it here.
template <typename scalar_t>
Tensor forward_impl(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                    const Geometry& g, const Tensor* prepacked = nullptr) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const Layout l(g, cpu::kPadLanes<acc_t>);
  Tensor y = at::empty({g.batch, g.out_channels, g.out_h(), g.out_w()},
                       x.options().memory_format(x.suggest_memory_format()));
  if (y.numel() == 0) return y;
  const acc_t* p = pack_input<scalar_t, acc_t>(x, g, l);
  const acc_t* w = prepacked ? prepacked->const_data_ptr<acc_t>()
                             : pack_weight<scalar_t, acc_t>(weight, g, false, l.co_pad);
  const std::vector<acc_t> b = padded_bias<acc_t>(bias, g, l.co_pad);
  const int64_t d = g.dilation, cin = g.in_channels;
  std::vector<Segment> segs;
  segs.reserve(g.taps.size());
  for (size_t t = 0; t < g.taps.size(); ++t)
    segs.push_back({(g.taps[t].ty * d * l.pw + g.taps[t].tx * d) * cin,
                    static_cast<int64_t>(t) * cin * l.co_pad});
  const Lines lines(g, l, y);
  const int64_t line_grain =
      grain(kParallelMacs, lines.width * static_cast<int64_t>(segs.size()) * cin * l.co_pad);
  scalar_t* yp = y.data_ptr<scalar_t>();
  at::parallel_for(0, lines.count, line_grain, [&](int64_t r0, int64_t r1) {
    acc_t* row = scratch<acc_t>(kRowSlot, lines.width * l.co_pad);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bi = lines.image(g, r), oi = lines.row(g, r);
      gather_row(p + (bi * l.ph + oi) * l.pw * cin, w, segs, lines.width, l.co_pad,
                 lines.p_stride, cin, row);
      for (int64_t j = 0; j < lines.width; ++j)
        for (int64_t co = 0; co < g.out_channels; ++co) row[j * l.co_pad + co] += b[co];
      cpu::copy_2d(row, l.co_pad, int64_t{1}, yp + bi * y.stride(0) + oi * y.stride(2),
                   lines.y_stride, y.stride(1), lines.width, g.out_channels);
    }
  });
  return y;
}

// dL/dx: every image pixel of the window's receptive field gathers grad_y through the mirrored
// taps; pixels outside it get zero.
template <typename scalar_t, typename acc_t>
Tensor grad_input(const acc_t* q, const Tensor& x, const Tensor& weight,
                  const Geometry& g, const Layout& l) {
  const bool full = g.row0 == 0 && g.row1 == g.height && g.col0 == 0 && g.col1 == g.width;
  // at::zeros would drop the memory format: allocate in x's layout, then clear.
  Tensor gx = at::empty(x.sizes(), x.options().memory_format(x.suggest_memory_format()));
  if (!full) gx.zero_();
  if (gx.numel() == 0) return gx;
  const acc_t* w = pack_weight<scalar_t, acc_t>(weight, g, true, l.ci_pad);
  const int64_t d = g.dilation, cout = g.out_channels;
  std::vector<Segment> segs;
  for (size_t t = 0; t < g.taps.size(); ++t)
    segs.push_back({-(g.taps[t].ty * d * l.qw + g.taps[t].tx * d) * l.co_pad,
                    static_cast<int64_t>(t) * cout * l.ci_pad});
  const int64_t pr_lo = l.r_lo(g), pr_hi = l.r_hi(g), pc_lo = l.c_lo(g), pc_hi = l.c_hi(g);
  if (pr_hi <= pr_lo || pc_hi <= pc_lo) return gx;
  const int64_t rows = pr_hi - pr_lo, cols = pc_hi - pc_lo;
  scalar_t* gp = gx.data_ptr<scalar_t>();
  const int64_t row_grain =
      grain(kParallelMacs, cols * static_cast<int64_t>(segs.size()) * cout * l.ci_pad);
  at::parallel_for(0, g.batch * rows, row_grain, [&](int64_t r0, int64_t r1) {
    acc_t* row = scratch<acc_t>(kRowSlot, cols * l.ci_pad);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bi = r / rows, pr = pr_lo + r % rows;
      // Q holds grad_y at an offset of (q_row0, q_col0): P position (pr, pc) with tap (ty, tx)
      // reads grad_y(pr - ty*d, pc - tx*d).
      const acc_t* a = q + ((bi * l.qh + pr + l.q_row0) * l.qw + pc_lo + l.q_col0) * l.co_pad;
      gather_row(a, w, segs, cols, l.ci_pad, l.co_pad, cout, row);
      cpu::copy_2d(row, l.ci_pad, int64_t{1},
                   gp + bi * gx.stride(0) + l.image_row(g, pr) * gx.stride(2) +
                       l.image_col(g, pc_lo) * gx.stride(3),
                   gx.stride(3), gx.stride(1), cols, g.in_channels);
    }
  });
  return gx;
}

// Where grad-weight reads the input: image pixel (b, row, col), channel ci is at
// data + b * sb + (row - row0) * sh + (col - col0) * sw + ci * sc. Either x itself, when it is in
// the compute dtype with unit stride along channels or along width (channels_last or NCHW: no
// copy), or the packed P, whose border it then never reads.
template <typename acc_t>
struct InputView {
  const acc_t* data;
  int64_t sb, sc, sh, sw, row0, col0;
};

template <typename acc_t>
InputView<acc_t> packed_view(const acc_t* p, const Geometry& g, const Layout& l) {
  const int64_t cin = g.in_channels;
  return {p, l.ph * l.pw * cin, 1, l.pw * cin, cin, l.image_row(g, 0), l.image_col(g, 0)};
}

template <typename acc_t>
bool readable_in_place(const Tensor& x) {
  return x.scalar_type() == at::CppTypeToScalarType<acc_t>::value &&
         (x.stride(1) == 1 || x.stride(3) == 1);
}

// dL/dweight: for each visible tap, sum over output pixels of x(pixel + tap) (x) grad_y(pixel),
// over the pixels whose tap falls inside the image (the others read zeros). Tasks are (part of
// the rows: cpu/reduction_parts.h, tap, input-channel tile, output-channel block); each thread
// keeps its tasks and walks its parts' rows in chunks, so a chunk of the input and Q stays in
// cache across its tasks.
template <typename scalar_t, typename acc_t>
Tensor grad_weight(const InputView<acc_t>& in, const acc_t* q, const Tensor& weight,
                   const Geometry& g, const Layout& l) {
  const int64_t lanes = cpu::lanes<acc_t>();
  const int64_t ntaps = static_cast<int64_t>(g.taps.size()), cin = g.in_channels;
  const int64_t part_size = ntaps * cin * l.co_pad;
  cpu::AlignedVector<acc_t> packed(cpu::kReductionParts * part_size, acc_t(0));
  // Output-channel vectors per grad-weight tile: the level's widest tile.
  const int64_t max_vectors = cpu::kernels().max_vectors;
  const int64_t block = max_vectors * lanes;
  const int64_t co_blocks = (l.co_pad + block - 1) / block;
  const int64_t out_rows = g.batch * g.out_h();
  const bool unit_k = in.sw == 1;  // NCHW: pixels contiguous; else channels are (sc == 1)
  if (out_rows > 0 && g.out_w() > 0 && cin > 0 && ntaps > 0) {
    const int64_t d = g.dilation;
    // About 128 KiB of input and Q per chunk of rows.
    const int64_t chunk = std::max<int64_t>(
        1, (int64_t{32} << 10) / std::max<int64_t>(1, g.out_w() * (cin + l.co_pad)));
    struct Task {
      int64_t tap, ci0, rows, co0;
      int vectors;
    };
    std::vector<Task> tasks;  // one part's; part i runs them all over its rows
    for (int64_t t = 0; t < ntaps; ++t) {
      for (int64_t cb = 0; cb < co_blocks; ++cb) {
        const int64_t co0 = cb * block;
        const int vectors =
            static_cast<int>(std::min<int64_t>(max_vectors, (l.co_pad - co0) / lanes));
        const EvenTiles tiles(cin, cpu::kernels().max_rows[vectors]);
        for (int64_t i = 0; i < tiles.count; ++i)
          tasks.push_back({t, tiles.start(i), tiles.start(i + 1) - tiles.start(i), co0, vectors});
      }
    }
    const int64_t per_part = static_cast<int64_t>(tasks.size());
    const int64_t ntasks = cpu::kReductionParts * per_part;
    const int64_t task_grain =
        grain(kParallelMacs, out_rows * g.out_w() * ntaps * cin * l.co_pad / ntasks);
    at::parallel_for(0, ntasks, task_grain, [&](int64_t t0, int64_t t1) {
      std::vector<Segment> segs(chunk);
      cpu::for_each_part(t0, t1, per_part, out_rows, [&](int64_t part, int64_t first,
                                                          int64_t last, int64_t rows0,
                                                          int64_t rows1) {
        for (int64_t c0 = rows0; c0 < rows1; c0 += chunk) {
          const int64_t nrows = std::min(chunk, rows1 - c0);
          for (int64_t ti = first; ti < last; ++ti) {
            const Task& task = tasks[ti];
            const Tap& tap = g.taps[task.tap];
            const int64_t dy = (tap.ty - g.centre_y) * d, dx = (tap.tx - g.centre_x) * d;
            // The output columns [j0, j1) whose tap reads inside the image.
            const int64_t j0 = std::clamp<int64_t>(-dx - g.col0, 0, g.out_w());
            const int64_t j1 = std::clamp<int64_t>(g.width - dx - g.col0, j0, g.out_w());
            int64_t nseg = 0;
            for (int64_t r = 0; r < nrows; ++r) {
              const int64_t bi = (c0 + r) / g.out_h(), oi = (c0 + r) % g.out_h();
              const int64_t row = g.row0 + oi + dy;
              if (row < 0 || row >= g.height) continue;
              segs[nseg++] = {bi * in.sb + (row - in.row0) * in.sh +
                                  (g.col0 + j0 + dx - in.col0) * in.sw + task.ci0 * in.sc,
                              ((bi * l.qh + oi + l.q_row0) * l.qw + l.q_col0 + j0) * l.co_pad +
                                  task.co0};
            }
            const TileArgs args{unit_k ? in.sc : 1, unit_k ? 1 : in.sw, l.co_pad, j1 - j0,
                                l.co_pad, c0 > rows0};
            cpu::tile_kernel<acc_t>(static_cast<int>(task.rows), task.vectors, unit_k)(
                in.data, q, segs.data(), nseg, args,
                packed.data() + part * part_size + (task.tap * cin + task.ci0) * l.co_pad +
                    task.co0);
          }
        }
      });
    });
  }
  cpu::sum_parts(packed.data(), part_size);
  // Scatter into [out, in, kh, kw] in its own order, so that the writes run along memory.
  Tensor gw = at::zeros(weight.sizes(), weight.options().dtype(at::CppTypeToScalarType<acc_t>::value));
  acc_t* gp = gw.data_ptr<acc_t>();
  const std::vector<int64_t> centre = centre_inputs(g);
  for (int64_t co = 0; co < g.out_channels; ++co)
    for (int64_t ci = 0; ci < cin; ++ci)
      for (int64_t t = 0; t < ntaps; ++t) {
        const Tap& tap = g.taps[t];
        if (!tap.centre || ci < centre[co])
          gp[((co * cin + ci) * g.kh + tap.ty) * g.kw + tap.tx] =
              packed[(t * cin + ci) * l.co_pad + co];
      }
  return gw.to(weight.scalar_type());
}

// The forward op's checks and dispatch, with the weight packed here (packed == nullptr) or by
// masked_conv2d_pack_weight beforehand (masked_conv2d_prepacked).
Tensor forward_op(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                  int64_t mask_type, int64_t data_channels, int64_t dilation,
                  at::IntArrayRef window, const Tensor* packed) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu() &&
                  (packed == nullptr || packed->device().is_cpu()),
              "genfast: the cpu backend needs CPU tensors");
  const Geometry g = make_geometry(x, weight, mask_type, data_channels, dilation, window);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels && bias->device().is_cpu(),
                "genfast: bias must be a CPU tensor of shape [", g.out_channels, "]");
  }
  if (is_pointwise(g) && pointwise_forward_applies(x, g))
    return pointwise_forward(x, weight, bias, g);  // reads the weight as it is
  Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d", [&] {
    if (packed != nullptr) {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const Layout l(g, cpu::kPadLanes<acc_t>);
      const int64_t size = packed_weight_size<acc_t>(g, false, l.co_pad);
      TORCH_CHECK(packed->scalar_type() == at::CppTypeToScalarType<acc_t>::value &&
                      packed->is_contiguous() && packed->numel() == size,
                  "genfast: packed_weight does not come from masked_conv2d_pack_weight for this "
                  "weight and input (expected ", size, " contiguous ",
                  at::CppTypeToScalarType<acc_t>::value, " values, got ", packed->numel(), " ",
                  packed->scalar_type(), ")");
    }
    out = forward_impl<scalar_t>(x, weight, bias, g, packed);
  });
  return out;
}

Tensor masked_conv2d_cpu(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                         int64_t mask_type, int64_t data_channels, int64_t dilation,
                         at::IntArrayRef window) {
  return forward_op(x, weight, bias, mask_type, data_channels, dilation, window, nullptr);
}

// The forward's packed weight, for a caller that runs many forwards with one weight (a cached
// sampler, one pixel at a time): masked_conv2d_prepacked then skips the packing, 60% of a
// one-pixel 64 -> 64 3x3 call. x stands for the inputs to come (its channels
// and dtype); only the taps and channels, never the window, shape the result.
Tensor masked_conv2d_pack_weight_cpu(const Tensor& x, const Tensor& weight, int64_t mask_type,
                                     int64_t data_channels, int64_t dilation) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "genfast: the cpu backend needs CPU tensors");
  const Geometry g = make_geometry(x, weight, mask_type, data_channels, dilation, {});
  Tensor packed;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d_pack_weight", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const Layout l(g, cpu::kPadLanes<acc_t>);
    packed = at::empty({packed_weight_size<acc_t>(g, false, l.co_pad)},
                       x.options().dtype(at::CppTypeToScalarType<acc_t>::value));
    pack_weight_into<scalar_t, acc_t>(weight, g, false, l.co_pad, packed.data_ptr<acc_t>());
  });
  return packed;
}

// masked_conv2d with the weight packed beforehand by masked_conv2d_pack_weight from this weight
// (the caller keeps the two in step); the same bits as masked_conv2d. Inference only: no
// autograd.
Tensor masked_conv2d_prepacked_cpu(const Tensor& x, const Tensor& packed, const Tensor& weight,
                                   const std::optional<Tensor>& bias, int64_t mask_type,
                                   int64_t data_channels, int64_t dilation,
                                   at::IntArrayRef window) {
  return forward_op(x, weight, bias, mask_type, data_channels, dilation, window, &packed);
}

std::tuple<Tensor, Tensor, Tensor> masked_conv2d_backward_cpu(
    const Tensor& grad_y, const Tensor& x, const Tensor& weight, int64_t mask_type,
    int64_t data_channels, int64_t dilation, at::IntArrayRef window,
    std::array<bool, 3> output_mask) {
  const Geometry g = make_geometry(x, weight, mask_type, data_channels, dilation, window);
  check_grad_output(grad_y, g);
  Tensor gx, gw, gb;
  if (is_pointwise(g)) {
    std::tie(gx, gw) = pointwise_backward(grad_y, x, weight, g, output_mask);
    return {gx, gw, grad_bias(grad_y, x, output_mask[2])};
  }
  const Tensor gy = grad_y.to(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_conv2d_backward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const Layout l(g, cpu::kPadLanes<acc_t>);
    const acc_t* q = nullptr;
    if (output_mask[0] || output_mask[1]) q = pack_grad_output<scalar_t, acc_t>(gy, g, l);
    gx = output_mask[0] ? grad_input<scalar_t, acc_t>(q, x, weight, g, l) : at::empty({0}, x.options());
    if (output_mask[1]) {
      // x in place when its layout allows, which saves packing it again after the forward.
      const InputView<acc_t> in =
          readable_in_place<acc_t>(x)
              ? InputView<acc_t>{x.const_data_ptr<acc_t>(), x.stride(0), x.stride(1),
                                 x.stride(2), x.stride(3), 0, 0}
              : packed_view(pack_input<scalar_t, acc_t>(x, g, l), g, l);
      gw = grad_weight<scalar_t, acc_t>(in, q, weight, g, l);
    } else {
      gw = at::empty({0}, weight.options());
    }
  });
  gb = grad_bias(grad_y, x, output_mask[2]);
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("masked_conv2d", &masked_conv2d_cpu);
  m.impl("masked_conv2d_backward", &masked_conv2d_backward_cpu);
  m.impl("masked_conv2d_pack_weight", &masked_conv2d_pack_weight_cpu);
  m.impl("masked_conv2d_prepacked", &masked_conv2d_prepacked_cpu);
}

}  // namespace genfast::masked_conv
