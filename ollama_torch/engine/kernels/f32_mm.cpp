// ollama_torch::f32_mm: a few rows of float32 activations times float32 weights, y[m, n] = sum_k x[m, k] * w[n, k]
// (a Linear layer without its bias), for the compiled decode steps of float32 models (PackedLinear).
//
// Built at run time for the CPU it runs on (native.py). MKL's sgemm of a few rows reads the weights at a third of the
// memory's speed. Here threads split the columns, and each column is read in memory order (the hardware prefetcher
// follows one stream; columns read side by side ran slower, at every row count) once for up to eight rows: a tile of
// 8, then 4, 2 and 1 rows, each (row, column) with one accumulator of eight lanes (k mod 8; sixteen with AVX-512) that the column's weights,
// loaded once for the tile, are multiplied into. A weight is four bytes, so one row is as fast as memory lets it be
// (SmolLM2's 211 layers at one row: 18.9 ms, as the int8 kernel's loop of four accumulators a row ran); the tile of
// eight halves the loads of the int8 kernel's two rows at a time (the same layers at eight rows: 33.3 -> 28.3 ms,
// 26.7 with the software prefetch below; 2-core AMD EPYC, weights in memory, not cache). A (row, column) pair sees the
// same operations in the same order whatever the number of rows or the threads.
#include "common.h"

namespace {

using ollama_torch_kernels::kColumns;

#if OT_AVX2 && defined(__AVX512F__)
// The same with 16 lanes (k mod 16), where the CPU has AVX-512, and the next two kilobytes prefetched: SmolLM2's
// layers, weights in memory, one row, on a 2-core AMD EPYC with AVX-512 (Zen 4) read 48-51 -> 52-56 GB/s (its memory
// gives about 52 to a plain sum), the head 43-52 -> 47-56.
template <int R>
inline void tile(const float* x, int64_t K, const float* w, float* y, int64_t N) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k) + 2048, _MM_HINT_T0);
    const __m512 wv = _mm512_loadu_ps(w + k);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * K + k), acc[r]);
  }
  if (k < K) {  // the tail in the same lanes, masked
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 wv = _mm512_maskz_loadu_ps(mask, w + k);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x + r * K + k), acc[r]);
  }
  for (int r = 0; r < R; ++r) y[r * N] = _mm512_reduce_add_ps(acc[r]);
}
#elif OT_AVX2
using ollama_torch_kernels::hsum;

// y[r, n] = sum_k x[r, k] * w[n, k] for rows [0, R) of x: lanes k mod 8 in order, the tail past the last eight
// included. The next kilobyte of the column is prefetched at each cache line (the tile's loads keep the
// core too busy for the hardware prefetcher to run far enough ahead at eight rows).
template <int R>
inline void tile(const float* x, int64_t K, const float* w, float* y, int64_t N) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    if (k % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + k) + 1024, _MM_HINT_T0);
    const __m256 wv = _mm256_loadu_ps(w + k);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * K + k), acc[r]);
  }
  if (k < K) {  // the tail in the same lanes, masked: a scalar loop here was compiled differently for each R
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 wv = _mm256_maskload_ps(w + k, mask);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x + r * K + k, mask), acc[r]);
  }
  for (int r = 0; r < R; ++r) y[r * N] = hsum(acc[r]);
}
#else
template <int R>
inline void tile(const float* x, int64_t K, const float* w, float* y, int64_t N) {
  for (int r = 0; r < R; ++r) {
    float sum = 0.0f;
    for (int64_t j = 0; j < K; ++j) sum += w[j] * x[r * K + j];
    y[r * N] = sum;
  }
}
#endif

at::Tensor f32_mm(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "f32_mm: x must be a contiguous float32 [M, K]");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.is_contiguous(), "f32_mm: w must be a contiguous float32 [N, K]");
  TORCH_CHECK(w.size(1) == x.size(1), "f32_mm: x is [M, ", x.size(1), "] but w is [N, ", w.size(1), "]");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, (N + kColumns - 1) / kColumns, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0 * kColumns, hi = std::min(N, b1 * kColumns); n < hi; ++n) {
      const float* column = wp + n * K;
      int64_t m = 0;
      for (; m + 8 <= M; m += 8) tile<8>(xp + m * K, K, column, yp + m * N + n, N);
      if (m + 4 <= M) tile<4>(xp + m * K, K, column, yp + m * N + n, N), m += 4;
      if (m + 2 <= M) tile<2>(xp + m * K, K, column, yp + m * N + n, N), m += 2;
      if (m < M) tile<1>(xp + m * K, K, column, yp + m * N + n, N);
    }
  });
  return y;
}

at::Tensor f32_mm_meta(const at::Tensor& x, const at::Tensor& w) { return at::empty({x.size(0), w.size(0)}, x.options()); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(ollama_torch, m) { m.def("f32_mm(Tensor x, Tensor w) -> Tensor"); }

TORCH_LIBRARY_IMPL(ollama_torch, CPU, m) { m.impl("f32_mm", &f32_mm); }

TORCH_LIBRARY_IMPL(ollama_torch, Meta, m) { m.impl("f32_mm", &f32_mm_meta); }
