#include "reparam_common.h"

namespace genfast::reparam {

Seed read_seed(const at::Tensor& seed) {
  TORCH_CHECK(seed.device().is_cpu() && seed.scalar_type() == at::kLong && seed.numel() == 2,
              "genfast: seed must be an int64 CPU tensor of 2 elements (key, offset), got ",
              seed.scalar_type(), " on ", seed.device(), " with ", seed.numel(), " elements");
  auto s = seed.contiguous();
  const int64_t* p = s.data_ptr<int64_t>();
  return Seed{static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

at::ScalarType compute_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

std::vector<int64_t> z_sizes(const at::Tensor& mu, int64_t num_samples) {
  std::vector<int64_t> sizes;
  if (num_samples > 0) sizes.push_back(num_samples);
  for (int64_t s : mu.sizes()) sizes.push_back(s);
  return sizes;
}

static void check_float_on(const at::Tensor& t, const char* name, c10::DeviceType device) {
  auto d = t.scalar_type();
  TORCH_CHECK(d == at::kHalf || d == at::kBFloat16 || d == at::kFloat || d == at::kDouble,
              "genfast: ", name, " must be float16, bfloat16, float32 or float64, got ",
              t.scalar_type());
  TORCH_CHECK(t.device().type() == device, "genfast: ", name, " must be on ",
              c10::DeviceTypeName(device), ", got ", t.device());
}

void check_forward(const at::Tensor& mu, const at::Tensor& logvar,
                   const std::optional<at::Tensor>& eps, const at::Tensor& seed,
                   int64_t num_samples, int64_t kl_mode, c10::DeviceType device) {
  check_float_on(mu, "mu", device);
  check_float_on(logvar, "logvar", device);
  TORCH_CHECK(mu.sizes() == logvar.sizes(), "genfast: mu and logvar must have the same shape, got ",
              mu.sizes(), " and ", logvar.sizes());
  TORCH_CHECK(mu.scalar_type() == logvar.scalar_type(),
              "genfast: mu and logvar must have the same dtype, got ", mu.scalar_type(), " and ",
              logvar.scalar_type());
  TORCH_CHECK(mu.device() == logvar.device(), "genfast: mu and logvar are on different devices");
  TORCH_CHECK(num_samples >= 0, "genfast: num_samples must be >= 0, got ", num_samples);
  TORCH_CHECK(kl_mode >= kNoKl && kl_mode <= kSummedKl, "genfast: kl_mode must be 0, 1 or 2");
  read_seed(seed);
  if (eps.has_value()) {
    check_float_on(*eps, "eps", device);
    TORCH_CHECK(eps->scalar_type() == mu.scalar_type(), "genfast: eps must have mu's dtype ",
                mu.scalar_type(), ", got ", eps->scalar_type());
    TORCH_CHECK(eps->device() == mu.device(), "genfast: eps and mu are on different devices");
    TORCH_CHECK(eps->sizes() == at::IntArrayRef(z_sizes(mu, num_samples)),
                "genfast: eps must have z's shape ", at::IntArrayRef(z_sizes(mu, num_samples)),
                ", got ", eps->sizes());
  }
}

void check_backward(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& mu,
                    const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                    const at::Tensor& seed, int64_t num_samples, bool compute_z,
                    int64_t kl_mode, c10::DeviceType device) {
  check_forward(mu, logvar, eps, seed, num_samples, kl_mode, device);
  if (compute_z) {
    TORCH_CHECK(grad_z.sizes() == at::IntArrayRef(z_sizes(mu, num_samples)),
                "genfast: grad_z must have z's shape, got ", grad_z.sizes());
    check_float_on(grad_z, "grad_z", device);
  }
  if (kl_mode == kSummedKl) {
    TORCH_CHECK(grad_kl.numel() == 1, "genfast: grad_kl of a summed KL must have one element");
  } else if (kl_mode == kElementwiseKl) {
    TORCH_CHECK(grad_kl.sizes() == mu.sizes(), "genfast: grad_kl must have mu's shape, got ",
                grad_kl.sizes());
  }
  if (kl_mode != kNoKl) check_float_on(grad_kl, "grad_kl", device);
}

std::pair<at::Tensor, at::Tensor> allocate_outputs(const at::Tensor& mu, int64_t num_samples,
                                                   bool compute_z, int64_t kl_mode) {
  auto kl_options = mu.options().dtype(compute_dtype(mu.scalar_type()));
  at::Tensor z = compute_z ? at::empty(z_sizes(mu, num_samples), mu.options())
                           : at::empty({0}, mu.options());
  at::Tensor kl = kl_mode == kSummedKl        ? at::empty({}, kl_options)
                  : kl_mode == kElementwiseKl ? at::empty(mu.sizes(), kl_options)
                                              : at::empty({0}, kl_options);
  return {z, kl};
}

}  // namespace genfast::reparam
