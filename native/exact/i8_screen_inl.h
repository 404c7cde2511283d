// What the int8 screen's kernels share, in kernels_avx2.cc and kernels_avx512.cc: the
// scratch layout of the packed queries and their figures (I8Query), and the emission of a
// row's pairs to their queries' candidate buffers. Like single_query_scan_inl.h, each of
// those files includes this inside its own anonymous namespace and compiles its own copy
// with its own target flags; internal linkage keeps the linker from handing the AVX2 set
// the AVX-512 file's copy.
//
// The two sets code the queries differently (the AVX-512 one in 8 bits for vpdpbusd, the
// AVX2 one in 7 for vpmaddubsw, see kernels_avx2.cc) but into the same layout and with the
// same bounds: a query coded q_j = t (d_j + m) + f_j, |f_j| <= f, against rows coded
// x_j = s c_j + z + e_j, has |dot(q, x) - s t D - z sum_j q_j| <= s f l1 + err |q|_1 with
// D = sum_j (d_j + m) c_j (kernels_avx512.cc derives it), whatever the code widths.
//
// Both sets' tiles report U = D + h_r for D, with h_r = ceil(l1_r / 2) the row's own slack
// (PutI8RowTrailer; l1_r = sum_j |c_j| of that row), and leave the query's coding error out
// of b as far as f <= t / 2 covers it: s f l1_r <= s t h_r. Pairs then reach a floor by
// their own rows' sizes, not by the largest row's: with trained vectors, whose norms grow
// with popularity, l1 (the largest l1_r) was 3.3x the median row's on a 100k-item demo
// bundle, and a weak user's band of rows within b of its k-th best held 69,035 rows where
// the rows' own slacks leave 440 (a throwaway script over the bundle, not in the repo). A
// pair's score then lies in [scale (U - 2 h_r) + c - b, scale U + c + b], so the margin
// (QueryOf), which must hold for any two rows, grows by the largest 2 h_r: 2 ceil(l1 / 2).

// The next `floats` floats of a scratch buffer, as T, and s moved past them.
template <class T = float>
inline T* Carve(float*& s, size_t floats) {
  T* p = reinterpret_cast<T*>(s);
  s += floats;
  return p;
}

// Scratch: the queries' unsigned codes in panels (16 queries for AVX-512, 8 for AVX2:
// dword g of lane i holds elements 4g .. 4g+3 of query Lp + i, panel p at codes + p dq L),
// each query's t, O_q, the accumulator's start factor (m minus the code's bias) and bound,
// the screen's scale, then the row-major integer scores (and compare masks) of the rows a
// call stages.
struct I8Scratch {
  uint32_t* codes;
  float* t;
  float* offset;
  int32_t* start;  // m - bias (128 for 8-bit codes, 64 for 7-bit)
  float* bound;    // b of I8Query, rounded up
  float* scale;    // scale[0]: the rows' s
  float* scores;
};

inline I8Scratch LayoutI8(float* s, size_t nq16, size_t dpad) {
  I8Scratch x;
  x.codes = Carve<uint32_t>(s, nq16 * dpad / 4);
  x.t = Carve(s, nq16);
  x.offset = Carve(s, nq16);
  x.start = Carve<int32_t>(s, nq16);
  x.bound = Carve(s, nq16);
  x.scale = Carve(s, 16);
  x.scores = s;
  return x;
}

// The scratch of pack_queries_i8 for nq queries (PanelStride(nq) with the padding ones),
// with the rows' scale recorded: where both sets' PackQueriesI8 start.
inline I8Scratch StartPackI8(float* scratch, size_t nq, size_t dpad, const I8Screen& screen) {
  const I8Scratch s = LayoutI8(scratch, PanelStride(nq), dpad);
  s.scale[0] = screen.scale;
  s.scale[1] = screen.l1;
  return s;
}

// Query q's offset and bound from its coding (s.t[q] already set): fmax the largest |f_j|,
// l1 = |q|_1 and total = sum_j q_j (each summed in double: at most 2^16 terms, their rounding
// far below the 1e-6 added). Padding queries (q >= nq) get zeros. The rows' slacks cover
// s f l1_r up to f = t / 2, and b keeps only what a coding error past t / 2 (a rounding's
// worth, if any) adds.
inline void SetI8Figures(const I8Scratch& s, size_t q, size_t nq, const I8Screen& screen,
                         size_t dpad, double fmax, double l1, double total) {
  const double qerr = std::max(0.0, fmax - 0.5 * double(s.t[q]));
  const double bound = double(screen.scale) * qerr * double(screen.l1) + double(screen.err) * l1 +
                       double(dpad + 2) / 8388608.0 * l1 * double(screen.amax);
  const double centre = double(screen.zero) * total;
  // NaN (an infinite err or amax against a zero) and overflow round up to +Infinity
  // (RoundUpToFloat): every pair of that query is rescored.
  const double b = bound * (1 + 1e-6) + std::fabs(centre) * 1e-12 + 1e-30;
  s.offset[q] = q >= nq ? 0.f : RoundUpToFloat(centre + b);
  s.bound[q] = q >= nq ? 0.f : RoundUpToFloat(b);
}

inline I8Query QueryOf(const I8Scratch& s, size_t q) {
  I8Query f;
  f.scale = double(s.scale[0]) * double(s.t[q]);  // exact: two floats' product in double
  f.upper = s.offset[q];
  const double b = s.bound[q];
  // ceil(2b / scale) in double, plus one against the division's rounding, and twice the
  // largest row slack: a pair's score then lies in [scale (U - 2 h_r) + c - b,
  // scale U + c + b].
  const double slack = 2 * std::ceil(double(s.scale[1]) / 2);
  const double m = f.scale > 0 ? std::ceil(2 * b / f.scale) + 1 + slack : std::nan("");
  f.margin = m >= 0 && m < double(kI8NoMargin) ? static_cast<int64_t>(m) : kI8NoMargin;
  return f;
}

void QueryI8(const float* scratch, size_t nq, size_t dpad, I8Query* out) {
  const I8Scratch s = LayoutI8(const_cast<float*>(scratch), PanelStride(nq), dpad);
  for (size_t q = 0; q < nq; q++) out[q] = QueryOf(s, q);
}

// Row `row`'s pairs (its mask words, one per 32 queries; its integer scores) to their
// queries' buffers; returns how many. A hit row usually holds one pair: the loop over a
// word's bits then runs once.
inline size_t EmitI8Pairs(uint32_t row, const uint32_t* words, size_t ldm, const int32_t* drow,
                          uint64_t* const* out, uint32_t* fill) {
  size_t n = 0;
  for (size_t g = 0; g < ldm; g++) {
    for (uint32_t m = words[g]; m != 0; m &= m - 1) {
      const size_t q = 32 * g + static_cast<size_t>(__builtin_ctz(m));
      out[q][fill[q]++] = I8Key(drow[q], row);
      n++;
    }
  }
  return n;
}
