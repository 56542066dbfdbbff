// CPU kernels of genfast::gaussian_sample_kl: z = mu + exp(logvar / 2) * eps fused with
// KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * (mu^2 + exp(logvar) - 1 - logvar), one pass each way.
// Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 10 and appendix B.
//
// Work is split into tiles of latent elements; each tile loops over the samples, so mu, logvar
// and exp(logvar / 2) are read and computed once per tile however many samples are drawn.
// Backward regenerates eps from the seed rather than storing it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "cpu/gaussian_noise.h"
#include "cpu/kernel_table.h"
#include "reparam_common.h"

namespace genfast::reparam {
namespace {

using at::Tensor;
using cpu::NoiseStream;
constexpr int64_t kLanes = cpu::kPadLanes<float>;  // tiles padded to 64 bytes

constexpr int64_t kTile = 1024;
// Below this many tiles the whole op runs on one thread: waking the pool costs more.
constexpr int64_t kTilesPerTask = 32;

int64_t round_up_to_lanes(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Copies n elements to the float/double tile buffer and zero-fills it to a whole SIMD width.
template <typename acc_t, typename scalar_t>
void load_tile(const scalar_t* src, int64_t n, acc_t* dst) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    std::memcpy(dst, src, sizeof(acc_t) * n);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<acc_t>(src[k]);
  }
  std::fill(dst + n, dst + round_up_to_lanes(n), acc_t(0));
}

// Outputs bigger than the caches are written with non-temporal stores: a normal store first
// reads the destination line into cache, a third more memory traffic for an output never read.
constexpr int64_t kStreamingBytes = int64_t{8} << 20;

void store_floats(const float* src, int64_t n, float* dst, bool streaming) {
#if defined(__SSE2__)
  if (streaming && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) _mm_stream_ps(dst + k, _mm_load_ps(src + k));
    for (; k < n; ++k) dst[k] = src[k];
    return;
  }
#endif
  std::memcpy(dst, src, sizeof(float) * n);
}

// Orders this thread's non-temporal stores before the op returns.
void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <typename scalar_t, typename acc_t>
void store_tile(const acc_t* src, int64_t n, scalar_t* dst, bool streaming) {
  if constexpr (std::is_same_v<acc_t, float> && std::is_same_v<scalar_t, float>) {
    store_floats(src, n, dst, streaming);
  } else if constexpr (std::is_same_v<acc_t, scalar_t>) {
    std::memcpy(dst, src, sizeof(acc_t) * n);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<scalar_t>(src[k]);
  }
}

// The float steps run at the CPU's ISA level (csrc/cpu/kernels/reparam.h); double (used for
// gradcheck) takes the plain loops here.
float std_and_kl(const float* mu, const float* logvar, int64_t n, float* std_out, float* kl) {
  return cpu::kernels().reparam_std_and_kl(mu, logvar, n, std_out, kl);
}
double std_and_kl(const double* mu, const double* logvar, int64_t n, double* std_out, double* kl) {
  double total = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    std_out[k] = std::exp(0.5 * logvar[k]);
    if (kl != nullptr) {
      kl[k] = 0.5 * (mu[k] * mu[k] + std_out[k] * std_out[k] - 1.0 - logvar[k]);
      total += kl[k];
    }
  }
  return total;
}

void sample(const float* mu, const float* std_dev, float* z, int64_t n) {
  cpu::kernels().reparam_sample(mu, std_dev, z, n);
}
void sample(const double* mu, const double* std_dev, double* z, int64_t n) {
  for (int64_t k = 0; k < n; ++k) z[k] = mu[k] + std_dev[k] * z[k];
}

void accumulate(const float* grad_z, const float* noise, float* sum_g, float* sum_gn,
                int64_t n) {
  cpu::kernels().reparam_accumulate(grad_z, noise, sum_g, sum_gn, n);
}
void accumulate(const double* grad_z, const double* noise, double* sum_g, double* sum_gn,
                int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    sum_g[k] += grad_z[k];
    sum_gn[k] += grad_z[k] * noise[k];
  }
}

// See csrc/cpu/kernels/reparam.h for the derivatives.
void grads(const float* mu, const float* std_dev, const float* sum_g, const float* sum_gn,
           const float* grad_kl, float* grad_mu, float* grad_logvar, int64_t n) {
  cpu::kernels().reparam_grads(mu, std_dev, sum_g, sum_gn, grad_kl, grad_mu, grad_logvar, n);
}
void grads(const double* mu, const double* std_dev, const double* sum_g, const double* sum_gn,
           const double* grad_kl, double* grad_mu, double* grad_logvar, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    grad_mu[k] = sum_g[k] + grad_kl[k] * mu[k];
    grad_logvar[k] = 0.5 * (std_dev[k] * sum_gn[k] + grad_kl[k] * (std_dev[k] * std_dev[k] - 1));
  }
}

// The noise of stream elements [first, first + n): from eps if given, else from philox.
template <typename scalar_t, typename acc_t>
void noise_tile(const scalar_t* eps, NoiseStream stream, int64_t first, int64_t n,
                float* scratch, acc_t* out) {
  if (eps != nullptr) {
    load_tile(eps + first, n, out);
  } else if constexpr (std::is_same_v<acc_t, float>) {
    cpu::gaussian_noise(stream, first, n, out);
  } else {
    cpu::gaussian_noise(stream, first, n, scratch);
    load_tile(scratch, n, out);
  }
}

struct OpArgs {
  NoiseStream stream;
  int64_t numel;    // elements of mu
  int64_t samples;  // samples drawn per element (>= 1)
  bool compute_z;
  int64_t kl_mode;
};

template <typename scalar_t>
void forward_kernel(const Tensor& mu, const Tensor& logvar, const Tensor* eps, const OpArgs& a,
                    Tensor& z, Tensor& kl) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const scalar_t* mu_p = mu.data_ptr<scalar_t>();
  const scalar_t* lv_p = logvar.data_ptr<scalar_t>();
  const scalar_t* eps_p = eps ? eps->data_ptr<scalar_t>() : nullptr;
  scalar_t* z_p = a.compute_z ? z.data_ptr<scalar_t>() : nullptr;
  acc_t* kl_p = a.kl_mode == kElementwiseKl ? kl.data_ptr<acc_t>() : nullptr;
  const int64_t tiles = (a.numel + kTile - 1) / kTile;
  std::vector<double> kl_partial(a.kl_mode == kSummedKl ? tiles : 0);
  const bool streaming = a.compute_z && z.nbytes() >= kStreamingBytes;

  at::parallel_for(0, tiles, kTilesPerTask, [&](int64_t t0, int64_t t1) {
    alignas(64) acc_t mu_b[kTile], lv_b[kTile], std_b[kTile], kl_b[kTile], noise_b[kTile];
    alignas(64) float scratch[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kTile, n = std::min(kTile, a.numel - i0);
      load_tile(mu_p + i0, n, mu_b);
      load_tile(lv_p + i0, n, lv_b);
      double tile_kl = std_and_kl(mu_b, lv_b, n, std_b, a.kl_mode != kNoKl ? kl_b : nullptr);
      if (a.kl_mode == kSummedKl) kl_partial[t] = tile_kl;
      if (kl_p != nullptr) std::memcpy(kl_p + i0, kl_b, sizeof(acc_t) * n);
      if (!a.compute_z) continue;
      for (int64_t s = 0; s < a.samples; ++s) {
        const int64_t first = s * a.numel + i0;
        noise_tile(eps_p, a.stream, first, n, scratch, noise_b);
        sample(mu_b, std_b, noise_b, n);
        store_tile(noise_b, n, z_p + first, streaming);
      }
    }
    stream_fence();
  });
  if (a.kl_mode == kSummedKl) {
    // Tile partials are summed in a fixed order, so the result does not depend on thread count.
    double total = 0.0;
    for (double p : kl_partial) total += p;
    kl.fill_(total);
  }
}

template <typename scalar_t>
void backward_kernel(const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu,
                     const Tensor& logvar, const Tensor* eps, const OpArgs& a, Tensor& grad_mu,
                     Tensor& grad_logvar) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const scalar_t* mu_p = mu.data_ptr<scalar_t>();
  const scalar_t* lv_p = logvar.data_ptr<scalar_t>();
  const scalar_t* eps_p = eps ? eps->data_ptr<scalar_t>() : nullptr;
  const scalar_t* gz_p = a.compute_z ? grad_z.data_ptr<scalar_t>() : nullptr;
  const acc_t* gkl_p = a.kl_mode == kElementwiseKl ? grad_kl.data_ptr<acc_t>() : nullptr;
  const acc_t gkl_scalar = a.kl_mode == kSummedKl ? grad_kl.item<acc_t>() : acc_t(0);
  scalar_t* gmu_p = grad_mu.data_ptr<scalar_t>();
  scalar_t* glv_p = grad_logvar.data_ptr<scalar_t>();
  const int64_t tiles = (a.numel + kTile - 1) / kTile;
  const bool streaming = grad_mu.nbytes() >= kStreamingBytes;

  at::parallel_for(0, tiles, kTilesPerTask, [&](int64_t t0, int64_t t1) {
    alignas(64) acc_t mu_b[kTile], lv_b[kTile], std_b[kTile], gz_b[kTile], noise_b[kTile];
    alignas(64) acc_t sum_g[kTile], sum_gn[kTile], out_b[kTile];  // gz_b then holds dL/dKL
    alignas(64) float scratch[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kTile, n = std::min(kTile, a.numel - i0);
      load_tile(mu_p + i0, n, mu_b);
      load_tile(lv_p + i0, n, lv_b);
      std_and_kl(mu_b, lv_b, n, std_b, nullptr);
      // sum_g = sum_s dL/dz_s, sum_gn = sum_s dL/dz_s * eps_s: all backward needs from z.
      std::fill(sum_g, sum_g + n, acc_t(0));
      std::fill(sum_gn, sum_gn + n, acc_t(0));
      for (int64_t s = 0; a.compute_z && s < a.samples; ++s) {
        const int64_t first = s * a.numel + i0;
        load_tile(gz_p + first, n, gz_b);
        noise_tile(eps_p, a.stream, first, n, scratch, noise_b);
        accumulate(gz_b, noise_b, sum_g, sum_gn, n);
      }
      if (gkl_p != nullptr) {
        load_tile(gkl_p + i0, n, gz_b);
      } else {
        std::fill(gz_b, gz_b + n, gkl_scalar);
      }
      grads(mu_b, std_b, sum_g, sum_gn, gz_b, out_b, lv_b, n);
      store_tile(out_b, n, gmu_p + i0, streaming);
      store_tile(lv_b, n, glv_p + i0, streaming);
    }
    stream_fence();
  });
}

OpArgs make_args(const Tensor& mu, const Tensor& seed, int64_t num_samples, bool compute_z,
                 int64_t kl_mode) {
  Seed s = read_seed(seed);
  return OpArgs{NoiseStream{s.key, s.offset}, mu.numel(), std::max<int64_t>(num_samples, 1),
                compute_z, kl_mode};
}

std::tuple<Tensor, Tensor> gaussian_sample_kl_cpu(const Tensor& mu, const Tensor& logvar,
                                                  const std::optional<Tensor>& eps,
                                                  const Tensor& seed, int64_t num_samples,
                                                  bool compute_z, int64_t kl_mode) {
  check_forward(mu, logvar, eps, seed, num_samples, kl_mode, c10::DeviceType::CPU);
  auto [z, kl] = allocate_outputs(mu, num_samples, compute_z, kl_mode);
  const Tensor mu_c = mu.contiguous(), lv_c = logvar.contiguous();
  const Tensor eps_c = eps.has_value() ? eps->contiguous() : Tensor();
  const OpArgs args = make_args(mu, seed, num_samples, compute_z, kl_mode);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_sample_kl",
                                  [&] {
                                    forward_kernel<scalar_t>(mu_c, lv_c,
                                                             eps.has_value() ? &eps_c : nullptr,
                                                             args, z, kl);
                                  });
  return {z, kl};
}

std::tuple<Tensor, Tensor> gaussian_sample_kl_backward_cpu(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& mu, const Tensor& logvar,
    const std::optional<Tensor>& eps, const Tensor& seed, int64_t num_samples, bool compute_z,
    int64_t kl_mode) {
  check_backward(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, compute_z, kl_mode,
                 c10::DeviceType::CPU);
  const Tensor mu_c = mu.contiguous(), lv_c = logvar.contiguous();
  const Tensor eps_c = eps.has_value() ? eps->contiguous() : Tensor();
  const Tensor gz_c = compute_z ? grad_z.to(mu.scalar_type()).contiguous() : grad_z;
  const auto acc = compute_dtype(mu.scalar_type());
  const Tensor gkl_c = kl_mode != kNoKl ? grad_kl.to(acc).contiguous() : grad_kl;
  Tensor grad_mu = at::empty(mu.sizes(), mu.options());
  Tensor grad_logvar = at::empty(mu.sizes(), mu.options());
  const OpArgs args = make_args(mu, seed, num_samples, compute_z, kl_mode);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, mu.scalar_type(), "gaussian_sample_kl_backward", [&] {
        backward_kernel<scalar_t>(gz_c, gkl_c, mu_c, lv_c, eps.has_value() ? &eps_c : nullptr,
                                  args, grad_mu, grad_logvar);
      });
  return {grad_mu, grad_logvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("gaussian_sample_kl", &gaussian_sample_kl_cpu);
  m.impl("gaussian_sample_kl_backward", &gaussian_sample_kl_backward_cpu);
}

}  // namespace genfast::reparam
