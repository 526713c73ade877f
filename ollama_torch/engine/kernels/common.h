// What the kernels in this directory share: the headers, OT_AVX2 (whether this build targets a CPU with AVX2, FMA
// and F16C: -march=native on one) and the horizontal sum of a vector. native.py builds each kernel with this
// directory on the include path and keys its builds by this file too.
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
#endif

}  // namespace ollama_torch_kernels
