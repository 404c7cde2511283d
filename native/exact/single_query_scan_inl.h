// The single-query (B = 1) scans, shared by kernels_avx2.cc and kernels_avx512.cc: the
// 8-row scan at the common embedding sizes (padded d = 32, 64, 128, 256: ScanUnrolled
// below; ScanUnrolled2 the same for two queries) and, where AVX-512 is enabled, the 512-bit
// float16 scan of the other dimensions (Scan4F16, at the end). Each of those files includes
// this inside its own anonymous namespace, so each compiles its own copy with its own
// target flags: the AVX-512 file's may use 32 vector registers, and the AVX2 file's must
// not use AVX-512 instructions. (An
// interim build whose AVX-512 sets called the AVX2 copy, 16 registers, ran 1.14x slower at
// 100k x 64 float16 than one with their own copy, bench:exact-ab --addons.) Internal
// linkage keeps the linker from merging the two copies into one. bench/native/f16-scan.cc
// includes it too, to time these scans against the shapes they replaced.
//
// Row after row: two 8-lane accumulators a row, then one 8-way horizontal sum gives the
// eight scores. D is the padded dimension, a template argument so that each row's loop
// unrolls whole: the loads go out row after row in address order (what the hardware
// prefetcher streams from memory best) while the unrolled rows give the out-of-order core
// sixteen independent FMA chains.
//
// It replaced 4-row scans: the AVX2 4-row tile (four accumulators a row, one horizontal sum
// per 4 rows) and, for float16 in the AVX-512 sets, a 512-bit 4-row scan (two 16-lane
// accumulators a row, a 512-bit fold per row; Scan4F16 below, still used at other dims).
// On a Zen 4 that scan converted ~23 halves per ns on one core from L2 or L3 alike, where
// 256-bit conversions and their FMAs alone ran ~52 halves per ns (512-bit ~30), and this one
// 31 from L2 and L3 at d = 64 (bench/native/f16-scan.cc). On that Zen 4, bench:exact-ab
// --addons, B = 1, the builds before and after interleaved in one process, time of the new:
//   avx512-bf16 set, float16: 100k rows (from L3) 0.84 (d = 64) and 0.98 (d = 128) on two
//     threads, 0.82 and 0.87 on one; 1M rows 0.87-0.95 on one thread and 1.0 on two, where
//     memory bounds both.
//   avx512-bf16 set, float32: 100k rows 0.83-0.84 (d = 64) and 0.94-0.98 (d = 128) on two
//     threads; 1M rows 0.86-0.92 on one thread, 0.99-1.0 on two.
//   avx2 set (--kernel avx2), 100k rows, one thread: float16 0.87 (d = 64) and 0.93
//     (d = 128), float32 0.91 and 0.93.
// Shapes tried instead, timed by bench/native/f16-scan.cc: the steps of all eight rows
// interleaved, and a runtime loop over each row's steps instead of the unrolled one, ran no
// faster than Scan4F16 from cache and slower than this scan from memory (1M x 128). Not
// measured on a CPU without AVX-512.
//
// Rows come as a RowSpan (exact/kernels.h): an unfiltered scan's consecutive rows are a base
// and a stride, for which the caller builds no pointer array and the scan loads no pointers.
// Against the pointer-array scan, bench:exact-ab --addons, 100k rows, B = 1, two threads, on
// the Zen 4: float16 0.79-0.98 of the time at d = 32 to 256 (0.89-0.91 at d = 64 over 150
// rounds), float32 0.93-1.02; the avx2 set (--kernel avx2) float16 0.92 at d = 64 and 128.
// bench/native/f16-scan.cc: 31.6 against 30.0 halves per ns at d = 64, one thread.
//
// Needs <immintrin.h>, <cstddef>, <cstdint> and "exact/kernels.h" included first, and AVX2,
// FMA and F16C enabled.

// The sum of one accumulator's 8 lanes.
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

inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 Load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Row i of a scan: through the caller's pointers, or stride bytes apart.
template <class T>
struct RowPointers {
  const T* const* p;
  const T* operator()(size_t i) const { return p[i]; }
};
template <class T>
struct RowStride {
  const uint8_t* base;
  size_t stride;
  const T* operator()(size_t i) const {
    return reinterpret_cast<const T*>(base + i * stride);
  }
};

// Float32 rows are read row after row in address order. Given rows at constant offsets of one
// base (RowStride), the compiler interleaves the loads of neighbouring rows. Against the same
// scan with each row's loads kept on their side of an empty asm's memory clobber (RowOrder),
// bench:exact-ab --addons, B = 1, two threads, on the Zen 4: float32 0.96-1.08 of the time at
// 100k rows and d = 32, 64 and 256, but 1.5x at d = 128 and 2.2x at 1M x 128; float16
// 0.91-0.94 at d = 32 to 128 and 0.98-1.01 at d = 256 and at 1M rows. So float16 rows are
// left to the compiler.
inline void RowOrder(const float*) { asm volatile("" ::: "memory"); }
inline void RowOrder(const uint16_t*) {}

template <size_t D, class T, class At>
inline __m256 Rows8Dot(At at, size_t r, const float* query) {
  static_assert(D % 16 == 0, "two accumulators of 8 lanes a row");
  __m256 a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    const T* x = at(r + i);
    __m256 u = _mm256_mul_ps(Load8(x), _mm256_loadu_ps(query));
    __m256 v = _mm256_mul_ps(Load8(x + 8), _mm256_loadu_ps(query + 8));
#pragma GCC unroll 32
    for (size_t j = 16; j < D; j += 16) {
      u = _mm256_fmadd_ps(Load8(x + j), _mm256_loadu_ps(query + j), u);
      v = _mm256_fmadd_ps(Load8(x + j + 8), _mm256_loadu_ps(query + j + 8), v);
    }
    a[i] = _mm256_add_ps(u, v);
    RowOrder(x);
  }
  return HSum8(a);
}

// The last rows (< 8) go to rest(pointers, n, out) through a pointer array of their own.
template <size_t D, class T, class At, class Rest>
void Scan8(At at, size_t nrows, const float* query, float* out, Rest rest) {
  size_t r = 0;
  // Two groups of 8 rows a step: one group's horizontal sums overlap the next group's
  // loads. On the Zen 4, bench/native/f16-scan.cc, one thread, 100k rows: 33.3-33.4 halves
  // per ns at d = 64 against 31.3-31.8 a group a step, d = 128 and 256 within 2%; the sums
  // are the same bit for bit. In the index, B = 1, two threads, 100k rows, float16: ~3% less
  // time at d = 64 and 128 (bench:exact-ab, the two builds alternately, four processes each).
  for (; r + 16 <= nrows; r += 16) {
    if constexpr (std::is_same_v<At, RowPointers<T>> && std::is_same_v<T, uint16_t>) {
      // An allow list's rows are scattered, so the hardware cannot stream them ahead: the
      // next step's 16 rows are prefetched. 1M rows, B = 1, both cores, against the build
      // without it in one process (bench/README.md, "allow lists"): float16 0.65-0.73 of
      // the time at a 10% allow list and 0.89-0.92 at 30%, d = 64; 0.86-0.89 and 0.91 at
      // d = 128. Float32 rows, twice the lines, ran 1.07-1.12x slower with it at d = 128:
      // left to the hardware.
      for (size_t i = r + 16; i < r + 32 && i < nrows; i++) {
        const char* p = reinterpret_cast<const char*>(at(i));
        for (size_t b = 0; b < D * sizeof(T); b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
    }
    const __m256 x = Rows8Dot<D, T>(at, r, query);
    const __m256 y = Rows8Dot<D, T>(at, r + 8, query);
    _mm256_storeu_ps(out + r, x);
    _mm256_storeu_ps(out + r + 8, y);
  }
  for (; r + 8 <= nrows; r += 8) _mm256_storeu_ps(out + r, Rows8Dot<D, T>(at, r, query));
  if (r < nrows) {
    const T* tail[8];
    for (size_t i = 0; i < nrows - r; i++) tail[i] = at(r + i);
    rest(static_cast<const T* const*>(tail), nrows - r, out + r);
  }
}

template <class T, class At, class Rest>
bool ScanUnrolledAt(At at, size_t nrows, const float* query, size_t dpad, float* out,
                    Rest rest) {
  switch (dpad) {
    case 32: Scan8<32, T>(at, nrows, query, out, rest); return true;
    case 64: Scan8<64, T>(at, nrows, query, out, rest); return true;
    case 128: Scan8<128, T>(at, nrows, query, out, rest); return true;
    case 256: Scan8<256, T>(at, nrows, query, out, rest); return true;
    default: return false;
  }
}

// One query over nrows rows at padded d = 32, 64, 128 or 256, the last rows (< 8) by
// rest(pointers, nrows, out); false, and nothing scored, at other dimensions.
template <class T, class Rest>
bool ScanUnrolled(RowSpan<T> rows, size_t nrows, const float* query, size_t dpad, float* out,
                  Rest rest) {
  if (rows.consecutive())
    return ScanUnrolledAt<T>(RowStride<T>{rows.base, rows.stride}, nrows, query, dpad, out, rest);
  return ScanUnrolledAt<T>(RowPointers<T>{rows.ptrs}, nrows, query, dpad, out, rest);
}

// --- Two queries --------------------------------------------------------------------
// The same 8-row scan for two queries at once: each row element is loaded (and, for float16,
// converted) once and multiplied into both queries' accumulators, so a float16 row costs
// one conversion and two FMAs per 8 elements where two single-query scans cost two of
// each. Each query's sums are those of Rows8Dot, in the same order: B = 1 and B = 2 agree
// bit for bit.

// N rows against both queries, scores stored to out0 and out1: 8 rows, or 4 for the AVX2
// set's 16 registers, where 8 rows' 16 sums spilled (71 stack accesses against 153 FMAs in
// the d = 64 float16 loop, objdump). HSum4 sums each row's lanes in HSum8's order, so
// either way the scores are Rows8Dot's.
template <size_t D, size_t N, class T, class At>
inline void RowsDot2(At at, size_t r, const float* q0, const float* q1, float* out0,
                     float* out1) {
  static_assert(D % 16 == 0, "two accumulators of 8 lanes a row and query");
  static_assert(N == 8 || N == 4, "8 or 4 rows");
  __m256 a[N], b[N];
#pragma GCC unroll 8
  for (size_t i = 0; i < N; i++) {
    const T* x = at(r + i);
    const __m256 x0 = Load8(x), x1 = Load8(x + 8);
    __m256 u0 = _mm256_mul_ps(x0, _mm256_loadu_ps(q0));
    __m256 v0 = _mm256_mul_ps(x1, _mm256_loadu_ps(q0 + 8));
    __m256 u1 = _mm256_mul_ps(x0, _mm256_loadu_ps(q1));
    __m256 v1 = _mm256_mul_ps(x1, _mm256_loadu_ps(q1 + 8));
#pragma GCC unroll 32
    for (size_t j = 16; j < D; j += 16) {
      const __m256 y0 = Load8(x + j), y1 = Load8(x + j + 8);
      u0 = _mm256_fmadd_ps(y0, _mm256_loadu_ps(q0 + j), u0);
      v0 = _mm256_fmadd_ps(y1, _mm256_loadu_ps(q0 + j + 8), v0);
      u1 = _mm256_fmadd_ps(y0, _mm256_loadu_ps(q1 + j), u1);
      v1 = _mm256_fmadd_ps(y1, _mm256_loadu_ps(q1 + j + 8), v1);
    }
    a[i] = _mm256_add_ps(u0, v0);
    b[i] = _mm256_add_ps(u1, v1);
    RowOrder(x);
  }
  if constexpr (N == 8) {
    _mm256_storeu_ps(out0, HSum8(a));
    _mm256_storeu_ps(out1, HSum8(b));
  } else {
    _mm_storeu_ps(out0, HSum4(a[0], a[1], a[2], a[3]));
    _mm_storeu_ps(out1, HSum4(b[0], b[1], b[2], b[3]));
  }
}

// Rows in steps of kStep (RowsDot2's N).
template <size_t D, class T, size_t kStep, class At, class Rest>
void Scan8x2(At at, size_t nrows, const float* q0, const float* q1, float* out0, float* out1,
             Rest rest) {
  // Steps up to the last whole 8 rows either way: the rest (< 8) goes where the
  // single-query scan sends it, so both queries' scores stay that scan's bit for bit.
  const size_t whole = nrows / 8 * 8;
  size_t r = 0;
  for (; r + kStep <= whole; r += kStep)
    RowsDot2<D, kStep, T>(at, r, q0, q1, out0 + r, out1 + r);
  if (r < nrows) {
    const T* tail[8];
    for (size_t i = 0; i < nrows - r; i++) tail[i] = at(r + i);
    rest(static_cast<const T* const*>(tail), nrows - r, q0, out0 + r);
    rest(static_cast<const T* const*>(tail), nrows - r, q1, out1 + r);
  }
}

// Two queries (queries and queries + dpad) over nrows rows at padded d = 32, 64, 128 or 256,
// scores to out and out + ldo, the last rows (< 8) by rest(pointers, nrows, query, out) a
// query at a time; false, and nothing scored, at other dimensions. kStep: rows a step, 8
// with 32 vector registers (AVX-512), 4 with 16 (AVX2).
template <size_t kStep, class T, class Rest>
bool ScanUnrolled2(RowSpan<T> rows, size_t nrows, const float* queries, size_t dpad, float* out,
                   size_t ldo, Rest rest) {
  auto run = [&](auto at) {
    const float* q1 = queries + dpad;
    switch (dpad) {
      case 32: Scan8x2<32, T, kStep>(at, nrows, queries, q1, out, out + ldo, rest); return true;
      case 64: Scan8x2<64, T, kStep>(at, nrows, queries, q1, out, out + ldo, rest); return true;
      case 128: Scan8x2<128, T, kStep>(at, nrows, queries, q1, out, out + ldo, rest); return true;
      case 256: Scan8x2<256, T, kStep>(at, nrows, queries, q1, out, out + ldo, rest); return true;
      default: return false;
    }
  };
  if (rows.consecutive()) return run(RowStride<T>{rows.base, rows.stride});
  return run(RowPointers<T>{rows.ptrs});
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// --- The 512-bit float16 scan ----------------------------------------------------------

inline __m512 Halves16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// One row against one query: 32 halves per step in two accumulators, then a last 16 and
// the 8-float tail of dpad (dpad is a multiple of 8), folded to 8 lanes for the caller's
// horizontal sum.
inline __m256 RowDot(const uint16_t* row, const float* query, size_t dpad) {
  __m512 a = _mm512_setzero_ps(), b = a;
  size_t j = 0;
  for (; j + 32 <= dpad; j += 32) {
    a = _mm512_fmadd_ps(Halves16(row + j), _mm512_loadu_ps(query + j), a);
    b = _mm512_fmadd_ps(Halves16(row + j + 16), _mm512_loadu_ps(query + j + 16), b);
  }
  if (j + 16 <= dpad) {
    a = _mm512_fmadd_ps(Halves16(row + j), _mm512_loadu_ps(query + j), a);
    j += 16;
  }
  a = _mm512_add_ps(a, b);
  __m256 s = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  if (j < dpad) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j)));
    s = _mm256_fmadd_ps(x, _mm256_loadu_ps(query + j), s);
  }
  return s;
}

// The float16 B = 1 scan at padded dimensions without an unrolled one (ScanUnrolled),
// and the last rows (< 8) of the 8-row scan: rows in address order, 4 at a time, one
// horizontal sum per 4 rows, as the AVX2 4-row tile and for its reason: against 8 rows with
// one accumulator each, 1M x 64 and x 128, bench:exact-ab --addons on a Zen 5: 0.95-0.96 of
// the time on one thread, 0.95-1.0 on two. (Software prefetch 3-12 KiB ahead measured
// between 0.90 and 1.17: left out.) One 512-bit conversion handles 16 halves where AVX2
// handles 8: on a Zen 4, against the AVX2 4-row tile, 4% less time at 1M rows on one thread
// and 2-3% on two; 100k x 64 on two threads, 0.30 against 0.37 ms.
void Scan4F16(const uint16_t* const* rows, size_t nrows, const float* query, size_t dpad,
              float* out) {
  size_t r = 0;
  for (; r + 4 <= nrows; r += 4) {
    const __m256 a0 = RowDot(rows[r], query, dpad), a1 = RowDot(rows[r + 1], query, dpad);
    const __m256 a2 = RowDot(rows[r + 2], query, dpad), a3 = RowDot(rows[r + 3], query, dpad);
    _mm_storeu_ps(out + r, HSum4(a0, a1, a2, a3));
  }
  for (; r < nrows; r++) {
    const __m256 z = _mm256_setzero_ps();
    out[r] = _mm_cvtss_f32(HSum4(RowDot(rows[r], query, dpad), z, z, z));
  }
}
#endif  // __AVX512F__ && __AVX512DQ__
