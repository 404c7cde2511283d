// What both indexes promise of one query's k results, whatever races with the search:
// ids best first, padding (kNoId with -Infinity) only after the last result, no id twice,
// no excluded id, only allowed ids, every id one the test could have stored. The sanitizer
// harnesses (exact-concurrency.cc, hnsw-concurrency.cc) check this first and then the
// scores their own way.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace recserve_test {

constexpr uint32_t kNoId = 0xFFFFFFFFu;

// Counts problems and keeps the first one's description.
struct Problems {
  std::string* why;
  size_t count = 0;
  void operator()(const std::string& s) {
    if (why->empty()) *why = s;
    count++;
  }
};

// How far a float32 dot product summed in another order may stray from the exact one:
// d 2^-23 sum |q_j x_j|, with |x_j| at most max_abs (generously: 1e-5 per unit).
inline double ScoreTolerance(const float* q, size_t d, double max_abs) {
  double l1 = 0;
  for (size_t j = 0; j < d; j++) l1 += q[j] < 0 ? -q[j] : q[j];
  return 1e-5 * l1 * max_abs + 1e-6;
}

// Calls fail(description) for each problem; returns how many results precede the padding
// and puts their ids, sorted, in *seen (ids at or past id_limit are reported, not kept).
template <typename Fail>
size_t CheckWellFormed(const uint32_t* ids, const float* scores, size_t k, size_t id_limit,
                       const std::vector<uint32_t>* exclude,
                       const std::vector<uint32_t>* allow, std::vector<uint32_t>* seen,
                       Fail&& fail) {
  seen->clear();
  size_t filled = 0;
  for (size_t i = 0; i < k; i++) {
    if (ids[i] == kNoId) {
      if (scores[i] != -std::numeric_limits<float>::infinity()) fail("padding with a score");
      continue;
    }
    if (filled != i) fail("a result after padding");
    filled++;
    const uint32_t id = ids[i];
    if (id >= id_limit) {
      fail("unknown id " + std::to_string(id));
      continue;
    }
    seen->push_back(id);
    if (i > 0 && scores[i] > scores[i - 1]) fail("not best first");
    if (exclude && std::binary_search(exclude->begin(), exclude->end(), id))
      fail("excluded id " + std::to_string(id));
    if (allow && !std::binary_search(allow->begin(), allow->end(), id))
      fail("id " + std::to_string(id) + " outside the allowed subset");
  }
  std::sort(seen->begin(), seen->end());
  if (std::adjacent_find(seen->begin(), seen->end()) != seen->end()) fail("an id twice");
  return filled;
}

}  // namespace recserve_test
