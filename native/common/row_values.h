// The values every index accepts as rows or queries. Plain C++ (no N-API), so that the
// engines can check rows on the worker that writes them (HnswIndex::Add) as well as the
// bindings on the calling thread.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>

#include "common/errors.h"

namespace recserve {

// RangeError naming the first NaN or infinite element.
inline void CheckFinite(const float* p, size_t n, const char* name) {
  for (size_t i = 0; i < n; i++) {
    if (!std::isfinite(p[i]))
      ThrowRange(std::string(name) + "[" + std::to_string(i) + "] is " +
                 (std::isnan(p[i]) ? "NaN" : "infinite") + "; vectors must be finite");
  }
}

// CheckFinite, and a RangeError naming the first row whose inner product with itself is
// not below a quarter of float32's largest value. Within that bound no score can overflow:
// by Cauchy-Schwarz every score of a query and a row, and every partial sum on the way,
// is at most |q| |x|; beyond it a score may be infinite, or NaN (infinities of both signs
// added), which no top-k ranks. (The quarter leaves room for rounding and for the screens'
// scaled bounds.)
inline void CheckRowValues(const float* p, size_t rows, size_t dim, const char* name) {
  CheckFinite(p, rows * dim, name);
  constexpr double kMaxSquaredNorm = 0.25 * 3.4028234663852886e38;
  float max_abs = 0;
  for (size_t i = 0; i < rows * dim; i++) max_abs = std::max(max_abs, std::fabs(p[i]));
  if (static_cast<double>(max_abs) * max_abs * static_cast<double>(dim) < kMaxSquaredNorm)
    return;
  for (size_t r = 0; r < rows; r++) {
    double s = 0;
    for (size_t j = 0; j < dim; j++) s += static_cast<double>(p[r * dim + j]) * p[r * dim + j];
    if (s >= kMaxSquaredNorm) {
      char v[32];
      std::snprintf(v, sizeof v, "%.3g", s);
      ThrowRange(std::string(name) + " row " + std::to_string(r) + " (elements from " +
                 std::to_string(r * dim) + ") has a squared norm of " + v +
                 ", too large for float32 scores (at most 8.5e37)");
    }
  }
}

}  // namespace recserve
