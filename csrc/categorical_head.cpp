// CPU kernel of genfast::categorical_head_nll: an autoregressive model's last 1x1 mask-B layer,
// the per-pixel log-softmax over `levels` and the NLL of the integer images, fused, with the
// gradients computed in the same pass (genfast/ops/categorical_head.py has the maths).
//
// Each image is cut into chunks of pixels. For a chunk of P pixels, with X = features[b][:, chunk]
// ([Cin, P], read in place from NCHW) and W the masked weight [C*L, Cin]:
//   Z = W X + bias                      [C*L, P] logits, one GEMM, in a per-thread buffer
//   per colour and pixel: m = max, s = sum exp(z - m), nll += m + log s - z[target]
//   G = softmax(Z) - onehot(target)     in place of Z, the gradient of the chunk's NLL sum
//   grad_features[b][:, chunk] = W^T G  one GEMM, written in place (NCHW)
//   grad_weight[b] += G X^T, grad_bias[b] += rows of G
// so the logits and their gradient only ever exist one chunk at a time, in cache. The gradients
// are per image (the autograd backward weights them by each image's incoming gradient), which
// also lets the images run in parallel without sharing an accumulator.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/kernel_table.h"

namespace genfast::categorical_head {
namespace {

using at::Tensor;

// Logit buffer of a chunk at most this many floats (1 MiB of float32): it stays in L2 while the
// softmax passes and the two gradient GEMMs read it again.
constexpr int64_t kChunkFloats = int64_t{1} << 18;
constexpr int64_t kLanes = cpu::kPadLanes<float>;  // exp_in_place takes whole 64-byte blocks

struct Shape {
  int64_t batch, in_channels, pixels, colours, levels;
  bool interleaved;  // output channel l * C + c holds colour c's logit l; else c * L + l
  int64_t outputs() const { return colours * levels; }
  int64_t row(int64_t colour, int64_t level) const {
    return interleaved ? level * colours + colour : colour * levels + level;
  }
  int64_t group_of_input(int64_t k) const {
    return interleaved ? k % colours : k * colours / in_channels;
  }
};

// weight [C*L, Cin] with mask B's colour rule applied: colour c's logits see input groups <= c
// (genfast.ops.masked_conv.conv_mask for a 1x1 kernel).
Tensor masked_weight(const Tensor& weight, const Shape& s) {
  if (s.colours == 1) return weight;
  Tensor hidden = at::empty({s.outputs(), s.in_channels}, weight.options().dtype(at::kBool));
  auto* h = hidden.data_ptr<bool>();
  for (int64_t c = 0; c < s.colours; ++c) {
    for (int64_t l = 0; l < s.levels; ++l) {
      for (int64_t k = 0; k < s.in_channels; ++k) {
        h[s.row(c, l) * s.in_channels + k] = s.group_of_input(k) > c;
      }
    }
  }
  return weight.masked_fill(hidden, 0);
}

void exp_row(float* z, int64_t padded) { cpu::kernels().exp_in_place(z, padded); }
void exp_row(double* z, int64_t padded) {
  for (int64_t p = 0; p < padded; ++p) z[p] = std::exp(z[p]);
}

// The log-softmax of one colour over a chunk's P pixels (columns of z, row stride `ld`), the
// NLL sum of the targets, and with `want_grad` z turned into softmax - onehot in place.
template <typename acc_t>
acc_t softmax_nll(acc_t* z, int64_t ld, int64_t P, const Shape& s, int64_t colour,
                  const int64_t* target, const acc_t* bias, bool want_grad,
                  std::vector<acc_t>& work, bool& bad_target) {
  acc_t* m = work.data();
  acc_t* sum = m + ld;
  acc_t* picked = sum + ld;
  std::fill(m, m + P, -std::numeric_limits<acc_t>::infinity());
  std::fill(sum, sum + P, acc_t(0));
  for (int64_t l = 0; l < s.levels; ++l) {
    acc_t* zr = z + s.row(colour, l) * ld;
    const acc_t b = bias ? bias[s.row(colour, l)] : acc_t(0);
    for (int64_t p = 0; p < P; ++p) {
      zr[p] += b;
      m[p] = std::max(m[p], zr[p]);
    }
  }
  for (int64_t p = 0; p < P; ++p) {
    const int64_t t = target[p];
    if (t < 0 || t >= s.levels) {
      bad_target = true;
      picked[p] = m[p];
      continue;
    }
    picked[p] = z[s.row(colour, t) * ld + p];
  }
  for (int64_t l = 0; l < s.levels; ++l) {
    acc_t* zr = z + s.row(colour, l) * ld;
    for (int64_t p = 0; p < P; ++p) zr[p] -= m[p];
    std::fill(zr + P, zr + ld, acc_t(0));  // the padding, so exp stays finite there
    exp_row(zr, ld);
    for (int64_t p = 0; p < P; ++p) sum[p] += zr[p];
  }
  acc_t nll = 0;
  for (int64_t p = 0; p < P; ++p) nll += m[p] + std::log(sum[p]) - picked[p];
  if (want_grad) {
    for (int64_t p = 0; p < P; ++p) sum[p] = acc_t(1) / sum[p];
    for (int64_t l = 0; l < s.levels; ++l) {
      acc_t* zr = z + s.row(colour, l) * ld;
      for (int64_t p = 0; p < P; ++p) zr[p] *= sum[p];
    }
    for (int64_t p = 0; p < P; ++p) {
      const int64_t t = target[p];
      if (t >= 0 && t < s.levels) z[s.row(colour, t) * ld + p] -= acc_t(1);
    }
  }
  return nll;
}

template <typename acc_t>
void run(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& images,
         const Shape& s, const std::array<bool, 3>& want, Tensor& nll, Tensor& gx, Tensor& gw,
         Tensor& gb) {
  const int64_t HW = s.pixels, CL = s.outputs();
  const int64_t chunks = std::max<int64_t>(1, (HW * CL + kChunkFloats - 1) / kChunkFloats);
  const int64_t chunk = (HW + chunks - 1) / chunks;
  const int64_t ld = (chunk + kLanes - 1) / kLanes * kLanes;
  const bool any_grad = want[0] || want[1] || want[2];
  const auto* bias_p = bias.defined() ? bias.data_ptr<acc_t>() : nullptr;
  const auto* img = images.data_ptr<int64_t>();
  auto* nll_p = nll.data_ptr<acc_t>();
  std::atomic<bool> any_bad{false};

  at::parallel_for(0, s.batch, 1, [&](int64_t b0, int64_t b1) {
    // Logits [C*L, ld] of one chunk: a view whose first P columns the GEMMs fill.
    Tensor z_buf = at::zeros({CL, ld}, x.options());
    auto* z = z_buf.data_ptr<acc_t>();
    std::vector<acc_t> work(3 * ld);
    bool bad = false;
    for (int64_t b = b0; b < b1; ++b) {
      Tensor xb = x[b].view({s.in_channels, HW});
      acc_t total = 0;
      for (int64_t p0 = 0; p0 < HW; p0 += chunk) {
        const int64_t P = std::min(chunk, HW - p0);
        Tensor xc = xb.narrow(1, p0, P);
        Tensor zc = z_buf.narrow(1, 0, P);
        at::mm_out(zc, w, xc);
        for (int64_t c = 0; c < s.colours; ++c) {
          const int64_t* target = img + (b * s.colours + c) * HW + p0;
          total += softmax_nll<acc_t>(z, ld, P, s, c, target, bias_p, any_grad, work, bad);
        }
        if (want[0]) {
          Tensor gxc = gx[b].view({s.in_channels, HW}).narrow(1, p0, P);
          at::mm_out(gxc, w.t(), zc);
        }
        if (want[1]) gw[b].addmm_(zc, xc.t());
        if (want[2]) {
          auto* gbp = gb[b].data_ptr<acc_t>();
          for (int64_t r = 0; r < CL; ++r) {
            const acc_t* zr = z + r * ld;
            acc_t t = 0;
            for (int64_t p = 0; p < P; ++p) t += zr[p];
            gbp[r] += t;
          }
        }
      }
      nll_p[b] = total;
    }
    if (bad) any_bad = true;
  });
  TORCH_CHECK(!any_bad, "genfast: categorical_head_nll: image values must be in [0, levels=",
              s.levels, ")");
}

std::tuple<Tensor, Tensor, Tensor, Tensor> categorical_head_nll_cpu(
    const Tensor& features, const Tensor& weight, const std::optional<Tensor>& bias,
    const Tensor& images, int64_t levels, bool interleaved, std::array<bool, 3> grad_mask) {
  TORCH_CHECK(features.dim() == 4, "genfast: categorical_head_nll: features must be [B, Cin, H, "
              "W], got ", features.sizes());
  TORCH_CHECK(images.dim() == 4 && images.size(0) == features.size(0) &&
                  images.size(2) == features.size(2) && images.size(3) == features.size(3),
              "genfast: categorical_head_nll: images must be [B, C, H, W] matching features ",
              features.sizes(), ", got ", images.sizes());
  TORCH_CHECK(images.scalar_type() == at::kLong, "genfast: categorical_head_nll: images must be "
              "int64");
  const Shape s{features.size(0), features.size(1), features.size(2) * features.size(3),
                images.size(1), levels, interleaved};
  TORCH_CHECK(levels >= 2 && s.colours >= 1 && weight.dim() == 2 &&
                  weight.size(0) == s.outputs() && weight.size(1) == s.in_channels,
              "genfast: categorical_head_nll: weight must be [C * levels, Cin] = [", s.outputs(),
              ", ", s.in_channels, "], got ", weight.sizes());
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == s.outputs()),
              "genfast: categorical_head_nll: bias must be [C * levels]");
  const auto acc_type = features.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc = features.options().dtype(acc_type);
  // Detached: the GEMMs below write into views with out=, which autograd refuses on tensors
  // that require grad (the op's own autograd formula covers them).
  Tensor x = features.detach().to(acc_type).contiguous();
  Tensor w = masked_weight(weight.detach().to(acc_type), s).contiguous();
  Tensor b = bias ? bias->detach().to(acc_type).contiguous() : Tensor();
  Tensor img = images.contiguous();
  const std::array<bool, 3> want{grad_mask[0], grad_mask[1], grad_mask[2] && bias.has_value()};
  Tensor nll = at::empty({s.batch}, acc);
  Tensor gx = want[0] ? at::empty(features.sizes(), acc) : at::empty({0}, acc);
  Tensor gw = want[1] ? at::zeros({s.batch, s.outputs(), s.in_channels}, acc)
                      : at::empty({0}, acc);
  Tensor gb = want[2] ? at::zeros({s.batch, s.outputs()}, acc) : at::empty({0}, acc);
  if (s.batch > 0 && s.pixels > 0) {
    if (acc_type == at::kDouble) {
      run<double>(x, w, b, img, s, want, nll, gx, gw, gb);
    } else {
      run<float>(x, w, b, img, s, want, nll, gx, gw, gb);
    }
  } else {
    nll.zero_();
    if (want[0]) gx.zero_();
  }
  // The hidden taps get no gradient, as in the reference's weight * mask.
  if (want[1] && s.colours > 1) gw.mul_((masked_weight(at::ones_like(weight, acc), s)));
  return {nll.to(features.scalar_type()), gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("categorical_head_nll", &categorical_head_nll_cpu);
}

}  // namespace genfast::categorical_head
