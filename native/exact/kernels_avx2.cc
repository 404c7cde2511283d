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

#include <algorithm>
#include <type_traits>

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

// One query against 8 rows, reading each row front to back before the next. The same
// arithmetic as Tile<L, 8, 1>, but memory is read in address order: with the slices of 8
// rows interleaved (Tile's order) one core streamed ~13 GB/s, in row order ~27 GB/s on
// this machine (1M x 64 float32, the B = 1 scan that is bound by memory).
template <class L>
inline void RowOrder8(const typename L::T* const* rows, const float* query, size_t dpad,
                      float* out) {
  __m256 acc[8];
  for (int r = 0; r < 8; r++) {
    const typename L::T* p = rows[r];
    __m256 a = _mm256_setzero_ps();
    for (size_t j = 0; j < dpad; j += kLane)
      a = _mm256_fmadd_ps(L::Load(p + j), _mm256_loadu_ps(query + j), a);
    acc[r] = a;
  }
  _mm256_storeu_ps(out, HSum8(acc));
}

// Scores all rows for a block of Q queries: full tiles of R rows, then single rows.
template <class L, int R, int Q>
inline void RowsForQueries(const typename L::T* const* rows, size_t nrows, const float* queries,
                           size_t dpad, float* out, size_t ldo) {
  size_t r = 0;
  for (; r + R <= nrows; r += R) Tile<L, R, Q>(rows + r, queries, dpad, out + r, ldo);
  for (; r < nrows; r++) Tile<L, 1, Q>(rows + r, queries, dpad, out + r, ldo);
}

// --- The batch kernel: queries packed in panels of 8 -------------------------------------
// For a batch, the queries (few, reused for every row) are packed once per call into panels
// of 8, transposed: element j of queries 8p .. 8p+7 is one 8-float vector. The micro-kernel
// broadcasts one element of an item row and multiplies it with whole query-panel vectors,
// so each accumulator holds one row's scores for 8 queries: no horizontal sums, and the
// rows are read where they lie, once, with no packing pass over item memory. Float16 rows
// are converted 4 at a time into a small float32 stage that stays in L1.

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

// qp[(p * dpad + j) * 8 + i] = element j of query 8p + i; queries past nq are zeros.
inline void PackQueries(const float* queries, size_t nq, size_t dpad, float* qp) {
  for (size_t q0 = 0; q0 < nq; q0 += 8) {
    float* panel = qp + q0 * dpad;
    for (size_t j = 0; j < dpad; j += kLane) {
      __m256 v[8];
      for (size_t i = 0; i < 8; i++)
        v[i] = q0 + i < nq ? _mm256_loadu_ps(queries + (q0 + i) * dpad + j) : _mm256_setzero_ps();
      Transpose8(v);
      for (size_t i = 0; i < 8; i++) _mm256_store_ps(panel + (j + i) * 8, v[i]);
    }
  }
}

// R rows x P query panels (8P queries, of which nvalid are real). R = 4, P = 3 fills 12
// accumulators + 3 panel vectors + 1 broadcast of the 16 ymm registers. The loops over r
// and p are unrolled by hand-placed pragmas: left to the optimiser, g++ 12 kept such
// accumulator arrays in memory and stored all of them on every step (3x slower).
template <int R, int P>
inline void QueryPanelTile(const float* const* rows, size_t dpad, const float* qp, size_t nvalid,
                           float* out, size_t ldo) {
  __m256 acc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) acc[r][p] = _mm256_setzero_ps();
  for (size_t j = 0; j < dpad; j++) {
    __m256 qv[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) qv[p] = _mm256_load_ps(qp + (p * dpad + j) * 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m256 x = _mm256_broadcast_ss(rows[r] + j);
#pragma GCC unroll 4
      for (int p = 0; p < P; p++) acc[r][p] = _mm256_fmadd_ps(qv[p], x, acc[r][p]);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; p++) {
    const size_t q0 = static_cast<size_t>(p) * 8;
    if (q0 >= nvalid) break;
    const size_t nv = std::min<size_t>(8, nvalid - q0);
    if constexpr (R == 4) {
      // 4 rows x 8 queries -> 8 queries x 4 rows: s_i holds query i (low half) and i + 4.
      const __m256 t0 = _mm256_unpacklo_ps(acc[0][p], acc[1][p]);
      const __m256 t1 = _mm256_unpackhi_ps(acc[0][p], acc[1][p]);
      const __m256 t2 = _mm256_unpacklo_ps(acc[2][p], acc[3][p]);
      const __m256 t3 = _mm256_unpackhi_ps(acc[2][p], acc[3][p]);
      const __m256 s[4] = {_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
                           _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2))};
      for (size_t i = 0; i < nv; i++) {
        const __m128 v = i < 4 ? _mm256_castps256_ps128(s[i]) : _mm256_extractf128_ps(s[i - 4], 1);
        _mm_storeu_ps(out + (q0 + i) * ldo, v);
      }
    } else {
      alignas(32) float tmp[R][8];
      for (int r = 0; r < R; r++) _mm256_store_ps(tmp[r], acc[r][p]);
      for (size_t i = 0; i < nv; i++)
        for (int r = 0; r < R; r++) out[(q0 + i) * ldo + r] = tmp[r][i];
    }
  }
}

// All query panels for R rows, 3 panels (24 queries) at a time.
template <int R>
inline void QueryPanelsForRows(const float* const* rows, size_t dpad, const float* qp, size_t nq,
                               float* out, size_t ldo) {
  for (size_t q = 0; q < nq; q += 24) {
    const size_t nv = std::min<size_t>(24, nq - q);
    const float* panels = qp + q * dpad;
    float* o = out + q * ldo;
    if (nv > 16) {
      QueryPanelTile<R, 3>(rows, dpad, panels, nv, o, ldo);
    } else if (nv > 8) {
      QueryPanelTile<R, 2>(rows, dpad, panels, nv, o, ldo);
    } else {
      QueryPanelTile<R, 1>(rows, dpad, panels, nv, o, ldo);
    }
  }
}

template <class L>
void ScoreQueryPanels(const typename L::T* const* rows, size_t nrows, const float* queries,
                      size_t nq, size_t dpad, float* out, size_t ldo, float* scratch) {
  float* qp = scratch;
  PackQueries(queries, nq, dpad, qp);
  float* stage = scratch + (nq + 7) / 8 * 8 * dpad;
  for (size_t r = 0; r < nrows; r += 4) {
    const size_t nr = std::min<size_t>(4, nrows - r);
    const float* src[4];
    for (size_t i = 0; i < nr; i++) {
      if constexpr (std::is_same_v<typename L::T, float>) {
        src[i] = rows[r + i];
      } else {
        for (size_t j = 0; j < dpad; j += kLane)
          _mm256_store_ps(stage + i * dpad + j, L::Load(rows[r + i] + j));
        src[i] = stage + i * dpad;
      }
    }
    switch (nr) {
      case 4: QueryPanelsForRows<4>(src, dpad, qp, nq, out + r, ldo); break;
      case 3: QueryPanelsForRows<3>(src, dpad, qp, nq, out + r, ldo); break;
      case 2: QueryPanelsForRows<2>(src, dpad, qp, nq, out + r, ldo); break;
      default: QueryPanelsForRows<1>(src, dpad, qp, nq, out + r, ldo); break;
    }
  }
}

template <class L>
void Score(const typename L::T* const* rows, size_t nrows, const float* queries, size_t nq,
           size_t dpad, float* out, size_t ldo, float* scratch) {
  // The caller passes scratch when the batch is large enough to repay the packing pass
  // (ExactTuning::pack_min_batch); without it, rows are scored where they lie.
  if (scratch != nullptr) {
    ScoreQueryPanels<L>(rows, nrows, queries, nq, dpad, out, ldo, scratch);
    return;
  }
  size_t q = 0;
  // Blocks of 3 queries x 4 rows: 12 accumulators + 4 row registers fill the 16 ymm
  // registers without spilling.
  for (; q + 3 <= nq; q += 3)
    RowsForQueries<L, 4, 3>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  if (nq - q == 2) {
    RowsForQueries<L, 4, 2>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  } else if (nq - q == 1) {
    const float* qv = queries + q * dpad;
    float* o = out + q * ldo;
    size_t r = 0;
    for (; r + 8 <= nrows; r += 8) RowOrder8<L>(rows + r, qv, dpad, o + r);
    for (; r < nrows; r++) Tile<L, 1, 1>(rows + r, qv, dpad, o + r, ldo);
  }
}

void ScoreF32(const float* const* rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo, float* scratch) {
  Score<LoadF32>(rows, nrows, queries, nq, dpad, out, ldo, scratch);
}

void ScoreF16(const uint16_t* const* rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo, float* scratch) {
  Score<LoadF16>(rows, nrows, queries, nq, dpad, out, ldo, scratch);
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
