// CPU kernels of genfast::logistic_mixture_nll and its backward: the discretized logistic
// mixture likelihood of PixelCNN++ (Salimans et al. 2017, eq. 2 and section 2.2), one pass over
// the pixels each way, never holding more than one tile of pixels' values.
//
// Work is split into tiles of kTile pixels of one image. A tile's parameter planes and levels are
// copied into float (double for double) buffers, padded to whole vectors, and the maths of
// csrc/logistic_mixture_maths.h runs on them: on float vectors at the CPU's ISA level
// (csrc/cpu/kernels/logistic_mixture.h), or on scalar doubles here. The backward recomputes
// everything from params and levels; the forward saves nothing.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/kernel_table.h"
#include "logistic_mixture_common.h"

namespace genfast::logistic_mixture {
namespace {

using at::Tensor;

namespace scalar {

// The shared maths on one double at a time (float64 params: gradcheck's precision).
struct ScalarOps {
  using Scalar = double;
  using V = double;
  using Mask = bool;
  static constexpr int kLanes = 1;
  static V splat(double x) { return x; }
  static V load(const double* p) { return *p; }
  static void store(double* p, V v) { *p = v; }
  static V exp(V x) { return std::exp(x); }
  static V log(V x) { return std::log(x); }
  static V tanh(V x) { return std::tanh(x); }
  static V abs(V x) { return std::fabs(x); }
  static V max(V a, V b) { return a > b ? a : b; }
  static V select(Mask m, V a, V b) { return m ? a : b; }
  static Mask mask_not(Mask m) { return !m; }
  static Mask mask_and(Mask a, Mask b) { return a && b; }
  static Mask mask_or(Mask a, Mask b) { return a || b; }
  static bool any(Mask m) { return m; }
};

#include "logistic_mixture_maths.h"

}  // namespace scalar

constexpr int64_t kTile = 64;  // pixels per tile, a multiple of every level's vector width
// A tile's planes lie this many values apart. A pixel vector's step touches one line of each of
// the ~2P planes; at a power-of-two distance those lines share a few L1 sets and evict one
// another, an odd number of lines apart they spread over every set.
constexpr int64_t kPlaneStride = kTile + 16;
// Below this many tiles the whole op runs on one thread: waking the pool costs more.
constexpr int64_t kTilesPerTask = 4;

scalar::MixtureShape scalar_shape(const Problem& p) {
  return scalar::MixtureShape{static_cast<int>(p.channels), static_cast<int>(p.mixtures),
                              static_cast<float>(p.levels - 1)};
}

void tile_forward(const float* params, const float* levels, const Problem& p, float* scratch,
                  float* log_lik) {
  cpu::kernels().logistic_mixture_forward(params, levels, kTile, kPlaneStride,
                                          static_cast<int>(p.channels),
                                          static_cast<int>(p.mixtures),
                                          static_cast<float>(p.levels - 1), scratch, log_lik);
}
void tile_forward(const double* params, const double* levels, const Problem& p, double* scratch,
                  double* log_lik) {
  scalar::mixture_log_likelihood<scalar::ScalarOps>(params, levels, kTile, kPlaneStride,
                                                    scalar_shape(p), scratch, log_lik);
}

void tile_backward(const float* params, const float* levels, const Problem& p, float grad_nll,
                   float* grad, float* log_lik) {
  cpu::kernels().logistic_mixture_backward(params, levels, kTile, kPlaneStride,
                                           static_cast<int>(p.channels),
                                           static_cast<int>(p.mixtures),
                                           static_cast<float>(p.levels - 1), grad_nll, grad,
                                           log_lik);
}
void tile_backward(const double* params, const double* levels, const Problem& p,
                   double grad_nll, double* grad, double* log_lik) {
  scalar::mixture_gradient<scalar::ScalarOps>(params, levels, kTile, kPlaneStride,
                                              scalar_shape(p), grad_nll, grad, log_lik);
}

// One tile's place: image b, pixels [first, first + count) of its H * W.
struct TileSpan {
  int64_t b, first, count;
};

TileSpan span_of(int64_t tile, int64_t tiles_per_image, int64_t pixels) {
  const int64_t b = tile / tiles_per_image, first = (tile % tiles_per_image) * kTile;
  return TileSpan{b, first, std::min(kTile, pixels - first)};
}

// Copies a tile's P parameter planes and C level planes into acc_t planes kPlaneStride apart, the
// padding filled with harmless values (zero parameters, level 0). Returns false if a level lies
// outside [0, L).
template <typename scalar_t, typename index_t, typename acc_t>
bool load_tile(const scalar_t* params, const index_t* images, const Problem& p,
               const TileSpan& t, acc_t* params_buf, acc_t* levels_buf) {
  for (int64_t q = 0; q < p.planes; ++q) {
    const scalar_t* src = params + (t.b * p.planes + q) * p.pixels + t.first;
    acc_t* dst = params_buf + q * kPlaneStride;
    for (int64_t j = 0; j < t.count; ++j) dst[j] = static_cast<acc_t>(src[j]);
    std::fill(dst + t.count, dst + kTile, acc_t(0));
  }
  bool in_range = true;
  for (int64_t c = 0; c < p.channels; ++c) {
    const index_t* src = images + (t.b * p.channels + c) * p.pixels + t.first;
    acc_t* dst = levels_buf + c * kPlaneStride;
    for (int64_t j = 0; j < t.count; ++j) {
      const int64_t level = static_cast<int64_t>(src[j]);
      in_range &= level >= 0 && level < p.levels;
      dst[j] = static_cast<acc_t>(level);
    }
    std::fill(dst + t.count, dst + kTile, acc_t(0));
  }
  return in_range;
}

void check_levels_in_range(bool in_range, const Problem& p) {
  TORCH_CHECK_VALUE(in_range, "genfast: images must hold levels in [0, ", p.levels,
                    "), and some do not");
}

// nll[b] = -(the sum of image b's tile sums), added in a fixed order: the result does not
// depend on the threads.
template <typename acc_t>
void sum_tiles(const std::vector<double>& partial, int64_t tiles_per_image, const Problem& p,
               Tensor& nll) {
  acc_t* out = nll.mutable_data_ptr<acc_t>();
  for (int64_t b = 0; b < p.batch; ++b) {
    double sum = 0.0;
    for (int64_t k = 0; k < tiles_per_image; ++k) sum += partial[b * tiles_per_image + k];
    out[b] = static_cast<acc_t>(-sum);
  }
}

template <typename acc_t>
double sum_of(const acc_t* log_lik, int64_t count) {
  double sum = 0.0;
  for (int64_t j = 0; j < count; ++j) sum += log_lik[j];
  return sum;
}

// The computation's type for params of type scalar_t: double for double, else float.
template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename scalar_t, typename index_t>
void forward_kernel(const Tensor& images, const Tensor& params, const Problem& p, Tensor& nll) {
  using acc_t = acc_of<scalar_t>;
  const scalar_t* params_p = params.const_data_ptr<scalar_t>();
  const index_t* images_p = images.const_data_ptr<index_t>();
  const int64_t tiles_per_image = (p.pixels + kTile - 1) / kTile;
  std::vector<double> partial(p.batch * tiles_per_image, 0.0);
  std::atomic<bool> in_range{true};
  at::parallel_for(0, p.batch * tiles_per_image, kTilesPerTask, [&](int64_t t0, int64_t t1) {
    std::vector<acc_t> buffer((p.planes + p.channels + p.mixtures + 1) * kPlaneStride);
    acc_t* params_buf = buffer.data();
    acc_t* levels_buf = params_buf + p.planes * kPlaneStride;
    acc_t* scratch = levels_buf + p.channels * kPlaneStride;
    acc_t* log_lik = scratch + p.mixtures * kPlaneStride;
    for (int64_t tile = t0; tile < t1; ++tile) {
      const TileSpan t = span_of(tile, tiles_per_image, p.pixels);
      if (!load_tile(params_p, images_p, p, t, params_buf, levels_buf)) in_range = false;
      tile_forward(params_buf, levels_buf, p, scratch, log_lik);
      partial[tile] = sum_of(log_lik, t.count);
    }
  });
  check_levels_in_range(in_range, p);
  sum_tiles<acc_t>(partial, tiles_per_image, p, nll);
}

// grad_params = d(sum_b grad_nll[b] * NLL_b) / d params, with grad_nll_p null meaning all ones;
// and with nll given, each image's NLL too, equal to the forward's (the same terms, summed in
// the same order).
template <typename scalar_t, typename index_t>
void gradient_kernel(const acc_of<scalar_t>* grad_nll_p, const Tensor& images,
                     const Tensor& params, const Problem& p, Tensor& grad_params, Tensor* nll) {
  using acc_t = acc_of<scalar_t>;
  const scalar_t* params_p = params.const_data_ptr<scalar_t>();
  const index_t* images_p = images.const_data_ptr<index_t>();
  scalar_t* grad_p = grad_params.mutable_data_ptr<scalar_t>();
  const int64_t tiles_per_image = (p.pixels + kTile - 1) / kTile;
  std::vector<double> partial(nll ? p.batch * tiles_per_image : 0, 0.0);
  std::atomic<bool> in_range{true};
  at::parallel_for(0, p.batch * tiles_per_image, kTilesPerTask, [&](int64_t t0, int64_t t1) {
    std::vector<acc_t> buffer((2 * p.planes + p.channels + 1) * kPlaneStride);
    acc_t* params_buf = buffer.data();
    acc_t* levels_buf = params_buf + p.planes * kPlaneStride;
    acc_t* grad_buf = levels_buf + p.channels * kPlaneStride;
    acc_t* log_lik = grad_buf + p.planes * kPlaneStride;
    for (int64_t tile = t0; tile < t1; ++tile) {
      const TileSpan t = span_of(tile, tiles_per_image, p.pixels);
      if (!load_tile(params_p, images_p, p, t, params_buf, levels_buf)) in_range = false;
      const acc_t grad_nll = grad_nll_p ? grad_nll_p[t.b] : acc_t(1);
      tile_backward(params_buf, levels_buf, p, grad_nll, grad_buf, log_lik);
      if (nll) partial[tile] = sum_of(log_lik, t.count);
      for (int64_t q = 0; q < p.planes; ++q) {
        scalar_t* dst = grad_p + (t.b * p.planes + q) * p.pixels + t.first;
        const acc_t* src = grad_buf + q * kPlaneStride;
        for (int64_t j = 0; j < t.count; ++j) dst[j] = static_cast<scalar_t>(src[j]);
      }
    }
  });
  check_levels_in_range(in_range, p);
  if (nll) sum_tiles<acc_t>(partial, tiles_per_image, p, *nll);
}

Tensor logistic_mixture_nll_cpu(const Tensor& images, const Tensor& params, int64_t levels) {
  const Problem p = check_nll_args(images, params, levels, c10::DeviceType::CPU);
  Tensor nll = at::empty({p.batch}, params.options().dtype(compute_dtype(params.scalar_type())));
  if (p.batch == 0) return nll;
  const Tensor images_c = images.contiguous(), params_c = params.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params.scalar_type(),
                                  "logistic_mixture_nll", [&] {
    dispatch_images(images_c, [&]<typename index_t>() {
      forward_kernel<scalar_t, index_t>(images_c, params_c, p, nll);
    });
  });
  return nll;
}

Tensor logistic_mixture_nll_backward_cpu(const Tensor& grad_nll, const Tensor& images,
                                         const Tensor& params, int64_t levels) {
  const Problem p = check_backward_args(grad_nll, images, params, levels, c10::DeviceType::CPU);
  Tensor grad_params = at::empty(params.sizes(), params.options());
  if (grad_params.numel() == 0) return grad_params;
  const Tensor images_c = images.contiguous(), params_c = params.contiguous();
  const Tensor grad_c = grad_nll.to(compute_dtype(params.scalar_type())).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params.scalar_type(),
                                  "logistic_mixture_nll_backward", [&] {
    dispatch_images(images_c, [&]<typename index_t>() {
      gradient_kernel<scalar_t, index_t>(grad_c.const_data_ptr<acc_of<scalar_t>>(), images_c,
                                         params_c, p, grad_params, nullptr);
    });
  });
  return grad_params;
}

// A training step's forward in one pass: the NLL and its gradient for grad_nll = 1, which the
// backward then only scales (genfast/ops/logistic_mixture.py).
std::tuple<Tensor, Tensor> logistic_mixture_nll_with_grad_cpu(const Tensor& images,
                                                             const Tensor& params,
                                                             int64_t levels) {
  const Problem p = check_nll_args(images, params, levels, c10::DeviceType::CPU);
  Tensor nll = at::empty({p.batch}, params.options().dtype(compute_dtype(params.scalar_type())));
  Tensor grad_params = at::empty(params.sizes(), params.options());
  if (p.batch == 0) return {nll, grad_params};
  const Tensor images_c = images.contiguous(), params_c = params.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params.scalar_type(),
                                  "logistic_mixture_nll_with_grad", [&] {
    dispatch_images(images_c, [&]<typename index_t>() {
      gradient_kernel<scalar_t, index_t>(nullptr, images_c, params_c, p, grad_params, &nll);
    });
  });
  return {nll, grad_params};
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("logistic_mixture_nll", &logistic_mixture_nll_cpu);
  m.impl("logistic_mixture_nll_backward", &logistic_mixture_nll_backward_cpu);
  m.impl("logistic_mixture_nll_with_grad", &logistic_mixture_nll_with_grad_cpu);
}

}  // namespace genfast::logistic_mixture
