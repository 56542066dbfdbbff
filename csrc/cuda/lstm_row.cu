// CUDA kernels of genfast::lstm_rows: the row LSTM recurrence of PixelRNN (van den Oord et al.
// 2016, "Pixel Recurrent Neural Networks", section 3.1, eq. 3), forward and backward, with the
// semantics of the reference lstm_rows_ref in genfast/ops/lstm_row.py:
//   pre_r = gates_in_r + bias + sum_t W[:, :, t] @ h_{r-1}[:, l + t - pad_left]  (zero outside)
//   i, f, o = sigmoid(pre_i, pre_f, pre_o), g = tanh(pre_g)
//   c_r = f * c_{r-1} + i * g,  h_r = o * tanh(c_r)
//
// Persistent design: one block per batch element walks all R rows itself, so a whole forward or
// backward is one launch. The previous row's state is read back from global memory (the output
// rows of h and c, or per-batch-element scratch that stays in L1/L2), and __syncthreads, which
// also makes the block's global writes visible to the whole block, separates a row's writes
// from the next row's reads.
//
// A row's state-to-state convolution is the GEMM [4D, D*k] x [D*k, L] whose right operand is
// gathered from h_{r-1} (reduction index e*k + t reads h_{r-1}[e, l + t - pad_left]), so W is
// used as stored, viewed as [4D, D*k]. The block computes it in tiles of 32 hidden channels x 32
// positions with the four gates of each channel together, 2 x 2 outputs (x 4 gates) per thread,
// staging 16-long reduction chunks of W and of the gathered h in shared memory; the gate
// non-linearities and the cell update are the tile's epilogue.
//
// Backward walks the rows in reverse, two phases per row: (1) element-wise, the gate
// derivatives dL/dpre_r (from grad_h plus what reached h_r through row r+1's convolution, and
// dL/dc_r) and dL/dc_{r-1} = dL/dc_r * f; (2) the transposed convolution dL/dh_{r-1}[e, m] =
// sum_{o, t} W[o, e, t] dL/dpre_r[o, m - t + pad_left], the same tiled GEMM with the transposed
// weight [D, 4D*k]. grad_weight is a separate GEMM over every (batch, row, position) triple,
// split into parts that are added in a fixed order; grad_bias is dL/dpre summed by ATen. Every
// result is deterministic (no atomics).
//
// Accumulation, the cell state, the saved gates and dL/dpre are float (double for double);
// h keeps the input dtype, and the recurrence reads exactly the h it returns. Offsets inside one
// batch element are 32-bit (checked on the host), the batch element's base is 64-bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "device_math.cuh"
#include "launch.cuh"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

namespace genfast::lstm_row {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
constexpr int kTileD = 32;   // hidden channels (each with its four gates) of a row-GEMM tile
constexpr int kTileL = 32;   // positions of a row-GEMM tile
constexpr int kChunk = 16;   // reduction chunk staged in shared memory
constexpr int kPer = 2;      // a thread's outputs: kPer channels x kPer positions, 16 apart
// Grad-weight GEMM: 64 x 64 output tiles, 4 x 4 per thread; the reduction over (batch, row,
// position) is split into about kTargetBlocks blocks, at least kMinChunksPerSplit chunks each.
// Constants, so the split (and the result) does not depend on the GPU.
constexpr int kWTile = 64;
constexpr int kWPer = 4;
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinChunksPerSplit = 8;

static_assert(kTileD == 16 * kPer && kTileL == 16 * kPer && kThreads == 256,
              "a 16 x 16 thread grid covers the row tile");
static_assert(kWTile == 16 * kWPer, "a 16 x 16 thread grid covers the grad-weight tile");

using cuda::acc_type;
using cuda::exp_acc;
using cuda::tanh_acc;

// sigmoid from the exponential of a non-positive argument, which never overflows.
template <typename A>
__device__ __forceinline__ A sigmoid(A x) {
  const A e = exp_acc(-fabs(x));
  const A q = A(1) / (A(1) + e);
  return x >= A(0) ? q : e * q;  // NaN takes e * q, which is NaN
}

// 1 - tanh(x)^2 as 4t / (1 + t)^2, t = exp(-2|x|): no cancellation where tanh(x) nears +-1.
template <typename A>
__device__ __forceinline__ A sech2(A x) {
  const A t = exp_acc(A(-2) * fabs(x));
  const A q = A(1) / (A(1) + t);
  return A(4) * t * q * q;
}

// Sizes of one call. Offsets inside a batch element fit int (lstm_rows_check).
struct RowParams {
  int64_t batch;
  int hidden, rows, length, ksize, pad_left;
};

// ----------------------------------------------------------------------------- forward

// One block per batch element: occupancy does not matter, so the launch bounds ask for a single
// resident block, which stops ptxas from spilling to fit more blocks per SM (as backward's).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 1)
forward_kernel(scalar_t* __restrict__ h,             // out [B, D, R, L]
               acc_t* __restrict__ c,                // out [B, D, R, L]
               acc_t* __restrict__ gates,            // out [B, 4D, R, L] i, f, o, g
               const scalar_t* __restrict__ x,       // in [B, 4D, R, L] gates_in
               const scalar_t* __restrict__ w,       // in [4D, D*k]
               const acc_t* __restrict__ bias,       // in [4D]
               const scalar_t* __restrict__ h0,      // in [B, D, L]
               const acc_t* __restrict__ c0,         // in [B, D, L]
               RowParams p) {
  GENFAST_SHARED(acc_t, w_s, [4][kChunk][kTileD + 1]);  // +1: the staging writes hit distinct banks
  GENFAST_SHARED(acc_t, h_s, [kChunk][kTileL]);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t b = blockIdx.x;
  const int D = p.hidden, R = p.rows, L = p.length, K = p.ksize;
  const int plane = R * L;  // channel stride of a [B, C, R, L] tensor, for any C
  const int red = D * K;    // reduction length
  const int gate_step = D * plane;
  // This batch element in each tensor. h and c are also read (as the previous row) through
  // these pointers: never through a read-only alias, since the kernel writes them.
  const scalar_t* xb = x + b * 4 * gate_step;
  acc_t* gb = gates + b * 4 * gate_step;
  scalar_t* hb = h + b * gate_step;
  acc_t* cb = c + b * gate_step;
  const scalar_t* h0b = h0 + b * D * L;
  const acc_t* c0b = c0 + b * D * L;

  for (int r = 0; r < R; ++r) {
    // The previous row: h0 / c0 ([B, D, L], channels L apart) for row 0, else row r-1.
    const scalar_t* hp = r == 0 ? h0b : hb + (r - 1) * L;
    const acc_t* cp = r == 0 ? c0b : cb + (r - 1) * L;
    const int pcs = r == 0 ? L : plane;
    for (int d0 = 0; d0 < D; d0 += kTileD) {
      for (int l0 = 0; l0 < L; l0 += kTileL) {
        acc_t acc[4][kPer][kPer] = {};
        for (int k0 = 0; k0 < red; k0 += kChunk) {
          // W chunk: lanes along the reduction index (contiguous in W).
          for (int idx = tid; idx < 4 * kChunk * kTileD; idx += kThreads) {
            const int kk = idx % kChunk, dd = (idx / kChunk) % kTileD, q = idx / (kChunk * kTileD);
            const int d = d0 + dd, kr = k0 + kk;
            w_s[q][kk][dd] = d < D && kr < red
                                 ? static_cast<acc_t>(w[static_cast<int64_t>(q * D + d) * red + kr])
                                 : acc_t(0);
          }
          // Gathered h chunk: lanes along positions.
          for (int idx = tid; idx < kChunk * kTileL; idx += kThreads) {
            const int ll = idx % kTileL, kk = idx / kTileL;
            const int kr = k0 + kk, l = l0 + ll;
            acc_t v = acc_t(0);
            if (kr < red && l < L) {
              const int e = kr / K, pos = l + (kr - e * K) - p.pad_left;
              if (pos >= 0 && pos < L) v = static_cast<acc_t>(hp[e * pcs + pos]);
            }
            h_s[kk][ll] = v;
          }
          __syncthreads();
#pragma unroll
          for (int kk = 0; kk < kChunk; ++kk) {
            acc_t hv[kPer], wv[4][kPer];
#pragma unroll
            for (int j = 0; j < kPer; ++j) hv[j] = h_s[kk][tx + 16 * j];
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
              for (int i = 0; i < kPer; ++i) wv[q][i] = w_s[q][kk][ty + 16 * i];
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
              for (int i = 0; i < kPer; ++i)
#pragma unroll
                for (int j = 0; j < kPer; ++j) acc[q][i][j] += wv[q][i] * hv[j];
          }
          __syncthreads();  // the chunk is consumed before the next one is staged
        }
        // Epilogue: gates, cell and hidden state of this thread's outputs.
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int d = d0 + ty + 16 * i;
          if (d >= D) continue;
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const int l = l0 + tx + 16 * j;
            if (l >= L) continue;
            const int off = d * plane + r * L + l;
            acc_t pre[4];
#pragma unroll
            for (int q = 0; q < 4; ++q)
              pre[q] = acc[q][i][j] + bias[q * D + d] + static_cast<acc_t>(xb[q * gate_step + off]);
            const acc_t gi = sigmoid(pre[0]), gf = sigmoid(pre[1]), go = sigmoid(pre[2]);
            const acc_t gg = tanh_acc(pre[3]);
            const acc_t cn = gf * cp[d * pcs + l] + gi * gg;
            gb[off] = gi;
            gb[gate_step + off] = gf;
            gb[2 * gate_step + off] = go;
            gb[3 * gate_step + off] = gg;
            cb[off] = cn;
            hb[off] = static_cast<scalar_t>(go * tanh_acc(cn));
          }
        }
      }
    }
    __syncthreads();  // row r's h is complete before any thread gathers it for row r + 1
  }
}

// ----------------------------------------------------------------------------- backward

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 1)
backward_kernel(acc_t* __restrict__ dpre,            // out [B, 4D, R, L] dL/d(pre-activations)
                acc_t* __restrict__ dh,              // in/out [B, D, L] zeros in, grad_h0 out
                acc_t* __restrict__ dc,              // in/out [2, B, D, L] half 0 zeros in,
                                                     //   grad_c0 in half R % 2 out
                const scalar_t* __restrict__ grad_h,  // in [B, D, R, L]
                const acc_t* __restrict__ grad_c,    // in [B, D, R, L]
                const acc_t* __restrict__ c,         // in [B, D, R, L] forward cell states
                const acc_t* __restrict__ gates,     // in [B, 4D, R, L] forward activations
                const acc_t* __restrict__ c0,        // in [B, D, L]
                const acc_t* __restrict__ wt,        // in [D, 4D*k]: wt[e][o*k + t] = W[o][e][t]
                RowParams p) {
  GENFAST_SHARED(acc_t, w_s, [kChunk][kTileD + 1]);
  GENFAST_SHARED(acc_t, d_s, [kChunk][kTileL]);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t b = blockIdx.x;
  const int D = p.hidden, R = p.rows, L = p.length, K = p.ksize;
  const int plane = R * L;
  const int red = 4 * D * K;
  const int gate_step = D * plane;
  const int state = D * L;  // elements of one batch element's [D, L] state
  acc_t* dpb = dpre + b * 4 * gate_step;
  const acc_t* gb = gates + b * 4 * gate_step;
  const scalar_t* ghb = grad_h + b * gate_step;
  const acc_t* gcb = grad_c + b * gate_step;
  const acc_t* cb = c + b * gate_step;
  acc_t* dhb = dh + b * state;
  acc_t* dcb = dc + b * state;
  const acc_t* c0b = c0 + b * state;
  const int64_t half = p.batch * state;  // elements in one half of dc

  for (int j = 0; j < R; ++j) {
    const int r = R - 1 - j;
    // dL/dc_r through row r+1 comes in one half of dc; dL/dc_{r-1} goes to the other.
    const acc_t* dc_in = dcb + (j & 1) * half;
    acc_t* dc_out = dcb + ((j + 1) & 1) * half;
    const acc_t* cp = r == 0 ? c0b : cb + (r - 1) * L;
    const int pcs = r == 0 ? L : plane;
    // Phase 1, element-wise over (d, l): the gate derivatives of row r.
    for (int idx = tid; idx < state; idx += kThreads) {
      const int d = idx / L, l = idx - d * L;
      const int off = d * plane + r * L + l;
      const acc_t gh = static_cast<acc_t>(ghb[off]) + dhb[idx];
      const acc_t gi = gb[off], gf = gb[gate_step + off];
      const acc_t go = gb[2 * gate_step + off], gg = gb[3 * gate_step + off];
      const acc_t cr = cb[off];
      const acc_t tc = tanh_acc(cr);
      const acc_t gc = gcb[off] + dc_in[idx] + gh * go * sech2(cr);
      dpb[off] = gc * gg * gi * (acc_t(1) - gi);
      dpb[gate_step + off] = gc * cp[d * pcs + l] * gf * (acc_t(1) - gf);
      dpb[2 * gate_step + off] = gh * tc * go * (acc_t(1) - go);
      dpb[3 * gate_step + off] = gc * gi * (acc_t(1) - gg * gg);
      dc_out[idx] = gc * gf;
    }
    __syncthreads();  // row r's dL/dpre is complete, and every thread has read dh
    // Phase 2: dL/dh_{r-1}[e][m] = sum over (o, t) of wt[e][o*k + t] * dpre[o][m - t + pad].
    const acc_t* dprow = dpb + r * L;
    for (int e0 = 0; e0 < D; e0 += kTileD) {
      for (int l0 = 0; l0 < L; l0 += kTileL) {
        acc_t acc[kPer][kPer] = {};
        for (int k0 = 0; k0 < red; k0 += kChunk) {
          for (int idx = tid; idx < kChunk * kTileD; idx += kThreads) {
            const int kk = idx % kChunk, ee = idx / kChunk;
            const int e = e0 + ee, kr = k0 + kk;
            w_s[kk][ee] = e < D && kr < red ? wt[static_cast<int64_t>(e) * red + kr] : acc_t(0);
          }
          for (int idx = tid; idx < kChunk * kTileL; idx += kThreads) {
            const int ll = idx % kTileL, kk = idx / kTileL;
            const int kr = k0 + kk, m = l0 + ll;
            acc_t v = acc_t(0);
            if (kr < red && m < L) {
              const int o = kr / K, src = m - (kr - o * K) + p.pad_left;
              if (src >= 0 && src < L) v = dprow[o * plane + src];
            }
            d_s[kk][ll] = v;
          }
          __syncthreads();
#pragma unroll
          for (int kk = 0; kk < kChunk; ++kk) {
            acc_t dv[kPer], wv[kPer];
#pragma unroll
            for (int q = 0; q < kPer; ++q) {
              dv[q] = d_s[kk][tx + 16 * q];
              wv[q] = w_s[kk][ty + 16 * q];
            }
#pragma unroll
            for (int i = 0; i < kPer; ++i)
#pragma unroll
              for (int q = 0; q < kPer; ++q) acc[i][q] += wv[i] * dv[q];
          }
          __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int e = e0 + ty + 16 * i;
          if (e >= D) continue;
#pragma unroll
          for (int q = 0; q < kPer; ++q) {
            const int m = l0 + tx + 16 * q;
            if (m < L) dhb[e * L + m] = acc[i][q];
          }
        }
      }
    }
    __syncthreads();  // dh is complete before the next row's phase 1 reads it
  }
}

// partial[s][o][e*k + t] = sum over part s of the triples n = (b, r, l) of dpre[b][o][r][l] *
// h_{r-1}[b][e][l + t - pad_left], h_{-1} = h0: the GEMM [4D, N] x [N, D*k], N = B*R*L.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
grad_weight_kernel(acc_t* __restrict__ partial,       // out [splits][4D][D*k]
                   const acc_t* __restrict__ dpre,    // in [B, 4D, R, L]
                   const scalar_t* __restrict__ h,    // in [B, D, R, L]
                   const scalar_t* __restrict__ h0,   // in [B, D, L]
                   RowParams p, int splits) {
  GENFAST_SHARED(acc_t, a_s, [kChunk][kWTile + 1]);
  GENFAST_SHARED(acc_t, b_s, [kChunk][kWTile + 1]);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int D = p.hidden, R = p.rows, L = p.length, K = p.ksize;
  const int plane = R * L, gate_step = D * plane;
  const int m_total = 4 * D, n_total = D * K;
  const int o0 = blockIdx.x * kWTile, k0 = blockIdx.y * kWTile;
  const int64_t total = p.batch * plane;
  const int64_t split = blockIdx.z;
  const int64_t begin = split * total / splits, end = (split + 1) * total / splits;

  // Staging: lanes along the reduction (positions are contiguous in dpre and h), each thread
  // stages kWPer rows of each operand per chunk.
  const int s_n = tid % kChunk, s_row = tid / kChunk;  // s_row + 16 * e, e < kWPer
  acc_t acc[kWPer][kWPer] = {};
  for (int64_t n0 = begin; n0 < end; n0 += kChunk) {
    const int64_t n = n0 + s_n;
    const bool n_ok = n < end;
    int64_t bb = 0;
    int rr = 0, ll = 0;
    if (n_ok) {
      bb = n / plane;
      const int rem = static_cast<int>(n - bb * plane);
      rr = rem / L;
      ll = rem - rr * L;
    }
#pragma unroll
    for (int e = 0; e < kWPer; ++e) {
      const int o = o0 + s_row + 16 * e;
      a_s[s_n][s_row + 16 * e] =
          n_ok && o < m_total ? dpre[bb * 4 * gate_step + o * plane + rr * L + ll] : acc_t(0);
      const int kk = k0 + s_row + 16 * e;
      acc_t v = acc_t(0);
      if (n_ok && kk < n_total) {
        const int ch = kk / K, pos = ll + (kk - ch * K) - p.pad_left;
        if (pos >= 0 && pos < L) {
          v = static_cast<acc_t>(rr == 0 ? h0[(bb * D + ch) * L + pos]
                                         : h[bb * gate_step + ch * plane + (rr - 1) * L + pos]);
        }
      }
      b_s[s_n][s_row + 16 * e] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kChunk; ++kk) {
      acc_t av[kWPer], bv[kWPer];
#pragma unroll
      for (int i = 0; i < kWPer; ++i) {
        av[i] = a_s[kk][ty + 16 * i];
        bv[i] = b_s[kk][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < kWPer; ++i)
#pragma unroll
        for (int q = 0; q < kWPer; ++q) acc[i][q] += av[i] * bv[q];
    }
    __syncthreads();
  }
  acc_t* out = partial + split * m_total * n_total;
#pragma unroll
  for (int i = 0; i < kWPer; ++i) {
    const int o = o0 + ty + 16 * i;
    if (o >= m_total) continue;
#pragma unroll
    for (int q = 0; q < kWPer; ++q) {
      const int kk = k0 + tx + 16 * q;
      if (kk < n_total) out[static_cast<int64_t>(o) * n_total + kk] = acc[i][q];
    }
  }
}

// ----------------------------------------------------------------------------- host side

at::ScalarType acc_scalar_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

void check_dtype(at::ScalarType t) {
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
              "genfast: lstm_rows needs float16, bfloat16, float32 or float64 tensors, got ", t);
}

// Offsets inside one batch element are int; the margin covers a tile's masked lanes.
void check_fits_int32(int64_t hidden, int64_t rows, int64_t length, int64_t ksize) {
  constexpr int64_t limit = std::numeric_limits<int32_t>::max();
  TORCH_CHECK((4 * hidden + 64) * rows * length <= limit &&
                  (4 * hidden + 64) * (hidden + 64) * ksize <= limit,
              "genfast: lstm_rows on CUDA needs 4*D*R*L and 4*D*D*k (plus a tile's margin) below "
              "2^31 elements, got D=", hidden, ", R=", rows, ", L=", length, ", k=", ksize);
}

void check_pad(int64_t pad_left, int64_t ksize) {
  TORCH_CHECK(ksize >= 1 && pad_left >= 0 && pad_left < ksize, "genfast: pad_left must lie in [0, ",
              ksize, "), got ", pad_left);
}

void check_shape(const Tensor& t, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.sizes() == shape, "genfast: lstm_rows expects ", name, " of shape ", shape,
              ", got ", t.sizes());
}

void check_device(const Tensor& t, const Tensor& ref, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "genfast: ", name, " is on ", t.device(),
              " but the other tensors are on ", ref.device());
}

RowParams make_params(int64_t batch, int64_t hidden, int64_t rows, int64_t length, int64_t ksize,
                      int64_t pad_left) {
  RowParams p;
  p.batch = batch;
  p.hidden = static_cast<int>(hidden);
  p.rows = static_cast<int>(rows);
  p.length = static_cast<int>(length);
  p.ksize = static_cast<int>(ksize);
  p.pad_left = static_cast<int>(pad_left);
  return p;
}

std::tuple<Tensor, Tensor, Tensor> lstm_rows_cuda(const Tensor& gates_in, const Tensor& weight,
                                                  const std::optional<Tensor>& bias,
                                                  const Tensor& h0, const Tensor& c0,
                                                  int64_t pad_left) {
  TORCH_CHECK(cuda::on_device(gates_in),
              "genfast: lstm_rows_cuda needs CUDA tensors, got gates_in on ",
              gates_in.device());
  TORCH_CHECK(gates_in.dim() == 4 && weight.dim() == 3 && gates_in.size(1) % 4 == 0,
              "genfast: lstm_rows expects gates_in [B, 4D, R, L] and weight [4D, D, k], got ",
              gates_in.sizes(), " and ", weight.sizes());
  check_dtype(gates_in.scalar_type());
  TORCH_CHECK(weight.scalar_type() == gates_in.scalar_type(), "genfast: weight has dtype ",
              weight.scalar_type(), " but gates_in has ", gates_in.scalar_type());
  const int64_t batch = gates_in.size(0), hidden = gates_in.size(1) / 4;
  const int64_t rows = gates_in.size(2), length = gates_in.size(3), ksize = weight.size(2);
  check_shape(weight, {4 * hidden, hidden, ksize}, "weight");
  check_shape(h0, {batch, hidden, length}, "h0");
  check_shape(c0, {batch, hidden, length}, "c0");
  check_device(weight, gates_in, "weight");
  check_device(h0, gates_in, "h0");
  check_device(c0, gates_in, "c0");
  if (bias.has_value()) {
    check_shape(*bias, {4 * hidden}, "bias");
    check_device(*bias, gates_in, "bias");
  }
  check_pad(pad_left, ksize);
  check_fits_int32(hidden, rows, length, ksize);
  TORCH_CHECK(batch <= std::numeric_limits<int32_t>::max(), "genfast: lstm_rows batch too large");

  const c10::cuda::CUDAGuard guard(gates_in.device());
  const auto acc = acc_scalar_type(gates_in.scalar_type());
  Tensor h = at::empty({batch, hidden, rows, length}, gates_in.options());
  Tensor c = at::empty({batch, hidden, rows, length}, gates_in.options().dtype(acc));
  Tensor gates = at::empty({batch, 4 * hidden, rows, length}, gates_in.options().dtype(acc));
  if (h.numel() == 0) return {h, c, gates};
  const Tensor x = gates_in.contiguous();
  const Tensor w = weight.contiguous();
  const Tensor bs = bias.has_value() ? bias->to(acc).contiguous()
                                     : at::zeros({4 * hidden}, gates_in.options().dtype(acc));
  const Tensor h0c = h0.to(gates_in.scalar_type()).contiguous();
  const Tensor c0c = c0.to(acc).contiguous();
  const RowParams p = make_params(batch, hidden, rows, length, ksize, pad_left);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto dtype = gates_in.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lstm_rows_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    GENFAST_LAUNCH(static_cast<unsigned>(batch), kThreads, 0, stream,
                   forward_kernel<scalar_t, acc_t>)(
        h.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<acc_t>(),
        gates.mutable_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(),
        w.const_data_ptr<scalar_t>(), bs.const_data_ptr<acc_t>(),
        h0c.const_data_ptr<scalar_t>(), c0c.const_data_ptr<acc_t>(), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {h, c, gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_rows_backward_cuda(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& weight, const Tensor& h,
    const Tensor& c, const Tensor& gates, const Tensor& h0, const Tensor& c0, int64_t pad_left) {
  TORCH_CHECK(cuda::on_device(h),
              "genfast: lstm_rows_backward_cuda needs CUDA tensors, got h on ",
              h.device());
  TORCH_CHECK(h.dim() == 4 && weight.dim() == 3,
              "genfast: lstm_rows_backward expects h [B, D, R, L] and weight [4D, D, k], got ",
              h.sizes(), " and ", weight.sizes());
  check_dtype(h.scalar_type());
  const int64_t batch = h.size(0), hidden = h.size(1), rows = h.size(2), length = h.size(3);
  const int64_t ksize = weight.size(2);
  check_shape(weight, {4 * hidden, hidden, ksize}, "weight");
  check_shape(grad_h, h.sizes(), "grad_h");
  check_shape(grad_c, h.sizes(), "grad_c");
  check_shape(c, h.sizes(), "c");
  check_shape(gates, {batch, 4 * hidden, rows, length}, "gates");
  check_shape(h0, {batch, hidden, length}, "h0");
  check_shape(c0, {batch, hidden, length}, "c0");
  check_device(grad_h, h, "grad_h");
  check_device(grad_c, h, "grad_c");
  check_device(weight, h, "weight");
  check_device(c, h, "c");
  check_device(gates, h, "gates");
  check_device(h0, h, "h0");
  check_device(c0, h, "c0");
  check_pad(pad_left, ksize);
  check_fits_int32(hidden, rows, length, ksize);
  TORCH_CHECK(batch <= std::numeric_limits<int32_t>::max(), "genfast: lstm_rows batch too large");

  const c10::cuda::CUDAGuard guard(h.device());
  const auto dtype = h.scalar_type();
  const auto acc = acc_scalar_type(dtype);
  const auto acc_opts = h.options().dtype(acc);
  Tensor grad_h0 = at::zeros({batch, hidden, length}, acc_opts);
  Tensor dc = at::zeros({2, batch, hidden, length}, acc_opts);
  Tensor dpre = at::empty({batch, 4 * hidden, rows, length}, acc_opts);
  Tensor grad_weight = at::zeros({4 * hidden, hidden * ksize}, acc_opts);
  if (dpre.numel() > 0) {
    const Tensor gh = grad_h.to(dtype).contiguous();
    const Tensor gc = grad_c.to(acc).contiguous();
    const Tensor cc = c.to(acc).contiguous();
    const Tensor gt = gates.to(acc).contiguous();
    const Tensor c0c = c0.to(acc).contiguous();
    const Tensor h0c = h0.to(dtype).contiguous();
    const Tensor hc = h.contiguous();
    const Tensor wt =
        weight.to(acc).permute({1, 0, 2}).reshape({hidden, 4 * hidden * ksize}).contiguous();
    const RowParams p = make_params(batch, hidden, rows, length, ksize, pad_left);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    // Grad-weight split: constants only, so the summation order is GPU-independent.
    const int64_t m_tiles = (4 * hidden + kWTile - 1) / kWTile;
    const int64_t n_tiles = (hidden * ksize + kWTile - 1) / kWTile;
    TORCH_CHECK(n_tiles <= 65535, "genfast: lstm_rows has too many channels for the CUDA grid");
    const int64_t chunks = (batch * rows * length + kChunk - 1) / kChunk;
    const int64_t splits = std::max<int64_t>(
        1, std::min({kTargetBlocks / (m_tiles * n_tiles), chunks / kMinChunksPerSplit,
                     int64_t{65535}}));
    Tensor partial = at::empty({splits, 4 * hidden, hidden * ksize}, acc_opts);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lstm_rows_backward", [&] {
      using acc_t = acc_type<scalar_t>;
      GENFAST_LAUNCH(static_cast<unsigned>(batch), kThreads, 0, stream,
                     backward_kernel<scalar_t, acc_t>)(
          dpre.mutable_data_ptr<acc_t>(), grad_h0.mutable_data_ptr<acc_t>(),
          dc.mutable_data_ptr<acc_t>(), gh.const_data_ptr<scalar_t>(), gc.const_data_ptr<acc_t>(),
          cc.const_data_ptr<acc_t>(), gt.const_data_ptr<acc_t>(), c0c.const_data_ptr<acc_t>(),
          wt.const_data_ptr<acc_t>(), p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles),
                      static_cast<unsigned>(splits));
      GENFAST_LAUNCH(grid, kThreads, 0, stream, grad_weight_kernel<scalar_t, acc_t>)(
          partial.mutable_data_ptr<acc_t>(), dpre.const_data_ptr<acc_t>(),
          hc.const_data_ptr<scalar_t>(), h0c.const_data_ptr<scalar_t>(), p,
          static_cast<int>(splits));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    // The parts summed in a fixed order (ATen's reduction is deterministic).
    grad_weight = splits > 1 ? partial.sum(0) : partial[0];
  }
  const Tensor grad_bias = dpre.sum({0, 2, 3});
  return {dpre.to(dtype),
          grad_weight.view({4 * hidden, hidden, ksize}).to(weight.scalar_type()),
          grad_bias.to(weight.scalar_type()),
          grad_h0.to(h0.scalar_type()),
          dc[rows % 2].to(c0.scalar_type(), /*non_blocking=*/false, /*copy=*/true)};
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("lstm_rows", &lstm_rows_cuda);
  m.impl("lstm_rows_backward", &lstm_rows_backward_cuda);
}

}  // namespace genfast::lstm_row
