// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c; the
// rest of the addon stays baseline x86-64 and reaches these functions only after
// Avx2Kernels() has checked the CPU.
//
// Register tiling: a tile scores R item rows against Q queries. Each 8-float slice of the
// R rows is loaded (and for float16 converted) once into registers and multiplied with
// the Q query slices, so one pass over item memory serves Q queries, and the R*Q
// independent accumulators hide FMA latency. With Q = 1 (a single query) R = 8 rows keep
// eight loads in flight, which is what a bandwidth-bound scan needs.
#include <immintrin.h>

#include "exact/kernels.h"

namespace recserve {
namespace {

struct LoadF32 {
  using T = float;
  static inline __m256 Load(const float* p) { return _mm256_loadu_ps(p); }
};
struct LoadF16 {
  using T = uint16_t;
  static inline __m256 Load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Horizontal sums of 4 accumulators, as one 128-bit vector [sum(a0) .. sum(a3)].
inline __m128 HSum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Horizontal sums of 8 accumulators, as one vector [sum(a0) .. sum(a7)].
inline __m256 HSum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

template <class L, int R, int Q>
inline void Tile(const typename L::T* const* rows, const float* queries, size_t dpad, float* out,
                 size_t ldo) {
  __m256 acc[Q][R];
  for (int q = 0; q < Q; q++)
    for (int r = 0; r < R; r++) acc[q][r] = _mm256_setzero_ps();
  for (size_t j = 0; j < dpad; j += kLane) {
    __m256 x[R];
    for (int r = 0; r < R; r++) x[r] = L::Load(rows[r] + j);
    for (int q = 0; q < Q; q++) {
      const __m256 qv = _mm256_loadu_ps(queries + q * dpad + j);
      for (int r = 0; r < R; r++) acc[q][r] = _mm256_fmadd_ps(x[r], qv, acc[q][r]);
    }
  }
  for (int q = 0; q < Q; q++) {
    if constexpr (R == 8) {
      _mm256_storeu_ps(out + q * ldo, HSum8(acc[q]));
    } else if constexpr (R == 4) {
      _mm_storeu_ps(out + q * ldo, HSum4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]));
    } else {
      for (int r = 0; r < R; r++) out[q * ldo + r] = HSum(acc[q][r]);
    }
  }
}

// Scores all rows for a block of Q queries: full tiles of R rows, then single rows.
template <class L, int R, int Q>
inline void RowsForQueries(const typename L::T* const* rows, size_t nrows, const float* queries,
                           size_t dpad, float* out, size_t ldo) {
  size_t r = 0;
  for (; r + R <= nrows; r += R) Tile<L, R, Q>(rows + r, queries, dpad, out + r, ldo);
  for (; r < nrows; r++) Tile<L, 1, Q>(rows + r, queries, dpad, out + r, ldo);
}

template <class L>
void Score(const typename L::T* const* rows, size_t nrows, const float* queries, size_t nq,
           size_t dpad, float* out, size_t ldo) {
  size_t q = 0;
  // Blocks of 3 queries x 4 rows: 12 accumulators + 4 row registers fill the 16 ymm
  // registers without spilling.
  for (; q + 3 <= nq; q += 3)
    RowsForQueries<L, 4, 3>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  if (nq - q == 2) {
    RowsForQueries<L, 4, 2>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  } else if (nq - q == 1) {
    RowsForQueries<L, 8, 1>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  }
}

void ScoreF32(const float* const* rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo) {
  Score<LoadF32>(rows, nrows, queries, nq, dpad, out, ldo);
}

void ScoreF16(const uint16_t* const* rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo) {
  Score<LoadF16>(rows, nrows, queries, nq, dpad, out, ldo);
}

// Two accumulators over 16-float steps, then one masked 8-float tail: no scalar loop.
float DotF32(const float* a, const float* b, size_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= d; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  for (; j + 8 <= d; j += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
  if (j < d) {
    const int rem = static_cast<int>(d - j);
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), idx);
    s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + j, mask), _mm256_maskload_ps(b + j, mask), s1);
  }
  return HSum(_mm256_add_ps(s0, s1));
}

size_t FindAbove(const float* s, size_t from, size_t n, float thr) {
  const __m256 t = _mm256_set1_ps(thr);
  size_t i = from;
  for (; i + 8 <= n; i += 8) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + i), t, _CMP_GT_OQ));
    if (m != 0) return i + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(m)));
  }
  for (; i < n; i++)
    if (s[i] > thr) return i;
  return n;
}

// Four independent accumulators keep enough loads in flight to saturate memory.
float SumF32(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float s = HSum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; i++) s += p[i];
  return s;
}

void ToF16(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; i++) {
    const __m128i h = _mm_cvtps_ph(_mm_set_ss(in[i]), _MM_FROUND_TO_NEAREST_INT);
    out[i] = static_cast<uint16_t>(_mm_extract_epi16(h, 0));
  }
}

void FromF16(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, LoadF16::Load(in + i));
  for (; i < n; i++) out[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(in[i])));
}

}  // namespace

const Kernels* Avx2Kernels() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("f16c"))
    return nullptr;
  static const Kernels k{"avx2", ScoreF32, ScoreF16, DotF32, FindAbove, SumF32, ToF16, FromF16};
  return &k;
}

}  // namespace recserve
