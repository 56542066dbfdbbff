// The maths of one group of pixels of the discretized logistic mixture (genfast/ops/
// logistic_mixture.py has the equations), written once over a small set of operations `Ops`:
// float vectors of an ISA level (csrc/cpu/kernels/logistic_mixture.h) and scalar double
// (csrc/logistic_mixture.cpp). The file is included inside the namespace of each user, after that
// user's target switch, so each gets its own copy compiled for its level; it has no include guard
// and includes nothing itself.
//
// GENFAST_MIXTURE_FN qualifies the functions: inline here, __host__ __device__ inline where a
// CUDA file (csrc/cuda/logistic_mixture.cu) defines it first.
//
// Ops provides: Scalar, V (a vector of kLanes pixels, or one pixel), splat, load, store, exp,
// log, tanh, abs, max, select(mask, a, b), any(mask), mask_not, mask_and, mask_or; the
// comparisons are V's operators.
//
// A tile holds n pixels (a multiple of Ops::kLanes) in planes `stride` values apart: its P
// parameter planes (plane p at params + p * stride) and its C level planes (levels + c * stride),
// the levels as floats holding whole numbers, so that the edge bins are found exactly.

#ifndef GENFAST_MIXTURE_FN
#define GENFAST_MIXTURE_FN inline
#endif

// The constants of a call.
struct MixtureShape {
  int channels;          // C
  int mixtures;          // M
  float levels_minus_1;  // L - 1
};

constexpr int kMostChannels = 4;
constexpr double kLogScaleMin = -7.0;           // the original's clamp on log scales
constexpr double kTinyBinProbability = 1e-5;    // below it, the density at the centre
constexpr double kSmallestLogArgument = 1e-12;  // the reference's clamp inside log
// torch's softplus(y) is y above this (its default threshold), and so is the reference's: the
// edge bins and the tiny branch follow it, which matters in float64 only (exp(-20) = 2e-9).
constexpr double kSoftplusThreshold = 20.0;

template <class Ops>
struct BinTerms {
  typename Ops::V log_prob;     // log P(bin | this component, this channel)
  typename Ops::V d_mean;       // d log_prob / d mean
  typename Ops::V d_log_scale;  // d log_prob / d (unclamped) log scale
};

// sigmoid(x) and sigmoid(-x) from e = exp(-|x|), both without cancellation.
template <class Ops>
GENFAST_MIXTURE_FN void sigmoid_pair(typename Ops::V x, typename Ops::V e, typename Ops::V* pos,
                         typename Ops::V* neg) {
  using V = typename Ops::V;
  const V inv = Ops::splat(1.0f) / (Ops::splat(1.0f) + e);
  const auto non_negative = x >= Ops::splat(0.0f);
  *pos = Ops::select(non_negative, inv, e * inv);
  *neg = Ops::select(non_negative, e * inv, inv);
}

// The log probability of the bin at `level` (value x) under one logistic, and with kGrad its
// derivatives. Edge bins take log sigmoid of the open side; middle bins log(cdf difference),
// or below kTinyBinProbability the log density at the centre times the bin width. One log
// serves every branch: its argument is chosen per pixel first.
template <class Ops, bool kGrad>
GENFAST_MIXTURE_FN BinTerms<Ops> bin_terms(typename Ops::V x, typename Ops::V level,
                                           typename Ops::V mean, typename Ops::V raw_log_scale,
                                           const MixtureShape& s, typename Ops::V half_bin,
                                           typename Ops::V log_half_levels) {
  using V = typename Ops::V;
  const V zero = Ops::splat(0.0f), one = Ops::splat(1.0f);
  const V log_scale = Ops::max(raw_log_scale, Ops::splat(kLogScaleMin));
  const V inv_scale = Ops::exp(-log_scale);
  const V centred = x - mean;
  const V plus = inv_scale * (centred + half_bin);
  const V minus = inv_scale * (centred - half_bin);
  const V e_plus = Ops::exp(-Ops::abs(plus)), e_minus = Ops::exp(-Ops::abs(minus));
  V sig_plus, sig_neg_plus, sig_minus, sig_neg_minus;
  sigmoid_pair<Ops>(plus, e_plus, &sig_plus, &sig_neg_plus);
  sigmoid_pair<Ops>(minus, e_minus, &sig_minus, &sig_neg_minus);
  // F(plus) - F(minus), from the small side of the logistic: no cancellation in the tails.
  const V delta = Ops::select(minus > zero, sig_neg_minus - sig_neg_plus, sig_plus - sig_minus);
  const auto first = level == zero;
  const auto last = level == Ops::splat(s.levels_minus_1);
  const auto edge = Ops::mask_or(first, last);
  const auto tiny = Ops::mask_and(Ops::mask_not(edge),
                                  Ops::mask_not(delta > Ops::splat(kTinyBinProbability)));
  V mid = zero, e_mid = zero;
  if (Ops::any(tiny)) {
    mid = inv_scale * centred;
    e_mid = Ops::exp(-Ops::abs(mid));
  }
  // log sigmoid(plus) = plus - softplus(plus) = -(max(-plus, 0) + log(1 + e_plus));
  // log(1 - sigmoid(minus)) = -softplus(minus) likewise; the tiny branch has softplus(mid).
  // Saturated: softplus(y) = y exactly, so log(1 + e) is dropped.
  const V softplus_in = Ops::select(first, plus, Ops::select(last, minus, mid));
  const auto saturated = Ops::mask_and(Ops::mask_or(edge, tiny),
                                       softplus_in > Ops::splat(kSoftplusThreshold));
  const V argument = Ops::select(
      saturated, one,
      Ops::select(first, one + e_plus,
                  Ops::select(last, one + e_minus,
                              Ops::select(tiny, one + e_mid,
                                          Ops::max(delta, Ops::splat(kSmallestLogArgument))))));
  const V log_arg = Ops::log(argument);
  BinTerms<Ops> t;
  t.log_prob = Ops::select(
      first, -Ops::max(-plus, zero) - log_arg,
      Ops::select(last, -Ops::max(minus, zero) - log_arg,
                  Ops::select(tiny,
                              mid - log_scale - 2.0f * (Ops::max(mid, zero) + log_arg) -
                                  log_half_levels,
                              log_arg)));
  if constexpr (kGrad) {
    const auto middle = Ops::mask_and(Ops::mask_not(edge), Ops::mask_not(tiny));
    const V inv_delta = one / Ops::select(middle, delta, one);
    // d log_prob / d plus, / d minus and / d mid in each branch.
    const V d_plus =
        Ops::select(first, Ops::select(saturated, zero, sig_neg_plus),
                    Ops::select(middle, sig_plus * sig_neg_plus * inv_delta, zero));
    const V d_minus =
        Ops::select(last, Ops::select(saturated, -one, -sig_minus),
                    Ops::select(middle, -sig_minus * sig_neg_minus * inv_delta, zero));
    V d_mid = zero;
    if (Ops::any(tiny)) {
      V sig_mid, sig_neg_mid;
      sigmoid_pair<Ops>(mid, e_mid, &sig_mid, &sig_neg_mid);
      // 1 - 2 sigmoid(mid), or 1 - 2 where softplus saturates.
      d_mid = Ops::select(tiny, Ops::select(saturated, -one, sig_neg_mid - sig_mid), zero);
    }
    // plus, minus and mid are inv_scale * (x - mean + const): d/dmean = -inv_scale, and
    // d/dlog_scale = -(themselves); the tiny branch also has -log_scale directly.
    t.d_mean = -inv_scale * (d_plus + d_minus + d_mid);
    const V d_log_scale = -(plus * d_plus + minus * d_minus + mid * d_mid) -
                          Ops::select(tiny, one, zero);
    // The clamp passes the gradient where raw_log_scale >= the minimum, as torch's clamp does.
    t.d_log_scale =
        Ops::select(raw_log_scale >= Ops::splat(kLogScaleMin), d_log_scale, zero);
  }
  return t;
}

// Per-pixel constants and the values x of each channel's level.
template <class Ops>
struct PixelGroup {
  typename Ops::V level[kMostChannels];
  typename Ops::V x[kMostChannels];
};

template <class Ops>
inline PixelGroup<Ops> load_pixels(const typename Ops::Scalar* levels, int64_t stride, int64_t i,
                                   const MixtureShape& s) {
  PixelGroup<Ops> g;
  // As the reference: x = level * (2 / (L - 1)) - 1 with the scale rounded to the float type.
  const typename Ops::V scale = Ops::splat(2.0 / s.levels_minus_1);
  for (int c = 0; c < s.channels; ++c) {
    g.level[c] = Ops::load(levels + c * stride + i);
    g.x[c] = g.level[c] * scale - Ops::splat(1.0f);
  }
  return g;
}

// log sum_m exp(values[m * stride + i]) over the mixtures.
template <class Ops>
inline typename Ops::V log_sum_exp(const typename Ops::Scalar* values, int64_t stride, int64_t i,
                                   int mixtures) {
  using V = typename Ops::V;
  V top = Ops::load(values + i);
  for (int m = 1; m < mixtures; ++m) top = Ops::max(top, Ops::load(values + m * stride + i));
  V sum = Ops::splat(0.0f);
  for (int m = 0; m < mixtures; ++m) sum += Ops::exp(Ops::load(values + m * stride + i) - top);
  return top + Ops::log(sum);
}

// The component's mean of channel c: its own mean plus the coefficients times the values of
// the channels before it (PixelCNN++ section 2.2). coeff_tanh[k] holds tanh(coefficient k).
template <class Ops>
inline typename Ops::V conditioned_mean(const typename Ops::Scalar* params, int64_t stride,
                                        int64_t i, const MixtureShape& s, int c, int m,
                                        const PixelGroup<Ops>& g,
                                        const typename Ops::V* coeff_tanh) {
  const int mixtures = s.mixtures;
  typename Ops::V mean = Ops::load(params + (mixtures + c * mixtures + m) * stride + i);
  const int k0 = c * (c - 1) / 2;  // coefficients of channel c start here
  for (int e = 0; e < c; ++e) mean += coeff_tanh[k0 + e] * g.x[e];
  return mean;
}

// Plane indices of the layout (genfast/ops/logistic_mixture.py).
GENFAST_MIXTURE_FN int64_t mean_plane(const MixtureShape& s, int c, int m) {
  return s.mixtures + c * s.mixtures + m;
}
GENFAST_MIXTURE_FN int64_t log_scale_plane(const MixtureShape& s, int c, int m) {
  return s.mixtures + (s.channels + c) * s.mixtures + m;
}
GENFAST_MIXTURE_FN int64_t coeff_plane(const MixtureShape& s, int k, int m) {
  return s.mixtures + 2 * s.channels * s.mixtures + k * s.mixtures + m;
}

// Log-likelihood of each of the n pixels of a tile into log_lik[n]; scratch holds M planes.
template <class Ops>
void mixture_log_likelihood(const typename Ops::Scalar* params,
                            const typename Ops::Scalar* levels, int64_t n, int64_t stride,
                            const MixtureShape& s,
                            typename Ops::Scalar* scratch, typename Ops::Scalar* log_lik) {
  using V = typename Ops::V;
  const V half_bin = Ops::splat(1.0 / s.levels_minus_1);
  const V log_half_levels = Ops::splat(std::log(s.levels_minus_1 / 2.0));
  const int coefficients = s.channels * (s.channels - 1) / 2;
  for (int64_t i = 0; i < n; i += Ops::kLanes) {
    const PixelGroup<Ops> g = load_pixels<Ops>(levels, stride, i, s);
    for (int m = 0; m < s.mixtures; ++m) {
      V coeff_tanh[kMostChannels * (kMostChannels - 1) / 2];
      for (int k = 0; k < coefficients; ++k)
        coeff_tanh[k] = Ops::tanh(Ops::load(params + coeff_plane(s, k, m) * stride + i));
      V total = Ops::load(params + m * stride + i);  // the logit
      for (int c = 0; c < s.channels; ++c) {
        const V mean = conditioned_mean<Ops>(params, stride, i, s, c, m, g, coeff_tanh);
        const V raw_log_scale = Ops::load(params + log_scale_plane(s, c, m) * stride + i);
        total += bin_terms<Ops, false>(g.x[c], g.level[c], mean, raw_log_scale, s, half_bin,
                                       log_half_levels).log_prob;
      }
      Ops::store(scratch + m * stride + i, total);
    }
    // log sum_m softmax(logits)_m prod_c P_c = lse(logit + sum log P) - lse(logit).
    const V ll = log_sum_exp<Ops>(scratch, stride, i, s.mixtures) -
                 log_sum_exp<Ops>(params, stride, i, s.mixtures);
    Ops::store(log_lik + i, ll);
  }
}

// d(grad_nll * NLL) / d params of a tile into grad's P planes, recomputed from params and levels,
// and each pixel's log-likelihood into log_lik[n], which this pass knows on the way (so that a
// training step's forward can be this pass alone: genfast::logistic_mixture_nll_with_grad).
// The derivatives of each (channel, component) go to their planes of grad first, unscaled,
// with the component's total log-probability in its logit plane; once every component of a
// pixel is known, its responsibility w_m = softmax(total)_m scales them.
template <class Ops>
void mixture_gradient(const typename Ops::Scalar* params, const typename Ops::Scalar* levels,
                      int64_t n, int64_t stride, const MixtureShape& s,
                      typename Ops::Scalar grad_nll, typename Ops::Scalar* grad,
                      typename Ops::Scalar* log_lik) {
  using V = typename Ops::V;
  const V half_bin = Ops::splat(1.0 / s.levels_minus_1);
  const V log_half_levels = Ops::splat(std::log(s.levels_minus_1 / 2.0));
  const V g_out = Ops::splat(grad_nll);
  const int coefficients = s.channels * (s.channels - 1) / 2;
  for (int64_t i = 0; i < n; i += Ops::kLanes) {
    const PixelGroup<Ops> g = load_pixels<Ops>(levels, stride, i, s);
    for (int m = 0; m < s.mixtures; ++m) {
      V coeff_tanh[kMostChannels * (kMostChannels - 1) / 2];
      for (int k = 0; k < coefficients; ++k) {
        coeff_tanh[k] = Ops::tanh(Ops::load(params + coeff_plane(s, k, m) * stride + i));
        // Kept in the coefficient's grad plane until its gradient replaces it below.
        Ops::store(grad + coeff_plane(s, k, m) * stride + i, coeff_tanh[k]);
      }
      V total = Ops::load(params + m * stride + i);
      for (int c = 0; c < s.channels; ++c) {
        const V mean = conditioned_mean<Ops>(params, stride, i, s, c, m, g, coeff_tanh);
        const V raw_log_scale = Ops::load(params + log_scale_plane(s, c, m) * stride + i);
        const BinTerms<Ops> t = bin_terms<Ops, true>(g.x[c], g.level[c], mean, raw_log_scale,
                                                     s, half_bin, log_half_levels);
        total += t.log_prob;
        Ops::store(grad + mean_plane(s, c, m) * stride + i, t.d_mean);
        Ops::store(grad + log_scale_plane(s, c, m) * stride + i, t.d_log_scale);
      }
      Ops::store(grad + m * stride + i, total);
    }
    const V lse_total = log_sum_exp<Ops>(grad, stride, i, s.mixtures);
    const V lse_logits = log_sum_exp<Ops>(params, stride, i, s.mixtures);
    Ops::store(log_lik + i, lse_total - lse_logits);
    for (int m = 0; m < s.mixtures; ++m) {
      // NLL = -(lse(total) - lse(logits)): d/dlogit_m = prior_m - w_m, d/dtotal_m = -w_m.
      const V w = Ops::exp(Ops::load(grad + m * stride + i) - lse_total);
      const V prior = Ops::exp(Ops::load(params + m * stride + i) - lse_logits);
      Ops::store(grad + m * stride + i, g_out * (prior - w));
      const V scale = -g_out * w;
      for (int c = 0; c < s.channels; ++c) {
        const V d_mean = scale * Ops::load(grad + mean_plane(s, c, m) * stride + i);
        Ops::store(grad + mean_plane(s, c, m) * stride + i, d_mean);
        const int64_t ls = log_scale_plane(s, c, m) * stride + i;
        Ops::store(grad + ls, scale * Ops::load(grad + ls));
        const int k0 = c * (c - 1) / 2;
        for (int e = 0; e < c; ++e) {
          // mean_c += tanh(raw_k) * x_e: d/draw_k = d_mean * x_e * (1 - tanh(raw_k)^2).
          const int64_t k = coeff_plane(s, k0 + e, m) * stride + i;
          const V t = Ops::load(grad + k);
          Ops::store(grad + k, d_mean * g.x[e] * (Ops::splat(1.0f) - t * t));
        }
      }
    }
  }
}
