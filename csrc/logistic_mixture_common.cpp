#include "logistic_mixture_common.h"

namespace genfast::logistic_mixture {

int64_t params_per_mixture(int64_t channels) {
  return 1 + 2 * channels + channels * (channels - 1) / 2;
}

at::ScalarType compute_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

static void check_params(const at::Tensor& params, c10::DeviceType device) {
  const auto d = params.scalar_type();
  TORCH_CHECK_TYPE(d == at::kHalf || d == at::kBFloat16 || d == at::kFloat || d == at::kDouble,
                   "genfast: params must be float16, bfloat16, float32 or float64, got ", d);
  TORCH_CHECK_VALUE(params.device().type() == device, "genfast: params must be on ",
                    c10::DeviceTypeName(device), ", got ", params.device());
  TORCH_CHECK_VALUE(params.dim() == 4, "genfast: params must be [B, P, H, W], got shape ",
                    params.sizes());
}

static Problem problem_of(const at::Tensor& params, int64_t channels, int64_t levels) {
  TORCH_CHECK_VALUE(channels >= 1 && channels <= 4, "genfast: channels must be 1 to 4, got ",
                    channels);
  TORCH_CHECK_VALUE(levels >= 2 && levels <= (int64_t{1} << 24),
                    "genfast: levels must be in [2, 2^24], got ", levels);
  const int64_t per = params_per_mixture(channels), planes = params.size(1);
  TORCH_CHECK_VALUE(planes >= per && planes % per == 0, "genfast: params must have M * ", per,
                    " channels for ", channels, " colour channels, got ", planes);
  return Problem{params.size(0), channels, planes / per, planes,
                 params.size(2) * params.size(3), levels};
}

Problem check_nll_args(const at::Tensor& images, const at::Tensor& params, int64_t levels,
                       c10::DeviceType device) {
  check_params(params, device);
  TORCH_CHECK_TYPE(at::isIntegralType(images.scalar_type(), /*includeBool=*/false),
                   "genfast: images must hold integer levels, got ", images.scalar_type());
  TORCH_CHECK_VALUE(images.device() == params.device(), "genfast: images are on ",
                    images.device(), " but params on ", params.device());
  TORCH_CHECK_VALUE(images.dim() == 4, "genfast: images must be [B, C, H, W], got shape ",
                    images.sizes());
  TORCH_CHECK_VALUE(images.size(0) == params.size(0) && images.size(2) == params.size(2) &&
                        images.size(3) == params.size(3),
                    "genfast: images ", images.sizes(), " and params ", params.sizes(),
                    " must agree in batch, height and width");
  return problem_of(params, images.size(1), levels);
}

Problem check_backward_args(const at::Tensor& grad_nll, const at::Tensor& images,
                            const at::Tensor& params, int64_t levels, c10::DeviceType device) {
  const Problem p = check_nll_args(images, params, levels, device);
  TORCH_CHECK_VALUE(grad_nll.dim() == 1 && grad_nll.size(0) == p.batch,
                    "genfast: grad_nll must be [B] = [", p.batch, "], got ", grad_nll.sizes());
  TORCH_CHECK_TYPE(grad_nll.is_floating_point(), "genfast: grad_nll must be floating point");
  TORCH_CHECK_VALUE(grad_nll.device() == params.device(),
                    "genfast: grad_nll and params are on different devices");
  return p;
}

Problem check_sample_args(const at::Tensor& params, int64_t channels, int64_t levels,
                          c10::DeviceType device) {
  check_params(params, device);
  return problem_of(params, channels, levels);
}

}  // namespace genfast::logistic_mixture
