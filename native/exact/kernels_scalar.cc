// The scalar reference kernels: plain loops the tests compare the SIMD kernels against,
// and the engine on CPUs without AVX2. Accumulation is in float, like the SIMD path.
#include <algorithm>
#include <cstring>
#include <functional>

#include "exact/kernels.h"

namespace recserve {
namespace {

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {  // Inf or NaN (inputs are validated finite; kept for safety)
    return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  }
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> Inf
  if (absx < 0x38800000u) {
    // Subnormal half (or zero): shift the mantissa with the implicit bit, round to even.
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    // value = m * 2^(e-150) and a half subnormal counts units of 2^-24, so h = m >> (126-e).
    const uint32_t shift = 126 - e;
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return static_cast<uint16_t>(sign | h);
  }
  // Normal: rebias exponent 127 -> 15, keep 10 mantissa bits, round to nearest even.
  uint32_t h = ((absx - 0x38000000u) >> 13);
  const uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {  // subnormal: normalise
      e = 113;
      while ((m & 0x400u) == 0) {
        m <<= 1;
        e--;
      }
      x = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void ScoreF32(RowSpan<float> rows, size_t nrows, const float* queries, size_t nq, size_t dpad,
              float* out, size_t ldo) {
  for (size_t q = 0; q < nq; q++) {
    const float* qv = queries + q * dpad;
    for (size_t r = 0; r < nrows; r++) {
      const float* row = rows[r];
      float s = 0.f;
      for (size_t j = 0; j < dpad; j++) s += row[j] * qv[j];
      out[q * ldo + r] = s;
    }
  }
}

void ScoreF16(RowSpan<uint16_t> rows, size_t nrows, const float* queries, size_t nq,
              size_t dpad, float* out, size_t ldo) {
  for (size_t q = 0; q < nq; q++) {
    const float* qv = queries + q * dpad;
    for (size_t r = 0; r < nrows; r++) {
      const uint16_t* row = rows[r];
      float s = 0.f;
      for (size_t j = 0; j < dpad; j++) s += HalfToFloat(row[j]) * qv[j];
      out[q * ldo + r] = s;
    }
  }
}

float DotF32(const float* a, const float* b, size_t d) {
  float s = 0.f;
  for (size_t j = 0; j < d; j++) s += a[j] * b[j];
  return s;
}

size_t SelectAtLeast(const float* s, size_t n, float thr, uint32_t* hits) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] >= thr) hits[m++] = static_cast<uint32_t>(i);
  return m;
}

size_t SelectEach(const float* s, const float* thr, size_t n, uint32_t* hits) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] >= thr[i]) hits[m++] = static_cast<uint32_t>(i);
  return m;
}

float SumF32(const float* p, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; i++) s += p[i];
  return s;
}

void ToF16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = FloatToHalf(in[i]);
}

void FromF16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = HalfToFloat(in[i]);
}

}  // namespace

const Kernels& ScalarKernels() {
  // No batch kernels (nor their packing): every batch is scored where the queries lie.
  static const Kernels k{"scalar", ScoreF32, ScoreF16, nullptr, nullptr, nullptr,
                        DotF32,   SelectAtLeast, SelectEach, SumF32, ToF16, FromF16,
                        // No int8 screen either (the AVX2 and AVX-512 sets have one).
                        nullptr,  nullptr,  nullptr, nullptr, nullptr, nullptr, nullptr,
                        SortDescending};
  return k;
}

void SortDescending(uint64_t* keys, size_t n) {
  std::sort(keys, keys + n, std::greater<uint64_t>());
}

bool SplitsWideFma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_is("amdfam19h");
#else
  return false;
#endif
}

const Kernels& BestKernels() {
  static const Kernels* best = [] {
    // The bfloat16 batch tiles win on Zen 4 as well (see Avx512Bf16Kernels): there the
    // split 512-bit FMA costs vdpbf16ps nothing extra, one instruction per cycle either way,
    // and each does twice the products.
    if (const Kernels* k = Avx512Bf16Kernels()) return k;
    if (SplitsWideFma()) {
      if (const Kernels* k = Avx512ScanKernels()) return k;
    }
    if (const Kernels* k = Avx512Kernels()) return k;
    if (const Kernels* k = Avx2Kernels()) return k;
    return &ScalarKernels();
  }();
  return *best;
}

}  // namespace recserve
