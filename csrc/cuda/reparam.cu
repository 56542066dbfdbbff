// CUDA kernels of genfast::gaussian_sample_kl: z = mu + exp(logvar / 2) * eps fused with
// KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * (mu^2 + exp(logvar) - 1 - logvar), one pass each way.
// Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 10 and appendix B.
//
// Same semantics as the CPU kernels in csrc/reparam.cpp. Each thread owns a chunk of 4
// consecutive latent elements (grid-stride over chunks), reads mu and logvar once and loops
// over the samples, so exp(logvar / 2) is computed once per element however many z are drawn.
// The noise is genfast's Philox stream (csrc/philox.h): stream element e = s * numel + i takes
// output e % 4 of the philox block with counter offset + e / 4. A chunk of sample s starts at
// e = s * numel + 4q, which is a block boundary unless numel % 4 != 0; then the chunk straddles
// two blocks and both are generated. Backward regenerates eps from the seed instead of storing it.
//
// The summed KL is deterministic: every block writes its partial sum (in float64, tree-reduced
// in a fixed order) to a buffer, and one more block adds the partials in a fixed order. The grid
// size depends only on numel, never on the device, so the result does not depend on the GPU.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../philox.h"
#include "../reparam_common.h"
#include "launch.cuh"

namespace genfast::reparam {
namespace {

using at::Tensor;

constexpr int kThreads = 256;
constexpr int kChunk = 4;  // latent elements per thread: one philox block's worth of normals
// Cap on the grid's x size; larger inputs are covered by the grid-stride loop. A constant
// (rather than a multiple of the SM count) keeps the summed KL identical on every GPU.
constexpr int64_t kMaxBlocks = 8192;
// With few chunks, forward blocks are also spread over the samples until about this many.
constexpr int64_t kTargetBlocks = 1024;
constexpr int kSumThreads = 1024;  // the block that adds the per-block KL partials

template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct NoiseStream {
  uint64_t key;     // philox key
  uint64_t offset;  // first philox counter
};

// Four elements loaded or stored with one vector access when the address allows it.
template <typename T>
struct alignas(kChunk * sizeof(T)) Vec4 {
  T v[kChunk];
};

template <typename T, typename A>
__device__ __forceinline__ void load4(const T* __restrict__ p, int n, bool vector, A out[kChunk]) {
  if (vector && n == kChunk) {
    const Vec4<T> v = *reinterpret_cast<const Vec4<T>*>(p);
#pragma unroll
    for (int k = 0; k < kChunk; ++k) out[k] = static_cast<A>(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kChunk; ++k) out[k] = k < n ? static_cast<A>(p[k]) : A(0);
  }
}

template <typename T, typename A>
__device__ __forceinline__ void store4(const A in[kChunk], int n, bool vector, T* __restrict__ p) {
  if (vector && n == kChunk) {
    Vec4<T> v;
#pragma unroll
    for (int k = 0; k < kChunk; ++k) v.v[k] = static_cast<T>(in[k]);
    *reinterpret_cast<Vec4<T>*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      if (k < n) p[k] = static_cast<T>(in[k]);
    }
  }
}

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

// One Box-Muller pair, as gaussian_noise_ref: u1 is clamped away from 0 for the log, and the
// angle 2 pi u2 is passed to sincospif as 2 u2 half-turns, which is exact in float.
__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float& n0, float& n1) {
  const float u1 = fmaxf(kMinUniform, uint_to_uniform(a));
  const float u2 = uint_to_uniform(b);
  const float radius = sqrtf(-2.0f * logf(u1));
  float s, c;
  sincospif(2.0f * u2, &s, &c);
  n0 = radius * c;
  n1 = radius * s;
}

// Normals of stream elements 4 * group + R + k, k = 0..3. R = 0 is one philox block; otherwise
// the window straddles blocks group and group + 1, and only the Box-Muller pairs it covers are
// computed (pairs R/2 .. (R+3)/2 of the 8 outputs of the two blocks).
template <int R>
__device__ __forceinline__ void normals_from(NoiseStream st, uint64_t group, float out[kChunk]) {
  if constexpr (R == 0) {
    const PhiloxOut b = philox4x32(st.key, st.offset + group);
    box_muller(b.x[0], b.x[1], out[0], out[1]);
    box_muller(b.x[2], b.x[3], out[2], out[3]);
  } else {
    const PhiloxOut lo = philox4x32(st.key, st.offset + group);
    const PhiloxOut hi = philox4x32(st.key, st.offset + group + 1);
    const uint32_t w[8] = {lo.x[0], lo.x[1], lo.x[2], lo.x[3], hi.x[0], hi.x[1], hi.x[2], hi.x[3]};
    float n[8];
#pragma unroll
    for (int p = R / 2; p <= (R + 3) / 2; ++p) box_muller(w[2 * p], w[2 * p + 1], n[2 * p], n[2 * p + 1]);
#pragma unroll
    for (int k = 0; k < kChunk; ++k) out[k] = n[R + k];
  }
}

// Normals of stream elements [first, first + 4). first % 4 is the same for every thread of a
// sample, so the switch does not diverge within a warp.
__device__ __forceinline__ void normals4(NoiseStream st, int64_t first, float out[kChunk]) {
  const uint64_t group = static_cast<uint64_t>(first) / 4;
  switch (static_cast<int>(first & 3)) {
    case 0: normals_from<0>(st, group, out); break;
    case 1: normals_from<1>(st, group, out); break;
    case 2: normals_from<2>(st, group, out); break;
    default: normals_from<3>(st, group, out); break;
  }
}

// The noise of stream elements [first, first + n): from eps if given, else from philox. Philox
// normals are float32 for every dtype, as on the CPU.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void noise4(const scalar_t* __restrict__ eps, NoiseStream st,
                                       int64_t first, int n, bool aligned, acc_t out[kChunk]) {
  if (eps != nullptr) {
    load4(eps + first, n, aligned && (first & 3) == 0, out);
  } else {
    float g[kChunk];
    normals4(st, first, g);
#pragma unroll
    for (int k = 0; k < kChunk; ++k) out[k] = static_cast<acc_t>(g[k]);
  }
}

// Sum over the block in a fixed order (warp shuffles, then warp 0 over the warp sums), so the
// result is the same on every run. Every thread of the block must call it; thread 0 gets the sum.
template <int kBlock>
__device__ __forceinline__ double block_sum(double v) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "whole warps, at most 1024 threads");
  constexpr int kWarps = kBlock / 32;
  GENFAST_SHARED(double, warp_sums, [kWarps]);
#pragma unroll
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  }
  return v;
}

// Grid: x over chunks of 4 latent elements (grid-stride), y over samples. Blocks with
// blockIdx.y == 0 also compute the KL. Null pointers stand for outputs not asked for.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
forward_kernel(scalar_t* __restrict__ z,                  // [samples * numel] or null
               acc_type<scalar_t>* __restrict__ kl,       // [numel] elementwise KL or null
               double* __restrict__ kl_partial,           // [gridDim.x] block KL sums or null
               const scalar_t* __restrict__ mu,           // [numel]
               const scalar_t* __restrict__ logvar,       // [numel]
               const scalar_t* __restrict__ eps,          // [samples * numel] or null: philox
               NoiseStream stream, int64_t numel, int64_t samples,
               bool aligned) {  // every base pointer is aligned to a Vec4 of its type
  using acc_t = acc_type<scalar_t>;
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  const bool do_kl = blockIdx.y == 0 && (kl != nullptr || kl_partial != nullptr);
  double kl_sum = 0.0;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < chunks;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = q * kChunk;
    const int n = numel - i0 < kChunk ? static_cast<int>(numel - i0) : kChunk;
    acc_t m[kChunk], lv[kChunk], sd[kChunk];
    load4(mu + i0, n, aligned, m);
    load4(logvar + i0, n, aligned, lv);
#pragma unroll
    for (int k = 0; k < kChunk; ++k) sd[k] = exp_acc(acc_t(0.5) * lv[k]);
    if (do_kl) {
      acc_t d[kChunk];
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        d[k] = acc_t(0.5) * (m[k] * m[k] + sd[k] * sd[k] - acc_t(1) - lv[k]);
        if (k < n) kl_sum += static_cast<double>(d[k]);
      }
      if (kl != nullptr) store4(d, n, aligned, kl + i0);
    }
    if (z == nullptr) continue;
    for (int64_t s = blockIdx.y; s < samples; s += gridDim.y) {
      const int64_t first = s * numel + i0;
      acc_t v[kChunk];
      noise4(eps, stream, first, n, aligned, v);
#pragma unroll
      for (int k = 0; k < kChunk; ++k) v[k] = m[k] + sd[k] * v[k];
      store4(v, n, aligned && (first & 3) == 0, z + first);
    }
  }
  // blockIdx.y is uniform over the block, so either all its threads reach block_sum or none.
  if (kl_partial != nullptr && blockIdx.y == 0) {
    const double total = block_sum<kThreads>(kl_sum);
    if (threadIdx.x == 0) kl_partial[blockIdx.x] = total;
  }
}

// kl = sum of the count partials, added in a fixed order by one block.
template <typename acc_t>
__global__ void __launch_bounds__(kSumThreads)
sum_partials_kernel(acc_t* __restrict__ kl,                 // [] summed KL
                    const double* __restrict__ partials,    // [count]
                    int64_t count) {
  double v = 0.0;
  for (int64_t j = threadIdx.x; j < count; j += kSumThreads) v += partials[j];
  v = block_sum<kSumThreads>(v);
  if (threadIdx.x == 0) *kl = static_cast<acc_t>(v);
}

// d/dmu: dz/dmu = 1, dKL/dmu = mu.  d/dlogvar: dz/dlogvar = std * eps / 2 and
// dKL/dlogvar = (exp(logvar) - 1) / 2 = (std^2 - 1) / 2. Grid-stride over chunks; each thread
// sums over all samples itself, so no cross-thread reduction is needed.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
backward_kernel(scalar_t* __restrict__ grad_mu,                 // [numel]
                scalar_t* __restrict__ grad_logvar,             // [numel]
                const scalar_t* __restrict__ grad_z,            // [samples * numel] or null
                const acc_type<scalar_t>* __restrict__ grad_kl, // [numel], [1] or null
                bool grad_kl_scalar,                            // grad_kl is one summed-KL grad
                const scalar_t* __restrict__ mu,                // [numel]
                const scalar_t* __restrict__ logvar,            // [numel]
                const scalar_t* __restrict__ eps,               // [samples * numel] or null
                NoiseStream stream, int64_t numel, int64_t samples, bool aligned) {
  using acc_t = acc_type<scalar_t>;
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < chunks;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = q * kChunk;
    const int n = numel - i0 < kChunk ? static_cast<int>(numel - i0) : kChunk;
    acc_t m[kChunk], lv[kChunk], sd[kChunk];
    load4(mu + i0, n, aligned, m);
    load4(logvar + i0, n, aligned, lv);
#pragma unroll
    for (int k = 0; k < kChunk; ++k) sd[k] = exp_acc(acc_t(0.5) * lv[k]);
    // sum_g = sum_s dL/dz_s, sum_gn = sum_s dL/dz_s * eps_s: all backward needs from z.
    acc_t sum_g[kChunk] = {}, sum_gn[kChunk] = {};
    for (int64_t s = 0; grad_z != nullptr && s < samples; ++s) {
      const int64_t first = s * numel + i0;
      acc_t g[kChunk], e[kChunk];
      load4(grad_z + first, n, aligned && (first & 3) == 0, g);
      noise4(eps, stream, first, n, aligned, e);
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        sum_g[k] += g[k];
        sum_gn[k] += g[k] * e[k];
      }
    }
    acc_t gk[kChunk];
    if (grad_kl == nullptr) {
#pragma unroll
      for (int k = 0; k < kChunk; ++k) gk[k] = acc_t(0);
    } else if (grad_kl_scalar) {
      const acc_t g = grad_kl[0];
#pragma unroll
      for (int k = 0; k < kChunk; ++k) gk[k] = g;
    } else {
      load4(grad_kl + i0, n, aligned, gk);
    }
    acc_t gm[kChunk], glv[kChunk];
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      gm[k] = sum_g[k] + gk[k] * m[k];
      glv[k] = acc_t(0.5) * (sd[k] * sum_gn[k] + gk[k] * (sd[k] * sd[k] - acc_t(1)));
    }
    store4(gm, n, aligned, grad_mu + i0);
    store4(glv, n, aligned, grad_logvar + i0);
  }
}

// Whether every non-null pointer is aligned for a Vec4 of its element type.
template <typename T>
bool vec_aligned(const T* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % sizeof(Vec4<T>) == 0;
}

int64_t chunk_blocks(int64_t numel) {
  const int64_t chunks = (numel + kChunk - 1) / kChunk;
  return std::min((chunks + kThreads - 1) / kThreads, kMaxBlocks);
}

NoiseStream make_stream(const Tensor& seed) {
  const Seed s = read_seed(seed);
  return NoiseStream{s.key, s.offset};
}

std::tuple<Tensor, Tensor> gaussian_sample_kl_cuda(const Tensor& mu, const Tensor& logvar,
                                                   const std::optional<Tensor>& eps,
                                                   const Tensor& seed, int64_t num_samples,
                                                   bool compute_z, int64_t kl_mode) {
  check_forward(mu, logvar, eps, seed, num_samples, kl_mode, cuda::kDeviceType);
  const c10::cuda::CUDAGuard guard(mu.device());
  auto [z, kl] = allocate_outputs(mu, num_samples, compute_z, kl_mode);
  const int64_t numel = mu.numel();
  if (numel == 0 || (!compute_z && kl_mode == kNoKl)) {
    if (kl_mode == kSummedKl) kl.zero_();  // the sum of no elements
    return {z, kl};
  }
  const Tensor mu_c = mu.contiguous(), lv_c = logvar.contiguous();
  const Tensor eps_c = eps.has_value() && compute_z ? eps->contiguous() : Tensor();
  const NoiseStream stream = make_stream(seed);
  const int64_t samples = std::max<int64_t>(num_samples, 1);
  const int64_t blocks_x = chunk_blocks(numel);
  // Few chunks: spread the samples over grid.y too, so small latents with many samples still
  // fill the GPU. Only blocks with y == 0 compute the KL.
  const int64_t blocks_y =
      compute_z ? std::clamp<int64_t>(kTargetBlocks / blocks_x, 1, std::min<int64_t>(samples, 65535))
                : 1;
  Tensor partials;
  if (kl_mode == kSummedKl) partials = at::empty({blocks_x}, mu.options().dtype(at::kDouble));
  const cudaStream_t cuda_stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_sample_kl_cuda", [&] {
        using acc_t = acc_type<scalar_t>;
        scalar_t* z_p = compute_z ? z.data_ptr<scalar_t>() : nullptr;
        acc_t* kl_p = kl_mode == kElementwiseKl ? kl.data_ptr<acc_t>() : nullptr;
        double* partial_p = kl_mode == kSummedKl ? partials.data_ptr<double>() : nullptr;
        const scalar_t* mu_p = mu_c.data_ptr<scalar_t>();
        const scalar_t* lv_p = lv_c.data_ptr<scalar_t>();
        const scalar_t* eps_p = eps_c.defined() ? eps_c.data_ptr<scalar_t>() : nullptr;
        const bool aligned = vec_aligned(z_p) && vec_aligned(kl_p) && vec_aligned(mu_p) &&
                             vec_aligned(lv_p) && vec_aligned(eps_p);
        const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
        GENFAST_LAUNCH(grid, kThreads, 0, cuda_stream, forward_kernel<scalar_t>)(
            z_p, kl_p, partial_p, mu_p, lv_p, eps_p, stream, numel, samples, aligned);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (kl_mode == kSummedKl) {
          GENFAST_LAUNCH(1, kSumThreads, 0, cuda_stream, sum_partials_kernel<acc_t>)(
              kl.data_ptr<acc_t>(), partial_p, blocks_x);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return {z, kl};
}

std::tuple<Tensor, Tensor> gaussian_sample_kl_backward_cuda(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
    const std::optional<Tensor>& eps, const Tensor& seed, int64_t num_samples, bool compute_z,
    int64_t kl_mode) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, compute_z, kl_mode,
                 cuda::kDeviceType);
  TORCH_CHECK(!compute_z || grad_z.device() == mu.device(),
              "genfast: grad_z is on ", grad_z.device(), " but mu is on ", mu.device());
  TORCH_CHECK(kl_mode == kNoKl || grad_kl.device() == mu.device(),
              "genfast: grad_kl is on ", grad_kl.device(), " but mu is on ", mu.device());
  const c10::cuda::CUDAGuard guard(mu.device());
  Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  const int64_t numel = mu.numel();
  if (numel == 0) return {grad_mu, grad_logvar};
  const Tensor mu_c = mu.contiguous(), lv_c = logvar.contiguous();
  const Tensor eps_c = eps.has_value() && compute_z ? eps->contiguous() : Tensor();
  // As on the CPU: dL/dz is rounded to mu's dtype, dL/dKL is taken in the compute dtype.
  const Tensor gz_c = compute_z ? grad_z.to(mu.scalar_type()).contiguous() : Tensor();
  const Tensor gkl_c =
      kl_mode != kNoKl ? grad_kl.to(compute_dtype(mu.scalar_type())).contiguous() : Tensor();
  const NoiseStream stream = make_stream(seed);
  const int64_t samples = std::max<int64_t>(num_samples, 1);
  const int64_t blocks = chunk_blocks(numel);
  const cudaStream_t cuda_stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_sample_kl_backward_cuda", [&] {
        using acc_t = acc_type<scalar_t>;
        scalar_t* gmu_p = grad_mu.data_ptr<scalar_t>();
        scalar_t* glv_p = grad_logvar.data_ptr<scalar_t>();
        const scalar_t* gz_p = gz_c.defined() ? gz_c.data_ptr<scalar_t>() : nullptr;
        const acc_t* gkl_p = gkl_c.defined() ? gkl_c.data_ptr<acc_t>() : nullptr;
        const scalar_t* mu_p = mu_c.data_ptr<scalar_t>();
        const scalar_t* lv_p = lv_c.data_ptr<scalar_t>();
        const scalar_t* eps_p = eps_c.defined() ? eps_c.data_ptr<scalar_t>() : nullptr;
        const bool aligned = vec_aligned(gmu_p) && vec_aligned(glv_p) && vec_aligned(gz_p) &&
                             (kl_mode == kSummedKl || vec_aligned(gkl_p)) && vec_aligned(mu_p) &&
                             vec_aligned(lv_p) && vec_aligned(eps_p);
        GENFAST_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, cuda_stream,
                       backward_kernel<scalar_t>)(
            gmu_p, glv_p, gz_p, gkl_p, kl_mode == kSummedKl, mu_p, lv_p, eps_p, stream, numel,
            samples, aligned);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_mu, grad_logvar};
}

}  // namespace

GENFAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("gaussian_sample_kl", &gaussian_sample_kl_cuda);
  m.impl("gaussian_sample_kl_backward", &gaussian_sample_kl_backward_cuda);
}

}  // namespace genfast::reparam
