// Runs the clang-built kernel tables of csrc/cpu/isa/*.cpp (tests/test_clang_build.py): each
// level named on the command line computes exp over a range and one 6 x 1 conv tile, and the
// largest errors against the standard library are printed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../csrc/cpu/kernel_table.h"

namespace genfast::cpu {
extern const CpuKernels kBaselineKernels, kAvx2Kernels, kAvx512Kernels;
}

using namespace genfast::cpu;

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const CpuKernels& k = !std::strcmp(argv[i], "avx512") ? kAvx512Kernels
                          : !std::strcmp(argv[i], "avx2") ? kAvx2Kernels
                                                          : kBaselineKernels;
    std::vector<float> x(1000), y(1000);
    for (int j = 0; j < 1000; ++j) x[j] = -80.0f + 0.16f * j;
    k.vector_math(VectorFunction::exp, x.data(), y.data(), 1000);
    double exp_error = 0;
    for (int j = 0; j < 1000; ++j)
      exp_error = std::fmax(exp_error, std::fabs(y[j] / std::exp(double(x[j])) - 1));
    // C[r][:] = sum_k A[r][k] B[k][:], 6 rows, one vector of columns, k = 5.
    const int lanes = k.lanes_f32, rows = 6, depth = 5;
    std::vector<float> a(rows * depth), b(depth * lanes), c(rows * lanes);
    for (size_t j = 0; j < a.size(); ++j) a[j] = 0.25f * float(j % 7) - 0.5f;
    for (size_t j = 0; j < b.size(); ++j) b[j] = 0.125f * float(j % 5) + 1.0f;
    const Segment seg{0, 0};
    const TileArgs args{depth, 1, lanes, depth, lanes, false};
    k.tile_f32(rows, 1, true)(a.data(), b.data(), &seg, 1, args, c.data());
    double tile_error = 0;
    for (int r = 0; r < rows; ++r)
      for (int v = 0; v < lanes; ++v) {
        double want = 0;
        for (int d = 0; d < depth; ++d) want += double(a[r * depth + d]) * b[d * lanes + v];
        tile_error = std::fmax(tile_error, std::fabs(c[r * lanes + v] - want));
      }
    std::printf("%s lanes=%d exp_rel_error=%.3g tile_error=%.3g\n", argv[i], lanes,
                exp_error, tile_error);
  }
  return 0;
}
