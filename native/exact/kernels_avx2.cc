// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c; the
// rest of the addon stays baseline x86-64 and reaches these functions only after
// Avx2Kernels() has checked the CPU.
//
// Register tiling: a tile scores R item rows against Q queries. Each 8-float slice of the
// R rows is loaded (and for float16 converted) once into registers and multiplied with
// the Q query slices, so one pass over item memory serves Q queries, and the R*Q
// independent accumulators hide FMA latency. With Q = 1 (a single query) a tile is 4 rows,
// each summed in four partial accumulators: the 8-row tile it replaced (one accumulator per
// row) kept one Zen 5 core at ~22 GB/s, from DRAM and L3 alike, while its read probe
// streamed ~42 GB/s; 4 rows x 4 sums scan at ~36 GB/s there (1M x 64 float32, one thread,
// 11.5 against 7.2 ms, bench:exact-ab --addons --threads 1), so two cores reach memory
// bandwidth.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "exact/kernels.h"

namespace recserve {
namespace {

#include "exact/single_query_scan_inl.h"  // NOLINT(build/include): see its first lines
#include "exact/i8_screen_inl.h"  // NOLINT(build/include): see its first lines

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

// Scores R rows against Q queries, reading each row front to back before the next (row
// order): with the slices of 8 rows interleaved instead (one slice of every row, then the
// next slice), one core streamed ~13 GB/s from memory, in row order ~25 GB/s on this
// machine (1M x 64 float32, B = 1, which is bound by memory). The R x Q accumulators are
// independent, so the FMA latency stays hidden.
template <class L, int R, int Q>
inline void Tile(const typename L::T* const* rows, const float* queries, size_t dpad, float* out,
                 size_t ldo) {
  __m256 acc[Q][R];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    const typename L::T* row = rows[r];
    if constexpr (Q == 1) {
      // One query: four partial sums per row, so a row's FMAs form four short chains
      // instead of one of dpad / 8. Against a single chain, 1M x 64 and x 128 float32,
      // interleaved A/B (bench:exact-ab --addons): 0.96-0.99 of the time on a Zen 5, with
      // one thread and two.
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      size_t j = 0;
      for (; j + 4 * kLane <= dpad; j += 4 * kLane) {
        a0 = _mm256_fmadd_ps(L::Load(row + j), _mm256_loadu_ps(queries + j), a0);
        a1 = _mm256_fmadd_ps(L::Load(row + j + 8), _mm256_loadu_ps(queries + j + 8), a1);
        a2 = _mm256_fmadd_ps(L::Load(row + j + 16), _mm256_loadu_ps(queries + j + 16), a2);
        a3 = _mm256_fmadd_ps(L::Load(row + j + 24), _mm256_loadu_ps(queries + j + 24), a3);
      }
      for (; j < dpad; j += kLane)
        a0 = _mm256_fmadd_ps(L::Load(row + j), _mm256_loadu_ps(queries + j), a0);
      acc[0][r] = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
      continue;
    }
#pragma GCC unroll 4
    for (int q = 0; q < Q; q++) acc[q][r] = _mm256_setzero_ps();
    for (size_t j = 0; j < dpad; j += kLane) {
      const __m256 x = L::Load(row + j);
#pragma GCC unroll 4
      for (int q = 0; q < Q; q++)
        acc[q][r] = _mm256_fmadd_ps(x, _mm256_loadu_ps(queries + q * dpad + j), acc[q][r]);
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < Q; q++) {
    if constexpr (R == 4) {
      _mm_storeu_ps(out + q * ldo, HSum4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]));
    } else {
      for (int r = 0; r < R; r++) out[q * ldo + r] = HSum(acc[q][r]);
    }
  }
}

// Scores every row against Q (4..8) queries, one row at a time in address order: Q
// accumulators, one per query, then one 8-way horizontal sum gives the row's Q scores.
// Each row slice is loaded (and converted from float16) once for all Q queries. For B = 8
// this ran ~2x faster than three passes of 3-query tiles (f32, 1M x 64, one thread) and
// faster than the query-panel kernel, whose 6 x 1-panel tile is bound by its broadcasts.
template <class L, int Q>
void RowsForQueriesWide(const typename L::T* const* rows, size_t nrows, const float* queries,
                        size_t dpad, float* out, size_t ldo) {
  for (size_t r = 0; r < nrows; r++) {
    const typename L::T* row = rows[r];
    __m256 acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) acc[q] = _mm256_setzero_ps();
    for (size_t j = 0; j < dpad; j += kLane) {
      const __m256 x = L::Load(row + j);
#pragma GCC unroll 8
      for (int q = 0; q < Q; q++)
        acc[q] = _mm256_fmadd_ps(x, _mm256_loadu_ps(queries + q * dpad + j), acc[q]);
    }
    alignas(32) float s[8];
    _mm256_store_ps(s, HSum8(acc));
#pragma GCC unroll 8
    for (int q = 0; q < Q; q++) out[q * ldo + r] = s[q];
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

// --- The batch kernel: queries packed in panels of 8 -------------------------------------
// For a batch, the queries (few, reused for every row) are packed once per call into panels
// of 8, transposed: element j of queries 8p .. 8p+7 is one 8-float vector. The micro-kernel
// broadcasts one element of an item row and multiplies it with whole query-panel vectors,
// so each accumulator holds one row's scores for 8 queries: no horizontal sums, and the
// rows are read where they lie, once, with no packing pass over item memory. Tiles are 6
// rows x 2 panels (16 queries): 12 accumulators + 2 panel vectors + 1 broadcast fill the
// 16 ymm registers, and each broadcast feeds two FMAs. On this Zen 4 a loop of such tiles
// ran at ~110 GFLOP/s from L1, while 4 x 3 and 12 x 1 tiles (more broadcasts per FMA) ran
// at ~100 and ~35. Before a tile stores its accumulators it compares them with the
// queries' top-k thresholds (one compare per accumulator) and reports which of its rows
// hold a candidate; the scores stay row-major in scratch for the caller to read at those
// rows only. Float16 rows are converted 6 at a time into a float32 stage that stays in L1.

// qp[(p * dpad + j) * 8 + i] = element j of query 8p + i, for panels up to a multiple of 2
// (the tile's width); queries past nq are zeros.
inline void PackQueries(const float* queries, size_t nq, size_t dpad, float* qp, float) {
  for (size_t q0 = 0; q0 < (nq + 15) / 16 * 16; q0 += 8) {
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

// R rows x P query panels; scores to sc[r * ldsc + 8p .. 8p+7], and bit r of the result
// set when row r has a score >= its query's threshold (thr[8p .. 8p+7]). The loops over r
// and p are unrolled by pragmas: left to the optimiser, g++ 12 kept such accumulator arrays
// in memory and stored all of them on every step (3x slower).
template <int R, int P>
inline unsigned QueryPanelTile(const float* const* rows, size_t dpad, const float* qp,
                               const float* thr, float* sc, size_t ldsc) {
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
  __m256 t[P];
#pragma GCC unroll 4
  for (int p = 0; p < P; p++) t[p] = _mm256_loadu_ps(thr + p * 8);
  unsigned hit = 0;
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    __m256 m = _mm256_cmp_ps(acc[r][0], t[0], _CMP_GE_OQ);
#pragma GCC unroll 4
    for (int p = 1; p < P; p++) m = _mm256_or_ps(m, _mm256_cmp_ps(acc[r][p], t[p], _CMP_GE_OQ));
    hit |= static_cast<unsigned>(_mm256_movemask_ps(m) != 0) << r;
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) _mm256_store_ps(sc + r * ldsc + p * 8, acc[r][p]);
  }
  return hit;
}

// All queries for R rows: 16 at a time, then a last panel of 8. Returns the rows with a
// candidate for any query, as bits.
template <int R>
inline unsigned QueryPanelsForRows(const float* const* rows, size_t dpad, const float* qp,
                                   size_t nq, const float* thr, float* sc, size_t ldsc) {
  unsigned hit = 0;
  for (size_t q = 0; q < nq; q += 16) {
    if (nq - q > 8) {
      hit |= QueryPanelTile<R, 2>(rows, dpad, qp + q * dpad, thr + q, sc + q, ldsc);
    } else {
      hit |= QueryPanelTile<R, 1>(rows, dpad, qp + q * dpad, thr + q, sc + q, ldsc);
    }
  }
  return hit;
}

template <class L>
size_t PanelHits(const typename L::T* const* rows, size_t nrows, size_t nq, size_t dpad,
                 float* scratch, const float* thr, uint32_t* hit_rows, const float** scores) {
  const size_t nq16 = PanelStride(nq);
  float* qp = scratch;
  float* stage = qp + nq16 * dpad;
  float* sc = stage + 6 * dpad;  // row-major scores, ldsc = nq16
  size_t nhit = 0;
  for (size_t r = 0; r < nrows; r += 6) {
    const size_t nr = std::min<size_t>(6, nrows - r);
    // A tile computes for long enough (dpad x 12 FMAs per 16 queries) that the next tile's
    // rows can be fetched meanwhile; left to the hardware, a tile over rows not yet in
    // cache stalled at its start (d = 128 from DRAM ran no faster than the direct kernel).
    for (size_t i = r + 6; i < std::min(nrows, r + 12); i++) {
      const char* p = reinterpret_cast<const char*>(rows[i]);
      for (size_t b = 0; b < dpad * sizeof(typename L::T); b += 64)
        _mm_prefetch(p + b, _MM_HINT_T0);
    }
    const float* src[6];
    // Float16 rows are converted into the stage; float32 rows are broadcast where they lie
    // up to 64 dimensions and copied to the stage above: one thread, B = 32, 100k rows,
    // the copy cost 7% at d = 64 and gained 20% at d = 128.
    const bool direct = std::is_same_v<typename L::T, float> && dpad <= 64;
    for (size_t i = 0; i < nr; i++) {
      if (direct) {
        src[i] = reinterpret_cast<const float*>(rows[r + i]);
      } else {
        for (size_t j = 0; j < dpad; j += kLane)
          _mm256_store_ps(stage + i * dpad + j, L::Load(rows[r + i] + j));
        src[i] = stage + i * dpad;
      }
    }
    float* s = sc + r * nq16;
    unsigned hit;
    switch (nr) {
      case 6: hit = QueryPanelsForRows<6>(src, dpad, qp, nq, thr, s, nq16); break;
      case 5: hit = QueryPanelsForRows<5>(src, dpad, qp, nq, thr, s, nq16); break;
      case 4: hit = QueryPanelsForRows<4>(src, dpad, qp, nq, thr, s, nq16); break;
      case 3: hit = QueryPanelsForRows<3>(src, dpad, qp, nq, thr, s, nq16); break;
      case 2: hit = QueryPanelsForRows<2>(src, dpad, qp, nq, thr, s, nq16); break;
      default: hit = QueryPanelsForRows<1>(src, dpad, qp, nq, thr, s, nq16); break;
    }
    for (; hit != 0; hit &= hit - 1)
      hit_rows[nhit++] = static_cast<uint32_t>(r + static_cast<size_t>(__builtin_ctz(hit)));
  }
  *scores = sc;
  return nhit;
}

// Rows by pointer: one query at the common dimensions takes the 8-row scan
// (single_query_scan_inl.h), the rest the query-group loops below.
template <class L>
void ScoreRows(const typename L::T* const* rows, size_t nrows, const float* queries, size_t nq,
               size_t dpad, float* out, size_t ldo) {
  if (nq == 1 &&
      ScanUnrolledAt<typename L::T>(
          RowPointers<typename L::T>{rows}, nrows, queries, dpad, out,
          [dpad, queries](const typename L::T* const* r, size_t n, float* o) {
            RowsForQueries<L, 4, 1>(r, n, queries, dpad, o, 0);
          }))
    return;
  size_t q = 0;
  // Groups of up to 8 queries while at least 4 are left, then 3, 2 or 1.
  for (; nq - q >= 4; q += std::min<size_t>(8, nq - q)) {
    const float* qs = queries + q * dpad;
    float* o = out + q * ldo;
    switch (std::min<size_t>(8, nq - q)) {
      case 8: RowsForQueriesWide<L, 8>(rows, nrows, qs, dpad, o, ldo); break;
      case 7: RowsForQueriesWide<L, 7>(rows, nrows, qs, dpad, o, ldo); break;
      case 6: RowsForQueriesWide<L, 6>(rows, nrows, qs, dpad, o, ldo); break;
      case 5: RowsForQueriesWide<L, 5>(rows, nrows, qs, dpad, o, ldo); break;
      default: RowsForQueriesWide<L, 4>(rows, nrows, qs, dpad, o, ldo); break;
    }
  }
  if (nq - q == 3) {
    // 3 queries x 4 rows: 12 accumulators + row registers fit the 16 ymm registers.
    RowsForQueries<L, 4, 3>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  } else if (nq - q == 2) {
    RowsForQueries<L, 4, 2>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  } else if (nq - q == 1) {
    RowsForQueries<L, 4, 1>(rows, nrows, queries + q * dpad, dpad, out + q * ldo, ldo);
  }
}

// Consecutive rows: the 8-row scan reads them at base + stride where it applies, else they
// get pointers. (ScoreRows keeps the body Score had before rows came as spans, the scan
// through pointers alone: split otherwise, the compiler inlined differently and 2-5 float32
// queries took up to 1.14x as long, bench:exact-ab --addons.)
template <class L>
void Score(RowSpan<typename L::T> rows, size_t nrows, const float* queries, size_t nq,
           size_t dpad, float* out, size_t ldo) {
  using T = typename L::T;
  if (!rows.consecutive()) {
    ScoreRows<L>(rows.ptrs, nrows, queries, nq, dpad, out, ldo);
    return;
  }
  if (nq == 1 && ScanUnrolled(rows, nrows, queries, dpad, out,
                              [dpad, queries](const T* const* r, size_t n, float* o) {
                                RowsForQueries<L, 4, 1>(r, n, queries, dpad, o, 0);
                              }))
    return;
  // Two queries in one pass, 4 rows a step (single_query_scan_inl.h), each row loaded and
  // converted once: against the 4-row tile for two queries (RowsForQueries<L, 4, 2>), on the
  // Zen 4 with this set forced, 100k rows, medians of five processes each: float16 0.83 of
  // the time at d = 64 and 1.01 at d = 128, float32 0.91 and 0.99 (bench:exact-ab --kernels
  // avx2,avx2 --batches 2, the two builds alternately). The 8-row step of the AVX-512 sets
  // spilled its row sums here: 0.82, 0.90, 0.98 and 1.00.
  if (nq == 2 && ScanUnrolled2<4>(rows, nrows, queries, dpad, out, ldo,
                                  [dpad](const T* const* r, size_t n, const float* q, float* o) {
                                    RowsForQueries<L, 4, 1>(r, n, q, dpad, o, 0);
                                  }))
    return;
  WithRowPointers(rows, nrows, [&](const T* const* p, size_t n, size_t r0) {
    ScoreRows<L>(p, n, queries, nq, dpad, out + r0, ldo);
  });
}

void ScoreF32(RowSpan<float> rows, size_t nrows, const float* queries, size_t nq, size_t dpad,
              float* out, size_t ldo) {
  Score<LoadF32>(rows, nrows, queries, nq, dpad, out, ldo);
}

void ScoreF16(RowSpan<uint16_t> rows, size_t nrows, const float* queries, size_t nq,
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

size_t SelectAtLeast(const float* s, size_t n, float thr, uint32_t* hits) {
  const __m256 t = _mm256_set1_ps(thr);
  size_t count = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned m = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + i), t, _CMP_GE_OQ)));
    while (m != 0) {
      hits[count++] = static_cast<uint32_t>(i + static_cast<size_t>(__builtin_ctz(m)));
      m &= m - 1;
    }
  }
  for (; i < n; i++)
    if (s[i] >= thr) hits[count++] = static_cast<uint32_t>(i);
  return count;
}

size_t SelectEach(const float* s, const float* thr, size_t n, uint32_t* hits) {
  size_t count = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_loadu_ps(s + i), _mm256_loadu_ps(thr + i), _CMP_GE_OQ)));
    while (m != 0) {
      hits[count++] = static_cast<uint32_t>(i + static_cast<size_t>(__builtin_ctz(m)));
      m &= m - 1;
    }
  }
  for (; i < n; i++)
    if (s[i] >= thr[i]) hits[count++] = static_cast<uint32_t>(i);
  return count;
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

// --- The int8 screen without AVX-512 ---------------------------------------------------
// The same screen as the AVX-512 sets' (kernels_avx512.cc: the same code rows, bounds,
// floors and candidates), with vpmaddubsw for vpdpbusd: it multiplies 32 pairs of unsigned
// and signed bytes and adds adjacent products into 16 int16 lanes, and vpmaddwd against
// ones then adds adjacent int16 lanes into 8 int32 ones: four products per int32 lane in
// two multiplies (and an add to the accumulator), where a float32 FMA does one. The int16
// sums saturate past 32767, so a query's unsigned codes stay within 7 bits: d_j in
// [-63, 63] about its centre m, stored as d_j + 64 in [1, 127], and two products of at
// most 127 x 127 fit. Half the AVX-512 set's resolution for the queries (twice its f), the
// same for the rows.

// Each query coded one element at a time (packing is once per search and thread).
void PackQueriesI8(const float* queries, size_t nq, size_t dpad, const I8Screen& screen,
                   float* scratch) {
  const size_t nq16 = PanelStride(nq);
  const size_t dq = dpad / 4;
  const I8Scratch s = StartPackI8(scratch, nq, dpad, screen);
  uint8_t* bytes = reinterpret_cast<uint8_t*>(s.codes);
  for (size_t q = 0; q < nq16; q++) {
    // Padding queries past nq are zeros. The range takes in 0 (the padding elements past d
    // are zeros too), so |centre| <= 63 steps and zeros code exactly.
    const float* row = q < nq ? queries + q * dpad : nullptr;
    float lo = 0, hi = 0;
    for (size_t j = 0; row && j < dpad; j++) {
      lo = std::min(lo, row[j]);
      hi = std::max(hi, row[j]);
    }
    float t = (hi - lo) / 126.f;
    const double mid = (double(hi) + lo) / 2;
    int m = t > 0 ? static_cast<int>(std::nearbyint(mid / t)) : 0;
    if (t > 0 && std::abs(mid / t) > 63) {
      t = std::max(hi, -lo) / 63.f;
      m = 0;
    }
    double f = 0, q1 = 0, sum = 0;
    // Query q's dword g: panel q / 8, lane q % 8.
    uint8_t* codes = bytes + 4 * ((q / 8) * dq * 8 + q % 8);
    for (size_t j = 0; j < dpad; j++) {
      const float x = row ? row[j] : 0.f;
      float d = 0;
      if (t > 0) d = std::min(63.f, std::max(-63.f, std::nearbyint(x / t - float(m))));
      const double e = double(x) - double(t) * (double(d) + m);  // exact
      f = std::max(f, std::fabs(e));
      q1 += std::fabs(double(x));
      sum += x;
      codes[(j / 4) * 32 + j % 4] = static_cast<uint8_t>(static_cast<int>(d) + 64);
    }
    s.t[q] = t;
    s.start[q] = m - 64;
    SetI8Figures(s, q, nq, screen, dpad, f, q1, sum);
  }
}

// R code rows against P panels of 8 queries (queries 8p + i at qc + p dq 8): whether any
// pair's int32 score U = D + h_r (the row's slack, i8_screen_inl.h) reaches its query's
// floor; if so, the scores to sc[r * ldsc + 8p ..] and bits[r] bit 8p + i set where query
// 8p + i's does, else nothing written. R = 4, P = 2: 8 accumulators, 2 query vectors, the
// ones, a row's broadcast dword and the products' temporaries in 16 registers. Every loop
// over r and p is unrolled by pragma: without, g++ 12 kept the single panel's accumulators
// on the stack (a load and a store per product, perf annotate), and B = 8 took 1.5-1.8x
// the time it takes now (bench:exact-ab --addons --kernel avx2, 100k x 64 and x 128, both
// storages). Two steps' vpmaddubsw summed in int16 before one vpmaddwd (6-bit query codes
// make room) took 0.91-1.05 of the time: on the Zen 3 host the step is bound by all its
// vector instructions, not by the multiplies (bench/native/avx2-step-mix.cc, bench/README
// eighteenth section).
template <int R, int P>
inline bool TileI8(const uint8_t* const* rows, size_t dq, const uint32_t* qc,
                   const int32_t* start, const int32_t* floor, int32_t* sc, size_t ldsc,
                   unsigned* bits) {
  __m256i acc[R][P], st[P];
#pragma GCC unroll 2
  for (int p = 0; p < P; p++)
    st[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(start + 8 * p));
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    const __m256i c = _mm256_set1_epi32(I8RowSum(rows[r], 4 * dq));
    const __m256i h = _mm256_set1_epi32(I8RowSlack(rows[r], 4 * dq));
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) acc[r][p] = _mm256_add_epi32(_mm256_mullo_epi32(c, st[p]), h);
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (size_t g = 0; g < dq; g++) {
    __m256i qv[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
      qv[p] = _mm256_load_si256(reinterpret_cast<const __m256i*>(qc + (p * dq + g) * 8));
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      int32_t w;
      std::memcpy(&w, rows[r] + 4 * g, 4);
      const __m256i x = _mm256_set1_epi32(w);
#pragma GCC unroll 2
      for (int p = 0; p < P; p++)
        acc[r][p] = _mm256_add_epi32(
            acc[r][p], _mm256_madd_epi16(_mm256_maddubs_epi16(qv[p], x), ones));
    }
  }
  // Once the floors are up, most tiles hold no pair at its floor: one test over all of
  // them, and such a tile stores nothing. Storing every tile's scores and masks took
  // 1.11-1.33x the time at B = 6 and 8, 0.97-1.1x at B = 32, and 0.95-1.03x at
  // B = 128 and 256 (bench:exact-ab --addons --kernel avx2, 100k x 64 and x 128, both
  // storages, uniform rows and a trained demo bundle).
  __m256i fl[P], below = _mm256_set1_epi32(-1);
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) {
    fl[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(floor + 8 * p));
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
      // D >= floor: not floor > D (floor - 1 could wrap at INT32_MIN).
      below = _mm256_and_si256(below, _mm256_cmpgt_epi32(fl[p], acc[r][p]));
  }
  if (_mm256_movemask_ps(_mm256_castsi256_ps(below)) == 0xff) return false;
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) {
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const unsigned b = static_cast<unsigned>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(fl[p], acc[r][p]))));
      if (p == 0) bits[r] = 0;
      bits[r] |= (~b & 0xffu) << (8 * p);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc + r * ldsc + 8 * p), acc[r][p]);
    }
  }
  return true;
}

constexpr size_t kTileRowsI8 = 4;
// The least batches the screen takes in this set (Kernels::screen_min_batch_f16, _f32),
// and float16's step to 2 (Kernels::screen_step_bytes_f16; float32 starts at 2). Screened
// against direct time on this host (AMD EPYC Zen 3), with ScreenI8Few (9b8210f) for B <= 4
// (bench:exact-ab --kernels avx2,avx2 --tune-a '{"screenMinBatch":0}' --tune-b
// '{"screenMinBatch":2}', uniform rows, n = 20k to 200k, d = 64 and 128; and --bundle
// --fresh 40 on the trained 100k x 64 demo bundle):
// - float32, B = 2: 0.38-0.87 (trained 0.79); B = 3 to 5: 0.44-0.96 (trained 0.57-0.62).
// - float16, B = 3 to 5: 0.58-0.93 (trained 0.78-0.86).
// - float16, B = 2: 0.61-0.71 from 25.6 MB of rows (100k x 128, 200k x 64 and x 128), but
//   0.99-1.07 at 2.6-12.8 MB of d = 64 rows (trained 0.99); 0.64-0.86 at d = 128 there.
// Before ScreenI8Few, when the tile's 8 lanes held B = 2 to 4 queries, the AVX2 set started
// at 6 and 4, and float16 B = 4 and 5 read 1.03-1.05 on the trained bundle.
// With ScreenI8Split for B <= 4 (same commands, --fresh 40 and 60): float16 B = 2 at
// 100k x 64 (12.8 MB) took 0.73-0.95 of direct time, so its step is 12 MiB, not 24; at
// 2.6 MB 1.24-1.53, and from 3.8 to 7.7 MB 0.46-1.46, which this host's noise did not
// resolve.
constexpr size_t kScreenMinBatchF16 = 3;
constexpr size_t kScreenMinBatchF32 = 2;
constexpr size_t kScreenStepBytesF16 = size_t(12) << 20;
constexpr size_t kScreenStepBytesF32 = 0;

// Batches of up to this many queries take ScreenI8Split. The tile above fills 8 query
// lanes whatever the batch, so at B = 4 half its products are padding's. Row-major
// (ScreenI8Few, 9b8210f), against the tile, both forced through the screen
// (bench:exact-ab --addons --tune-a/--tune-b '{"screenMinBatch":2}', 100k x 64 and x 128,
// both storages): B = 2 took 0.65-0.80 of the time, B = 3 0.77-0.86, B = 4 0.89-0.96.
// ScreenI8Split takes 0.67-1.09 of ScreenI8Few's time (below).
constexpr size_t kSplitI8 = 4;

// Code rows [from, to) of a call into L1 a group ahead of their tile, where they are
// gathered (an allow list's). Consecutive rows are left to the hardware prefetcher:
// prefetching them too measured 0.90-1.08 of the time without, noise.
inline void PrefetchGatheredCodes(RowSpan<uint8_t> codes, size_t from, size_t to,
                                  size_t dpad) {
  if (codes.consecutive()) return;
  for (size_t i = from; i < to; i++) {
    const char* p = reinterpret_cast<const char*>(codes[i]);
    for (size_t b = 0; b < I8RowBytes(dpad); b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
  }
}

// ScreenI8Split's result lane i of reduced vector v: its row among the group's 8, and its
// query. L = 2: rows 2v, 2v + 1, queries 0 1 of each, then 2 3 of each (vphaddd keeps
// 128-bit halves apart); L = 4: rows 4v .. 4v + 3 of query 0, then of query 1.
template <int L>
constexpr size_t SplitLaneRow(size_t v, size_t i) {
  return L == 2 ? 2 * v + ((i >> 1) & 1) : 4 * v + (i & 3);
}
template <int L>
constexpr size_t SplitLaneSlot(size_t i) {
  return L == 2 ? (i & 1) + 2 * (i >> 2) : i >> 2;
}

// Reduced vector v of a split kernel's group (rows r .. r + nr - 1 of the call, the rest
// repeats, masked off): its pairs at or above their floors to their queries' buffers;
// returns how many.
template <int L>
inline size_t EmitSplitLanes(__m256i u, __m256i floorv, size_t v, size_t nq, size_t nr,
                             size_t r, const uint32_t* rows, uint32_t first,
                             uint64_t* const* out, uint32_t* fill) {
  const __m256i below = _mm256_cmpgt_epi32(floorv, u);
  unsigned hit = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(below))) & 0xffu;
  if (hit == 0) return 0;
  alignas(32) int32_t us[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(us), u);
  size_t n = 0;
  // In lane order, each query's rows come ascending, as the tile emits them.
  for (; hit != 0; hit &= hit - 1) {
    const size_t i = static_cast<size_t>(__builtin_ctz(hit));
    const size_t at = SplitLaneRow<L>(v, i), q = SplitLaneSlot<L>(i);
    if (at >= nr || q >= nq) continue;
    const uint32_t row = rows ? rows[r + at] : first + static_cast<uint32_t>(r + at);
    out[q][fill[q]++] = I8Key(us[i], row);
    n++;
  }
  return n;
}

// Steps of 4 L codes over a code row. dpad is a multiple of 8: L = 2 steps divide it. An
// L = 4 last step of 8 codes reads the row's 8-byte trailer too, against zero query codes
// (zero products).
template <int L>
constexpr size_t SplitSteps(size_t dpad) {
  return (dpad + 4 * L - 1) / (4 * L);
}

// A split kernel's 8 / L query slots (those past nq empty): each step's query vector, the
// accumulators' start (start_q in each query's first lane, where the lane0 mask also puts
// the row's slack), and per result lane its query's floor. An empty slot has zero codes
// (zero products: its U is the row's slack) and a floor of INT32_MAX, out of reach.
struct SplitQueries {
  const uint32_t* codes;  // SplitSteps(dpad) x 8 dwords
  __m256i start, lane0, floor;
};

template <int L>
SplitQueries PrepareSplit(const I8Scratch& s, const int32_t* floors, size_t nq, size_t dpad,
                          uint32_t* qbuf) {
  static_assert(L == 2 || L == 4, "2 or 4 lanes a query");
  const size_t dq = dpad / 4, steps = SplitSteps<L>(dpad);
  // Query q's dword g in the panels: panel q / 8, lane q % 8 (PackQueriesI8).
  for (size_t t = 0; t < steps; t++)
    for (size_t i = 0; i < 8; i++) {
      const size_t q = i / L, g = t * L + i % L;
      qbuf[t * 8 + i] = q < nq && g < dq ? s.codes[((q / 8) * dq + g) * 8 + q % 8] : 0u;
    }
  alignas(32) int32_t st[8], first_lane[8], fl[8];
  for (size_t i = 0; i < 8; i++) {
    const size_t q = i / L, qr = SplitLaneSlot<L>(i);
    st[i] = q < nq && i % L == 0 ? s.start[q] : 0;
    first_lane[i] = i % L == 0 ? -1 : 0;
    fl[i] = qr < nq ? floors[qr] : INT32_MAX;
  }
  SplitQueries x;
  x.codes = qbuf;
  x.start = _mm256_load_si256(reinterpret_cast<const __m256i*>(st));
  x.lane0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(first_lane));
  x.floor = _mm256_load_si256(reinterpret_cast<const __m256i*>(fl));
  return x;
}

// A row's codes from byte `off`, broadcast to every query of a split kernel: 8 bytes
// (L = 2) or 16 (L = 4).
template <int L>
inline __m256i SplitRowCodes(const uint8_t* row, size_t off) {
  if constexpr (L == 2) {
    int64_t w;
    std::memcpy(&w, row + off, 8);
    return _mm256_set1_epi64x(w);
  } else {
    return _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + off)));
  }
}

// The screen for 1 to 4 queries, with every lane used at 2 and 4: query slot i holds L
// consecutive dwords of its codes in lanes L i .. L i + L - 1 (L = 4 for up to 2 queries,
// 2 for 3 and 4), and a row's 4 L codes at the same offset are broadcast to every slot
// (vpbroadcastq or vbroadcasti128: a load, no shuffle), so one vpmaddubsw and vpmaddwd
// pair serves 8 / L queries. Each row's sums then lie in L lanes a query, and a group of 8
// rows reduces in log2 L vphaddd rounds for all the queries at once. Each accumulator
// starts at the row's c_r start_q + h_r in the first lane of every slot (broadcast from the
// row's trailer), so D + h_r comes out of the reduction whole. The same integer sums in
// another order: the same U as the tile's, exactly.
//
// Against the kernel it replaced (ScreenI8Few, 9b8210f: a pass over each group of 8 rows
// a query, each query's 8 rows' lanes reduced on their own, and the rows' sums and slacks
// loaded as vectors from 8 scalar stores; perf annotate put 8-14% of its samples at a
// vector load from the stack there: bench/README.md, seventeenth section), both
// forced through the screen (bench:exact-ab --addons OLD,NEW --kernel avx2 --tune-a/--tune-b
// '{"screenMinBatch":2}', 100k rows, both storages), new time over old:
// - d = 64: B = 2 0.78-0.83, B = 3 0.82-0.87, B = 4 0.69-0.74 (one batch repeated);
//   0.67-0.97, 0.87-1.04 and 0.69-0.94 over fresh batches (--fresh 40).
// - d = 128: B = 2 0.93-1.0, B = 3 0.93-1.02, B = 4 0.80-0.89; fresh: 0.96-1.01, 0.96-1.09
//   and 0.87-0.96.
// - the trained 100k x 64 demo bundle (--bundle DIR --fresh 40): 0.89-0.92, 0.85-1.03 and
//   0.78-0.91.
// Also tried, with the sums still loaded through the stack: the batch cut into chunks of
// 4, 2 and 1 queries, each a pass over the call's rows, for B up to 8. B = 3 as 2 + 1 took
// 1.2x the time of ScreenI8Few, and B = 5 to 8 1.04-1.3x the tile's (a throwaway timing
// loop, one batch repeated). And, with the accumulators started from the trailer, B = 5
// and 6 in one pass (queries 0-3 at L = 2 and the rest at L = 4, 4 rows a group, 8
// accumulators): 0.86-0.99 of the tile's time at d = 64 and 0.96-1.04 at d = 128
// (bench:exact-ab --addons, 100k rows, both storages, two runs); not kept for ~4%.
template <int L>
size_t ScreenI8Split(RowSpan<uint8_t> codes, size_t nrows, size_t nq, size_t dpad,
                     const I8Scratch& s, const int32_t* floors, const uint32_t* rows,
                     uint32_t first, uint64_t* const* out, uint32_t* fill) {
  constexpr size_t kStep = 4 * L;  // code bytes a step
  constexpr size_t kVecs = 8 / L;  // reduced vectors a group of 8 rows
  const size_t steps = SplitSteps<L>(dpad);
  thread_local std::vector<uint32_t> qbuf;
  qbuf.resize(steps * 8);
  const SplitQueries q = PrepareSplit<L>(s, floors, nq, dpad, qbuf.data());
  const uint32_t* qc = q.codes;
  const __m256i startv = q.start, lane0 = q.lane0, floorv = q.floor;
  const __m256i ones = _mm256_set1_epi16(1);
  size_t n = 0;
  for (size_t r = 0; r < nrows; r += 8) {
    const size_t nr = std::min<size_t>(8, nrows - r);
    // A short last group repeats its first row; those lanes are masked off.
    const uint8_t* p[8];
    for (size_t i = 0; i < 8; i++) p[i] = codes[r + (i < nr ? i : 0)];
    // With the next group prefetched, B = 2 and 4 at 1M x 64 with 30% allowed took
    // 0.82-0.85 of the time they took without (10% allowed: 0.88-0.95; measured with
    // ScreenI8Few, which read the rows in the same groups).
    PrefetchGatheredCodes(codes, r + 8, std::min(nrows, r + 16), dpad);
    __m256i acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
      acc[i] = _mm256_add_epi32(
          _mm256_mullo_epi32(_mm256_set1_epi32(I8RowSum(p[i], dpad)), startv),
          _mm256_and_si256(_mm256_set1_epi32(I8RowSlack(p[i], dpad)), lane0));
    for (size_t t = 0; t < steps; t++) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qc + t * 8));
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) {
        const __m256i x = SplitRowCodes<L>(p[i], t * kStep);
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(qv, x), ones));
      }
    }
    // L = 2: vector v holds rows 2v and 2v + 1; L = 4: rows 4v .. 4v + 3 (SplitLaneRow).
    __m256i u[kVecs];
    if constexpr (L == 2) {
#pragma GCC unroll 4
      for (size_t v = 0; v < 4; v++) u[v] = _mm256_hadd_epi32(acc[2 * v], acc[2 * v + 1]);
    } else {
      u[0] = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0], acc[1]),
                               _mm256_hadd_epi32(acc[2], acc[3]));
      u[1] = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[4], acc[5]),
                               _mm256_hadd_epi32(acc[6], acc[7]));
    }
    __m256i below = _mm256_set1_epi32(-1);
#pragma GCC unroll 4
    for (size_t v = 0; v < kVecs; v++)
      // D >= floor: not floor > D (floor - 1 could wrap at INT32_MIN).
      below = _mm256_and_si256(below, _mm256_cmpgt_epi32(floorv, u[v]));
    if (_mm256_movemask_ps(_mm256_castsi256_ps(below)) == 0xff) continue;
    for (size_t v = 0; v < kVecs; v++)
      n += EmitSplitLanes<L>(u[v], floorv, v, nq, nr, r, rows, first, out, fill);
  }
  return n;
}

// Kernels::screen_i8: a tile of 4 code rows at a time against 16 queries at a time (its
// code rows then come from L1 for the next 16); a tile with a pair at its floor puts its
// scores in a stage and its compares in one mask word per row and 32 queries, and the
// group's pairs at or above their floors go straight to their queries' buffers. No stored
// row is read.
size_t ScreenI8(RowSpan<uint8_t> codes, size_t nrows, size_t nq, size_t dpad, float* scratch,
                const int32_t* floors, const uint32_t* rows, uint32_t first,
                uint64_t* const* out, uint32_t* fill) {
  constexpr size_t R = kTileRowsI8;
  const size_t nq16 = PanelStride(nq);
  const size_t dq = dpad / 4;
  const size_t ldm = (nq + 31) / 32;
  const I8Scratch s = LayoutI8(scratch, nq16, dpad);
  // ScreenI8Split<L> holds 8 / L queries.
  static_assert(kSplitI8 == 8 / 2, "kSplitI8 is ScreenI8Split<2>'s query count");
  if (nq <= 8 / 4)
    return ScreenI8Split<4>(codes, nrows, nq, dpad, s, floors, rows, first, out, fill);
  if (nq <= kSplitI8)
    return ScreenI8Split<2>(codes, nrows, nq, dpad, s, floors, rows, first, out, fill);
  int32_t* stage = reinterpret_cast<int32_t*>(s.scores);
  // After the stage: within the scratch's rows (ScoreScratchFloats gives 8 and more).
  uint32_t* masks = reinterpret_cast<uint32_t*>(stage + R * nq16);
  size_t n = 0;
  for (size_t r = 0; r < nrows; r += R) {
    const size_t nr = std::min(R, nrows - r);
    // A short last tile repeats its first row; those lanes' results are never read.
    const uint8_t* ptrs[R];
    for (size_t i = 0; i < R; i++) ptrs[i] = codes[r + (i < nr ? i : 0)];
    PrefetchGatheredCodes(codes, r + R, std::min(nrows, r + 2 * R), dpad);
    bool hit = false;
    for (size_t q = 0; q < nq; q += 16) {
      unsigned bits[R];
      const bool got =
          nq - q > 8
              ? TileI8<R, 2>(ptrs, dq, s.codes + q * dq, s.start + q, floors + q, stage + q,
                             nq16, bits)
              : TileI8<R, 1>(ptrs, dq, s.codes + q * dq, s.start + q, floors + q, stage + q,
                             nq16, bits);
      // A tile without a pair writes nothing: the group's masks are zeroed at its first
      // tile with one, and the group's rows are looked at only if there was one.
      if (!got) continue;
      if (!hit) std::fill(masks, masks + R * ldm, 0u);
      hit = true;
      for (size_t i = 0; i < R; i++) masks[i * ldm + q / 32] |= bits[i] << (q % 32);
    }
    if (!hit) continue;
    for (size_t i = 0; i < nr; i++) {
      uint32_t any = 0;
      for (size_t g = 0; g < ldm; g++) any |= masks[i * ldm + g];
      if (any == 0) continue;
      const uint32_t row = rows ? rows[r + i] : first + static_cast<uint32_t>(r + i);
      n += EmitI8Pairs(row, masks + i * ldm, ldm, stage + i * nq16, out, fill);
    }
  }
  return n;
}

float ExactF32(const float* row, const float* query, size_t dpad) {
  return DotF32(row, query, dpad);
}
float ExactF16(const uint16_t* row, const float* query, size_t dpad) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dpad; j += 16) {
    s0 = _mm256_fmadd_ps(LoadF16::Load(row + j), _mm256_loadu_ps(query + j), s0);
    s1 = _mm256_fmadd_ps(LoadF16::Load(row + j + 8), _mm256_loadu_ps(query + j + 8), s1);
  }
  if (j < dpad) s0 = _mm256_fmadd_ps(LoadF16::Load(row + j), _mm256_loadu_ps(query + j), s0);
  return HSum(_mm256_add_ps(s0, s1));
}

// Eight elements a step, as the AVX-512 set's CodeRowI8 sixteen: the same float operations
// for the codes, the errors in double (s c_j exact, x_j - s c_j fused, then one rounding for
// z: the caller's 1e-9 covers both). Element by element, coding took 2.3x the AVX-512 set's
// time (1M x 128 float32: a build took 2.25 s against 1.66, and 1.3 s without codes).
I8RowCode CodeRowI8(const float* v, size_t dpad, float s, float z, int8_t* codes) {
  const __m256 inv = _mm256_set1_ps(s > 0 ? 1.f / s : 0.f), zz = _mm256_set1_ps(z);
  const __m256 big = _mm256_set1_ps(std::numeric_limits<float>::max());
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256d sd = _mm256_set1_pd(s), zd = _mm256_set1_pd(z), signd = _mm256_set1_pd(-0.0);
  __m256i sum = _mm256_setzero_si256(), l1 = sum;
  __m256d err = _mm256_setzero_pd(), amax = err;
  bool finite = true;
  for (size_t j = 0; j < dpad; j += 8) {  // dpad: a multiple of 8
    const __m256 x = _mm256_loadu_ps(v + j);
    const __m256 fin = _mm256_cmp_ps(_mm256_andnot_ps(sign, x), big, _CMP_LE_OQ);
    finite &= _mm256_movemask_ps(fin) == 0xff;
    const __m256 t = _mm256_and_ps(
        fin, _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_sub_ps(x, zz), inv))));
    const __m256 c = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i ci = _mm256_cvttps_epi32(c);
    sum = _mm256_add_epi32(sum, ci);
    l1 = _mm256_add_epi32(l1, _mm256_abs_epi32(ci));
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(ci), _mm256_extracti128_si256(ci, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + j), _mm_packs_epi16(w, w));
    for (int half = 0; half < 2; half++) {
      const __m128 xh = half ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x);
      const __m128 ch = half ? _mm256_extractf128_ps(c, 1) : _mm256_castps256_ps128(c);
      const __m128i fh = _mm_castps_si128(half ? _mm256_extractf128_ps(fin, 1)
                                               : _mm256_castps256_ps128(fin));
      const __m256d keep = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(fh));  // all ones: finite
      const __m256d xd = _mm256_cvtps_pd(xh);
      const __m256d e = _mm256_sub_pd(_mm256_fnmadd_pd(sd, _mm256_cvtps_pd(ch), xd), zd);
      err = _mm256_max_pd(err, _mm256_and_pd(keep, _mm256_andnot_pd(signd, e)));
      amax = _mm256_max_pd(amax, _mm256_and_pd(keep, _mm256_andnot_pd(signd, xd)));
    }
  }
  int32_t si[8], li[8];
  double ed[4], ad[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(si), sum);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(li), l1);
  _mm256_storeu_pd(ed, err);
  _mm256_storeu_pd(ad, amax);
  I8RowCode out;
  for (int i = 0; i < 8; i++) out.sum += si[i], out.l1 += li[i];
  for (int i = 0; i < 4; i++) {
    out.err = std::max(out.err, ed[i]);
    out.amax = std::max(out.amax, ad[i]);
  }
  out.finite = finite;
  return out;
}

void FiniteRange(const float* v, size_t n, float* lo, float* hi) {
  const __m256 big = _mm256_set1_ps(std::numeric_limits<float>::max());
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 l0 = _mm256_set1_ps(*lo), h0 = _mm256_set1_ps(*hi);
  __m256 mn = l0, mx = h0;
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_loadu_ps(v + j);
    const __m256 fin = _mm256_cmp_ps(_mm256_andnot_ps(sign, x), big, _CMP_LE_OQ);
    mn = _mm256_min_ps(mn, _mm256_blendv_ps(l0, x, fin));
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(h0, x, fin));
  }
  float a[8], b[8];
  _mm256_storeu_ps(a, mn);
  _mm256_storeu_ps(b, mx);
  for (int i = 0; i < 8; i++) *lo = std::min(*lo, a[i]), *hi = std::max(*hi, b[i]);
  for (; j < n; j++) {
    if (!(std::fabs(v[j]) <= std::numeric_limits<float>::max())) continue;
    *lo = std::min(*lo, v[j]);
    *hi = std::max(*hi, v[j]);
  }
}

}  // namespace

const Kernels* Avx2Kernels() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("f16c"))
    return nullptr;
  static const Kernels k{"avx2",         ScoreF32,   ScoreF16,      PanelHits<LoadF32>,
                        PanelHits<LoadF16>, PackQueries, DotF32,     SelectAtLeast,
                        SelectEach,     SumF32,     ToF16,         FromF16,
                        PackQueriesI8,  ScreenI8,   QueryI8,       ExactF32,
                        ExactF16,       CodeRowI8,  FiniteRange,   SortDescending,
                        kScreenMinBatchF16, kScreenMinBatchF32, kScreenStepBytesF16,
                        kScreenStepBytesF32};
  return &k;
}

}  // namespace recserve
