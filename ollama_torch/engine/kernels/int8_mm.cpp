// ollama_torch::int8_mm: a few rows of float32 activations times int8 weights with one scale per output
// column (weight-only int8, as Int8WeightLinear keeps them): y[m, n] = scale[n] * sum_k x[m, k] * w[n, k].
//
// Built at run time for the CPU it runs on (native.py), for the decode steps of quantized models: each
// weight is read once for every row of the step, widened to float32 (vpmovsxbd, vcvtdq2ps) and multiplied
// with FMA. Every (row, column) pair has an accumulator of its own that sees the same operations in the same
// order whatever the blocking, the number of rows or the threads, so a row's result does not depend on the
// rows beside it in a batch.
#include "common.h"

namespace {

at::Tensor int8_mm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "int8_mm: x must be a contiguous float32 [M, K]");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kChar && w.is_contiguous(), "int8_mm: w must be a contiguous int8 [N, K]");
  TORCH_CHECK(w.size(1) == x.size(1), "int8_mm: x is [M, ", x.size(1), "] but w is [N, ", w.size(1), "]");
  TORCH_CHECK(scale.dim() == 1 && scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.size(0) == w.size(0),
              "int8_mm: scale must be a contiguous float32 [N]");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const float* sp = scale.data_ptr<float>();
  ollama_torch_kernels::rows_times_columns(x.data_ptr<float>(), M, K, w.data_ptr<int8_t>(), N, y.data_ptr<float>(),
                                           [sp](int64_t n, float sum) { return sum * sp[n]; });
  return y;
}

at::Tensor int8_mm_meta(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  return at::empty({x.size(0), w.size(0)}, x.options());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ollama_torch, m) {  // a fragment: each kernel file defines its own operators
  m.def("int8_mm(Tensor x, Tensor w, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(ollama_torch, CPU, m) { m.impl("int8_mm", &int8_mm); }

TORCH_LIBRARY_IMPL(ollama_torch, Meta, m) { m.impl("int8_mm", &int8_mm_meta); }
