// Issue rate of the three multiply-accumulate instructions the exact index's batch tiles
// are built on, zmm and ymm: 12 independent accumulators per loop (enough to cover each
// instruction's latency), so the rate is the throughput. Prints instructions per second
// on one core; on a Zen 4 every zmm form ran at one per cycle and every ymm form at two
// (bench/README.md), which is why more products per instruction, not wider vectors, made
// the batch kernels faster there.
//
//   g++ -O2 -mfma -mavx512f -mavx512vl -mavx512bf16 -mavx512vnni bench/native/issue-rate.cc \
//       -o /tmp/issue-rate && /tmp/issue-rate
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

// Keeps every accumulator live, so the compiler drops none of the chains.
template <class V>
void Use(const V (&acc)[12]) {
  for (const V& a : acc) asm volatile("" : : "v"(a));
}

}  // namespace

int main() {
  {
    __m512 acc[12];
    for (auto& a : acc) a = _mm512_set1_ps(1e-9f);
    const __m512 x = _mm512_set1_ps(1.0001f);
    const double r = PerSecond([&] {
      for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm512_fmadd_ps(acc[k], x, x);
      }
    });
    Use(acc);
    std::printf("vfmadd231ps zmm  %.2f G/s (16 products each)\n", r / 1e9);
  }
  {
    __m256 acc[12];
    for (auto& a : acc) a = _mm256_set1_ps(1e-9f);
    const __m256 x = _mm256_set1_ps(1.0001f);
    const double r = PerSecond([&] {
      for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm256_fmadd_ps(acc[k], x, x);
      }
    });
    Use(acc);
    std::printf("vfmadd231ps ymm  %.2f G/s (8 products each)\n", r / 1e9);
  }
  {
    __m512 acc[12];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);
    const double r = PerSecond([&] {
      for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm512_dpbf16_ps(acc[k], x, x);
      }
    });
    Use(acc);
    std::printf("vdpbf16ps zmm    %.2f G/s (32 products each)\n", r / 1e9);
  }
  {
    __m512i acc[12];
    for (auto& a : acc) a = _mm512_setzero_si512();
    const __m512i x = _mm512_set1_epi32(0x01010101);
    const double r = PerSecond([&] {
      for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm512_dpbusd_epi32(acc[k], x, x);
      }
    });
    Use(acc);
    std::printf("vpdpbusd zmm     %.2f G/s (64 products each)\n", r / 1e9);
  }
  {
    __m256i acc[12];
    for (auto& a : acc) a = _mm256_setzero_si256();
    const __m256i x = _mm256_set1_epi32(0x01010101);
    const double r = PerSecond([&] {
      for (long i = 0; i < kIters; i++) {
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm256_dpbusd_epi32(acc[k], x, x);
      }
    });
    Use(acc);
    std::printf("vpdpbusd ymm     %.2f G/s (32 products each)\n", r / 1e9);
  }
  return 0;
}
