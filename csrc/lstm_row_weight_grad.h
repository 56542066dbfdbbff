// dL/dweight of the row recurrence's convolutions (the state's and lstm_rows_conv's input one):
// one reduction over every pixel after the backward's row loop, in fixed parts so that the
// result does not depend on the thread count. Used by lstm_row_backward.cpp.
#pragma once
#include <cstdint>
#include <vector>

#include "lstm_row_common.h"

namespace genfast::lstm_row {

// What a weight gradient's convolution read: h_{r-1} (h0 for row 0) for the state-to-state
// weight, x_r for lstm_rows_conv's in_weight. Both are [B][channels][R][L].
template <typename acc_t>
struct WeightSource {
  const acc_t* rows;
  const acc_t* first;  // the state's h0 [B][D][L]; null for x
  int64_t channels, taps, pad_left;
  bool live_only;  // read as zero outside a skewed map's live positions (x's padding)
  acc_t* grad_w;   // the result: dL/dweight [4D][channels][taps]
};

// Every source's dL/dweight from the gate gradients dpre (laid out as `gl` says), in one pass
// over the pixels: the gate gradients are read once for all of them.
template <typename acc_t>
void grad_weights(const Shape& s, const acc_t* dpre, const GateLayout& gl,
                  const std::vector<WeightSource<acc_t>>& sources);

}  // namespace genfast::lstm_row
