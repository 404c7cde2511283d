// Issue rate of the three multiply-accumulate instructions the exact index's batch tiles
// are built on, zmm and ymm: 12 independent accumulators per loop (enough to cover each
// instruction's latency), so the rate is the throughput. Prints instructions (or steps)
// per second on one core and the products per second; on a Zen 4 every zmm form ran at one
// per cycle and every ymm form at two (bench/README.md), which is why more products per
// instruction, not wider vectors, made the batch kernels faster there. Then the AVX2 int8
// step (vpmaddubsw, vpmaddwd, vpaddd: kernels_avx2.cc), that step interleaved with a zmm
// vpdpbusd (whether the two forms share pipes), and the zmm vpmulld and vpdpwssd a screen
// tile could start its accumulators with.
//
//   g++ -O2 -mfma -mavx512f -mavx512vl -mavx512bf16 -mavx512vnni
//       bench/native/issue-rate.cc -o /tmp/issue-rate && /tmp/issue-rate
//
// Needs a CPU with AVX512_BF16 and AVX512_VNNI (it traps with SIGILL otherwise).
#include <immintrin.h>

#include <chrono>
#include <cstdio>

namespace {

constexpr long kIters = 50'000'000;

template <class V>
void Keep(const V& a) {
  asm volatile("" : : "v"(a));
}
// A zmm chain and a ymm chain advanced in one step.
struct Pair {
  __m512i z;
  __m256i y;
};
void Keep(const Pair& p) {
  Keep(p.z);
  Keep(p.y);
}

template <class F>
double PerSecond(F body) {
  const auto t0 = std::chrono::steady_clock::now();
  body();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 12.0 * kIters / s;
}

// Times 12 independent chains acc[k] = step(acc[k]) from init, kIters rounds, and prints
// the rate.
template <class V, class Step>
void Report(const char* name, int products, V init, Step step) {
  V acc[12];
  for (auto& a : acc) a = init;
  const double r = PerSecond([&] {
    for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
      for (int k = 0; k < 12; k++) acc[k] = step(acc[k]);
    }
  });
  // Keeps every accumulator live, so the compiler drops none of the chains.
  for (const V& a : acc) Keep(a);
  std::printf("%-24s %.2f G/s (%d products each, %.0f G products/s)\n", name, r / 1e9,
              products, r * products / 1e9);
}

}  // namespace

int main() {
  const __m512 x16 = _mm512_set1_ps(1.0001f);
  Report("vfmadd231ps zmm", 16, _mm512_set1_ps(1e-9f),
         [&](__m512 a) { return _mm512_fmadd_ps(a, x16, x16); });
  const __m256 x8 = _mm256_set1_ps(1.0001f);
  Report("vfmadd231ps ymm", 8, _mm256_set1_ps(1e-9f),
         [&](__m256 a) { return _mm256_fmadd_ps(a, x8, x8); });
  const __m512bh bf = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  Report("vdpbf16ps zmm", 32, _mm512_setzero_ps(),
         [&](__m512 a) { return _mm512_dpbf16_ps(a, bf, bf); });
  const __m512i b64 = _mm512_set1_epi32(0x01010101);
  Report("vpdpbusd zmm", 64, _mm512_setzero_si512(),
         [&](__m512i a) { return _mm512_dpbusd_epi32(a, b64, b64); });
  const __m256i b32 = _mm256_set1_epi32(0x01010101);
  Report("vpdpbusd ymm", 32, _mm256_setzero_si256(),
         [&](__m256i a) { return _mm256_dpbusd_epi32(a, b32, b32); });
  const __m256i ones = _mm256_set1_epi16(1);
  auto avx2_int8 = [&](__m256i a) {
    return _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(b32, a), ones));
  };
  Report("vpmaddubsw+vpmaddwd ymm", 32, _mm256_setzero_si256(), avx2_int8);
  Report("both, interleaved", 96, Pair{_mm512_setzero_si512(), _mm256_setzero_si256()},
         [&](Pair p) { return Pair{_mm512_dpbusd_epi32(p.z, b64, b64), avx2_int8(p.y)}; });
  const __m512i three = _mm512_set1_epi32(3);
  Report("vpmulld zmm", 16, _mm512_set1_epi32(1),
         [&](__m512i a) { return _mm512_mullo_epi32(a, three); });
  Report("vpdpwssd zmm", 32, _mm512_set1_epi32(1),
         [&](__m512i a) { return _mm512_dpwssd_epi32(a, three, three); });
  return 0;
}
