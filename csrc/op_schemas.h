// Every genfast op schema, defined into a library by define_op_schemas: csrc/registration.cpp
// defines them as genfast::*, and the test suite's CUDA emulator (tests/cuda_emu) as
// genfast_cuda_emu::*, so the emulated kernels are called with exactly the real signatures.
#pragma once
#include <torch/library.h>

namespace genfast {

inline void define_op_schemas(torch::Library& m) {
  // The CPU kernels' ISA level (csrc/cpu/isa.h): the one in use, the ones this CPU can run
  // (lowest first), and a switch to another of those, for tests and benchmarks.
  m.def("cpu_isa() -> str");
  m.def("cpu_isa_levels() -> str[]");
  m.def("set_cpu_isa(str level) -> ()");
  // fn(x) for float32 x with the CPU kernels' vector maths at the level in use, for its
  // accuracy tests; fn is exp, log, sigmoid, tanh, sin_turns or cos_turns (of 2 pi x).
  m.def("cpu_vector_math(Tensor x, str fn) -> Tensor");

  // Reparameterized Gaussian sampling fused with KL(N(mu, exp(logvar)) || N(0, I)).
  //   eps: explicit noise shaped like z, or None to draw it in-kernel from `seed`.
  //   seed: int64[2] CPU tensor (philox key, counter offset) drawn from a torch Generator.
  //   num_samples: 0 gives z shaped like mu; S >= 1 gives z of shape [S, *mu.shape].
  //   kl_mode: 0 no KL, 1 elementwise KL, 2 KL summed to a scalar.
  m.def(
      "gaussian_sample_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor seed, int num_samples, "
      "bool compute_z, int kl_mode) -> (Tensor z, Tensor kl)");
  // Fused backward: regenerates the noise from `seed` instead of reading a stored eps.
  m.def(
      "gaussian_sample_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, "
      "Tensor? eps, Tensor seed, int num_samples, bool compute_z, int kl_mode) "
      "-> (Tensor grad_mu, Tensor grad_logvar)");

  // PixelCNN masked convolution, stride 1, 'same' padding, skipping the taps the mask hides.
  //   mask_type: 0 for mask A (hides the current pixel), 1 for mask B, 2 for the Gated PixelCNN's
  //   vertical stack (the centre row and all rows above).
  //   data_channels: colour groups the channels split into (3 for RGB), 1 for none.
  //   window: [] for the whole output, or [row0, row1, col0, col1] to compute only that part.
  m.def(
      "masked_conv2d(Tensor x, Tensor weight, Tensor? bias, int mask_type, int data_channels, "
      "int dilation, int[] window) -> Tensor");
  m.def(
      "masked_conv2d_backward(Tensor grad_y, Tensor x, Tensor weight, int mask_type, "
      "int data_channels, int dilation, int[] window, bool[3] output_mask) "
      "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
  // Inference with the weight packed once (CPU): pack_weight's result, passed to prepacked with
  // the same weight, saves the packing, 60% of a sampler's one-pixel 3x3 call.
  m.def(
      "masked_conv2d_pack_weight(Tensor x, Tensor weight, int mask_type, int data_channels, "
      "int dilation) -> Tensor");
  m.def(
      "masked_conv2d_prepacked(Tensor x, Tensor packed_weight, Tensor weight, Tensor? bias, "
      "int mask_type, int data_channels, int dilation, int[] window) -> Tensor");

  // Gated PixelCNN activation tanh(a) * sigmoid(b), with (a, b) = x.chunk(2, dim); the output
  // keeps x's memory format. The backward recomputes tanh and sigmoid from x.
  m.def("gated_activation(Tensor x, int dim) -> Tensor");
  m.def("gated_activation_backward(Tensor grad_out, Tensor x, int dim) -> Tensor grad_x");

  // PixelRNN row recurrence (Row LSTM / Diagonal BiLSTM state-to-state part), fused over R rows.
  //   gates_in: [B, 4D, R, L] input-to-state pre-activations, gate order i, f, o, g.
  //   weight: [4D, D, k] 1-D state-to-state convolution along L; tap t of output l reads
  //   h_{r-1} at l + t - pad_left (zero outside [0, L)). h0, c0: [B, D, L].
  //   Returns h [B, D, R, L] (gates_in's dtype), c [B, D, R, L] and the activations
  //   gates [B, 4D, R, L] saved for backward (both float32 for float16/bfloat16 inputs).
  m.def(
      "lstm_rows(Tensor gates_in, Tensor weight, Tensor? bias, Tensor h0, Tensor c0, "
      "int pad_left) -> (Tensor h, Tensor c, Tensor gates)");
  // Backpropagation through the rows in reverse; grad_h, grad_c: cotangents of h and c.
  m.def(
      "lstm_rows_backward(Tensor grad_h, Tensor grad_c, Tensor weight, Tensor h, Tensor c, "
      "Tensor gates, Tensor h0, Tensor c0, int pad_left) -> (Tensor grad_gates_in, "
      "Tensor grad_weight, Tensor grad_bias, Tensor grad_h0, Tensor grad_c0)");

  // lstm_rows with the input-to-state part fused in: gates_in = a convolution along the row of
  // x [B, C, R, L] with in_weight [4D, C, k_in] (tap t of output l reads x at l + t -
  // in_pad_left, zeros outside; in_pad_left in [0, k_in]), computed row by row inside the recurrence.
  // skew_width W > 0: the rows are the R = L + W - 1 diagonals of a skewed L x W map (the
  // Diagonal BiLSTM; k = 2, pad_left = 1, k_in = 1, zero h0 and c0): each row computes its live
  // positions and one padding position, x is read as zero at padding, h and c are zero where
  // nothing is computed or copied, and h0 and c0 get zero gradients (see
  // csrc/lstm_row_common.h, Shape::skew_width).
  m.def(
      "lstm_rows_conv(Tensor x, Tensor in_weight, Tensor weight, Tensor? bias, Tensor h0, "
      "Tensor c0, int in_pad_left, int pad_left, int skew_width=0) -> "
      "(Tensor h, Tensor c, Tensor gates)");
  m.def(
      "lstm_rows_conv_backward(Tensor grad_h, Tensor grad_c, Tensor x, Tensor in_weight, "
      "Tensor weight, Tensor h, Tensor c, Tensor gates, Tensor h0, Tensor c0, int in_pad_left, "
      "int pad_left, int skew_width=0) -> (Tensor grad_x, Tensor grad_in_weight, "
      "Tensor grad_weight, Tensor grad_bias, Tensor grad_h0, Tensor grad_c0)");

  // PixelCNN++'s discretized logistic mixture (genfast/ops/logistic_mixture.py has the layout).
  //   images: integer levels [B, C, H, W] in [0, levels); params: [B, M * (1 + 2C + C(C-1)/2),
  //   H, W]. Returns each image's negative log-likelihood in nats, [B], float64 for float64
  //   params and float32 otherwise.
  m.def("logistic_mixture_nll(Tensor images, Tensor params, int levels) -> Tensor");
  // d(sum_b grad_nll[b] * nll[b]) / d params, recomputed from images and params.
  m.def(
      "logistic_mixture_nll_backward(Tensor grad_nll, Tensor images, Tensor params, int levels) "
      "-> Tensor grad_params");
  // Both in one pass: the NLL, and its gradient for grad_nll = 1 (a training step's forward).
  m.def(
      "logistic_mixture_nll_with_grad(Tensor images, Tensor params, int levels) "
      "-> (Tensor nll, Tensor grad_params)");
  // Draws int64 images [B, C, H, W] from params [B, P, H, W], with the uniforms of the Philox
  // stream of seed (int64[2] CPU tensor: key, counter offset), laid out as [B, 1 + C, H, W].
  m.def(
      "logistic_mixture_sample(Tensor params, int channels, int levels, Tensor seed) -> Tensor");
  // An autoregressive model's output layer fused with its loss: the 1 x 1 mask-B convolution
  // (colour groups of images.size(1) colours; `interleaved` places them as the colour layout
  // does) of features [B, Cin, H, W] by weight [C * levels, Cin], the log-softmax over levels
  // and the NLL of images (int64 [B, C, H, W] in [0, levels)). nll: [B], features' dtype.
  // grad_mask (features, weight, bias) asks for the gradients of each image's NLL, computed in
  // the same pass: grad_features [B, Cin, H, W], grad_weight [B, C * levels, Cin] and
  // grad_bias [B, C * levels], per image (float32 for float16/bfloat16 inputs); empty if unasked.
  m.def(
      "categorical_head_nll(Tensor features, Tensor weight, Tensor? bias, Tensor images, "
      "int levels, bool interleaved, bool[3] grad_mask) -> (Tensor nll, Tensor grad_features, "
      "Tensor grad_weight, Tensor grad_bias)");

  // Categorical draws of the autoregressive samplers, by inverse CDF: for each row of logits
  // [n, levels] the first level whose cumulative softmax probability exceeds uniform[row]
  // (float64 [n], in [0, 1)). Returns int64 [n].
  m.def("categorical_draw(Tensor logits, Tensor uniform) -> Tensor");
  // The same draw fused with the output layer: a 1 x 1 mask-B convolution (data_channels
  // colour groups) of x [n, Cin, 1, 1], only the output block of colour `colour`, then the draw.
  m.def(
      "pointwise_categorical_draw(Tensor x, Tensor weight, Tensor? bias, int data_channels, "
      "int colour, Tensor uniform) -> Tensor");
}

}  // namespace genfast
