// AVX-512 (F, VL, BW, DQ) kernels. This file alone is compiled with the AVX-512 flags; the
// table it returns is the AVX2 one with the float16 single-query scan replaced, so it is
// reached only after Avx512Kernels() has checked the CPU.
//
// Why only that kernel: a float16 B = 1 scan converts every element (vcvtph2ps) before
// its FMA, and one 512-bit conversion handles 16 halves where AVX2 handles 8. On this
// Zen 4, 1M float16 rows, B = 1, interleaved A/B in one process: 4% less time on one
// thread at d = 128 and at d = 64 (medians), 2-3% with two threads, where memory bounds
// the scan more than the conversions do. A small win, kept because it held in every
// comparison. The same
// widening for float32 rows ran slower than the AVX2 kernel (the 16-lane horizontal sums
// cost more than the wider loads save), and the batch kernels are bound by FMA ports that
// 512-bit instructions do not add to on Zen 4, so those stay AVX2.
#include <immintrin.h>

#include "exact/kernels.h"

// g++ 12 warns about the intrinsics' own placeholder vectors (_mm512_undefined_*) inside
// avx512fintrin.h; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace recserve {
namespace {

inline __m256 HSum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// One row against one query: 16 halves per step, then the 8-float tail of dpad (dpad is a
// multiple of 8), folded to 8 lanes for the caller's horizontal sum.
inline __m256 RowDot(const uint16_t* row, const float* query, size_t dpad) {
  __m512 a = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dpad; j += 16) {
    const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j)));
    a = _mm512_fmadd_ps(x, _mm512_loadu_ps(query + j), a);
  }
  __m256 s = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  if (j < dpad) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j)));
    s = _mm256_fmadd_ps(x, _mm256_loadu_ps(query + j), s);
  }
  return s;
}

void ScoreF16(const uint16_t* const* rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo, float* scratch) {
  if (nq != 1 || scratch != nullptr) {
    Avx2Kernels()->score_f16(rows, nrows, queries, nq, dpad, out, ldo, scratch);
    return;
  }
  // Rows in address order, 8 at a time, one horizontal sum per 8 rows (as the AVX2 kernel).
  size_t r = 0;
  for (; r + 8 <= nrows; r += 8) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = RowDot(rows[r + i], queries, dpad);
    _mm256_storeu_ps(out + r, HSum8(acc));
  }
  for (; r < nrows; r++) {
    __m256 v[8] = {RowDot(rows[r], queries, dpad)};
    for (int i = 1; i < 8; i++) v[i] = _mm256_setzero_ps();
    out[r] = _mm256_cvtss_f32(HSum8(v));
  }
}

}  // namespace

const Kernels* Avx512Kernels() {
  const Kernels* base = Avx2Kernels();
  if (base == nullptr) return nullptr;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl") ||
      !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512dq"))
    return nullptr;
  static const Kernels k = [base] {
    Kernels x = *base;
    x.name = "avx512";
    x.score_f16 = ScoreF16;
    return x;
  }();
  return &k;
}

}  // namespace recserve
