// ollama_torch::f32_mm: a few rows of float32 activations times float32 weights, y[m, n] = sum_k x[m, k] * w[n, k]
// (a Linear layer without its bias), for the compiled decode steps of float32 models (PackedLinear).
//
// Built at run time for the CPU it runs on (native.py). MKL's sgemm of a few rows reads the weights at a third of the
// memory's speed. Here each weight is read once for every row of the step, each column in memory order (the
// hardware prefetcher follows one stream), with four accumulators per row, two rows at a time: the int8 kernel's
// loop (common.h) with float loads. Every (row, column) pair sees the same operations in the same order whatever
// the number of rows or the threads.
#include "common.h"

namespace {

at::Tensor f32_mm(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "f32_mm: x must be a contiguous float32 [M, K]");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.is_contiguous(), "f32_mm: w must be a contiguous float32 [N, K]");
  TORCH_CHECK(w.size(1) == x.size(1), "f32_mm: x is [M, ", x.size(1), "] but w is [N, ", w.size(1), "]");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  ollama_torch_kernels::rows_times_columns(x.data_ptr<float>(), M, K, w.data_ptr<float>(), N, y.data_ptr<float>(),
                                           [](int64_t, float sum) { return sum; });
  return y;
}

at::Tensor f32_mm_meta(const at::Tensor& x, const at::Tensor& w) { return at::empty({x.size(0), w.size(0)}, x.options()); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(ollama_torch, m) { m.def("f32_mm(Tensor x, Tensor w) -> Tensor"); }

TORCH_LIBRARY_IMPL(ollama_torch, CPU, m) { m.impl("f32_mm", &f32_mm); }

TORCH_LIBRARY_IMPL(ollama_torch, Meta, m) { m.impl("f32_mm", &f32_mm_meta); }
