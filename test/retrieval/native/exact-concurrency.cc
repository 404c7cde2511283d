// Searches racing writes, on the exact index itself, for the sanitizers:
// test/retrieval/concurrency.test.ts builds this with the index's sources, once with
// -fsanitize=thread and once with -fsanitize=address,undefined, runs each, and fails on any
// report. The index promises that searches are safe while upserts, removes, rebuilds and
// tuning changes happen, and that a search sees each row whole (exact_index.h); the JS
// tests can race calls only as fast as the event loop queues them, and no sanitizer
// watches them there.
//
// Every id has two vectors, A and B, and a writer flips ids between them (upsert), removes
// some for a while and puts them back, now and then rebuilds the whole index (every other
// time from a part of the ids, the rest coming back by upserts until the buffers must
// grow), and switches its tuning between two settings (guessed floors on and off, screen
// and block sizes); ids below kCold are never written. Searchers on other threads run batches of every size the
// index treats differently (B = 1, 2, 5, 16, 32: direct scans, the two-query scan, the int8
// screen's narrow and full tiles), with exclusions and an allowed subset, on the shared
// pool, now and then with a query of zeros (every row ties: the screen's mid-scan pruning).
// Each result must be well formed (distinct ids, best first, excluded ids absent, only
// allowed ids), every score must be the query's dot product with that id's A or B (a row
// torn by a write would match neither), and no cold id may be missing that beats the k-th
// score returned (cold rows are always there with the same score).
//
// Prints one line per kernel set and storage: writes, the screen's mid-scan prunes,
// searches, results checked, problems, upserts that grew the buffers and of those how many
// moved the rows' pages (float32 rows here: buffers of 1 MiB and up) and how many copied
// the rows, and the upserts that fitted the int8 screen again ("-" for a kernel set without
// the screen) (then the first problem's description); exits 1 on any problem. Usage:
// exact-concurrency [seconds per case, default 2]: each case runs at least that long, and
// on (up to five times as long) until it has seen 11 writes, 11 searches, a growth and
// (with the screen) a refit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exact/exact_index.h"
#include "exact/kernels.h"
#include "result-checks.h"

namespace {

using recserve::ExactIndex;
using recserve::Kernels;
using recserve::SearchRequest;
using recserve::SearchResult;
using recserve::Storage;

constexpr size_t kN = 6000;     // ids 0 .. kN - 1
constexpr size_t kCold = 3000;  // ids below this are never written
constexpr size_t kDim = 64;
constexpr size_t kSearchers = 3;

// Float32 to float16 and back (round to nearest even), so that the checker knows the
// value a float16 index stores without depending on the kernels' own conversion.
float ThroughHalf(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = u & 0x80000000u;
  const int exp = static_cast<int>((u >> 23) & 0xff) - 127;
  if (exp < -24) return sign ? -0.f : 0.f;
  // Keep 10 mantissa bits below the leading one (fewer for subnormal halves).
  const int drop = exp < -14 ? 13 + (-14 - exp) : 13;
  const uint32_t mag = u & 0x7fffffffu;
  const uint32_t half = 1u << (drop - 1);
  const uint32_t rem = mag & ((1u << drop) - 1);
  uint32_t r = mag & ~((1u << drop) - 1);
  if (rem > half || (rem == half && (r >> drop) & 1)) r += 1u << drop;
  r |= sign;
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

struct Case {
  const char* kernel;
  const Kernels* kernels;
  Storage storage;
};

struct Counts {
  std::atomic<uint64_t> searches{0}, results{0}, problems{0}, writes{0}, grows{0};
  // The most rows the int8 screen left to exact scores at once (after a write).
  std::atomic<uint64_t> outliers{0};
};

class Checker {
 public:
  Checker(const std::vector<float>& a, const std::vector<float>& b, bool f16)
      : a_(a), b_(b), f16_(f16) {}

  // The query's score against id's vector v (A or B), as the index stores it.
  double Dot(const std::vector<float>& v, size_t id, const float* q) const {
    double s = 0;
    for (size_t j = 0; j < kDim; j++) {
      const float x = v[id * kDim + j];
      s += double(q[j]) * (f16_ ? ThroughHalf(x) : x);
    }
    return s;
  }

  // Problems with one query's k results.
  size_t Check(const float* q, const uint32_t* ids, const float* scores, size_t k,
               const std::vector<uint32_t>* exclude, const std::vector<uint32_t>* allow,
               bool cold_check, std::string* why) const {
    recserve_test::Problems fail{why};
    // |x_j| stays below ~5 for these normal draws; the float16 rows are compared as stored.
    const double tol = recserve_test::ScoreTolerance(q, kDim, 2.5);
    std::vector<uint32_t> seen;
    const size_t filled =
        recserve_test::CheckWellFormed(ids, scores, k, kN, exclude, allow, &seen, fail);
    for (size_t i = 0; i < filled; i++) {
      const uint32_t id = ids[i];
      if (id >= kN) continue;
      const double da = Dot(a_, id, q), db = Dot(b_, id, q);
      if (std::fabs(scores[i] - da) > tol && std::fabs(scores[i] - db) > tol)
        fail("id " + std::to_string(id) + " scored " + std::to_string(scores[i]) +
             ", neither A (" + std::to_string(da) + ") nor B (" + std::to_string(db) + ")");
    }
    // At most kN - kCold ids can be missing at a time, so a full index always has k.
    if (!allow && filled < std::min(k, kCold)) fail("only " + std::to_string(filled) + " results");
    if (cold_check && filled == k) {
      const double kth = scores[k - 1];
      for (size_t id = 0; id < kCold; id++) {
        if (exclude && std::binary_search(exclude->begin(), exclude->end(), id)) continue;
        if (allow && !std::binary_search(allow->begin(), allow->end(), id)) continue;
        if (Dot(a_, id, q) > kth + 1e-3 && !std::binary_search(seen.begin(), seen.end(), id))
          fail("cold id " + std::to_string(id) + " beats the k-th score and is missing");
      }
    }
    return fail.count;
  }

 private:
  const std::vector<float>& a_;
  const std::vector<float>& b_;
  const bool f16_;
};

bool RunCase(const Case& c, double seconds) {
  std::mt19937 rng(12345);
  std::normal_distribution<float> normal;
  std::vector<float> a(kN * kDim), b(kN * kDim);
  for (auto& x : a) x = normal(rng);
  for (auto& x : b) x = normal(rng);
  // Every eighth id's B spreads 2.5x as wide: flipped to B after a build of mostly A rows,
  // it brings elements past the int8 screen's range: the screen leaves those rows to exact
  // scores (the outlier list, which upserts, removes' swaps and builds change beside the
  // searchers), and past its cap fits itself again (codes every row again).
  for (size_t id = 0; id < kN; id += 8)
    for (size_t j = 0; j < kDim; j++) b[id * kDim + j] *= 2.5f;
  std::vector<uint32_t> all(kN);
  for (size_t i = 0; i < kN; i++) all[i] = static_cast<uint32_t>(i);

  ExactIndex index(kDim, c.storage, 2, *c.kernels, c.kernels->screen_i8 != nullptr);
  // Small enough that the guessed floors and the screen both run at this size; the writer
  // switches between this and the second setting.
  recserve::ExactTuning tuning = index.Tuning(), other;
  tuning.guess_min_rows = 1024;
  tuning.min_rows_per_task = 1024;
  other = tuning;
  other.guess_rank = 0;
  other.screen_min_batch = 1;
  other.pack_min_batch = 2;
  other.block_bytes = 8192;
  index.SetTuning(tuning);
  index.Build(all.data(), a.data(), kN);
  const Checker checker(a, b, c.storage == Storage::F16);

  Counts counts;
  std::atomic<bool> stop{false};
  std::mutex why_mu;
  std::string first_why;

  std::thread writer([&] {
    std::mt19937 r(777);
    std::vector<uint32_t> removed;
    std::vector<char> on_b(kN, 0);
    std::vector<float> rows;
    std::vector<uint32_t> ids;
    for (size_t step = 0; !stop.load(); step++) {
      ids.clear();
      rows.clear();
      // A few hot ids flip between their two vectors.
      for (int i = 0; i < 16; i++) {
        const uint32_t id = kCold + r() % (kN - kCold);
        if (std::find(removed.begin(), removed.end(), id) != removed.end()) continue;
        if (std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
        on_b[id] ^= 1;
        ids.push_back(id);
        const float* v = (on_b[id] ? b.data() : a.data()) + id * kDim;
        rows.insert(rows.end(), v, v + kDim);
      }
      if (!ids.empty()) index.Upsert(ids.data(), rows.data(), ids.size());
      counts.writes++;
      counts.outliers = std::max<uint64_t>(counts.outliers.load(), index.ScreenOutliers());
      if (step % 3 == 0 && removed.size() < 64) {
        const uint32_t id = kCold + r() % (kN - kCold);
        if (std::find(removed.begin(), removed.end(), id) == removed.end()) {
          index.Remove(&id, 1);
          removed.push_back(id);
        }
      } else if (step % 3 == 1 && !removed.empty()) {
        // One comes back, or 64 at once after a shrinking rebuild (below).
        const size_t take = removed.size() > 64 ? 64 : 1;
        std::vector<uint32_t> back(removed.begin(),
                                   removed.begin() + static_cast<std::ptrdiff_t>(take));
        removed.erase(removed.begin(), removed.begin() + static_cast<std::ptrdiff_t>(take));
        std::vector<float> vs;
        for (uint32_t id : back) {
          const float* v = (on_b[id] ? b.data() : a.data()) + id * kDim;
          vs.insert(vs.end(), v, v + kDim);
        }
        const size_t cap = index.Capacity();
        index.Upsert(back.data(), vs.data(), back.size());
        if (index.Capacity() > cap) counts.grows++;
      }
      if (step % 50 == 49) index.SetTuning(step % 100 == 49 ? other : tuning);
      if (step % 200 == 199) {
        // A rebuild from the current contents (the removed ids stay out). Every other one,
        // the first included, keeps only the ids below kCold + 500, and the others come
        // back by upserts: past the rebuilt buffers' headroom they must grow (Grow copies
        // the rows while searches read them, or Install moves their pages under the lock).
        const bool shrink = step % 400 == 199;
        std::vector<uint32_t> live;
        std::vector<float> vecs;
        for (uint32_t id = 0; id < kN; id++) {
          if (std::find(removed.begin(), removed.end(), id) != removed.end()) continue;
          if (shrink && id >= kCold + 500) {
            removed.push_back(id);
            continue;
          }
          live.push_back(id);
          const float* v = (on_b[id] ? b.data() : a.data()) + id * kDim;
          vecs.insert(vecs.end(), v, v + kDim);
        }
        index.Build(live.data(), vecs.data(), live.size());
      }
    }
  });

  std::vector<std::thread> searchers;
  for (size_t s = 0; s < kSearchers; s++) {
    searchers.emplace_back([&, s] {
      std::mt19937 r(1000 + s);
      std::normal_distribution<float> nd;
      const size_t batches[] = {1, 2, 5, 16, 32};
      const size_t ks[] = {1, 10, 100};
      for (size_t it = 0; !stop.load(); it++) {
        const size_t nq = batches[r() % 5], k = ks[r() % 3];
        std::vector<float> q(nq * kDim);
        for (auto& x : q) x = nd(r);
        // Now and then a query of zeros: every row ties, the int8 screen's bound cannot
        // narrow its candidates, and it prunes them in the middle of the scan.
        if (it % 8 == 5) std::fill(q.begin(), q.begin() + kDim, 0.f);
        std::vector<std::vector<uint32_t>> exclude;
        std::vector<uint32_t> allow;
        SearchRequest req;
        req.queries = q.data();
        req.nq = nq;
        req.k = k;
        if (it % 4 == 1) {
          exclude.resize(nq);
          for (auto& e : exclude) {
            for (int i = 0; i < 50; i++) e.push_back(r() % kN);
            std::sort(e.begin(), e.end());
            e.erase(std::unique(e.begin(), e.end()), e.end());
          }
          req.exclude = &exclude;
        }
        if (it % 4 == 2) {
          for (uint32_t id = r() % 3; id < kN; id += 3) allow.push_back(id);
          req.allow = &allow;
        }
        SearchResult out;
        index.Search(req, &out);
        counts.searches++;
        for (size_t i = 0; i < nq; i++) {
          std::string why;
          const size_t bad = checker.Check(
              q.data() + i * kDim, out.ids.data() + i * k, out.scores.data() + i * k, k,
              req.exclude ? &exclude[i] : nullptr, req.allow ? &allow : nullptr,
              /*cold_check=*/i == 0, &why);
          counts.results++;
          if (bad > 0) {
            counts.problems += bad;
            std::lock_guard<std::mutex> g(why_mu);
            if (first_why.empty())
              first_why = "B=" + std::to_string(nq) + " k=" + std::to_string(k) + ": " + why;
          }
        }
      }
    });
  }
  // At least `seconds`, then on (up to five times as long) until there have been 11 writes
  // and 11 searches, the counts concurrency.test.ts asks for, however busy the host.
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  while (std::chrono::steady_clock::now() - start < std::chrono::duration<double>(5 * seconds) &&
         (counts.writes < 11 || counts.searches < 11 || counts.grows < 1 ||
          (index.Int8Screen() && index.ScreenRefits() < 1)))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  writer.join();
  for (auto& t : searchers) t.join();
  std::printf(
      "%s %s writes %llu prunes %llu searches %llu results %llu problems %llu grows %llu moved "
      "%llu copied %llu refits %s outliers %s%s%s\n",
      c.kernel, c.storage == Storage::F16 ? "f16" : "f32",
      static_cast<unsigned long long>(counts.writes.load()),
      static_cast<unsigned long long>(index.ScreenPrunes()),
      static_cast<unsigned long long>(counts.searches.load()),
      static_cast<unsigned long long>(counts.results.load()),
      static_cast<unsigned long long>(counts.problems.load()),
      static_cast<unsigned long long>(counts.grows.load()),
      static_cast<unsigned long long>(index.GrowsMoved()),
      static_cast<unsigned long long>(index.GrowsCopied()),
      index.Int8Screen() ? std::to_string(index.ScreenRefits()).c_str() : "-",
      index.Int8Screen() ? std::to_string(counts.outliers.load()).c_str() : "-",
      first_why.empty() ? "" : " first: ",
      first_why.c_str());
  return counts.problems == 0 && counts.searches > 0 && counts.writes > 0;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  std::vector<Case> cases;
  const std::pair<const char*, const Kernels*> sets[] = {
      {"best", &recserve::BestKernels()},
      {"avx2", recserve::Avx2Kernels()},
      {"scalar", &recserve::ScalarKernels()},
  };
  for (const auto& [name, k] : sets) {
    if (k == nullptr) continue;
    for (Storage st : {Storage::F32, Storage::F16}) cases.push_back({name, k, st});
  }
  bool ok = true;
  for (const Case& c : cases) ok &= RunCase(c, seconds);
  return ok ? 0 : 1;
}
