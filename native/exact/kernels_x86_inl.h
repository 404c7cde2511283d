// Small AVX2 helpers shared by the AVX2 and AVX-512 kernel files. Included only by files
// compiled with at least -mavx2; the anonymous namespace gives each file its own copy, so
// the linker can never hand the AVX2 file a copy compiled with AVX-512 instructions.
#pragma once
#include <immintrin.h>

#include <cstddef>

namespace recserve {
namespace {

// In-register 8x8 transpose: afterwards v[i] holds element i of the 8 input vectors.
inline void Transpose8(__m256 v[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
  const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  v[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  v[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  v[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  v[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  v[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  v[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  v[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  v[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Stores the first n (1..8) lanes of v.
inline void StorePartial(float* out, __m256 v, size_t n) {
  if (n >= 8) {
    _mm256_storeu_ps(out, v);
  } else {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(out, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx), v);
  }
}

// Scores held row-major (sc[r * ldsc + q]) to the query-major output (out[q * ldo + r]),
// 8 x 8 at a time. Rows of sc past nrows, up to the next multiple of 8, hold garbage that is
// transposed along and never stored.
inline void StoreQueryMajor(const float* sc, size_t nrows, size_t nq, size_t ldsc, float* out,
                            size_t ldo) {
  for (size_t r = 0; r < nrows; r += 8) {
    const size_t nr = nrows - r < 8 ? nrows - r : 8;
    for (size_t q = 0; q < nq; q += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++) v[i] = _mm256_load_ps(sc + (r + i) * ldsc + q);
      Transpose8(v);
      const size_t nv = nq - q < 8 ? nq - q : 8;
      for (size_t i = 0; i < nv; i++) StorePartial(out + (q + i) * ldo + r, v[i], nr);
    }
  }
}

}  // namespace
}  // namespace recserve
