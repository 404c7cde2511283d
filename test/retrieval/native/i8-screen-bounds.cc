// The int8 screen's promise, checked pair by pair against the kernels themselves (built
// from native/exact/kernels_*.cc, each with its own flags; see screen-bounds.test.ts).
//
// For every kernel set this CPU runs that has the screen, on random rows and queries of
// several dims, centres and scales: screen_i8 with floors at INT32_MIN emits every pair and
// at INT32_MAX none, and each pair's float32 score (the set's exact_f32) lies in
//   [scale D + upper - margin scale, scale D + upper]
// (I8Query): the screen never drops a pair that could reach a threshold (upper side) and
// never ranks apart two pairs closer than its margin (both sides). The scores carry each
// row's slack (i8_screen_inl.h), so each pair's score also lies within its own row's band of
// the upper end: (margin - 2 ceil(l1 / 2) + 2 h_r) * scale, with h_r from the code row's
// trailer. Rows of very different sizes (the norms of trained vectors grow with popularity)
// tell that band from the largest row's. Where the CPU has both the AVX2 and the AVX-512
// sets, their row coding (code_row_i8, finite_range) must agree bit for bit, non-finite
// elements included: both sets read the same code rows.
//
// Prints two lines per set ("<set> pairs N violations V", "<set> row bands N") and "coding
// mismatches M"; exits 1 on any violation or mismatch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "exact/kernels.h"

using namespace recserve;

namespace {

struct Case {
  size_t d, n, nq;
  std::vector<float> rows, queries;
};

Case MakeCase(std::mt19937& g, int t) {
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> uniform(0, 1);
  Case c;
  c.d = 8 * (1 + t % 16);
  c.n = 37;  // 9 tiles of 4 and one row, 3 of 12 and one
  c.nq = 1 + t % 40;
  const float centre = float(t % 3) * 2.f;
  const float scale = std::pow(10.f, float(t % 5) - 2);
  c.rows.resize(c.n * c.d);
  c.queries.resize(c.nq * c.d);
  for (auto& x : c.rows) x = scale * ((t % 2 ? uniform(g) : normal(g)) + centre);
  // Three cases in seven: each row times its own log-normal size (a 20x spread at the
  // deciles), and queries with one large element, as trained vectors have them.
  const bool sized = t % 7 >= 4;
  if (sized) {
    for (size_t i = 0; i < c.n; i++) {
      const float size = std::exp(1.8f * normal(g));
      for (size_t j = 0; j < c.d; j++) c.rows[i * c.d + j] *= size;
    }
  }
  for (auto& x : c.queries) x = (t % 4 < 2 ? uniform(g) : normal(g)) - centre / 2;
  if (sized)
    for (size_t q = 0; q < c.nq; q++) c.queries[q * c.d + (q % c.d)] = 8.f;
  return c;
}

// Codes the rows as ExactIndex::Build does (FitScreen, EncodeCodes).
I8Screen Code(const Kernels& k, const Case& c, std::vector<uint8_t>* codes) {
  float lo = 0, hi = 0;
  k.finite_range(c.rows.data(), c.rows.size(), &lo, &hi);
  I8Screen s;
  s.zero = static_cast<float>((double(lo) + hi) / 2);
  s.scale = static_cast<float>((double(hi) - lo) / 254);
  const size_t cb = I8RowBytes(c.d);
  codes->assign(c.n * cb, 0);
  double err = 0, l1 = 0, amax = 0;
  for (size_t i = 0; i < c.n; i++) {
    uint8_t* row = codes->data() + i * cb;
    const I8RowCode r = k.code_row_i8(c.rows.data() + i * c.d, c.d, s.scale, s.zero,
                                      reinterpret_cast<int8_t*>(row));
    PutI8RowTrailer(row, c.d, r);
    err = std::max(err, r.err);
    l1 = std::max(l1, double(r.l1));
    amax = std::max(amax, r.amax);
  }
  s.err = RoundUpToFloat(err * (1 + 1e-9));
  s.l1 = RoundUpToFloat(l1);
  s.amax = RoundUpToFloat(amax);
  return s;
}

struct Checked {
  size_t pairs = 0, bad = 0, banded = 0;
};

// Pairs checked, violations found and pairs checked against their own row's band, for one
// set.
Checked CheckSet(const Kernels& k) {
  std::mt19937 g(7);
  size_t pairs = 0, bad = 0, banded = 0;
  for (int t = 0; t < 400; t++) {
    const Case c = MakeCase(g, t);
    std::vector<uint8_t> codes;
    const I8Screen s = Code(k, c, &codes);
    std::vector<float> raw(ScoreScratchFloats(c.n, c.nq, c.d) + 16);
    float* scratch = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(raw.data()) + 63) &
                                              ~uintptr_t(63));
    k.pack_queries_i8(c.queries.data(), c.nq, c.d, s, scratch);
    std::vector<I8Query> f(c.nq);
    k.query_i8(scratch, c.nq, c.d, f.data());
    const size_t nq16 = PanelStride(c.nq);
    std::vector<std::vector<uint64_t>> out(c.nq, std::vector<uint64_t>(c.n));
    std::vector<uint64_t*> outp(c.nq);
    for (size_t q = 0; q < c.nq; q++) outp[q] = out[q].data();
    const auto spans = RowSpan<uint8_t>::Consecutive(codes.data(), I8RowBytes(c.d));
    // Floors that pass nothing: no pair.
    std::vector<int32_t> floors(nq16, INT32_MAX);
    std::vector<uint32_t> fill(c.nq, 0);
    if (k.screen_i8(spans, c.n, c.nq, c.d, scratch, floors.data(), nullptr, 0, outp.data(),
                    fill.data()) != 0) {
      std::printf("%s t=%d: pairs emitted above INT32_MAX floors\n", k.name, t);
      bad++;
    }
    // Floors that pass everything (padding queries past nq stay at INT32_MAX): every pair.
    std::fill(floors.begin(), floors.begin() + c.nq, INT32_MIN);
    const size_t got = k.screen_i8(spans, c.n, c.nq, c.d, scratch, floors.data(), nullptr, 0,
                                   outp.data(), fill.data());
    if (got != c.n * c.nq) {
      std::printf("%s t=%d: %zu pairs of %zu\n", k.name, t, got, c.n * c.nq);
      bad++;
    }
    for (size_t q = 0; q < c.nq; q++) {
      for (size_t e = 0; e < fill[q]; e++) {
        const int32_t d = I8KeyScore(out[q][e]);
        const uint32_t row = I8KeyRow(out[q][e]);
        const float score =
            k.exact_f32(c.rows.data() + row * c.d, c.queries.data() + q * c.d, c.d);
        const double upper = f[q].scale * d + f[q].upper;
        const double lower = upper - double(f[q].margin) * f[q].scale;
        pairs++;
        if (!(score <= upper && score >= lower)) {
          if (bad < 5)
            std::printf("%s t=%d q=%zu row=%u: score %.9g outside [%.9g, %.9g]\n", k.name, t, q,
                        row, score, lower, upper);
          bad++;
        }
        if (f[q].scale > 0 && f[q].margin < kI8NoMargin) {
          const int32_t h = I8RowSlack(codes.data() + row * I8RowBytes(c.d), c.d);
          const double band = double(f[q].margin) - 2 * std::ceil(double(s.l1) / 2) + 2.0 * h;
          banded++;
          if (!(score >= upper - band * f[q].scale)) {
            if (bad < 5)
              std::printf("%s t=%d q=%zu row=%u (slack %d): score %.9g below its row's band "
                          "[%.9g, %.9g]\n",
                          k.name, t, q, row, h, score, upper - band * f[q].scale, upper);
            bad++;
          }
        }
      }
    }
  }
  return {pairs, bad, banded};
}

// The AVX2 and AVX-512 row coding against each other; returns the mismatches.
size_t CompareCoding(const Kernels& a, const Kernels& b) {
  std::mt19937 g(3);
  std::normal_distribution<float> normal(0, 1);
  size_t bad = 0;
  for (int t = 0; t < 20000; t++) {
    const size_t dpad = 8 * (1 + t % 40);
    const float scale = std::pow(10.f, float(t % 7) - 3), zero = normal(g) * scale * 10;
    std::vector<float> v(dpad);
    for (auto& x : v) x = zero + normal(g) * scale * 127 * (t % 3 == 0 ? 1.5f : 0.7f);
    if (t % 11 == 0) v[t % dpad] = std::numeric_limits<float>::infinity();
    if (t % 13 == 0) v[(t + 1) % dpad] = std::nanf("");
    std::vector<int8_t> ca(dpad), cb(dpad);
    const I8RowCode ra = a.code_row_i8(v.data(), dpad, scale, zero, ca.data());
    const I8RowCode rb = b.code_row_i8(v.data(), dpad, scale, zero, cb.data());
    if (ca != cb || ra.sum != rb.sum || ra.l1 != rb.l1 || ra.err != rb.err ||
        ra.amax != rb.amax || ra.finite != rb.finite)
      bad++;
    float lo1 = 0, hi1 = 0, lo2 = 0, hi2 = 0;
    const size_t n = dpad - static_cast<size_t>(t % 5);
    a.finite_range(v.data(), n, &lo1, &hi1);
    b.finite_range(v.data(), n, &lo2, &hi2);
    if (lo1 != lo2 || hi1 != hi2) bad++;
  }
  return bad;
}

}  // namespace

int main() {
  int status = 0;
  for (const Kernels* k : {Avx2Kernels(), Avx512Kernels(), Avx512Bf16Kernels()}) {
    if (k == nullptr || k->screen_i8 == nullptr) continue;
    const Checked r = CheckSet(*k);
    std::printf("%s pairs %zu violations %zu\n", k->name, r.pairs, r.bad);
    std::printf("%s row bands %zu\n", k->name, r.banded);
    if (r.bad != 0 || r.pairs == 0 || r.banded == 0) status = 1;
  }
  if (Avx2Kernels() != nullptr && Avx512Kernels() != nullptr) {
    const size_t bad = CompareCoding(*Avx2Kernels(), *Avx512Kernels());
    std::printf("coding mismatches %zu\n", bad);
    if (bad != 0) status = 1;
  }
  return status;
}
