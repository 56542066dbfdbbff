#include "gated_common.h"

#include <algorithm>
#include <numeric>

namespace genfast::gated {

using at::Tensor;

Layout layout_of(const Tensor& x, int64_t dim) {
  TORCH_CHECK(x.dim() >= 1, "genfast: gated_activation needs x with at least one dimension");
  const int64_t d = c10::maybe_wrap_dim(dim, x.dim());
  TORCH_CHECK(x.size(d) % 2 == 0, "genfast: gated_activation splits x in two along dim ", dim,
              ", so its size there must be even, got ", x.size(d));
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || st == at::kDouble,
              "genfast: x must be float16, bfloat16, float32 or float64, got ", st);
  Layout l{std::vector<int64_t>(x.dim()), d, x.suggest_memory_format()};
  std::iota(l.order.begin(), l.order.end(), 0);
  if (l.format != at::MemoryFormat::Contiguous) {
    std::rotate(l.order.begin() + 1, l.order.begin() + 2, l.order.end());  // N, spatial..., C
  }
  l.dim = std::find(l.order.begin(), l.order.end(), d) - l.order.begin();
  return l;
}

Rows rows_of(const Tensor& xp, int64_t pdim) {
  Rows s{1, xp.size(pdim) / 2};
  for (int64_t k = 0; k < pdim; ++k) s.outer *= xp.size(k);
  for (int64_t k = pdim + 1; k < xp.dim(); ++k) s.inner *= xp.size(k);
  return s;
}

std::vector<int64_t> halved(const Tensor& x, int64_t d) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[d] /= 2;
  return sizes;
}

}  // namespace genfast::gated
