// The cell maths of genfast::lstm_rows on the CPU (csrc/lstm_row.cpp): the LSTM gates, cell and
// hidden updates of a run of values, forward and backward, in SIMD vectors along the run. The
// row convolution and the loops over rows live in lstm_row.cpp.
#pragma once

#include <cstdint>

namespace genfast::lstm_row {

// A run of n values of a row, each lane its own: a hidden channel of one batch element, or of a
// whole batch chunk held batch-minor. Where the run is in the [B, C, R, L] tensors, the runs of
// the row the recurrence visits next sit `ahead` values away (0: none) and are prefetched, to
// arrive while the next convolution runs.
template <typename T>
struct ForwardRun {
  const T* pre[4];  // the convolution's output for gates i, f, o, g (rows of the column buffer)
  const T* in[4];   // gates_in
  // The bias of each value of the run (the same value along a row), readable a whole SIMD vector
  // (16 floats) past the start of any vector of the run, short runs included.
  const T* bias[4];
  const T* c_prev;  // c_{r-1}: the previous row of c, or c0
  T *gates[4], *c, *h;
  T* state;  // h again, where the next row's convolution reads it
  int64_t ahead, gates_ahead;  // gates_ahead: the same for `gates`, which may be laid out apart
};

template <typename T>
struct BackwardRun {
  const T* act[4];  // the saved activations i, f, o, g
  const T *c, *c_prev;
  const T *grad_h, *grad_c;  // null when uniform: grad_h_value, grad_c_value
  T grad_h_value, grad_c_value;
  const T* dh;     // dL/dh_r through row r + 1's convolution (a column buffer row)
  const T* dc_in;  // dL/dc_r through row r + 1
  T* dc_out;       // dL/dc_{r-1} through f
  T *dpre[4], *grad_in[4];  // dL/dpre into the zero-bordered buffer, and into grad_gates_in
  int64_t ahead, gates_ahead;  // gates_ahead: the same for act and grad_in
};

// pre = pre[g] + in[g] + bias[g] -> gates i, f, o, g (sigmoid x 3, tanh), c = f c_prev + i g,
// h = state = o tanh(c), for the n values of the run.
void forward_run(const ForwardRun<float>& q, int64_t n);
void forward_run(const ForwardRun<double>& q, int64_t n);

// The gradients of one run through the cell: see lstm_cell.cpp.
void backward_run(const BackwardRun<float>& q, int64_t n);
void backward_run(const BackwardRun<double>& q, int64_t n);

}  // namespace genfast::lstm_row
