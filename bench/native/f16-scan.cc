// Float16 single-query scans, timed outside the index: the exact index's scans
// (native/exact/single_query_scan_inl.h, included below) against the shapes tried instead of
// them, and the issue rate of the conversions they are built on. bench/README.md
// (2026-12-06) and the header's comments quote its figures.
//
//   g++ -O2 -pthread -mavx2 -mfma -mf16c -mavx512f -mavx512vl -mavx512bw -mavx512dq -Inative
//       bench/native/f16-scan.cc -o /tmp/f16-scan && /tmp/f16-scan [rows] [d] [threads] [reps]
//
// Defaults: 100000 rows, d = 64 (a multiple of 32), one thread, best of 50 passes. The rows
// are uniform [-1, 1) rounded to float16, on 2 MiB pages where the kernel allows. Two
// threads each scan half the rows, with a thread started per pass: use them for passes of
// milliseconds (1M rows), not for rows that fit in cache. Needs AVX-512 F/VL/BW/DQ.
#include <immintrin.h>
#include <sys/mman.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

// g++ 12 warns about the intrinsics' own placeholder vectors (_mm512_undefined_*), as in
// kernels_avx512.cc; nothing here reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "exact/kernels.h"

namespace {

using recserve::RowSpan;
#include "exact/single_query_scan_inl.h"  // NOLINT(build/include)

using Rows = const uint16_t* const*;

// The 8 rows with each 32-half step of all of them interleaved (step j of row 0..7, then
// step j + 32), two accumulators a row: the shape the unrolled row-after-row scan replaced.
void Interleaved8(Rows rows, size_t nrows, const float* q, size_t dpad, float* out) {
  for (size_t r = 0; r + 8 <= nrows; r += 8) {
    __m256 a[8], b[8];
    for (int i = 0; i < 8; i++) a[i] = b[i] = _mm256_setzero_ps();
    for (size_t j = 0; j < dpad; j += 32) {
      const __m256 q0 = _mm256_loadu_ps(q + j), q1 = _mm256_loadu_ps(q + j + 8);
      const __m256 q2 = _mm256_loadu_ps(q + j + 16), q3 = _mm256_loadu_ps(q + j + 24);
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) {
        const uint16_t* x = rows[r + i] + j;
        a[i] = _mm256_fmadd_ps(Load8(x), q0, a[i]);
        b[i] = _mm256_fmadd_ps(Load8(x + 8), q1, b[i]);
        a[i] = _mm256_fmadd_ps(Load8(x + 16), q2, a[i]);
        b[i] = _mm256_fmadd_ps(Load8(x + 24), q3, b[i]);
      }
    }
    for (int i = 0; i < 8; i++) a[i] = _mm256_add_ps(a[i], b[i]);
    _mm256_storeu_ps(out + r, HSum8(a));
  }
}

// Row after row like Rows8Dot, but each row's steps in a runtime loop of 64 halves (then
// 16 at a time).
void RuntimeLoop8(Rows rows, size_t nrows, const float* q, size_t dpad, float* out) {
  for (size_t r = 0; r + 8 <= nrows; r += 8) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
      const uint16_t* x = rows[r + i];
      __m256 u = _mm256_setzero_ps(), v = u;
      size_t j = 0;
      for (; j + 64 <= dpad; j += 64) {
#pragma GCC unroll 4
        for (size_t t = 0; t < 64; t += 16) {
          u = _mm256_fmadd_ps(Load8(x + j + t), _mm256_loadu_ps(q + j + t), u);
          v = _mm256_fmadd_ps(Load8(x + j + t + 8), _mm256_loadu_ps(q + j + t + 8), v);
        }
      }
      for (; j < dpad; j += 16) {  // dpad % 64 of 32
        u = _mm256_fmadd_ps(Load8(x + j), _mm256_loadu_ps(q + j), u);
        v = _mm256_fmadd_ps(Load8(x + j + 8), _mm256_loadu_ps(q + j + 8), v);
      }
      a[i] = _mm256_add_ps(u, v);
    }
    _mm256_storeu_ps(out + r, HSum8(a));
  }
}

// Floats built from the halves' bits with integer operations instead of vcvtph2ps: each
// 32-bit lane holds halves 2i (low) and 2i + 1 (high); (h << 16) >> 3 arithmetic, with bits
// 28-30 and 0-12 cleared, is the float of h scaled by 2^-112, so the query (qe, split into
// even and odd dimensions per 32) carries 2^112. Exact for finite halves and |q| < 2^16.
void IntegerBuilt(Rows rows, size_t nrows, const float* qe, size_t dpad, float* out) {
  const __m512i keep = _mm512_set1_epi32(static_cast<int>(0x8FFFE000u));
  for (size_t r = 0; r + 4 <= nrows; r += 4) {
    __m256 s[4];
    for (int i = 0; i < 4; i++) {
      __m512 a = _mm512_setzero_ps(), b = a;
      for (size_t j = 0; j < dpad; j += 32) {
        const __m512i w = _mm512_loadu_si512(rows[r + i] + j);
        const __m512 hi = _mm512_castsi512_ps(_mm512_and_si512(_mm512_srai_epi32(w, 3), keep));
        const __m512 lo = _mm512_castsi512_ps(
            _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(w, 16), 3), keep));
        a = _mm512_fmadd_ps(lo, _mm512_loadu_ps(qe + 2 * j), a);
        b = _mm512_fmadd_ps(hi, _mm512_loadu_ps(qe + 2 * j + 16), b);
      }
      a = _mm512_add_ps(a, b);
      s[i] = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    }
    _mm_storeu_ps(out + r, HSum4(s[0], s[1], s[2], s[3]));
  }
}

template <class F>
double BestSeconds(int reps, F f) {
  double best = 1e30;
  for (int i = 0; i < reps; i++) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                              .count());
  }
  return best;
}

// Conversions (vcvtph2ps from memory) and FMAs alone over the rows' first 32 KiB (in L1),
// 8 independent accumulators, step(acc, halves) a conversion of W halves and its FMA:
// halves per ns.
template <size_t W, class V, class Step>
double ConvertRate(const uint16_t* h, size_t halves, int reps, Step step) {
  const size_t span = std::min<size_t>(halves, 16384) / (8 * W) * (8 * W);
  const long passes = 2000;
  const double s = BestSeconds(reps / 10 + 1, [&] {
    // Eight named accumulators: as an array, g++ stored all eight after every step (the
    // vector types may alias the halves it reads), and the stores bounded the rate.
    V a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
    for (long p = 0; p < passes; p++) {
      for (size_t c = 0; c < span; c += 8 * W) {
        const uint16_t* x = h + c;
        a0 = step(a0, x), a1 = step(a1, x + W), a2 = step(a2, x + 2 * W);
        a3 = step(a3, x + 3 * W), a4 = step(a4, x + 4 * W), a5 = step(a5, x + 5 * W);
        a6 = step(a6, x + 6 * W), a7 = step(a7, x + 7 * W);
      }
    }
    for (const V& a : {a0, a1, a2, a3, a4, a5, a6, a7}) asm volatile("" : : "v"(a));
  });
  return double(passes) * span / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) / 8 * 8 : 100000;
  const size_t d = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 64;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 50;
  if (n == 0 || d == 0 || d % 32 != 0 || threads < 1 || threads > 2 || reps < 1) {
    std::fprintf(stderr, "usage: f16-scan [rows >= 8] [d, a multiple of 32] [1|2] [reps]\n");
    return 2;
  }
  const size_t page = size_t(2) << 20;
  const size_t bytes = (n * d * 2 + page - 1) / page * page;
  auto* h = static_cast<uint16_t*>(std::aligned_alloc(page, bytes));
  madvise(h, bytes, MADV_HUGEPAGE);
  std::vector<float> q(d), qe(2 * d), out(n), ref(n);
  uint64_t x = 88172645463325252ull;
  auto uniform = [&x] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return float(x >> 40) / float(1 << 23) - 1.f;
  };
  for (size_t i = 0; i < n * d; i++)
    h[i] = static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(uniform()), 0), 0));
  for (auto& v : q) v = uniform();
  for (size_t j = 0; j < d; j += 32)
    for (size_t i = 0; i < 16; i++) {
      qe[2 * j + i] = std::ldexp(q[j + 2 * i], 112);
      qe[2 * j + 16 + i] = std::ldexp(q[j + 2 * i + 1], 112);
    }
  std::vector<const uint16_t*> rows(n);
  for (size_t r = 0; r < n; r++) rows[r] = h + r * d;

  auto rest = [&](Rows r, size_t m, float* o) { Scan4F16(r, m, q.data(), d, o); };
  struct Variant {
    const char* name;
    void (*scan)(Rows, size_t, const float*, size_t, float*);
    const float* query;
  };
  static decltype(rest)* rest_of = &rest;
  const Variant variants[] = {
      {"4-row, 512-bit (Scan4F16)",
       [](Rows r, size_t m, const float* qq, size_t dd, float* o) { Scan4F16(r, m, qq, dd, o); },
       q.data()},
      {"8-row unrolled (ScanUnrolled)",
       [](Rows r, size_t m, const float* qq, size_t dd, float* o) {
         if (!ScanUnrolled(RowSpan<uint16_t>::Gathered(r), m, qq, dd, o, *rest_of))
           Scan4F16(r, m, qq, dd, o);
       },
       q.data()},
      // The same over the rows as base and stride, as the index passes an unfiltered scan's
      // (this program's rows are consecutive: rows[r] = h + r * d).
      {"8-row unrolled, base + stride",
       [](Rows r, size_t m, const float* qq, size_t dd, float* o) {
         if (!ScanUnrolled(RowSpan<uint16_t>::Consecutive(r[0], dd * 2), m, qq, dd, o, *rest_of))
           Scan4F16(r, m, qq, dd, o);
       },
       q.data()},
      {"8-row, steps interleaved", Interleaved8, q.data()},
      {"8-row, runtime step loop", RuntimeLoop8, q.data()},
      {"4-row, integer-built floats", IntegerBuilt, qe.data()},
  };
  Scan4F16(rows.data(), n, q.data(), d, ref.data());
  std::printf("%zu rows, d = %zu, %d thread(s), best of %d; halves per ns:\n", n, d, threads,
              reps);
  for (int round = 0; round < 2; round++) {
    for (const Variant& v : variants) {
      const double s = BestSeconds(reps, [&] {
        if (threads == 1) {
          v.scan(rows.data(), n, v.query, d, out.data());
        } else {
          const size_t half = n / 16 * 8;
          std::thread t(
              [&] { v.scan(rows.data() + half, n - half, v.query, d, out.data() + half); });
          v.scan(rows.data(), half, v.query, d, out.data());
          t.join();
        }
      });
      double err = 0;
      for (size_t r = 0; r < n; r++) err = std::max(err, double(std::fabs(out[r] - ref[r])));
      std::printf("  %-30s %6.1f   (largest difference from the first %.1e)\n", v.name,
                  double(n) * d / s / 1e9, err);
    }
  }
  const __m512 q16 = _mm512_set1_ps(1e-3f);
  const __m256 q8 = _mm256_set1_ps(1e-3f);
  std::printf(
      "vcvtph2ps + FMA alone over the rows' first 32 KiB: zmm %.1f, ymm %.1f\n",
      ConvertRate<16, __m512>(h, n * d, reps,
                              [&](__m512 a, const uint16_t* p) {
                                return _mm512_fmadd_ps(Halves16(p), q16, a);
                              }),
      ConvertRate<8, __m256>(h, n * d, reps, [&](__m256 a, const uint16_t* p) {
        return _mm256_fmadd_ps(Load8(p), q8, a);
      }));
  std::free(h);
  return 0;
}
