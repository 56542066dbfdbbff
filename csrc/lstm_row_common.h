// Shared by the CPU forward (lstm_row.cpp) and backward (lstm_row_backward.cpp) of
// genfast::lstm_rows: the shape, the column layout of a batch chunk, the row gather, the
// per-thread buffers, the batch chunking and the argument checks. See lstm_row.cpp for the design.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/kernel_table.h"
#include "cpu/scratch.h"

namespace genfast::lstm_row {

using at::Tensor;
using cpu::Segment;
using cpu::TileArgs;

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Calls with less work than this many multiply-adds per thread run on the calling thread. A
// launch costs microseconds while the other threads spin, far more when another process holds
// their cores: a one-row call of 16 x 128 gates, 3 wide (about 15 us of multiply-adds on one
// core), split over two threads, saved 7 us with both cores free and lost up to 200 us while a
// second process ran.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

// Splits n items into `count` near-equal parts: part i is [start(i), start(i + 1)).
struct EvenSplit {
  int64_t n, count;
  int64_t start(int64_t i) const { return count == 0 ? 0 : i * n / count; }
};
inline EvenSplit tiles_of(int64_t n, int64_t most) { return {n, (n + most - 1) / most}; }

// ----------------------------------------------------------------------------- layout

struct Shape {
  int64_t batch, hidden, gates, rows, length, taps, pad_left;
  // genfast::lstm_rows_conv's input-to-state convolution along the row (in_taps 0: none, the
  // pre-activations come in as gates_in): in_channels of x, tap t reads x at l + t - in_pad_left.
  int64_t in_channels = 0, in_taps = 0, in_pad_left = 0;
  // lstm_rows_conv on a skewed map (the Diagonal BiLSTM), skew_width W > 0: row r holds the
  // pixels (l, r - l) of an L x W image, live for first(r) <= l <= live_last(r). The positions
  // after them are padding whose states are all equal (zero input and initial state, a 2-tap
  // kernel reading l - 1 and l), so a row computes its live positions and the first padding one,
  // first(r)..last(r), and copies that one's state to the next position when there is one
  // (has_copy): all the next row reads of the padding. Nothing reads positions before first(r).
  int64_t skew_width = 0;
  int64_t first(int64_t r) const {
    return skew_width ? std::max<int64_t>(0, r - skew_width + 1) : 0;
  }
  int64_t last(int64_t r) const { return skew_width ? std::min(r + 1, length - 1) : length - 1; }
  int64_t live_last(int64_t r) const { return skew_width ? std::min(r, length - 1) : length - 1; }
  int64_t computed(int64_t r) const { return last(r) - first(r) + 1; }
  bool has_copy(int64_t r) const { return skew_width && r + 2 <= length - 1; }
  // The zero columns each side of a row that the widest convolution reads.
  int64_t border() const {
    return std::max({pad_left, taps - 1 - pad_left, in_pad_left, in_taps - 1 - in_pad_left});
  }
};

// A chunk of nb batch elements in batch-minor columns (cpu/interleave.h), the layout of an
// unskewed map: the outputs put position l of element b at column l * nb + b, and the
// zero-bordered buffers the convolutions read hold it at (border + l) * nb + b, so that tap t is
// t * nb columns on. Only the row's end pads to a whole vector: 4 elements of a 28-wide row are
// 7 vectors, where a zero column between elements would take 8.
template <typename acc_t>
struct Interleaved {
  static constexpr int64_t kVector = cpu::kPadLanes<acc_t>;
  int64_t nb;
  int64_t border;      // the zero positions each side
  int64_t count;       // nb * L rounded up to whole vectors: the columns each row computes
  int64_t pad_stride;  // row stride of the zero-bordered buffers, read up to count + 2 borders

  Interleaved(const Shape& s, int64_t nb) : nb(nb), border(s.border()) {
    count = round_up(nb * s.length, kVector);
    pad_stride = round_up(count + 2 * border * nb, kVector);
  }
  // The column of element 0 at position l of a zero-bordered buffer.
  int64_t padded(int64_t l) const { return (border + l) * nb; }
};

// Where the L values of gate channel n of (batch element b, row r) start in the saved activations
// and the gate gradients: lstm_rows' [B][4D][R][L] tensors (image-major, the layout of gates_in)
// or lstm_rows_conv's internal [R][B][4D][L] ones (row-major: what a batch chunk's row reads and
// writes is one contiguous block, which the cell maths stream through).
// A skewed map's (Shape::skew_width) keep row r's computed positions alone, [B][4D][computed(r)]
// from offset row_start[r]; `at` then gives the offset of position 0 (first(r) before the first
// one kept), so that every caller adds the position.
struct GateLayout {
  int64_t b, n, r;  // strides (n: of the rows' gate channels; `stride` for skewed maps)
  std::vector<int64_t> row_start;  // skewed maps: [R + 1] offsets of the rows, back() the size
  const Shape* skew = nullptr;
  std::vector<int64_t> sizes;  // of the tensor that holds them
  int64_t at(int64_t bi, int64_t ni, int64_t ri) const {
    if (!skew) return bi * b + ni * n + ri * r;
    return row_start[ri] + (bi * skew->gates + ni) * skew->computed(ri) - skew->first(ri);
  }
  int64_t stride(int64_t ri) const { return skew ? skew->computed(ri) : n; }  // of gate channels
};
inline GateLayout gate_layout(const Shape& s, bool row_major) {
  GateLayout gl = row_major
                      ? GateLayout{s.gates * s.length, s.length, s.batch * s.gates * s.length}
                      : GateLayout{s.gates * s.rows * s.length, s.rows * s.length, s.length};
  gl.sizes = row_major ? std::vector<int64_t>{s.rows, s.batch, s.gates, s.length}
                       : std::vector<int64_t>{s.batch, s.gates, s.rows, s.length};
  if (s.skew_width) {
    gl.skew = &s;
    gl.row_start.assign(1, 0);
    for (int64_t r = 0; r < s.rows; ++r)
      gl.row_start.push_back(gl.row_start.back() + s.batch * s.gates * s.computed(r));
    gl.sizes = {gl.row_start.back()};
  }
  return gl;
}

// The offset of the L contiguous values of (b, channel, row) in a contiguous [B][C][R][L] tensor.
inline int64_t run(const Shape& s, int64_t b, int64_t channels, int64_t channel, int64_t row) {
  return ((b * channels + channel) * s.rows + row) * s.length;
}

// The segments of a gather through a weight of `taps` taps of `rows` rows each ([.][taps][rows]):
// tap t reads the columns from first + t * step.
inline std::vector<Segment> taps(int64_t taps, int64_t rows, int64_t first, int64_t step) {
  std::vector<Segment> segs;
  for (int64_t t = 0; t < taps; ++t) segs.push_back({t * rows, first + t * step});
  return segs;
}

// out[n][j] (+)= sum over segments, sum over kk < kdim of A[n][seg.a + kk] * B[seg.b + kk][j]
// for n < rows and the `cols` columns (a multiple of the SIMD width), tiled by conv_tile.
template <typename acc_t>
void gather(const acc_t* a, int64_t rows, int64_t a_stride, int64_t kdim, const acc_t* b,
            int64_t b_stride, const std::vector<Segment>& segs, int64_t cols, acc_t* out,
            int64_t out_stride, bool accumulate = false) {
  const int64_t lanes = cpu::lanes<acc_t>();
  const TileArgs args{a_stride, 1, b_stride, kdim, out_stride, accumulate};
  for (int64_t c0 = 0; c0 < cols; c0 += cpu::kernels().max_vectors * lanes) {
    const int vectors =
        static_cast<int>(std::min<int64_t>(cpu::kernels().max_vectors, (cols - c0) / lanes));
    const EvenSplit tiles = tiles_of(rows, cpu::kernels().max_rows[vectors]);
    const auto tile = [&](int64_t i) {
      const int64_t n0 = tiles.start(i);
      cpu::tile_kernel<acc_t>(static_cast<int>(tiles.start(i + 1) - n0), vectors, true)(
          a + n0 * a_stride, b + c0, segs.data(), static_cast<int64_t>(segs.size()), args,
          out + n0 * out_stride + c0);
    };
    for (int64_t i = 0; i < tiles.count; ++i) tile(i);
  }
}

// Work buffers are kept per thread and reused (cpu/scratch.h). Returns n elements, zeroed if asked.
enum Slot { kSlot0, kSlot1, kSlot2, kSlot3, kSlot4, kSlot5, kSlot6, kSlots };
struct LstmRowsScratch;

template <typename T>
T* scratch(Slot slot, int64_t n, bool zero = true) {
  return cpu::thread_scratch<LstmRowsScratch, kSlots, T>(slot, n, zero);
}

// Chunks of the batch: one per thread, unless the call is too little work to pay for a
// parallel launch (a sampler's one-row call), and small enough that the rows of a chunk the
// next step reads (about 11 values per hidden channel and position, prefetched a step ahead)
// stay in a core's L2 cache; a 16-image chunk of a 28-wide, 64-channel layer did not.
// Interleaved chunks (an unskewed map) pad only to whole vectors of `lanes`, so their size
// matters as well: among the counts with a whole number of chunks per thread and chunks at
// most half as large again as that bound, the one that computes the fewest columns (16 images
// of a 28-wide row on 2 threads: 4 chunks of 4, 448 columns a row; 6 chunks of 2 or 3, 512).
inline int64_t chunk_count(const Shape& s, int64_t lanes) {
  constexpr int64_t kChunkBytes = int64_t{256} << 10;  // measured: 600 KB 5%, 300 KB 10% faster
  const int64_t per_image = 11 * s.hidden * s.length * static_cast<int64_t>(sizeof(float));
  const int64_t by_cache = (s.batch * per_image + kChunkBytes - 1) / kChunkBytes;
  const int64_t macs = s.batch * s.rows * s.length * s.gates * s.hidden * s.taps;
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), macs / kParallelMacs));
  // A whole number of chunks per thread: a thread with one chunk more would finish last (16
  // images in 5 chunks on 2 threads ran 25% slower than in 6).
  int64_t count = (std::max(by_cache, threads) + threads - 1) / threads * threads;
  count = std::max<int64_t>(1, std::min<int64_t>(s.batch, count));
  if (!s.skew_width) {
    const auto columns = [&](int64_t n) {  // computed per row by n interleaved chunks
      const EvenSplit chunks{s.batch, n};
      int64_t total = 0;
      for (int64_t i = 0; i < n; ++i)
        total += round_up((chunks.start(i + 1) - chunks.start(i)) * s.length, lanes);
      return total;
    };
    int64_t fewest = columns(count);
    for (int64_t n = threads; n <= s.batch; n += threads) {
      const int64_t largest = (s.batch + n - 1) / n;
      if (2 * largest * per_image > 3 * kChunkBytes && n < count) continue;
      if (const int64_t cols = columns(n); cols < fewest) fewest = cols, count = n;
    }
  }
  return count;
}

// Calls fn(b0, nb) for each chunk [b0, b0 + nb) of the batch (chunk_count's), in parallel.
template <typename acc_t, typename Fn>
void for_each_chunk(const Shape& s, Fn&& fn) {
  const EvenSplit chunks{s.batch, chunk_count(s, cpu::kPadLanes<acc_t>)};
  at::parallel_for(0, chunks.count, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) fn(chunks.start(i), chunks.start(i + 1) - chunks.start(i));
  });
}

// ----------------------------------------------------------------------------- the ops' arguments

inline at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The checks of weight, h0, c0 and pad_left against the batch B, rows R and length L.
inline Shape check_state_shapes(int64_t B, int64_t D, int64_t R, int64_t L, const Tensor& weight,
                                const Tensor& h0, const Tensor& c0, int64_t pad_left) {
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
  for (const Tensor* t : {&weight, &h0, &c0})
    TORCH_CHECK(t->device().is_cpu(), "genfast: the cpu backend of lstm_rows needs CPU tensors");
  return {B, D, 4 * D, R, L, k, pad_left};
}

inline Shape check_shapes(const Tensor& gates_in, const Tensor& weight, const Tensor& h0,
                          const Tensor& c0, int64_t pad_left) {
  TORCH_CHECK(gates_in.dim() == 4, "genfast: gates_in must be [B, 4D, R, L], got shape ",
              gates_in.sizes());
  TORCH_CHECK(gates_in.size(1) % 4 == 0, "genfast: gates_in has ", gates_in.size(1),
              " channels, not a multiple of 4 (the gates i, f, o, g)");
  TORCH_CHECK(gates_in.device().is_cpu(), "genfast: the cpu backend of lstm_rows needs CPU tensors");
  return check_state_shapes(gates_in.size(0), gates_in.size(1) / 4, gates_in.size(2),
                            gates_in.size(3), weight, h0, c0, pad_left);
}

// lstm_rows_conv: x [B, C, R, L] and in_weight [4D, C, in_taps] as well.
inline Shape check_conv_shapes(const Tensor& x, const Tensor& in_weight, const Tensor& weight,
                               const Tensor& h0, const Tensor& c0, int64_t in_pad_left,
                               int64_t pad_left, int64_t skew_width) {
  TORCH_CHECK(x.dim() == 4, "genfast: x must be [B, C, R, L], got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 3, "genfast: weight must be [4D, D, k], got ", weight.sizes());
  TORCH_CHECK(x.device().is_cpu() && in_weight.device().is_cpu(),
              "genfast: the cpu backend of lstm_rows_conv needs CPU tensors");
  Shape s = check_state_shapes(x.size(0), weight.size(1), x.size(2), x.size(3), weight, h0, c0,
                               pad_left);
  TORCH_CHECK(in_weight.dim() == 3 && in_weight.size(0) == s.gates &&
                  in_weight.size(1) == x.size(1) && in_weight.size(2) >= 1,
              "genfast: in_weight must be [4D, C, k_in] = [", s.gates, ", ", x.size(1),
              ", k_in >= 1], got ", in_weight.sizes());
  TORCH_CHECK(0 <= in_pad_left && in_pad_left <= in_weight.size(2),
              "genfast: in_pad_left must be in [0, ", in_weight.size(2), "], got ", in_pad_left);
  s.in_channels = x.size(1);
  s.in_taps = in_weight.size(2);
  s.in_pad_left = in_pad_left;
  TORCH_CHECK(skew_width >= 0, "genfast: skew_width must be >= 0, got ", skew_width);
  if (skew_width > 0) {
    TORCH_CHECK(s.taps == 2 && pad_left == 1 && s.in_taps == 1 && in_pad_left == 0,
                "genfast: a skewed map (skew_width > 0) needs k = 2, pad_left = 1, k_in = 1 and "
                "in_pad_left = 0 (the Diagonal BiLSTM's kernels)");
    TORCH_CHECK(s.rows == s.length + skew_width - 1, "genfast: a skewed map of ", s.length,
                " x ", skew_width, " has ", s.length + skew_width - 1, " rows, x has ", s.rows);
    TORCH_CHECK(h0.eq(0).all().item<bool>() && c0.eq(0).all().item<bool>(),
                "genfast: a skewed map needs zero h0 and c0");
    s.skew_width = skew_width;
  }
  return s;
}

inline Tensor as_compute(const Tensor& t, at::ScalarType type) { return t.to(type).contiguous(); }

}  // namespace genfast::lstm_row
