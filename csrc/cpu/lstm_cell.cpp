// The cell maths of genfast::lstm_rows on the CPU; see lstm_cell.h and csrc/lstm_row.cpp. Float
// runs at the CPU's ISA level (csrc/cpu/kernels/lstm_cell.h); double (gradcheck's dtype) here,
// one value at a time with std:: maths.
#include "lstm_cell.h"

#include <cmath>

#include "kernel_table.h"

namespace genfast::lstm_row {

static double sigmoid(double x) {
  const double e = std::exp(-std::abs(x)), q = 1.0 / (1.0 + e);
  return x >= 0.0 ? q : e * q;
}

void forward_run(const ForwardRun<float>& q, int64_t n) { cpu::kernels().lstm_forward_run(q, n); }

void forward_run(const ForwardRun<double>& q, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const double i = sigmoid(q.pre[0][l] + q.in[0][l] + q.bias[0][l]);
    const double f = sigmoid(q.pre[1][l] + q.in[1][l] + q.bias[1][l]);
    const double o = sigmoid(q.pre[2][l] + q.in[2][l] + q.bias[2][l]);
    const double g = std::tanh(q.pre[3][l] + q.in[3][l] + q.bias[3][l]);
    const double c = f * q.c_prev[l] + i * g;
    q.gates[0][l] = i, q.gates[1][l] = f, q.gates[2][l] = o, q.gates[3][l] = g;
    q.c[l] = c;
    q.h[l] = q.state[l] = o * std::tanh(c);
  }
}

void backward_run(const BackwardRun<float>& q, int64_t n) {
  cpu::kernels().lstm_backward_run(q, n);
}

void backward_run(const BackwardRun<double>& q, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const double i = q.act[0][l], f = q.act[1][l], o = q.act[2][l], g = q.act[3][l];
    const double tc = std::tanh(q.c[l]);
    const double dh = q.dh[l] + (q.grad_h ? q.grad_h[l] : q.grad_h_value);
    const double dc = q.dc_in[l] + (q.grad_c ? q.grad_c[l] : q.grad_c_value) +
                      dh * o * (1.0 - tc * tc);
    const double grads[4] = {dc * g * i * (1.0 - i), dc * q.c_prev[l] * f * (1.0 - f),
                             dh * tc * o * (1.0 - o), dc * i * (1.0 - g * g)};
    for (int k = 0; k < 4; ++k) q.dpre[k][l] = q.grad_in[k][l] = grads[k];
    q.dc_out[l] = dc * f;
  }
}

}  // namespace genfast::lstm_row
