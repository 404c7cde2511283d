// Dot-product kernels of the exact index. One table of function pointers is chosen once
// per index (AVX2/FMA/F16C when the CPU has them, else the scalar reference), the way
// hnswlib picks its distance function, so the hot loop pays one indirect call per block
// of rows, never a CPU-feature test per row.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace recserve {

// Rows are stored zero-padded to a multiple of kLane elements, and queries are copied
// into a buffer with the same padded stride (zeros past d). Padding is how every kernel
// handles any d: the tail lanes multiply zeros, so no masked loads and no scalar tail
// loop run inside the hot loop.
constexpr size_t kLane = 8;
inline size_t PaddedDim(size_t d) { return (d + kLane - 1) / kLane * kLane; }

// Queries of a batch rounded up to the batch kernels' panel pair (16): the row stride of
// the row-major scores a panel kernel leaves, and the length of its threshold array.
inline size_t PanelStride(size_t nq) { return (nq + 15) / 16 * 16; }

// Where a kernel call's rows lie: row i at ptrs[i] (a filtered scan's gathered rows), or,
// where ptrs is null, stride bytes apart from base (an unfiltered scan's consecutive rows,
// for which the caller then builds no pointer array).
template <class T>
struct RowSpan {
  const T* const* ptrs = nullptr;
  const uint8_t* base = nullptr;
  size_t stride = 0;

  static RowSpan Gathered(const T* const* p) { return RowSpan{p, nullptr, 0}; }
  static RowSpan Consecutive(const void* b, size_t s) {
    return RowSpan{nullptr, static_cast<const uint8_t*>(b), s};
  }
  bool consecutive() const { return ptrs == nullptr; }
  const T* operator[](size_t i) const {
    return ptrs ? ptrs[i] : reinterpret_cast<const T*>(base + i * stride);
  }
};

// Calls f(ptrs, n, r0) over rows [r0, r0 + n) of rows' first nrows, with a pointer per row:
// the span's own array, or, for consecutive rows, arrays of up to 256 built here. For the
// kernels that index rows through pointers only.
template <class T, class F>
void WithRowPointers(RowSpan<T> rows, size_t nrows, F f) {
  if (!rows.consecutive()) {
    f(rows.ptrs, nrows, size_t(0));
    return;
  }
  const T* buf[256];
  for (size_t r0 = 0; r0 < nrows; r0 += 256) {
    const size_t n = nrows - r0 < 256 ? nrows - r0 : 256;
    for (size_t i = 0; i < n; i++) buf[i] = rows[r0 + i];
    f(static_cast<const T* const*>(buf), n, r0);
  }
}

// Floats of scratch a panel kernel uses for up to nrows rows and nq queries (see
// Kernels::panel_f32): packed queries, a stage of up to 12 rows, row-major scores.
// (The bfloat16 kernels' layout, see kernels_avx512.cc, is the larger: packed pairs and a
// float32 copy of the queries, their error margins and thresholds, a stage of 12 rows. The
// int8 kernels' fits too: dpad bytes and four floats a query and 16 floats, then the
// integer scores of the rows a call stages and one tile's compare masks.)
inline size_t ScoreScratchFloats(size_t nrows, size_t nq, size_t dpad) {
  const size_t nq16 = PanelStride(nq);
  return (2 * nq16 + 12) * dpad + 2 * nq16 + ((nrows + 7) / 8 * 8 + 8) * nq16;
}

// The int8 screen of an index's rows (ExactIndex's `screen` option): one scale s and one
// centre z for all rows; element j of a stored row x is coded c_j = round((x_j - z) / s),
// clamped to [-127, 127], and the row's dpad codes are followed by the int32 sum_j c_j (the
// kernels start their accumulators from it, see kernels_avx512.cc) and the int32 slack
// ceil(sum_j |c_j| / 2) (the kernels add it too, i8_screen_inl.h): I8RowBytes(dpad) bytes a
// row, written by PutI8RowTrailer. err bounds |x_j - s c_j - z| over every element of every
// screened row (about s / 2: a row with an element coded worse, one past the range, is left
// out of the screen and scored exactly, ExactIndex's outliers_), l1 bounds sum_j |c_j| of
// any screened row and amax bounds |x_j|; all three only grow until the next build or refit.
struct I8Screen {
  float scale = 0;
  float zero = 0;
  float err = 0;
  float l1 = 0;
  float amax = 0;
};
constexpr size_t I8RowBytes(size_t dpad) { return dpad + 8; }
// x as a float no less than x: the screen's bounds are upper bounds. +Infinity past the
// float range either way, and for NaN (the kernels then rescore every pair).
inline float RoundUpToFloat(double x) {
  if (!(std::fabs(x) < double(std::numeric_limits<float>::max())))
    return std::numeric_limits<float>::infinity();
  const float f = static_cast<float>(x);
  return double(f) >= x ? f : std::nextafter(f, std::numeric_limits<float>::infinity());
}
// What coding one row told (Kernels::code_row_i8): the codes' sum and sum of magnitudes,
// the largest |x_j - s c_j - z| and |x_j| over its finite elements, and whether all were.
struct I8RowCode {
  int32_t sum = 0;
  int32_t l1 = 0;
  double err = 0;
  double amax = 0;
  bool finite = true;
};

// What the int8 screen knows of one query (Kernels::query_i8): a pair whose integer score
// is D has a float32 score within b of scale * D + c, the same c for every row. upper is
// c + b, rounded up: a pair reaches a float32 threshold thr only if scale * D + upper >= thr
// (I8Floor). margin is an integer no less than 2b / scale: a pair whose D is more than
// margin below another pair's D' has a float32 score below that pair's, so once k pairs
// reach some D', no pair below D' - margin can be among the best k. kI8NoMargin where the
// screen tells nothing (scale 0: a query of zeros; a bound that is infinite or NaN).
constexpr int64_t kI8NoMargin = int64_t(1) << 40;
struct I8Query {
  double scale = 0;
  double upper = 0;
  int64_t margin = kI8NoMargin;
};
// The least integer score a pair needs to reach float32 score thr (lowered by one against
// the division's rounding): -Infinity thresholds and unusable bounds let every pair pass,
// +Infinity none.
inline int32_t I8Floor(const I8Query& f, float thr) {
  const double t = thr, m = f.upper;
  double x;
  if (t == -std::numeric_limits<double>::infinity() ||
      m == std::numeric_limits<double>::infinity() || std::isnan(m)) {
    x = -std::numeric_limits<double>::infinity();
  } else if (t == std::numeric_limits<double>::infinity()) {
    x = std::numeric_limits<double>::infinity();
  } else if (f.scale > 0) {
    x = std::floor((t - m) / f.scale) - 1;
  } else {
    x = t <= m ? -std::numeric_limits<double>::infinity()
               : std::numeric_limits<double>::infinity();
  }
  return x <= double(INT32_MIN)   ? INT32_MIN
         : x >= double(INT32_MAX) ? INT32_MAX
                                  : static_cast<int32_t>(x);
}
// Writes a code row's trailer after its dpad codes: the codes' sum and slack (above).
inline void PutI8RowTrailer(uint8_t* row, size_t dpad, const I8RowCode& c) {
  const int32_t slack = c.l1 / 2 + c.l1 % 2;  // l1 >= 0
  std::memcpy(row + dpad, &c.sum, 4);
  std::memcpy(row + dpad + 4, &slack, 4);
}
// The trailer's two fields, as the tiles read them.
inline int32_t I8RowSum(const uint8_t* row, size_t dpad) {
  int32_t x;
  std::memcpy(&x, row + dpad, 4);
  return x;
}
inline int32_t I8RowSlack(const uint8_t* row, size_t dpad) {
  int32_t x;
  std::memcpy(&x, row + dpad + 4, 4);
  return x;
}
// A candidate of the int8 screen (Kernels::screen_i8) as one integer: its integer score D
// mapped to unsigned order in the high half, its storage row in the low half.
inline uint64_t I8Key(int32_t d, uint32_t row) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(d) ^ 0x80000000u) << 32) | row;
}
inline int32_t I8KeyScore(uint64_t key) {
  return static_cast<int32_t>(static_cast<uint32_t>(key >> 32) ^ 0x80000000u);
}
inline uint32_t I8KeyRow(uint64_t key) { return static_cast<uint32_t>(key); }

struct Kernels {
  const char* name;
  // out[q * ldo + r] = dot(rows[r], queries + q * dpad) for r < nrows, q < nq: rows scored
  // where they lie, one query or a few at a time (the B = 1 scan, small batches).
  void (*score_f32)(RowSpan<float> rows, size_t nrows, const float* queries, size_t nq,
                    size_t dpad, float* out, size_t ldo);
  void (*score_f16)(RowSpan<uint16_t> rows, size_t nrows, const float* queries, size_t nq,
                    size_t dpad, float* out, size_t ldo);
  // The batch kernels (nullptr in the scalar set). They score rows against queries that
  // pack_queries has put into scratch (ScoreScratchFloats(nrows, nq, dpad) floats, 64-byte
  // aligned) in panels, and leave the scores row-major: *scores + r * PanelStride(nq) + q.
  // The top-k filter runs inside, on the accumulators before they are stored: the rows
  // that hold at least one score >= thr[q] for its query q go to hit_rows, ascending, and
  // the count is returned, so the caller visits only those rows. thr holds PanelStride(nq)
  // floats, +Infinity past nq (the zero scores of padding queries never pass). Once the
  // thresholds are up almost no row passes, and a block of rows costs its FMAs alone: no
  // transpose to query-major order and no filter pass per query over every score.
  size_t (*panel_f32)(const float* const* rows, size_t nrows, size_t nq, size_t dpad,
                      float* scratch, const float* thr, uint32_t* hit_rows, const float** scores);
  size_t (*panel_f16)(const uint16_t* const* rows, size_t nrows, size_t nq, size_t dpad,
                      float* scratch, const float* thr, uint32_t* hit_rows, const float** scores);
  // Packs the queries into scratch in this kernel set's panel layout (transposed panels of
  // 8 for AVX2, 16 for AVX-512; nullptr in the scalar set, with the batch kernels). Once
  // per search and thread, not per block of rows: at d = 64 a block is 128 rows, and
  // packing 32 queries for every block cost a third of the block's FMA time. row_norm_max
  // bounds the Euclidean norm of every stored row: the bfloat16 kernels size their error
  // margins with it.
  void (*pack_queries)(const float* queries, size_t nq, size_t dpad, float* scratch,
                       float row_norm_max);
  // dot(a, b) over d unpadded floats (HNSW rows as FAISS stores them).
  float (*dot_f32)(const float* a, const float* b, size_t d);
  // Writes the indexes i < n with s[i] >= thr to hits, ascending; returns how many. The
  // top-k filter: one vector compare per 8 scores, then a loop over the hits alone.
  size_t (*select_at_least)(const float* s, size_t n, float thr, uint32_t* hits);
  // The same with one threshold per score: indexes i < n with s[i] >= thr[i]. A batch
  // kernel's hit row against the queries' thresholds, 8 queries per compare. hits must hold
  // n + 16 entries: the AVX-512 version stores 16 at a time, whole. With a masked store,
  // the caller's load of the first index waited for it (no store-to-load forwarding from
  // one), a quarter of the B = 32 hit loop's samples (perf); whole, 0.96-1.0 of the time at
  // B = 12-128 (bench:exact-ab --addons, either build first).
  size_t (*select_each)(const float* s, const float* thr, size_t n, uint32_t* hits);
  // Sum of n floats, read once front to back: the benchmark's streaming-read probe.
  float (*sum_f32)(const float* p, size_t n);
  // IEEE binary16 conversion, round to nearest even.
  void (*to_f16)(const float* in, uint16_t* out, size_t n);
  void (*from_f16)(const uint16_t* in, float* out, size_t n);
  // The int8 screen (nullptr in the scalar set). Rows are scored in 8-bit integer products
  // (vpdpbusd where the CPU has AVX512_VNNI: four per lane and instruction, twice the
  // bfloat16 rate; else vpmaddubsw and vpmaddwd, twice the float32 FMA's rate) against
  // queries pack_queries_i8 has packed into scratch (ScoreScratchFloats(nrows, nq, dpad)
  // floats, 64-byte aligned) once per search and thread, from each row's int8 code row
  // (I8Screen). An integer score D (U = D + h_r, carrying the row's slack: it bounds the
  // pair by its own row's size, i8_screen_inl.h) bounds the pair's float32 score (I8Query),
  // and the caller keeps candidates by D and rescores the few that survive in float32
  // (exact_f32/f16), so results are the float32 kernels'. screen_i8 appends I8Key(D, row) to
  // out[q] at fill[q] (incrementing it) for each pair of the call's code rows whose D reaches
  // floors[q] (PanelStride(nq) entries, INT32_MAX past nq); row is rows[i] for code row i, or
  // first + i without rows. Each out[q] must have room for nrows more keys. Returns the count.
  // Code rows come as a RowSpan: an unfiltered scan's consecutive rows as a base and
  // stride, and the tile then reads every code row at a constant offset.
  void (*pack_queries_i8)(const float* queries, size_t nq, size_t dpad, const I8Screen& screen,
                          float* scratch);
  size_t (*screen_i8)(RowSpan<uint8_t> codes, size_t nrows, size_t nq, size_t dpad,
                      float* scratch, const int32_t* floors, const uint32_t* rows,
                      uint32_t first, uint64_t* const* out, uint32_t* fill);
  // The screen's figures of each packed query (scratch as pack_queries_i8 left it).
  void (*query_i8)(const float* scratch, size_t nq, size_t dpad, I8Query* out);
  // The float32 score of a stored row and a padded query. The AVX-512 sets sum it as the
  // avx512-bf16 set's batch kernels rescore, so that set's screened and unscreened searches
  // agree bit for bit; the AVX2 set's agree to float32 accuracy.
  float (*exact_f32)(const float* row, const float* query, size_t dpad);
  float (*exact_f16)(const uint16_t* row, const float* query, size_t dpad);
  // Codes dpad floats as I8Screen says (c_j = round((v_j - z) / s), clamped; 0 where v_j is
  // not finite) into codes, without the trailer (PutI8RowTrailer), which the caller writes.
  I8RowCode (*code_row_i8)(const float* v, size_t dpad, float s, float z, int8_t* codes);
  // Widens [*lo, *hi] to the finite elements of v[0, n).
  void (*finite_range)(const float* v, size_t n, float* lo, float* hi);
  // Sorts n distinct keys descending (a merge's best k, best first).
  void (*sort_desc)(uint64_t* keys, size_t n);
  // The defaults of ExactTuning::screen_min_batch for this set, float16 and float32 storage:
  // the least batch whose screened search measured faster than the direct scans (see where
  // each set sets them). A float32 row costs a direct scan twice a float16 one's bytes, and
  // the screen reads the same codes for both, so float32 gains from smaller batches.
  size_t screen_min_batch_f16 = 3;
  size_t screen_min_batch_f32 = 3;
  // The defaults of ExactTuning::screen_step_bytes, the same way (0: none).
  size_t screen_step_bytes_f16 = 0;
  size_t screen_step_bytes_f32 = 0;
};

// sort_desc by comparisons (std::sort): the scalar and AVX2 sets'.
void SortDescending(uint64_t* keys, size_t n);

const Kernels& ScalarKernels();
// nullptr when this binary or this CPU lacks AVX2+FMA+F16C.
const Kernels* Avx2Kernels();
// The AVX2 table with AVX-512 kernels where they measured faster (kernels_avx512.cc);
// nullptr without AVX2 or AVX-512 F/VL/BW/DQ.
const Kernels* Avx512Kernels();
// The AVX-512 table whose batch kernels multiply in bfloat16 (vdpbf16ps, two products per
// lane and instruction) and rescore in float32 every score the bfloat16 error could have
// kept out, so results are those of the float32 batch kernels; nullptr without
// AVX512_BF16 or where Avx512Kernels() is.
const Kernels* Avx512Bf16Kernels();
// The AVX2 table with the AVX-512 file's single-query scans alone, for CPUs that execute
// 512-bit FMAs as two 256-bit halves (AMD Zen 4), where the 512-bit batch tiles lose;
// nullptr where Avx512Kernels() is.
const Kernels* Avx512ScanKernels();
// True on AMD family 19h: Zen 4 executes a 512-bit FMA as two 256-bit halves (Zen 3, the
// same family, has no AVX-512, so there the answer changes nothing).
bool SplitsWideFma();
// The best kernels this CPU runs: "avx512-bf16" where the CPU has AVX512_BF16, else
// "avx512-scan" where SplitsWideFma(), else "avx512", else "avx2", else "scalar".
const Kernels& BestKernels();

}  // namespace recserve
