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

#if OT_AVX2
using ollama_torch_kernels::hsum;
#endif

constexpr int64_t kColumns = 16;  // the unit of work a thread takes: columns [16b, 16b + 16)

#if OT_AVX2
inline __m256 widen8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#endif

// Rows [0, M) of x times column n: the column's weights are read in memory order (a step reads the whole
// matrix front to back, which the hardware prefetcher follows; rows of it read side by side ran at a third of the
// memory's speed), four accumulators per row over the 32-weight chunks.
template <int M>
void column(const float* x, int64_t K, const int8_t* w, const float* scale, float* y, int64_t N, int64_t n) {
  const int8_t* row = w + n * K;
  float sums[M];
  int64_t k = 0;
#if OT_AVX2
  __m256 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm256_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    const __m256 w0 = widen8(row + k), w1 = widen8(row + k + 8), w2 = widen8(row + k + 16), w3 = widen8(row + k + 24);
    for (int m = 0; m < M; ++m) {
      const float* xm = x + m * K + k;
      acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xm), acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xm + 8), acc[m][1]);
      acc[m][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xm + 16), acc[m][2]);
      acc[m][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xm + 24), acc[m][3]);
    }
  }
  for (; k + 8 <= K; k += 8) {
    const __m256 wv = widen8(row + k);
    for (int m = 0; m < M; ++m) acc[m][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * K + k), acc[m][0]);
  }
  for (int m = 0; m < M; ++m)
    sums[m] = hsum(_mm256_add_ps(_mm256_add_ps(acc[m][0], acc[m][1]), _mm256_add_ps(acc[m][2], acc[m][3])));
#else
  for (int m = 0; m < M; ++m) sums[m] = 0.0f;
#endif
  for (int m = 0; m < M; ++m) {
    float s = sums[m];
    for (int64_t j = k; j < K; ++j) s += static_cast<float>(row[j]) * x[m * K + j];
    y[m * N + n] = s * scale[n];
  }
}

at::Tensor int8_mm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "int8_mm: x must be a contiguous float32 [M, K]");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kChar && w.is_contiguous(), "int8_mm: w must be a contiguous int8 [N, K]");
  TORCH_CHECK(w.size(1) == x.size(1), "int8_mm: x is [M, ", x.size(1), "] but w is [N, ", w.size(1), "]");
  TORCH_CHECK(scale.dim() == 1 && scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.size(0) == w.size(0),
              "int8_mm: scale must be a contiguous float32 [N]");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const float* xp = x.data_ptr<float>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, (N + kColumns - 1) / kColumns, 1, [&](int64_t b0, int64_t b1) {
    const int64_t lo = b0 * kColumns, hi = std::min(N, b1 * kColumns);
    for (int64_t n = lo; n < hi; ++n) {
      // two rows at a time (four would not fit the 16 vector registers); the column stays in the L1 cache
      int64_t m0 = 0;
      for (; m0 + 2 <= M; m0 += 2) column<2>(xp + m0 * K, K, wp, sp, yp + m0 * N, N, n);
      if (m0 < M) column<1>(xp + m0 * K, K, wp, sp, yp + m0 * N, N, n);
    }
  });
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
