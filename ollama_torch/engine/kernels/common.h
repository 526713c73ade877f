// What the kernels in this directory share: the headers, OT_AVX2 (whether this build targets a CPU with AVX2, FMA
// and F16C: -march=native on one) and the horizontal sum of a vector. native.py builds each kernel with this
// directory on the include path and keys its builds by this file too. Also the int8 kernel's loop
// (``rows_times_columns``).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define OT_AVX2 1
#else
#define OT_AVX2 0
#endif

namespace ollama_torch_kernels {

#if OT_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const int8_t* p) {  // eight int8 weights widened to float32 (vpmovsxbd, vcvtdq2ps)
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

#endif

constexpr int64_t kColumns = 16;  // the unit of work a thread takes: columns [16b, 16b + 16)

// sums[m] = sum_k x[m, k] * row[k] for rows [0, M) of x (int8 weights: ``load8`` widens them). The row of weights is read in
// memory order (a step reads the whole matrix front to back, which the hardware prefetcher follows; rows of it read
// side by side ran at a third of the memory's speed), widened once for all M rows, four accumulators per row over
// the 32-weight chunks.
//
// Where the CPU has AVX-512: 16 lanes, 64-weight chunks, four rows at a time, the next two kilobytes prefetched, and
// the tail past the last 16 in the same lanes, masked, so that a row's operations do not depend on M. SmolLM2's 210
// int8 layers on a 2-core AMD EPYC (Zen 5), alternated in one process: 3.0 -> 2.7 ms at one row, 14.2 -> 8.0 at eight.
#if OT_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
constexpr int kDotRows = 4;  // rows a row of weights is read for at once: 4 x 4 accumulators of the 32 registers

template <int M>
inline void dot_rows(const float* x, int64_t K, const int8_t* row, float* sums) {
  __m512 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
  const auto load16 = [](const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  };
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(row + k) + 2048, _MM_HINT_T0);
    const __m512 w0 = load16(row + k), w1 = load16(row + k + 16), w2 = load16(row + k + 32), w3 = load16(row + k + 48);
    for (int m = 0; m < M; ++m) {
      const float* xm = x + m * K + k;
      acc[m][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xm), acc[m][0]);
      acc[m][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xm + 16), acc[m][1]);
      acc[m][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xm + 32), acc[m][2]);
      acc[m][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xm + 48), acc[m][3]);
    }
  }
  for (; k + 16 <= K; k += 16) {
    const __m512 wv = load16(row + k);
    for (int m = 0; m < M; ++m) acc[m][0] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * K + k), acc[m][0]);
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, row + k)));
    for (int m = 0; m < M; ++m) acc[m][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x + m * K + k), acc[m][0]);
  }
  for (int m = 0; m < M; ++m)
    sums[m] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]), _mm512_add_ps(acc[m][2], acc[m][3])));
}
#else
constexpr int kDotRows = 2;  // four would not fit the 16 vector registers

template <int M>
inline void dot_rows(const float* x, int64_t K, const int8_t* row, float* sums) {
  int64_t k = 0;
#if OT_AVX2
  __m256 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm256_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    const __m256 w0 = load8(row + k), w1 = load8(row + k + 8), w2 = load8(row + k + 16), w3 = load8(row + k + 24);
    for (int m = 0; m < M; ++m) {
      const float* xm = x + m * K + k;
      acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xm), acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xm + 8), acc[m][1]);
      acc[m][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xm + 16), acc[m][2]);
      acc[m][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xm + 24), acc[m][3]);
    }
  }
  for (; k + 8 <= K; k += 8) {
    const __m256 wv = load8(row + k);
    for (int m = 0; m < M; ++m) acc[m][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * K + k), acc[m][0]);
  }
  for (int m = 0; m < M; ++m)
    sums[m] = hsum(_mm256_add_ps(_mm256_add_ps(acc[m][0], acc[m][1]), _mm256_add_ps(acc[m][2], acc[m][3])));
#else
  for (int m = 0; m < M; ++m) sums[m] = 0.0f;
#endif
  for (int m = 0; m < M; ++m)
    for (int64_t j = k; j < K; ++j) sums[m] += static_cast<float>(row[j]) * x[m * K + j];
}
#endif

// y[m, n] = finish(n, sum_k x[m, k] * w[n, k]) for x [M, K] and w [N, K]: threads split the columns; each column is
// read once for every kDotRows rows (then two, then one), so it stays in the L1 cache. Every (row, column) pair sees
// the same operations in the same order whatever M or the threads.
template <typename Finish>
void rows_times_columns(const float* x, int64_t M, int64_t K, const int8_t* w, int64_t N, float* y, Finish finish) {
  at::parallel_for(0, (N + kColumns - 1) / kColumns, 1, [&](int64_t b0, int64_t b1) {
    const int64_t lo = b0 * kColumns, hi = std::min(N, b1 * kColumns);
    float sums[kDotRows];
    for (int64_t n = lo; n < hi; ++n) {
      int64_t m0 = 0;
      for (; m0 + kDotRows <= M; m0 += kDotRows) {
        dot_rows<kDotRows>(x + m0 * K, K, w + n * K, sums);
        for (int r = 0; r < kDotRows; ++r) y[(m0 + r) * N + n] = finish(n, sums[r]);
      }
      if (kDotRows > 2 && m0 + 2 <= M) {
        dot_rows<2>(x + m0 * K, K, w + n * K, sums);
        y[m0 * N + n] = finish(n, sums[0]);
        y[(m0 + 1) * N + n] = finish(n, sums[1]);
        m0 += 2;
      }
      if (m0 < M) {
        dot_rows<1>(x + m0 * K, K, w + n * K, sums);
        y[m0 * N + n] = finish(n, sums[0]);
      }
    }
  });
}

}  // namespace ollama_torch_kernels
