// ollama_torch::decode_attention: one query token's attention over a window of the KV cache, for the compiled
// decode steps of float32 models (compiled.py's ``_decode_attention``):
//   out[r, h, g] = sum_w softmax_w(scale * q[r, h, g] . k[r, h, w] + mask[r, w]) * v[r, h, w]
// for rows r, key/value heads h and the query heads g that share each (a grouped-query model's, folded next to
// their key/value head). q is [R, H, G, D]; k and v are [R, H, W, D] windows of the cache's buffers (any strides,
// the last dimension contiguous); mask is the step's additive mask, [R, 1, 1, W] (any strides).
//
// Built at run time for the CPU it runs on (native.py). Each (row, key/value head, query head) is one task: the
// scores, eight keys at a time; their softmax (the maximum subtracted, a vectorized exp, in float32); the values
// weighted, 64 output columns held in registers over the window. The operations and their order do not depend on
// the threads or the rows beside a row. PyTorch's CPU attention (the flash kernel SDPA picks) spent about 60 us a
// layer in SmolLM2's compiled step at one row over a 256-column window (1.8 ms of 21).
#include "common.h"

#include <cmath>
#include <limits>
#include <vector>

namespace {

using ollama_torch_kernels::hsum;

#if OT_AVX2
// The sums of eight vectors, as one vector: lane j is the sum of a[j]'s lanes.
inline __m256 sums8(const __m256* a) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// exp of eight floats (Cephes' single-precision polynomial, within 2 ulp); 0 below -87, where float32's exp leaves
// the normal numbers (a masked column's score is -inf or float32's lowest).
inline __m256 exp8(__m256 x) {
  const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.3762626647949f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#endif

// Whether a column is open to attention: its mask is above float32's lowest value (masks close a column with that or
// with -inf; NaN counts as open, so that it reaches the result as it would over the whole window).
inline bool column_open(float mask) { return !(mask <= std::numeric_limits<float>::lowest()); }

// scores[w] = scale * q . k[w] + mask[w] for w in [0, W); returns their maximum. Eight keys at a time, each with
// an accumulator of its own over D (a multiple of 8 on this path), summed across lanes together.
float scores_of(const float* q, const float* k, int64_t kw, const float* mask, int64_t mw, int64_t W, int64_t D,
                float scale, float* scores) {
  float top = -std::numeric_limits<float>::infinity();
  int64_t w = 0;
#if OT_AVX2
  if (D % 8 == 0) {
    __m256 best = _mm256_set1_ps(top);
    for (; w + 8 <= W; w += 8) {
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (w + j) * kw + d), acc[j]);
      }
      const __m256 m = mw == 1 ? _mm256_loadu_ps(mask + w)
                               : _mm256_set_ps(mask[(w + 7) * mw], mask[(w + 6) * mw], mask[(w + 5) * mw], mask[(w + 4) * mw],
                                               mask[(w + 3) * mw], mask[(w + 2) * mw], mask[(w + 1) * mw], mask[w * mw]);
      const __m256 sv = _mm256_fmadd_ps(sums8(acc), _mm256_set1_ps(scale), m);
      _mm256_storeu_ps(scores + w, sv);
      best = _mm256_max_ps(best, sv);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, best);
    for (float x : lanes) top = std::max(top, x);
  }
#endif
  for (; w < W; ++w) {
    float sum = 0.0f;
    for (int64_t d = 0; d < D; ++d) sum += q[d] * k[w * kw + d];
    scores[w] = sum * scale + mask[w * mw];
    top = std::max(top, scores[w]);
  }
  return top;
}

// scores[w] = exp(scores[w] - top); returns their sum.
float exps_of(float* scores, int64_t W, float top) {
  int64_t w = 0;
  float total = 0.0f;
#if OT_AVX2
  __m256 sum = _mm256_setzero_ps();
  const __m256 t = _mm256_set1_ps(top);
  for (; w + 8 <= W; w += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + w), t));
    _mm256_storeu_ps(scores + w, e);
    sum = _mm256_add_ps(sum, e);
  }
  total = hsum(sum);
#endif
  for (; w < W; ++w) {
    scores[w] = std::exp(scores[w] - top);
    total += scores[w];
  }
  return total;
}

// out[d] = factor * sum_w p[w] * v[w, d]: 64 columns of out at a time held in registers over the window.
void weighted_sum(const float* p, const float* v, int64_t vw, int64_t W, int64_t D, float factor, float* out) {
  int64_t d0 = 0;
#if OT_AVX2
  for (; d0 + 64 <= D; d0 += 64) {
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t w = 0; w < W; ++w) {
      const __m256 pw = _mm256_set1_ps(p[w]);
      const float* row = v + w * vw + d0;
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(pw, _mm256_loadu_ps(row + 8 * j), acc[j]);
    }
    const __m256 f = _mm256_set1_ps(factor);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + d0 + 8 * j, _mm256_mul_ps(acc[j], f));
  }
#endif
  for (int64_t d = d0; d < D; ++d) {
    float sum = 0.0f;
    for (int64_t w = 0; w < W; ++w) sum += p[w] * v[w * vw + d];
    out[d] = sum * factor;
  }
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double scale) {
  TORCH_CHECK(q.dim() == 4 && q.scalar_type() == at::kFloat && q.is_contiguous(),
              "decode_attention: q must be a contiguous float32 [R, H, G, D]");
  TORCH_CHECK(k.dim() == 4 && v.dim() == 4 && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "decode_attention: k and v must be float32 [R, H, W, D]");
  const int64_t R = q.size(0), H = q.size(1), G = q.size(2), D = q.size(3), W = k.size(2);
  TORCH_CHECK(k.size(0) == R && k.size(1) == H && k.size(3) == D && v.sizes() == k.sizes(),
              "decode_attention: q is [", R, ", ", H, ", ", G, ", ", D, "] but k is ", k.sizes(), " and v ", v.sizes());
  TORCH_CHECK(k.stride(3) == 1 && v.stride(3) == 1, "decode_attention: k and v must be contiguous in their last dimension");
  TORCH_CHECK(mask.dim() == 4 && mask.scalar_type() == at::kFloat && mask.size(0) == R && mask.size(1) == 1 &&
                  mask.size(2) == 1 && mask.size(3) == W,
              "decode_attention: mask must be a float32 [R, 1, 1, W], W the window of k and v");
  TORCH_CHECK(W > 0, "decode_attention: an empty window");
  at::Tensor out = at::empty({R, H, G, D}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = mask.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t kr = k.stride(0), kh = k.stride(1), kw = k.stride(2);
  const int64_t vr = v.stride(0), vh = v.stride(1), vw = v.stride(2);
  const int64_t mr = mask.stride(0), mw = mask.stride(3);
  const float s = static_cast<float>(scale);
  // Each row attends over the columns [lo, hi) from its first to its last column the mask leaves open, widened to
  // multiples of 8 (the vectors' blocks): a masked column's weight is exactly 0, so the result is the whole
  // window's, bit for bit, without reading the keys and values of the columns around a row's tokens (those past
  // the written column and before the row's first: at one row over a 256-column window after a short prompt, most
  // of it). A row with no open column takes the whole window.
  std::vector<int64_t> lo(R), hi(R);
  for (int64_t r = 0; r < R; ++r) {
    const float* m = mp + r * mr;
    int64_t first = 0, last = W;
    while (first < W && !column_open(m[first * mw])) ++first;
    while (last > first && !column_open(m[(last - 1) * mw])) --last;
    if (first == last) first = 0, last = W;
    lo[r] = first / 8 * 8;
    hi[r] = std::min(W, (last + 7) / 8 * 8);
  }
  at::parallel_for(0, R * H * G, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(W);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t / (H * G), h = (t / G) % H, w0 = lo[r], n = hi[r] - lo[r];
      float* ot = op + t * D;
      const float top = scores_of(qp + t * D, kp + r * kr + h * kh + w0 * kw, kw, mp + r * mr + w0 * mw, mw, n, D, s,
                                  scores.data());
      if (top == -std::numeric_limits<float>::infinity()) {  // nothing to attend to: zeros, not NaN
        std::fill(ot, ot + D, 0.0f);
        continue;
      }
      const float total = exps_of(scores.data(), n, top);
      weighted_sum(scores.data(), vp + r * vr + h * vh + w0 * vw, vw, n, D, 1.0f / total, ot);
    }
  });
  return out;
}

at::Tensor decode_attention_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                                 double scale) {
  return at::empty(q.sizes(), q.options());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ollama_torch, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(ollama_torch, CPU, m) { m.impl("decode_attention", &decode_attention); }

TORCH_LIBRARY_IMPL(ollama_torch, Meta, m) { m.impl("decode_attention", &decode_attention_meta); }
