// The genfast op library: its schemas (csrc/op_schemas.h) are defined here, in the one
// TORCH_LIBRARY block; the kernels register their implementations with TORCH_LIBRARY_IMPL next
// to their code. The module init is empty: the ops are reached through torch.ops.genfast, so no
// pybind11 bindings are needed.
#include <Python.h>
#include <torch/library.h>

#include "op_schemas.h"

TORCH_LIBRARY(genfast, m) { genfast::define_op_schemas(m); }

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
