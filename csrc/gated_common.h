// How genfast::gated_activation walks x, shared by the CPU and CUDA kernels: x is permuted to its
// memory order (identity for contiguous x, channels moved last for channels-last x) and read as
// [outer, 2, inner]: row o holds a_o then b_o, each `inner` contiguous elements.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace genfast::gated {

struct Layout {
  std::vector<int64_t> order;  // permuting x by `order` gives its memory order
  int64_t dim;                 // the split dimension after that permutation
  at::MemoryFormat format;     // x's memory format, which y and grad_x keep
};

// Checks x and dim (clear errors) and works out the layout.
Layout layout_of(const at::Tensor& x, int64_t dim);

struct Rows {
  int64_t outer, inner;
};

// xp: x permuted to memory order and made contiguous; pdim: the split dimension in xp.
Rows rows_of(const at::Tensor& xp, int64_t pdim);

// x's sizes with dimension d halved: the shape of y.
std::vector<int64_t> halved(const at::Tensor& x, int64_t d);

}  // namespace genfast::gated
