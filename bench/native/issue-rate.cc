// Issue rate of the three multiply-accumulate instructions the exact index's batch tiles
// are built on, zmm and ymm: 12 independent accumulators per loop (enough to cover each
// instruction's latency), so the rate is the throughput. Prints instructions per second
// on one core; on a Zen 4 every zmm form ran at one per cycle and every ymm form at two
// (bench/README.md), which is why more products per instruction, not wider vectors, made
// the batch kernels faster there.
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
  for (const V& a : acc) asm volatile("" : : "v"(a));
  std::printf("%-16s %.2f G/s (%d products each)\n", name, r / 1e9, products);
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
  return 0;
}
