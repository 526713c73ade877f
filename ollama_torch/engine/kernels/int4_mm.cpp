// ollama_torch::int4_mm: a few rows of float32 activations times group-wise asymmetric int4 weights (the
// ``ollama_int4`` format of Q4_K_M / Q4_K_S: per group of G input columns, w = q * scale + min, q in 0..15, scale
// and min float16), as Int4WeightLinear keeps them. As llama.cpp does for its 4-bit types (it multiplies them by
// rows quantized to Q8_K or Q8_0), each row is quantized per group to int8 with a float32 scale d (d = max |x| / 127,
// xq = round(x / d)), so that the codes meet it in integer multiplies, 32 at a time (vpmaddubsw):
//
//   y[m, n] = sum_g scale[n, g] * d[m, g] * (sum_{k in g} q[n, k] * xq[m, k]) + min[n, g] * (sum_{k in g} x[m, k])
//
// The mins meet the group sums of the float32 row, which are exact. Where the codes were widened to float32 one
// by one (two conversions and two FMAs per 16 codes), a step of a 4-bit model took as long as one of an 8-bit
// model, whose weights are twice the bytes: this is the work llama.cpp does for the same weights.
//
// The codes are two per byte in blocks of 16 columns: byte 8b + i of a row holds column 16b + i in its low nibble
// and column 16b + 8 + i in its high one. The 16 bytes of 32 columns, their low nibbles then their high ones, give
// columns 0-7, 16-23, 8-15, 24-31 (``kOrder``): each row's quantized values are stored in that order, so one mask
// and one shift unpack 32 codes.
//
// Built at run time for the CPU it runs on (native.py), for the decode steps of 4-bit models. Each weight is read
// once for every row of the step. Every (row, column) pair sees the same operations in the same order whatever
// the blocking, the number of rows or the threads, so a row's result does not depend on the rows beside it.
#include "common.h"

#include <cmath>
#include <vector>

namespace {

#if OT_AVX2
using ollama_torch_kernels::hsum;
#endif
// AVX-512 VNNI (vpdpbusd on 256-bit vectors): one instruction for the three that multiply and add 32 codes
#if OT_AVX2 && defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define OT_VNNI 1
#else
#define OT_VNNI 0
#endif

using ollama_torch_kernels::kColumns;
constexpr int64_t kChunk = 64;     // groups whose scales and mins are widened to float32 at a time
constexpr int kOrder[32] = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23,
                            8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};

// float16 -> float32 for n values, n a multiple of 8 (the rows of scales and mins are padded to one)
inline void widen_half(const at::Half* src, float* dst, int64_t n) {
#if OT_AVX2
  for (int64_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#else
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
#endif
}

struct Operands {
  const int8_t* xq;      // [M, K]: each row quantized per group, each 32 columns in kOrder
  const float* d;        // [M, groups]: the quantized rows' scales
  const float* xs;       // [M, padded]: each row's sum over each group, zeros past the last group
  const uint8_t* q;      // [N, K/2]
  const at::Half* scales;  // [N, padded], zeros past the last group
  const at::Half* mins;    // [N, padded], zeros past the last group
  float* y;              // [M, N]
  int64_t K, N, group, groups, padded;
};

// Row m of x [M, K] quantized per group into xq, d and xs (see Operands).
void quantize_row(const float* x, int64_t K, int64_t group, int64_t padded, int8_t* xq, float* d, float* xs) {
  for (int64_t g = 0, k0 = 0; k0 < K; ++g, k0 += group) {
#if OT_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 top = _mm256_setzero_ps(), total = _mm256_setzero_ps();
    for (int64_t k = k0; k < k0 + group; k += 8) {
      const __m256 v = _mm256_loadu_ps(x + k);
      top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v));
      total = _mm256_add_ps(total, v);
    }
    __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
    t = _mm_max_ps(t, _mm_movehl_ps(t, t));
    const float amax = _mm_cvtss_f32(_mm_max_ss(t, _mm_movehdup_ps(t))), sum = hsum(total);
#else
    float amax = 0.0f, sum = 0.0f;
    for (int64_t k = k0; k < k0 + group; ++k) {
      amax = std::max(amax, std::fabs(x[k]));
      sum += x[k];
    }
#endif
    const float scale = amax / 127.0f, inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    d[g] = scale;
    xs[g] = sum;
    for (int64_t k = k0; k < k0 + group; k += 32) {
#if OT_AVX2  // nearest, ties to even (cvtps2dq in the default rounding mode), packed to bytes in kOrder
      const __m256 by = _mm256_set1_ps(inverse), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
      __m256i q[4];
      for (int i = 0; i < 4; ++i)
        q[i] = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * i), by))));
      // bytes, as 4-byte words: columns 0-3, 16-19, 8-11, 24-27, 4-7, 20-23, 12-15, 28-31
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[2]), _mm256_packs_epi32(q[1], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + k),
                          _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#else
      for (int i = 0; i < 32; ++i)  // nearest, ties to even (the default rounding mode)
        xq[k + i] = static_cast<int8_t>(std::nearbyint(std::min(127.0f, std::max(-127.0f, x[k + kOrder[i]] * inverse))));
#endif
    }
  }
  for (int64_t g = K / group; g < padded; ++g) xs[g] = 0.0f;
}

// Rows [0, M) of x times columns [n, n + C). GROUP is the group size where it is known when compiling (its loop
// is unrolled), 0 where it is not. Per (row, column) and group: the integer sums of codes times quantized values
// (eight lanes), converted to float32 and times the group's two scales, added to eight running sums (one vector);
// then the mins times the row's group sums, then the eight lanes added. Several columns at a time keep several
// chains of additions in flight; the sequence of operations on a (row, column) is the same whatever M and C.
template <int M, int C, int GROUP>
void columns(const Operands& o, int64_t m0, int64_t n) {
  const int64_t K = o.K, group = GROUP ? GROUP : o.group;
  const int8_t* xq = o.xq + m0 * K;
  const float* d = o.d + m0 * o.groups;
  const float* xs = o.xs + m0 * o.padded;
  const uint8_t* row[C];
  for (int c = 0; c < C; ++c) row[c] = o.q + (n + c) * (K / 2);
  float scale[C][kChunk], low[C][kChunk];
#if OT_AVX2
  const __m256i nibble = _mm256_set1_epi8(0xF), ones = _mm256_set1_epi16(1), high = _mm256_setr_epi64x(0, 0, 4, 4);
  __m256 total[M][C];
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < C; ++c) total[m][c] = _mm256_setzero_ps();
#else
  float total[M][C] = {};
#endif
  for (int64_t g0 = 0; g0 < o.groups; g0 += kChunk) {
    const int64_t count = std::min(kChunk, o.groups - g0), widened = (count + 7) / 8 * 8;
    for (int c = 0; c < C; ++c) {
      widen_half(o.scales + (n + c) * o.padded + g0, scale[c], widened);
      widen_half(o.mins + (n + c) * o.padded + g0, low[c], widened);
    }
    for (int64_t j = 0; j < count; ++j) {
      const int64_t g = g0 + j, k0 = g * group;
#if OT_AVX2
      // the same place in the next columns' rows: the hardware's prefetcher does not follow several rows read
      // side by side
      for (int c = 0; c < C; ++c) _mm_prefetch(reinterpret_cast<const char*>(row[c] + C * (K / 2) + k0 / 2), _MM_HINT_T0);
      __m256i sums[M][C];
      for (int m = 0; m < M; ++m)
        for (int c = 0; c < C; ++c) sums[m][c] = _mm256_setzero_si256();
      for (int64_t k = k0; k < k0 + group; k += 32) {
        __m256i xv[M];
        for (int m = 0; m < M; ++m) xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + m * K + k));
        for (int c = 0; c < C; ++c) {
          // the 16 bytes in both halves, the upper half shifted by a nibble: three instructions where an insert
          // took four (SmolLM2's int4 products at one row, alternated: 2.20 -> 2.10 ms on a Zen 5 EPYC)
          const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[c] + k / 2)));
          const __m256i codes = _mm256_and_si256(_mm256_srlv_epi64(both, high), nibble);
          for (int m = 0; m < M; ++m)  // fours of products summed into int32 lanes: the same sums either way
#if OT_VNNI
            sums[m][c] = _mm256_dpbusd_epi32(sums[m][c], codes, xv[m]);
#else  // pairs (at most 2 * 15 * 127: vpmaddubsw does not saturate), then pairs of pairs
            sums[m][c] = _mm256_add_epi32(sums[m][c], _mm256_madd_epi16(_mm256_maddubs_epi16(codes, xv[m]), ones));
#endif
        }
      }
      for (int c = 0; c < C; ++c)
        for (int m = 0; m < M; ++m)
          total[m][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[m][c]), _mm256_set1_ps(scale[c][j] * d[m * o.groups + g]),
                                        total[m][c]);
#else
      for (int c = 0; c < C; ++c)
        for (int m = 0; m < M; ++m) {
          int32_t sum = 0;
          for (int64_t k = k0; k < k0 + group; k += 32)
            for (int i = 0; i < 16; ++i) {
              const uint8_t b = row[c][k / 2 + i];
              sum += (b & 0xF) * xq[m * K + k + i] + (b >> 4) * xq[m * K + k + 16 + i];
            }
          total[m][c] += static_cast<float>(sum) * (scale[c][j] * d[m * o.groups + g]);
        }
#endif
    }
    for (int c = 0; c < C; ++c)
      for (int64_t j = 0; j < widened; j += 8)
        for (int m = 0; m < M; ++m) {
#if OT_AVX2
          total[m][c] = _mm256_fmadd_ps(_mm256_loadu_ps(low[c] + j), _mm256_loadu_ps(xs + m * o.padded + g0 + j), total[m][c]);
#else
          for (int i = 0; i < 8; ++i) total[m][c] += low[c][j + i] * xs[m * o.padded + g0 + j + i];
#endif
        }
  }
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < C; ++c) {
#if OT_AVX2
      o.y[(m0 + m) * o.N + n + c] = hsum(total[m][c]);
#else
      o.y[(m0 + m) * o.N + n + c] = total[m][c];
#endif
    }
}

// Columns [lo, hi) for every row: two rows at a time by two columns, a last row by four columns. Where AVX-512 gives 32
// vector registers, four rows by two columns first, then two rows by four and a last row by eight (a row's 3072 x 576
// layer, weights in memory: 43 -> 33 us on an AMD EPYC, Zen 4).
#if defined(__AVX512VL__)
constexpr int kWide = 2;
#else
constexpr int kWide = 1;
#endif

template <int GROUP>
void block(const Operands& o, int64_t M, int64_t lo, int64_t hi) {
  int64_t m0 = 0;
#if defined(__AVX512VL__)  // four rows by two columns: the codes unpacked once for four rows (SmolLM2's 120 int4
                           // products at 8 rows on a 2-core AMD EPYC, Zen 5: 9.2 -> 8.2 ms)
  for (; m0 + 4 <= M; m0 += 4) {
    int64_t n = lo;
    for (; n + 2 <= hi; n += 2) columns<4, 2, GROUP>(o, m0, n);
    for (; n < hi; ++n) columns<4, 1, GROUP>(o, m0, n);
  }
#endif
  for (; m0 + 2 <= M; m0 += 2) {
    int64_t n = lo;
    for (; n + 2 * kWide <= hi; n += 2 * kWide) columns<2, 2 * kWide, GROUP>(o, m0, n);
    for (; n + 2 <= hi; n += 2) columns<2, 2, GROUP>(o, m0, n);
    for (; n < hi; ++n) columns<2, 1, GROUP>(o, m0, n);
  }
  if (m0 < M) {
    int64_t n = lo;
    for (; n + 4 * kWide <= hi; n += 4 * kWide) columns<1, 4 * kWide, GROUP>(o, m0, n);
    for (; n + 4 <= hi; n += 4) columns<1, 4, GROUP>(o, m0, n);
    for (; n < hi; ++n) columns<1, 1, GROUP>(o, m0, n);
  }
}

at::Tensor int4_mm(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales, const at::Tensor& mins,
                   int64_t group) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "int4_mm: x must be a contiguous float32 [M, K]");
  TORCH_CHECK(q.dim() == 2 && q.scalar_type() == at::kByte && q.is_contiguous(), "int4_mm: q must be a contiguous uint8 [N, K/2]");
  const int64_t M = x.size(0), K = x.size(1), N = q.size(0);
  TORCH_CHECK(group > 0 && group % 32 == 0, "int4_mm: the group size must be a positive multiple of 32, not ", group);
  TORCH_CHECK(K % group == 0 && q.size(1) * 2 == K, "int4_mm: x is [M, ", K, "] but q is [N, ", q.size(1),
              "] with groups of ", group);
  const int64_t groups = K / group, padded = (groups + 7) / 8 * 8;
  for (const at::Tensor* t : {&scales, &mins})
    TORCH_CHECK(t->dim() == 2 && t->scalar_type() == at::kHalf && t->is_contiguous() && t->size(0) == N && t->size(1) == padded,
                "int4_mm: scales and mins must be contiguous float16 [N, K/group rounded up to a multiple of 8]");
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const float* xp = x.data_ptr<float>();
  // the rows quantized, once per call, into buffers kept by the calling thread (a call on a few rows cost 3 us more
  // than the float32 kernel's with three vectors allocated and the quantization in scalar code)
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> d, xs;
  xq.resize(M * K);
  d.resize(M * groups);
  xs.resize(M * padded);
  for (int64_t m = 0; m < M; ++m)
    quantize_row(xp + m * K, K, group, padded, xq.data() + m * K, d.data() + m * groups, xs.data() + m * padded);
  const Operands o{xq.data(), d.data(), xs.data(), q.data_ptr<uint8_t>(), scales.data_ptr<at::Half>(),
                   mins.data_ptr<at::Half>(), y.data_ptr<float>(), K, N, group, groups, padded};
  at::parallel_for(0, (N + kColumns - 1) / kColumns, 1, [&](int64_t b0, int64_t b1) {
    const int64_t lo = b0 * kColumns, hi = std::min(N, b1 * kColumns);
    if (group == 32)
      block<32>(o, M, lo, hi);
    else
      block<0>(o, M, lo, hi);
  });
  return y;
}

at::Tensor int4_mm_meta(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales, const at::Tensor& mins,
                        int64_t group) {
  return at::empty({x.size(0), q.size(0)}, x.options());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ollama_torch, m) {
  m.def("int4_mm(Tensor x, Tensor q, Tensor scales, Tensor mins, int group) -> Tensor");
}

TORCH_LIBRARY_IMPL(ollama_torch, CPU, m) { m.impl("int4_mm", &int4_mm); }

TORCH_LIBRARY_IMPL(ollama_torch, Meta, m) { m.impl("int4_mm", &int4_mm_meta); }
