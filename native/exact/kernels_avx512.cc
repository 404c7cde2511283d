// AVX-512 (F, VL, BW, DQ) kernels. This file alone is compiled with the AVX-512 flags; the
// tables it returns are the AVX2 one with some kernels replaced, so they are reached only
// after Avx512Kernels() has checked the CPU.
//
// The B = 1 scans (single_query_scan_inl.h) are compiled here too, where they may use 32
// vector registers, with the 512-bit float16 scan for the dimensions the 8-row scan leaves.
//
// The batch kernel is bound by FMA throughput. This Xeon (2 x 512-bit FMA ports, OpenBLAS
// sgemm 138 GFLOP/s on one core) runs the 12 x 2-panel tile below faster than the AVX2
// 6 x 2 tile: 100k x 64 float32, B = 32, one thread, the two kernel sets interleaved in one
// process (ExactIndex's `kernel` option): 5.85 against 6.67 ms at k = 100, 4.67 against
// 5.46 ms at k = 1. Zen 4 splits a 512-bit FMA in two, and there the 512-bit tile ran up to
// 1.34x slower than the AVX2 one (100k x 64, two threads: B = 16 2.92 against 2.17 ms, B = 32
// 4.28 against 3.48 ms; never faster at any d, storage or batch size measured), so on that
// CPU without AVX512_BF16 BestKernels() takes the "avx512-scan" set: the AVX2 batch tiles
// with this file's single-query scans. With AVX512_BF16 it takes the bfloat16 tiles below.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "exact/kernels.h"

// g++ 12 warns about the intrinsics' own placeholder vectors (_mm512_undefined_*) inside
// avx512fintrin.h; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace recserve {
namespace {

#include "exact/single_query_scan_inl.h"  // NOLINT(build/include): see its first lines
#include "exact/i8_screen_inl.h"  // NOLINT(build/include): see its first lines


// --- The batch kernel: queries packed in panels of 16 ----------------------------------
// The AVX2 query-panel kernel (kernels_avx2.cc) with 512-bit panels: element j of queries
// 16p .. 16p+15 is one zmm vector, one element of an item row is broadcast and multiplied
// with whole panels, so an accumulator holds one row's scores for 16 queries. With 32 zmm
// registers a tile is 12 rows x 2 panels (32 queries): 24 accumulators, 2 panel vectors,
// and every broadcast feeds two FMAs.

// qp[(p * dpad + j) * 16 + i] = element j of query 16p + i; queries past nq are zeros.
inline void PackQueries16(const float* queries, size_t nq, size_t dpad, float* qp, float) {
  for (size_t q0 = 0; q0 < nq; q0 += 16) {
    float* panel = qp + q0 * dpad;
    for (size_t j = 0; j < dpad; j++)
      for (size_t i = 0; i < 16; i++)
        panel[j * 16 + i] = q0 + i < nq ? queries[(q0 + i) * dpad + j] : 0.f;
  }
}

// R rows x P panels; scores to sc[r * ldsc + 16p .. 16p+15], and bit r of the result set
// when row r has a score >= its query's threshold (thr[16p .. 16p+15]), as the AVX2 tile.
// Unrolled by pragmas for the reason given at QueryPanelTile in kernels_avx2.cc.
template <int R, int P>
inline unsigned PanelTile16(const float* const* rows, size_t dpad, const float* qp,
                            const float* thr, float* sc, size_t ldsc) {
  __m512 acc[R][P];
#pragma GCC unroll 12
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
  for (size_t j = 0; j < dpad; j++) {
    __m512 qv[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) qv[p] = _mm512_load_ps(qp + (p * dpad + j) * 16);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      const __m512 x = _mm512_set1_ps(rows[r][j]);
#pragma GCC unroll 2
      for (int p = 0; p < P; p++) acc[r][p] = _mm512_fmadd_ps(qv[p], x, acc[r][p]);
    }
  }
  __m512 t[P];
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) t[p] = _mm512_loadu_ps(thr + p * 16);
  unsigned hit = 0;
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    __mmask16 m = _mm512_cmp_ps_mask(acc[r][0], t[0], _CMP_GE_OQ);
#pragma GCC unroll 2
    for (int p = 1; p < P; p++) m = m | _mm512_cmp_ps_mask(acc[r][p], t[p], _CMP_GE_OQ);
    hit |= static_cast<unsigned>(m != 0) << r;
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) _mm512_store_ps(sc + r * ldsc + p * 16, acc[r][p]);
  }
  return hit;
}

// All queries for R rows: 32 at a time, then a last panel of 16; the rows with a candidate
// as bits.
template <int R>
inline unsigned PanelsForRows16(const float* const* rows, size_t dpad, const float* qp, size_t nq,
                                const float* thr, float* sc, size_t ldsc) {
  unsigned hit = 0;
  for (size_t q = 0; q < nq; q += 32) {
    if (nq - q > 16) {
      hit |= PanelTile16<R, 2>(rows, dpad, qp + q * dpad, thr + q, sc + q, ldsc);
    } else {
      hit |= PanelTile16<R, 1>(rows, dpad, qp + q * dpad, thr + q, sc + q, ldsc);
    }
  }
  return hit;
}

template <int R>
inline unsigned PanelsForSomeRows16(size_t nr, const float* const* rows, size_t dpad,
                                    const float* qp, size_t nq, const float* thr, float* sc,
                                    size_t ldsc) {
  if constexpr (R > 1) {
    if (nr < R) return PanelsForSomeRows16<R - 1>(nr, rows, dpad, qp, nq, thr, sc, ldsc);
  }
  return PanelsForRows16<R>(rows, dpad, qp, nq, thr, sc, ldsc);
}

struct F32Rows {
  using T = float;
};
struct F16Rows {
  using T = uint16_t;
};

constexpr size_t kTileRows = 12;
// The most rows a block of an exact-index scan holds (exact_index.cc: 8..512).
constexpr size_t kMaxBlockRows = 512;
// The most groups of 32 queries the screen's block path takes (ScreenI8); larger batches
// go a tile at a time. Against a tile at a time for every batch over 32: 0.96-0.99 of the
// time at B = 48 to 128, d = 64, and 0.99-1.01 at d = 128, both storages (bench:exact-ab
// --addons, either build first).
constexpr size_t kMaxBlockGroups = 4;

template <class L>
size_t PanelHits16(const typename L::T* const* rows, size_t nrows, size_t nq, size_t dpad,
                   float* scratch, const float* thr, uint32_t* hit_rows, const float** scores) {
  constexpr bool kF32 = std::is_same_v<typename L::T, float>;
  const size_t nq16 = PanelStride(nq);
  size_t nhit = 0;
  float* qp = scratch;
  float* stage = qp + nq16 * dpad;
  float* sc = stage + kTileRows * dpad;  // row-major scores, ldsc = nq16
  for (size_t r = 0; r < nrows; r += kTileRows) {
    const size_t nr = std::min(kTileRows, nrows - r);
    // The next tile's rows are fetched while this one computes (see kernels_avx2.cc).
    for (size_t i = r + kTileRows; i < std::min(nrows, r + 2 * kTileRows); i++) {
      const char* p = reinterpret_cast<const char*>(rows[i]);
      for (size_t b = 0; b < dpad * sizeof(typename L::T); b += 64)
        _mm_prefetch(p + b, _MM_HINT_T0);
    }
    const float* src[kTileRows];
    for (size_t i = 0; i < nr; i++) {
      if constexpr (kF32) {
        src[i] = rows[r + i];
      } else {
        const uint16_t* row = rows[r + i];
        float* dst = stage + i * dpad;
        size_t j = 0;
        for (; j + 16 <= dpad; j += 16)
          _mm512_storeu_ps(dst + j, _mm512_cvtph_ps(_mm256_loadu_si256(
                                       reinterpret_cast<const __m256i*>(row + j))));
        if (j < dpad)
          _mm256_store_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(
                                       reinterpret_cast<const __m128i*>(row + j))));
        src[i] = dst;
      }
    }
    for (unsigned hit = PanelsForSomeRows16<kTileRows>(nr, src, dpad, qp, nq, thr, sc + r * nq16,
                                                       nq16);
         hit != 0; hit &= hit - 1)
      hit_rows[nhit++] = static_cast<uint32_t>(r + static_cast<size_t>(__builtin_ctz(hit)));
  }
  *scores = sc;
  return nhit;
}

// One query: the 8-row scan (single_query_scan_inl.h, with 32 vector registers here) at the
// common dimensions, else float16 rows in Scan4F16; two queries: the 8-row scan for two
// (each row converted once for both), against the AVX2 kernels' 4-row tile for two
// queries 0.55-0.75 of the time for float16 and 0.77-1.04 for float32 at B = 2, 100k x 64
// and x 128 (bench:exact-ab, the two builds alternately, three processes each); the rest
// goes to the AVX2 kernels.
void ScoreF16(RowSpan<uint16_t> rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo) {
  // The rows the unrolled scans leave (< 8), a query at a time.
  auto rest2 = [dpad](const uint16_t* const* r, size_t n, const float* q, float* o) {
    Scan4F16(r, n, q, dpad, o);
  };
  auto rest = [&](const uint16_t* const* r, size_t n, float* o) { rest2(r, n, queries, o); };
  if (nq == 2 && ScanUnrolled2<8>(rows, nrows, queries, dpad, out, ldo, rest2)) return;
  if (nq != 1) {
    Avx2Kernels()->score_f16(rows, nrows, queries, nq, dpad, out, ldo);
  } else if (!ScanUnrolled(rows, nrows, queries, dpad, out, rest)) {
    WithRowPointers(rows, nrows, [&](const uint16_t* const* p, size_t n, size_t r0) {
      rest(p, n, out + r0);
    });
  }
}
void ScoreF32(RowSpan<float> rows, size_t nrows, const float* queries, size_t nq, size_t dpad,
              float* out, size_t ldo) {
  auto rest2 = [dpad](const float* const* r, size_t n, const float* q, float* o) {
    Avx2Kernels()->score_f32(RowSpan<float>::Gathered(r), n, q, 1, dpad, o, 0);
  };
  auto rest = [&](const float* const* r, size_t n, float* o) { rest2(r, n, queries, o); };
  if (nq == 2 && ScanUnrolled2<8>(rows, nrows, queries, dpad, out, ldo, rest2)) return;
  if (nq != 1 || !ScanUnrolled(rows, nrows, queries, dpad, out, rest))
    Avx2Kernels()->score_f32(rows, nrows, queries, nq, dpad, out, ldo);
}

// select_each with 16 queries per compare and no branch on the hits: the matching query
// indexes are compressed in a register and stored under a mask (vpcompressd to memory is
// microcoded on Zen 4, the register form is not). The AVX2 version's loop over the set
// bits of each compare mispredicted on the hit rows early in a scan, where any of the
// queries may pass: 13% of a 100k x 64 float16 B = 32 search's samples (perf) on a Zen 5.
size_t SelectEach16(const float* s, const float* thr, size_t n, uint32_t* hits) {
  size_t count = 0;
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live =
        n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(live, _mm512_maskz_loadu_ps(live, s + i),
                                                _mm512_maskz_loadu_ps(live, thr + i), _CMP_GE_OQ);
    const unsigned c = static_cast<unsigned>(__builtin_popcount(m));
    _mm512_storeu_si512(hits + count, _mm512_maskz_compress_epi32(m, idx));
    count += c;
    idx = _mm512_add_epi32(idx, step);
  }
  return count;
}


// --- The bfloat16 batch kernels ---------------------------------------------------------
// vdpbf16ps multiplies 16 pairs of bfloat16 and adds both products to a float32 lane, at
// the FMA's rate (two per cycle on a Zen 5; one per cycle on a Zen 4, as its 512-bit FMA: a
// loop of independent zmm vdpbf16ps and one of vfmadd both ran 3.6 G/s on one core,
// bench/native/issue-rate.cc), so a panel tile does twice the products per instruction of
// the float32 one. On the Zen 4, against the "avx512-scan" set's AVX2 float32 tiles, 100k
// rows, two threads, k = 100, B = 12 to 128, d = 64 and 128, both storages: 0.64-0.88 of
// the time (bench:exact-ab --kernels avx512-scan,avx512-bf16, bench/README.md). bfloat16
// keeps 8 significant bits, far too few to rank with, so the tile only filters: a score can
// reach its query's threshold only if the bfloat16 score is within an error bound of it, and
// each (row, query) pair that is gets rescored in float32 before the caller sees it. Results
// are those of the float32 kernels.
//
// The bound for query q against any row x (u = 2^-8, bfloat16's unit roundoff):
//   |approx - dot(q, x)| <= ((2u + u^2) + (dpad + 2) 2^-23) sum_j |q_j x_j| + tiny
//                        <= margin(q) = c(dpad) |q| max_x |x| + 1e-28
// Rounding each element to bfloat16 moves a product by at most (2u + u^2) of itself (the
// product of two bfloat16 is exact in float32); each of the dpad float32 additions rounds
// by at most 2^-23 of the partial sum's magnitude (2^-24 for round to nearest; twice that
// in case the unit rounds otherwise); Cauchy-Schwarz bounds the sum of |q_j x_j|. The
// constant covers flushed subnormals (vdpbf16ps flushes inputs and outputs): each is below
// 2^-126 and at most d * 65504 * 2^-126 < 1e-28 in all. c is rounded up generously. Where
// a product could overflow (|q| max |x| above 1e37) the margin is infinite and every pair
// is rescored; the filter's compare passes NaN for the same reason.

// Scratch: the queries as bfloat16 pairs in panels of 16, the queries as float32 rows (for
// rescoring), each query's margin, each query's threshold less its margin, a stage of 12
// rows as bfloat16 pairs, then the row-major scores.
struct Bf16Scratch {
  uint32_t* pairs;  // pairs[(p * dpad / 2 + jj) * 16 + i]: elements 2jj, 2jj+1 of query 16p+i
  float* queries;   // queries[q * dpad + j], zeros past nq
  float* margin;
  float* floor;  // thr[q] - margin[q], per call
  uint32_t* stage;
  float* scores;
};

inline Bf16Scratch LayoutBf16(float* s, size_t nq16, size_t dpad) {
  Bf16Scratch x;
  x.pairs = Carve<uint32_t>(s, nq16 * dpad / 2);
  x.queries = Carve(s, nq16 * dpad);
  x.margin = Carve(s, nq16);
  x.floor = Carve(s, nq16);
  x.stage = Carve<uint32_t>(s, kTileRows * dpad / 2);
  x.scores = s;
  return x;
}

// Round to nearest even, as vcvtne2ps2bf16 (inputs are finite).
inline uint32_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

void PackQueriesBf16(const float* queries, size_t nq, size_t dpad, float* scratch,
                     float row_norm_max) {
  const size_t nq16 = PanelStride(nq);
  const Bf16Scratch s = LayoutBf16(scratch, nq16, dpad);
  for (size_t q = 0; q < nq16; q++)
    for (size_t j = 0; j < dpad; j++)
      s.queries[q * dpad + j] = q < nq ? queries[q * dpad + j] : 0.f;
  const size_t dh = dpad / 2;
  for (size_t q = 0; q < nq16; q++) {
    const float* v = s.queries + q * dpad;
    for (size_t jj = 0; jj < dh; jj++)
      s.pairs[((q / 16) * dh + jj) * 16 + q % 16] = ToBf16(v[2 * jj]) | ToBf16(v[2 * jj + 1]) << 16;
    double norm2 = 0;
    for (size_t j = 0; j < dpad; j++) norm2 += double(v[j]) * v[j];
    const double scale = std::sqrt(norm2) * double(row_norm_max);
    const double c = (2.0 / 256 + 1.0 / 65536 + double(dpad + 2) / 8388608) * 1.01;
    s.margin[q] = q >= nq       ? 0.f
                  : scale > 1e37 ? std::numeric_limits<float>::infinity()
                                 : static_cast<float>(c * scale + 1e-28);
  }
}

// Rows as bfloat16 pairs into the stage: 32 elements per conversion, the tail (dpad is a
// multiple of 8) under masks.
template <class L>
__attribute__((target("avx512bf16"))) inline void StageBf16(const typename L::T* row,
                                                            size_t dpad, uint32_t* dst) {
  auto load16 = [&](size_t j, __mmask16 m) {
    if constexpr (std::is_same_v<typename L::T, float>) {
      return _mm512_maskz_loadu_ps(m, row + j);
    } else {
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + j));
    }
  };
  size_t j = 0;
  for (; j + 32 <= dpad; j += 32) {
    const __m512bh b = _mm512_cvtne2ps_pbh(load16(j + 16, 0xffff), load16(j, 0xffff));
    _mm512_storeu_si512(dst + j / 2, (__m512i)b);
  }
  if (j < dpad) {
    const size_t left = dpad - j;  // 8, 16 or 24
    const __mmask16 lo = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    const __mmask16 hi = left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
    const __m512bh b = _mm512_cvtne2ps_pbh(load16(j + 16, hi), load16(j, lo));
    _mm512_mask_storeu_epi32(dst + j / 2, static_cast<__mmask16>((1u << (left / 2)) - 1),
                             (__m512i)b);
  }
}

// R staged rows x P panels: PanelTile16 with pairs of elements per step; bit r set when
// row r holds a bfloat16 score not below its query's floor (or NaN).
template <int R, int P>
__attribute__((target("avx512bf16"))) inline unsigned PanelTileBf16(
    const uint32_t* stage, size_t dh, const uint32_t* pairs, const float* floor, float* sc,
    size_t ldsc) {
  __m512 acc[R][P];
#pragma GCC unroll 12
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
  for (size_t jj = 0; jj < dh; jj++) {
    __m512bh qv[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) {
      qv[p] = (__m512bh)_mm512_load_si512(pairs + (p * dh + jj) * 16);
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(stage[r * dh + jj]));
#pragma GCC unroll 2
      for (int p = 0; p < P; p++) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], qv[p], x);
    }
  }
  __m512 t[P];
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) t[p] = _mm512_loadu_ps(floor + p * 16);
  unsigned hit = 0;
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    __mmask16 m = _mm512_cmp_ps_mask(acc[r][0], t[0], _CMP_NLT_UQ);
#pragma GCC unroll 2
    for (int p = 1; p < P; p++) m = m | _mm512_cmp_ps_mask(acc[r][p], t[p], _CMP_NLT_UQ);
    hit |= static_cast<unsigned>(m != 0) << r;
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) _mm512_store_ps(sc + r * ldsc + p * 16, acc[r][p]);
  }
  return hit;
}

template <int R>
__attribute__((target("avx512bf16"))) inline unsigned PanelsForRowsBf16(
    const uint32_t* stage, size_t dh, const uint32_t* pairs, size_t nq, const float* floor,
    float* sc, size_t ldsc) {
  unsigned hit = 0;
  for (size_t q = 0; q < nq; q += 32) {
    if (nq - q > 16) {
      hit |= PanelTileBf16<R, 2>(stage, dh, pairs + q * dh, floor + q, sc + q, ldsc);
    } else {
      hit |= PanelTileBf16<R, 1>(stage, dh, pairs + q * dh, floor + q, sc + q, ldsc);
    }
  }
  return hit;
}

template <int R>
__attribute__((target("avx512bf16"))) inline unsigned PanelsForSomeRowsBf16(
    size_t nr, const uint32_t* stage, size_t dh, const uint32_t* pairs, size_t nq,
    const float* floor, float* sc, size_t ldsc) {
  if constexpr (R > 1) {
    if (nr < R) return PanelsForSomeRowsBf16<R - 1>(nr, stage, dh, pairs, nq, floor, sc, ldsc);
  }
  return PanelsForRowsBf16<R>(stage, dh, pairs, nq, floor, sc, ldsc);
}

// The float32 score of one stored row against one query row.
inline float ExactDot(const float* row, const float* query, size_t dpad) {
  __m512 a = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dpad; j += 16)
    a = _mm512_fmadd_ps(_mm512_loadu_ps(row + j), _mm512_loadu_ps(query + j), a);
  if (j < dpad) {
    const __m512 x = _mm512_castps256_ps512(_mm256_loadu_ps(row + j));
    const __m512 y = _mm512_castps256_ps512(_mm256_loadu_ps(query + j));
    a = _mm512_mask3_fmadd_ps(x, y, a, 0x00ff);
  }
  return _mm512_reduce_add_ps(a);
}
inline float ExactDot(const uint16_t* row, const float* query, size_t dpad) {
  return HSum(RowDot(row, query, dpad));
}

template <class L>
__attribute__((target("avx512bf16"))) size_t PanelHitsBf16(
    const typename L::T* const* rows, size_t nrows, size_t nq, size_t dpad, float* scratch,
    const float* thr, uint32_t* hit_rows, const float** scores) {
  const size_t nq16 = PanelStride(nq);
  const size_t dh = dpad / 2;
  const Bf16Scratch s = LayoutBf16(scratch, nq16, dpad);
  for (size_t q = 0; q < nq16; q += 16)
    _mm512_store_ps(s.floor + q,
                    _mm512_sub_ps(_mm512_loadu_ps(thr + q), _mm512_load_ps(s.margin + q)));
  size_t nhit = 0;
  for (size_t r = 0; r < nrows; r += kTileRows) {
    const size_t nr = std::min(kTileRows, nrows - r);
    for (size_t i = r + kTileRows; i < std::min(nrows, r + 2 * kTileRows); i++) {
      const char* p = reinterpret_cast<const char*>(rows[i]);
      for (size_t b = 0; b < dpad * sizeof(typename L::T); b += 64)
        _mm_prefetch(p + b, _MM_HINT_T0);
    }
    for (size_t i = 0; i < nr; i++) StageBf16<L>(rows[r + i], dpad, s.stage + i * dh);
    float* sc = s.scores + r * nq16;
    for (unsigned hit = PanelsForSomeRowsBf16<kTileRows>(nr, s.stage, dh, s.pairs, nq, s.floor,
                                                         sc, nq16);
         hit != 0; hit &= hit - 1) {
      const unsigned i = static_cast<unsigned>(__builtin_ctz(hit));
      float* srow = sc + i * nq16;
      // Rescore the pairs that passed the floor; the row is a hit if one of them reaches
      // the threshold itself (the others are below the floor, so below the threshold). The
      // test is on the scalar just computed: reloading the vector it was stored into
      // stalled on the store forwarding.
      bool any = false;
      for (size_t q0 = 0; q0 < nq16; q0 += 16) {
        for (unsigned m = _mm512_cmp_ps_mask(_mm512_load_ps(srow + q0),
                                             _mm512_load_ps(s.floor + q0), _CMP_NLT_UQ);
             m != 0; m &= m - 1) {
          const size_t q = q0 + static_cast<size_t>(__builtin_ctz(m));
          const float exact = ExactDot(rows[r + i], s.queries + q * dpad, dpad);
          srow[q] = exact;
          any |= exact >= thr[q];
        }
      }
      if (any) hit_rows[nhit++] = static_cast<uint32_t>(r + i);
    }
  }
  *scores = s.scores;
  return nhit;
}

// --- The int8-screened batch kernels ---------------------------------------------------
// vpdpbusd multiplies 16 x 4 pairs of unsigned and signed bytes and adds the four products
// to an int32 lane, one instruction per cycle for zmm on a Zen 4 (as vdpbf16ps and the
// float32 FMA: 3.6 G/s on one core in loops of independent ones, bench/native/issue-rate.cc),
// so a tile does four products per lane and instruction where the bfloat16 one does two,
// and it reads the rows' codes where they lie: no conversion of the rows per search.
//
// The rows are signed codes c about the index's centre z (I8Screen: x_j = s c_j + z + e_j,
// |e_j| <= err). Each query is coded about its own centre the same way, q_j = t (d_j + m) +
// f_j with d_j in [-127, 127], an integer offset m and measured |f_j| <= f; the instruction
// takes d_j + 128 as its unsigned bytes, and the accumulator starts at (m - 128) sum_j c_j
// (sum_j c_j is stored after the row's codes), so it ends at D = sum_j (d_j + m) c_j
// exactly. Centres matter: for data of one sign (uniform [0, 1), say) codes about 0 would
// leave half of each range unused and double both errors. Then
//   dot(q, x) = s t D + z sum_j q_j + s sum_j f_j c_j + sum_j q_j e_j
//   |dot(q, x) - s t D - z sum_j q_j| <= s f l1 + err |q|_1
// and the float32 score the rescoring computes is within (dpad + 2) 2^-23 |q|_1 amax of
// dot(q, x) (each of the dpad additions rounds by at most 2^-24 of a partial sum, taken
// twice). With O_q = z sum_j q_j plus both bounds (rounded up), a pair can reach its
// query's threshold T only if s t D + O_q >= T, that is D >= (T - O_q) / (s t) (I8Floor,
// computed in double: s t exactly, one rounding in the division, lowered by one). And with
// b the two bounds together, two pairs whose D differ by more than 2b / (s t) (I8Query's
// margin) score in that order in float32 too, so the caller keeps candidates by D alone and
// rescores only the few within the margin of its k-th best, at the end (exact_index.cc).
// The kernel compares the integer accumulators against the caller's integer floors, one
// compare per 16 pairs, as the float32 tiles.

// Each query is coded 16 elements a step: the same codes and error f as one element at a
// time (the same IEEE operations lane by lane), the sums q1 and sum in another order. One
// element at a time, packing was 1.4% of a 100k x 64 float16 B = 32 search's samples
// (perf; every search packs twice on each thread, for the guess's sample and the scan);
// this way 0.91-1.01 of the time at B = 16 and 32, d = 64 and 128, both storages, most
// cells 0.97-0.98 (bench:exact-ab --addons, either build first).
void PackQueriesI8(const float* queries, size_t nq, size_t dpad, const I8Screen& screen,
                   float* scratch) {
  const size_t nq16 = PanelStride(nq);
  const size_t dq = dpad / 4;
  const I8Scratch s = StartPackI8(scratch, nq, dpad, screen);
  for (size_t q = 0; q < nq16; q++) {
    // Query q's elements 16 at a time; the padding queries past nq are zeros, and so are
    // the lanes past dpad (a multiple of 8): they move neither lo nor hi (both start at 0),
    // code to -m, exactly the centre, and add nothing to f, q1 or sum.
    const float* row = q < nq ? queries + q * dpad : nullptr;
    auto load = [&](size_t j) {
      const __mmask16 live = dpad - j >= 16 ? 0xffff : (1u << (dpad - j)) - 1;
      return row ? _mm512_maskz_loadu_ps(live, row + j) : _mm512_setzero_ps();
    };
    __m512 vlo = _mm512_setzero_ps(), vhi = vlo;  // over the padded row: the zeros past d count
    for (size_t j = 0; j < dpad; j += 16) {
      const __m512 x = load(j);
      vlo = _mm512_min_ps(x, vlo);  // (the second operand where the first is NaN)
      vhi = _mm512_max_ps(x, vhi);
    }
    const float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
    // Codes about the centre in steps of t, the centre itself a whole number of steps; a
    // centre too far from zero for that (more than 127 steps) codes about 0 instead.
    float t = (hi - lo) / 254.f;
    double mid = (double(hi) + lo) / 2;
    int m = t > 0 ? static_cast<int>(std::nearbyint(mid / t)) : 0;
    if (t > 0 && std::abs(mid / t) > 127) {
      t = std::max(hi, -lo) / 127.f;
      m = 0;
    }
    const __m512 vt = _mm512_set1_ps(t), vm = _mm512_set1_ps(float(m));
    const __m512d dt = _mm512_set1_pd(double(t)), dm = _mm512_set1_pd(double(m));
    const __m512d sign = _mm512_set1_pd(-0.0);
    __m512d f = _mm512_setzero_pd(), q1 = f, sum = f;
    uint32_t* codes = s.codes + (q / 16) * dq * 16 + q % 16;
    for (size_t j = 0; j < dpad; j += 16) {
      const __m512 x = load(j);
      __m512 d = _mm512_setzero_ps();
      if (t > 0) {
        d = _mm512_roundscale_ps(_mm512_sub_ps(_mm512_div_ps(x, vt), vm),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        d = _mm512_min_ps(_mm512_set1_ps(127.f), _mm512_max_ps(_mm512_set1_ps(-127.f), d));
      }
      for (int h = 0; h < 2; h++) {
        auto half = [h](__m512 v) {
          return _mm512_cvtps_pd(h ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v));
        };
        const __m512d xv = half(x), dv = half(d);
        const __m512d e = _mm512_sub_pd(xv, _mm512_mul_pd(dt, _mm512_add_pd(dv, dm)));  // exact
        f = _mm512_max_pd(f, _mm512_andnot_pd(sign, e));
        q1 = _mm512_add_pd(q1, _mm512_andnot_pd(sign, xv));
        sum = _mm512_add_pd(sum, xv);
      }
      // Codes + 128 as bytes, four elements a dword, dword g of the query at codes[16 g]:
      // its panel's layout.
      const __m128i b =
          _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(d), _mm512_set1_epi32(128)));
      uint32_t w[4];
      _mm_storeu_si128(reinterpret_cast<__m128i*>(w), b);
      for (size_t g = 0; g < 4 && j + 4 * g < dpad; g++) codes[(j / 4 + g) * 16] = w[g];
    }
    s.t[q] = t;
    s.start[q] = m - 128;
    SetI8Figures(s, q, nq, screen, dpad, _mm512_reduce_max_pd(f), _mm512_reduce_add_pd(q1),
                 _mm512_reduce_add_pd(sum));
  }
}

// acc += the four byte products of each lane (u: unsigned, s: signed). In assembly: g++ 12
// compiled the intrinsic, _mm512_dpbusd_epi32, into copies of every accumulator around each
// instruction and spilled half of them to the stack (perf annotate: the tile ran at the
// bfloat16 tile's speed with half its instructions); the in-place form keeps the 24
// accumulators in registers.
__attribute__((target("avx512vnni"))) inline void DpBusd(__m512i& acc, __m512i u, __m512i s) {
  asm("vpdpbusd %[s], %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [s] "v"(s));
}
// The same with the four signed bytes at p broadcast by the instruction itself ({1to16}),
// for a single panel, where each broadcast feeds one product: one instruction, not two.
__attribute__((target("avx512vnni"))) inline void DpBusdBroadcast(__m512i& acc, __m512i u,
                                                                   const uint8_t* p) {
  asm("vpdpbusd %[s]%{1to16%}, %[u], %[acc]"
      : [acc] "+v"(acc)
      : [u] "v"(u), [s] "m"(*reinterpret_cast<const int32_t*>(p)));
}
// The same 8 lanes wide ({1to8}), for the half-width tile below.
__attribute__((target("avx512vnni"))) inline void DpBusdBroadcast(__m256i& acc, __m256i u,
                                                                   const uint8_t* p) {
  asm("vpdpbusd %[s]%{1to8%}, %[u], %[acc]"
      : [acc] "+v"(acc)
      : [u] "v"(u), [s] "m"(*reinterpret_cast<const int32_t*>(p)));
}

// A compare's mask as a 32-bit integer in a general register from here on (the empty asm).
// g++ 12 under -fsanitize=thread kept such masks in k registers, spilled them as one or two
// bytes and reloaded them as four: the 8-lane tile then named queries past the batch, and
// the screen wrote past its buffers (test/retrieval/concurrency.test.ts found it; a
// throwaway script over objdump -d counted 163 such reloads in that build of this file,
// none after this). The addon's -O3 build had none either way; with this its tiles kept
// their instructions (kmovw for kmovd) and their time, 0.98-1.05 at B = 3 to 64
// (bench:exact-ab --addons, 100k rows, d = 64 and 128, both storages).
inline uint32_t InRegister(uint32_t mask) {
  asm("" : "+r"(mask));
  return mask;
}

// A tile's vectors: 16 int32 lanes (a panel of 16 queries), or 8 for a last group of at
// most 8 queries. The Zen 4 issues two ymm vpdpbusd a cycle where it issues one zmm
// (bench/native/issue-rate.cc: 7.0 against 3.7 G/s), so the half-width tile scores such a
// group in about half the full one's time (measured at ForGroupTiles). The packed
// queries keep their panels of 16; the tile reads each panel's first 8 lanes.
template <int W>
struct I8Lanes;
template <>
struct I8Lanes<16> {
  using V = __m512i;
  static V Load(const void* p) { return _mm512_loadu_si512(p); }
  static V LoadAligned(const void* p) { return _mm512_load_si512(p); }
  static V Set1(int32_t x) { return _mm512_set1_epi32(x); }
  static V Mullo(V a, V b) { return _mm512_mullo_epi32(a, b); }
  static V Add(V a, V b) { return _mm512_add_epi32(a, b); }
  static uint32_t AtLeast(V a, V b) { return InRegister(_mm512_cmpge_epi32_mask(a, b)); }
  static void Store(void* p, V a) { _mm512_store_si512(p, a); }
};
template <>
struct I8Lanes<8> {
  using V = __m256i;
  static V Load(const void* p) { return _mm256_loadu_si256(static_cast<const V*>(p)); }
  static V LoadAligned(const void* p) { return _mm256_load_si256(static_cast<const V*>(p)); }
  static V Set1(int32_t x) { return _mm256_set1_epi32(x); }
  static V Mullo(V a, V b) { return _mm256_mullo_epi32(a, b); }
  static V Add(V a, V b) { return _mm256_add_epi32(a, b); }
  static uint32_t AtLeast(V a, V b) { return InRegister(_mm256_cmpge_epi32_mask(a, b)); }
  static void Store(void* p, V a) { _mm256_store_si256(static_cast<V*>(p), a); }
};

// How a tile finds its R code rows. Gathered rows come as pointers; the compiler keeps the
// twelve in registers, spilling some to vector registers in the loop. Consecutive rows of a
// padded width the scans unroll for (dq = dpad / 4 of 8, 16, 32 or 64 dwords) are one
// pointer plus constant offsets: the loop holds no row pointers at all. On the Zen 4, with
// the caller building no pointer arrays for such rows and its scratch kept per thread
// (exact_index.cc), 0.92-0.98 of the time at B = 12 to 128, 100k rows, d = 64 and 128, both
// storages, two threads (bench:exact-ab --addons against the build before).
struct GatheredCodes {
  const uint8_t* const* p;
  const uint8_t* Row(int r) const { return p[r]; }
};
template <size_t DQ>
struct ConsecutiveCodes {
  const uint8_t* base;
  const uint8_t* Row(int r) const { return base + static_cast<size_t>(r) * I8RowBytes(4 * DQ); }
};

// R code rows x P panels: int32 scores U = D + h_r (the row's slack, i8_screen_inl.h) to
// sc[r * ldsc + 16p ..], and to masks[r * ldm] bit 16p + i set where query 16p + i's U
// reaches its integer floor; bit r of the result set when row r has such a query. The body
// runs only inside two small out-of-line functions, one tile (PanelTileI8) or a block's run
// of consecutive tiles (PanelTilesI8): inlined into the caller's loop, the single-panel tile
// kept its 12 accumulators on the stack (a store per product), and B = 12 and 16 ran no
// faster than without the screen; out of line, 0.50-0.72 of that time (bench:exact-ab
// --screens none,int8, measured with the kernels that rescored as they went). W: lanes
// (I8Lanes); 8 only with one panel. kShift 16: a half-width panel after a full one in the
// same group of 32 (queries 16-23), whose mask bits join the word the full one wrote.
template <int R, int P, class C, int W = 16, int kShift = 0>
__attribute__((target("avx512vnni"), always_inline)) inline unsigned TileBodyI8(
    C codes, size_t dq, const uint32_t* qc, const int32_t* start, const int32_t* floor,
    int32_t* sc, size_t ldsc, uint32_t* masks, size_t ldm) {
  static_assert(W == 16 || P == 1, "a half-width tile has one panel");
  static_assert(kShift == 0 || (W == 8 && kShift == 16), "only a half panel follows one");
  using L = I8Lanes<W>;
  using V = typename L::V;
  V acc[R][P], st[P];
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) st[p] = L::Load(start + p * 16);
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    const V c = L::Set1(I8RowSum(codes.Row(r), 4 * dq));
    const V h = L::Set1(I8RowSlack(codes.Row(r), 4 * dq));
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) acc[r][p] = L::Add(L::Mullo(c, st[p]), h);
  }
  for (size_t g = 0; g < dq; g++) {
    V qv[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) qv[p] = L::LoadAligned(qc + (p * dq + g) * 16);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      if constexpr (P == 1) {
        DpBusdBroadcast(acc[r][0], qv[0], codes.Row(r) + 4 * g);
      } else {
        int32_t w;
        std::memcpy(&w, codes.Row(r) + 4 * g, 4);
        const __m512i x = _mm512_set1_epi32(w);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) DpBusd(acc[r][p], qv[p], x);
      }
    }
  }
  V t[P];
#pragma GCC unroll 2
  for (int p = 0; p < P; p++) t[p] = L::Load(floor + p * 16);
  unsigned hit = 0;
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    uint32_t m = L::AtLeast(acc[r][0], t[0]);
#pragma GCC unroll 2
    for (int p = 1; p < P; p++) m |= L::AtLeast(acc[r][p], t[p]) << 16;
    if constexpr (kShift == 0) {
      masks[r * ldm] = m;
    } else {
      masks[r * ldm] |= m << kShift;
    }
    hit |= static_cast<unsigned>(m != 0) << r;
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) L::Store(sc + r * ldsc + p * 16, acc[r][p]);
  }
  return hit;
}
template <int R, int P, class C, int W = 16, int kShift = 0>
__attribute__((target("avx512vnni"), noinline)) unsigned PanelTileI8(
    C codes, size_t dq, const uint32_t* qc, const int32_t* start, const int32_t* floor,
    int32_t* sc, size_t ldsc, uint32_t* masks, size_t ldm) {
  return TileBodyI8<R, P, C, W, kShift>(codes, dq, qc, start, floor, sc, ldsc, masks, ldm);
}
// ntiles tiles of R consecutive code rows of DQ dwords from base, one query group (P panels):
// tile i's scores at sc + i R ldsc, its masks at masks + i R ldm (ldm: the words a row, one
// a group). One call a block and group instead of one a tile, the next tile's code rows
// prefetched a tile ahead.
template <int R, int P, size_t DQ, int W = 16, int kShift = 0>
__attribute__((target("avx512vnni"), noinline)) void PanelTilesI8(
    const uint8_t* base, size_t ntiles, const uint32_t* qc, const int32_t* start,
    const int32_t* floor, int32_t* sc, size_t ldsc, uint32_t* masks, size_t ldm) {
  constexpr size_t kTileBytes = R * I8RowBytes(4 * DQ);
  for (size_t i = 0; i < ntiles; i++) {
    const uint8_t* tile = base + i * kTileBytes;
    if (i + 1 < ntiles)
      for (size_t b = 0; b < kTileBytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(tile + kTileBytes + b), _MM_HINT_T0);
    TileBodyI8<R, P, ConsecutiveCodes<DQ>, W, kShift>(ConsecutiveCodes<DQ>{tile}, DQ, qc, start,
                                                      floor, sc + i * R * ldsc, ldsc,
                                                      masks + i * R * ldm, ldm);
  }
}

// The tiles for a group of `left` queries (those past 32 belong to the next group), in the
// fewest lanes: two panels for 25-32, a panel and a half one for 17-24, one panel for 9-16,
// a half one for 1-8. run(TileShape<P, W, kShift>{}, offset) runs one on the group's
// queries from offset. Against 32 lanes for 17-24 queries: 0.86-0.98 of the time at
// B = 17 to 24 (most 0.86-0.90), 0.93-0.96 at B = 56; against 16 for 1-8: 0.64-0.76 at
// B = 3 to 8, 0.89-0.90 at B = 40; B = 12 and 32 0.99-1.01 (100k rows, d = 64 and 128,
// both storages, bench:exact-ab --addons).
template <int P, int W, int kShift>
struct TileShape {
  static constexpr int kPanels = P, kLanes = W, kMaskShift = kShift;
};
template <class Run>
inline void ForGroupTiles(size_t left, Run run) {
  if (left > 24) {
    run(TileShape<2, 16, 0>{}, 0);
  } else if (left > 16) {
    run(TileShape<1, 16, 0>{}, 0);
    run(TileShape<1, 8, 16>{}, 16);
  } else if (left > 8) {
    run(TileShape<1, 16, 0>{}, 0);
  } else {
    run(TileShape<1, 8, 0>{}, 0);
  }
}

// Masks: one word per row and group of 32 queries (ldm = groups).
template <int R, class C>
__attribute__((target("avx512vnni"))) inline unsigned PanelsForRowsI8(
    C codes, size_t dq, const uint32_t* qc, size_t nq, const int32_t* start,
    const int32_t* floor, int32_t* sc, size_t ldsc, uint32_t* masks) {
  unsigned hit = 0;
  const size_t ldm = (nq + 31) / 32;
  for (size_t q = 0; q < nq; q += 32) {
    ForGroupTiles(nq - q, [&](auto shape, size_t offset) {
      using S = decltype(shape);
      const size_t h = q + offset;
      hit |= PanelTileI8<R, S::kPanels, C, S::kLanes, S::kMaskShift>(
          codes, dq, qc + h * dq, start + h, floor + h, sc + h, ldsc, masks + q / 32, ldm);
    });
  }
  return hit;
}

template <int R>
__attribute__((target("avx512vnni"))) inline unsigned PanelsForSomeRowsI8(
    size_t nr, const uint8_t* const* codes, size_t dq, const uint32_t* qc, size_t nq,
    const int32_t* start, const int32_t* floor, int32_t* sc, size_t ldsc, uint32_t* masks) {
  if constexpr (R > 1) {
    if (nr < R)
      return PanelsForSomeRowsI8<R - 1>(nr, codes, dq, qc, nq, start, floor, sc, ldsc, masks);
  }
  return PanelsForRowsI8<R>(GatheredCodes{codes}, dq, qc, nq, start, floor, sc, ldsc, masks);
}

// One tile of up to kTileRows code rows starting at row r: at constant offsets where the rows
// are consecutive code rows (stride I8RowBytes(dpad)), the tile whole and dq one of the
// widths above, else through a pointer per row.
__attribute__((target("avx512vnni"))) inline unsigned TileI8(
    RowSpan<uint8_t> codes, size_t r, size_t nr, size_t dq, const uint32_t* qc, size_t nq,
    const int32_t* start, const int32_t* floor, int32_t* sc, size_t ldsc, uint32_t* masks) {
  if (codes.consecutive() && codes.stride == I8RowBytes(4 * dq) && nr == kTileRows) {
    const uint8_t* c = codes[r];
    auto at = [&](auto rows) {
      return PanelsForRowsI8<kTileRows>(rows, dq, qc, nq, start, floor, sc, ldsc, masks);
    };
    switch (dq) {
      case 8: return at(ConsecutiveCodes<8>{c});
      case 16: return at(ConsecutiveCodes<16>{c});
      case 32: return at(ConsecutiveCodes<32>{c});
      case 64: return at(ConsecutiveCodes<64>{c});
      default: break;
    }
  }
  const uint8_t* ptrs[kTileRows];
  for (size_t i = 0; i < nr; i++) ptrs[i] = codes[r + i];
  return PanelsForSomeRowsI8<kTileRows>(nr, ptrs, dq, qc, nq, start, floor, sc, ldsc, masks);
}

// The screen (Kernels::screen_i8): the tiles' integer scores go to a stage (a block's
// worth on the path for whole consecutive tiles, one tile's otherwise), their compares to
// one mask word per row and 32 queries, and the pairs at or above their floors straight to
// their queries' buffers. No stored row is read.
__attribute__((target("avx512vnni"))) size_t ScreenI8(RowSpan<uint8_t> codes, size_t nrows,
                                                       size_t nq, size_t dpad, float* scratch,
                                                       const int32_t* floors,
                                                       const uint32_t* rows, uint32_t first,
                                                       uint64_t* const* out, uint32_t* fill) {
  const size_t nq16 = PanelStride(nq);
  const size_t dq = dpad / 4;
  const size_t ldm = (nq + 31) / 32;
  const I8Scratch s = LayoutI8(scratch, nq16, dpad);
  int32_t* stage = reinterpret_cast<int32_t*>(s.scores);
  const size_t cb = I8RowBytes(dpad);
  size_t n = 0;
  // Row i's pairs (its mask words, its integer scores) to their queries' buffers.
  auto emit = [&](size_t i, const uint32_t* words, const int32_t* drow) {
    const uint32_t row = rows ? rows[i] : first + static_cast<uint32_t>(i);
    n += EmitI8Pairs(row, words, ldm, drow, out, fill);
  };
  size_t r = 0;
  // Whole tiles of consecutive code rows at the widths the tile unrolls for, up to
  // kMaxBlockGroups groups of 32 queries: one kernel call a group for all of a block's
  // tiles, which the next group reads again from L1 or L2. Against a call a tile (all groups
  // of a tile, then the next): 0.94-0.97 of the time at B = 12 and 16 (d = 64 and 128, both
  // storages) and 0.98-1.05 at B = 32 (bench:exact-ab --addons, either build first);
  // B = 48 to 128: see kMaxBlockGroups.
  if (codes.consecutive() && codes.stride == cb && ldm <= kMaxBlockGroups &&
      nrows >= kTileRows && nrows <= kMaxBlockRows) {
    const size_t ntiles = nrows / kTileRows;
    uint32_t masks[kMaxBlockRows * kMaxBlockGroups];
    auto tiles = [&](auto width) {
      constexpr size_t DQ = decltype(width)::value;
      for (size_t q = 0; q < nq; q += 32) {
        ForGroupTiles(nq - q, [&](auto shape, size_t offset) {
          using S = decltype(shape);
          const size_t h = q + offset;
          PanelTilesI8<kTileRows, S::kPanels, DQ, S::kLanes, S::kMaskShift>(
              codes.base, ntiles, s.codes + h * DQ, s.start + h, floors + h, stage + h, nq16,
              masks + q / 32, ldm);
        });
      }
      return ntiles * kTileRows;
    };
    switch (dq) {
      case 8: r = tiles(std::integral_constant<size_t, 8>{}); break;
      case 16: r = tiles(std::integral_constant<size_t, 16>{}); break;
      case 32: r = tiles(std::integral_constant<size_t, 32>{}); break;
      case 64: r = tiles(std::integral_constant<size_t, 64>{}); break;
      default: break;
    }
    // The hit rows' indices first, 16 masks a step (a test and a compress in registers),
    // then their pairs. A branch on each row's mask mispredicted on the rows that hold a
    // pair, up to ~13% of them at random (100k x 64 float16, B = 32: ~13,400 pairs a
    // search, temporary counters), and the pairs' emission was 8% of the samples (perf);
    // this way 0.94-0.97 of the time at B = 32 and d = 64, 0.94-1.0 at d = 128 and at
    // B = 16 (bench:exact-ab --addons, either build first).
    static_assert(kMaxBlockRows % 16 == 0, "the masks are read 16 at a time");
    uint32_t hits[kMaxBlockRows + 16];
    size_t nh = 0;
    // Several groups: a row's words ORed into one first.
    uint32_t any[kMaxBlockRows];
    const uint32_t* word = masks;
    if (ldm > 1) {
      for (size_t i = 0; i < r; i++) {
        uint32_t w = 0;
        for (size_t g = 0; g < ldm; g++) w |= masks[i * ldm + g];
        any[i] = w;
      }
      word = any;
    }
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t i = 0; i < r; i += 16, idx = _mm512_add_epi32(idx, step)) {
      const __m512i m = _mm512_loadu_si512(word + i);
      __mmask16 live = _mm512_test_epi32_mask(m, m);
      if (r - i < 16) live &= static_cast<__mmask16>((1u << (r - i)) - 1);
      _mm512_storeu_si512(hits + nh, _mm512_maskz_compress_epi32(live, idx));
      nh += static_cast<size_t>(__builtin_popcount(live));
    }
    for (size_t j = 0; j < nh; j++)
      emit(hits[j], masks + hits[j] * ldm, stage + hits[j] * nq16);
  }
  // The rest a tile at a time, each staged at the front of the scores.
  uint32_t* masks = reinterpret_cast<uint32_t*>(stage + kTileRows * nq16);
  for (; r < nrows; r += kTileRows) {
    const size_t nr = std::min(kTileRows, nrows - r);
    if (codes.consecutive()) {
      // The next tile's code rows are one run of bytes: a prefetch per line, not two per row
      // (13 instead of 24 at d = 64; 0.93-0.98 of the time at B = 12 and 16, d = 64, and
      // 0.98-1.05 elsewhere, bench:exact-ab --addons either way round).
      const size_t end = std::min(nrows, r + 2 * kTileRows);
      if (r + kTileRows < end) {
        const char* p = reinterpret_cast<const char*>(codes[r + kTileRows]);
        const size_t bytes = (end - r - kTileRows) * codes.stride;
        for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
    } else {
      for (size_t i = r + kTileRows; i < std::min(nrows, r + 2 * kTileRows); i++) {
        const char* p = reinterpret_cast<const char*>(codes[i]);
        for (size_t b = 0; b < cb; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
    }
    for (unsigned hit =
             TileI8(codes, r, nr, dq, s.codes, nq, s.start, floors, stage, nq16, masks);
         hit != 0; hit &= hit - 1) {
      const unsigned i = static_cast<unsigned>(__builtin_ctz(hit));
      emit(r + i, masks + i * ldm, stage + i * nq16);
    }
  }
  return n;
}

float ExactF32(const float* row, const float* query, size_t dpad) {
  return ExactDot(row, query, dpad);
}
float ExactF16(const uint16_t* row, const float* query, size_t dpad) {
  return ExactDot(row, query, dpad);
}

// Codes 16 elements at a time; the errors in double (s c_j exact, x_j - s c_j fused, then
// one rounding for z: the caller's 1e-9 covers both).
I8RowCode CodeRowI8(const float* v, size_t dpad, float s, float z, int8_t* codes) {
  const __m512 inv = _mm512_set1_ps(s > 0 ? 1.f / s : 0.f), zz = _mm512_set1_ps(z);
  const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
  const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  const __m512d sd = _mm512_set1_pd(s), zd = _mm512_set1_pd(z);
  __m512i sum = _mm512_setzero_si512(), l1 = sum;
  __m512d err = _mm512_setzero_pd(), amax = err;
  bool finite = true;
  for (size_t j = 0; j < dpad; j += 16) {
    const __mmask16 m = dpad - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (dpad - j)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, v + j);
    const __mmask16 fin = _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(x), big, _CMP_LE_OQ);
    finite &= fin == m;
    const __m512 t = _mm512_maskz_mov_ps(
        fin, _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_sub_ps(x, zz), inv))));
    const __m512 c = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i ci = _mm512_cvttps_epi32(c);
    sum = _mm512_add_epi32(sum, ci);
    l1 = _mm512_add_epi32(l1, _mm512_abs_epi32(ci));
    _mm_mask_storeu_epi8(codes + j, m, _mm512_cvtsepi32_epi8(ci));
    for (int half = 0; half < 2; half++) {
      const __mmask8 mh = static_cast<__mmask8>(fin >> (8 * half));
      const __m256 xh = half ? _mm512_extractf32x8_ps(x, 1) : _mm512_castps512_ps256(x);
      const __m256 ch = half ? _mm512_extractf32x8_ps(c, 1) : _mm512_castps512_ps256(c);
      const __m512d xd = _mm512_cvtps_pd(xh);
      const __m512d e = _mm512_sub_pd(_mm512_fnmadd_pd(sd, _mm512_cvtps_pd(ch), xd), zd);
      err = _mm512_mask_max_pd(err, mh, err, _mm512_abs_pd(e));
      amax = _mm512_mask_max_pd(amax, mh, amax, _mm512_abs_pd(xd));
    }
  }
  I8RowCode out;
  out.sum = _mm512_reduce_add_epi32(sum);
  out.l1 = _mm512_reduce_add_epi32(l1);
  out.err = _mm512_reduce_max_pd(err);
  out.amax = _mm512_reduce_max_pd(amax);
  out.finite = finite;
  return out;
}

void FiniteRange(const float* v, size_t n, float* lo, float* hi) {
  const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
  __m512 mn = _mm512_set1_ps(*lo), mx = _mm512_set1_ps(*hi);
  for (size_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, v + j);
    const __mmask16 fin = _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(x), big, _CMP_LE_OQ);
    mn = _mm512_mask_min_ps(mn, fin, mn, x);
    mx = _mm512_mask_max_ps(mx, fin, mx, x);
  }
  *lo = _mm512_reduce_min_ps(mn);
  *hi = _mm512_reduce_max_ps(mx);
}

// The best k keys of a merge in descending order, by rank: a key's place is the number of
// keys above it (they are distinct: each ends in its row's id), counted 8 at a time with
// one compare. At k = 100, n^2 / 8 = 1,250 compares and no branch on the data; std::sort
// mispredicted about half of its ~700 comparisons, and sorting was a third of a B = 32
// merge (temporary timers, not in the repo).
void SortDescendingByRank(uint64_t* keys, size_t n) {
  constexpr size_t kMax = 256;
  if (n > kMax) {
    SortDescending(keys, n);
    return;
  }
  uint64_t copy[kMax];
  std::memcpy(copy, keys, n * sizeof(uint64_t));
  const size_t full = n / 8 * 8;
  const __mmask8 tail = static_cast<__mmask8>((1u << (n - full)) - 1);
  for (size_t i = 0; i < n; i++) {
    const __m512i x = _mm512_set1_epi64(static_cast<long long>(copy[i]));
    unsigned above = 0;
    for (size_t j = 0; j < full; j += 8)
      above += static_cast<unsigned>(
          __builtin_popcount(_mm512_cmpgt_epu64_mask(_mm512_loadu_si512(copy + j), x)));
    if (tail != 0)
      above += static_cast<unsigned>(__builtin_popcount(
          _mm512_mask_cmpgt_epu64_mask(tail, _mm512_maskz_loadu_epi64(tail, copy + full), x)));
    keys[above] = copy[i];
  }
}

// The int8 kernels join whichever AVX-512 table the CPU gets, where it has AVX512_VNNI.
void AddI8(Kernels* x) {
  if (!__builtin_cpu_supports("avx512vnni")) return;
  x->pack_queries_i8 = PackQueriesI8;
  x->screen_i8 = ScreenI8;
  x->query_i8 = QueryI8;
  x->exact_f32 = ExactF32;
  x->exact_f16 = ExactF16;
  x->code_row_i8 = CodeRowI8;
  x->finite_range = FiniteRange;
  // From B = 3 for float16, B = 2 for float32: through the screen (with its half-width
  // tile), against the two-query scan, float32 B = 2 took 0.51-0.59 of the time at 100k x 64
  // and x 128, and 0.39-0.57 at 1M rows; float16 0.98-1.13 at 100k and 0.81-1.06 at 1M
  // (bench:exact-ab --kernels avx512-bf16,avx512-bf16 --tune-b '{"screenMinBatch":2}').
  // B = 1 stays direct for both: see ExactTuning::screen_min_batch.
  x->screen_min_batch_f16 = 3;
  x->screen_min_batch_f32 = 2;
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
    x.score_f32 = ScoreF32;
    x.panel_f32 = PanelHits16<F32Rows>;
    x.panel_f16 = PanelHits16<F16Rows>;
    x.pack_queries = PackQueries16;
    x.select_each = SelectEach16;
    x.sort_desc = SortDescendingByRank;
    AddI8(&x);
    return x;
  }();
  return &k;
}

const Kernels* Avx512Bf16Kernels() {
  const Kernels* base = Avx512Kernels();
  if (base == nullptr || !__builtin_cpu_supports("avx512bf16")) return nullptr;
  static const Kernels k = [base] {
    Kernels x = *base;
    x.name = "avx512-bf16";
    x.panel_f32 = PanelHitsBf16<F32Rows>;
    x.panel_f16 = PanelHitsBf16<F16Rows>;
    x.pack_queries = PackQueriesBf16;
    return x;
  }();
  return &k;
}

const Kernels* Avx512ScanKernels() {
  const Kernels* base = Avx2Kernels();
  if (base == nullptr || Avx512Kernels() == nullptr) return nullptr;
  static const Kernels k = [base] {
    Kernels x = *base;
    x.name = "avx512-scan";
    x.score_f16 = ScoreF16;
    x.score_f32 = ScoreF32;
    x.sort_desc = SortDescendingByRank;
    AddI8(&x);
    return x;
  }();
  return &k;
}

}  // namespace recserve
