// Searches racing adds, removes, compactions, saves and loads, on the HNSW index itself,
// for the sanitizers:
// test/retrieval/concurrency.test.ts builds this with the index's sources and FAISS, once
// with -fsanitize=thread and once with -fsanitize=address,undefined, runs each, and fails
// on any report. The index promises that every call is safe from any thread at any time
// (hnsw_index.h); our own code reads and writes FAISS's graph (the walk, the scan,
// Reconnect), and the JS tests can race calls only as fast as the event loop queues them.
// FAISS itself is not instrumented: what is checked is our code and our locks.
//
// Every id has one vector, drawn from its id, so any thread can recompute what an id
// scores. The index always holds ids 0 .. c-1 for some c >= kCold, less a few removed: a
// writer adds the next ids in batches, removes up to 20 ids past kCold and adds them back
// a step later, a few at a time (so that both ways of reconnecting the graph run), saves the index now and then, and loads either the file it just saved or
// an older one (which takes c and the removals back; the next adds bring the same ids
// again). A compactor thread rebuilds the graph without the removed rows again and again,
// so that its copy, its build and its carrying over of the writes made meanwhile overlap
// every write; every other time the writer holds its loads until it is done (and the
// compactor waits for a removed row first, so that Compact must drop some), and the
// other times a load can overtake it (it must give up). Searchers on other threads run
// single queries and batches (split over the pool), unfiltered and filtered (walk, scan
// and auto, with exclusions and allow lists), and one of them saves the index to its own
// file now and then. Each result must be well formed (distinct ids, best first, padding
// only at the end, excluded ids absent, only allowed ids) and every score must be the
// query's dot product with that id's vector. A scan whose allow list holds only ids below
// kCold (always present) must be exact: it is compared with brute force.
//
// After the race, on one thread: the searcher's last file loads; every node is reachable
// from the entry and can get back to it, along the paths kept for small adds too
// (CheckGraph); a walk as wide as the
// index returns every id held and no other, before and after a last Compact (which must
// leave no removed row); and a search sized for the old dimension, issued after a load of
// a file with another one, is refused (ArgumentError) rather than read past its queries.
//
// Prints "hnsw writes W removes X compacts C/A saves S loads L searches Q results R
// problems P" on one line (C of the A calls to Compact dropped rows) and the first
// problem's description, then "after: ..." for the checks that follow; exits 1 on any
// problem. Usage: hnsw-concurrency DIR [seconds, default 2] [ip|cosine, default ip]: it
// runs at least that long, and on (up to five times as long) until it has seen 6 writes, 3
// removes, 3 loads, a compaction that dropped rows and 51 searches. With `cosine` the
// index is a cosine one: every add scales its rows, every search its queries, every save
// writes and every load reads the normalisation transform, and a score must be the cosine
// of the query and the id's vector.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "hnsw/hnsw_index.h"
#include "result-checks.h"

namespace {

using recserve::HnswIndex;
using recserve::IdFilters;

constexpr size_t kDim = 16;
constexpr size_t kCold = 1500;  // ids below this are always in the index
constexpr size_t kBatch = 150;  // ids a write adds
constexpr size_t kMaxIds = 6000;
constexpr size_t kSearchers = 3;

// The vector of `id`, the same on every thread: a few clusters, so that walks have work.
std::vector<float> VectorOf(uint32_t id) {
  std::mt19937 r(id * 2654435761u + 17);
  std::normal_distribution<float> normal;
  std::vector<float> v(kDim);
  const uint32_t cluster = id % 7;
  for (size_t j = 0; j < kDim; j++)
    v[j] = normal(r) * 0.3f + ((j % 7) == cluster ? 1.5f : 0.f);
  return v;
}

struct Vectors {
  std::vector<float> all;  // kMaxIds x kDim
  Vectors() : all(kMaxIds * kDim) {
    for (uint32_t id = 0; id < kMaxIds; id++) {
      const auto v = VectorOf(id);
      std::copy(v.begin(), v.end(), all.begin() + id * kDim);
    }
  }
  const float* Of(uint32_t id) const { return all.data() + size_t(id) * kDim; }
  // What the index scores `id` against q: the dot product, or for a cosine index the cosine.
  double Dot(uint32_t id, const float* q) const {
    double s = 0, qq = 0, rr = 0;
    for (size_t j = 0; j < kDim; j++) {
      s += double(q[j]) * Of(id)[j];
      qq += double(q[j]) * q[j];
      rr += double(Of(id)[j]) * Of(id)[j];
    }
    return cosine && qq > 0 && rr > 0 ? s / std::sqrt(qq * rr) : s;
  }
  bool cosine = false;  // set before any thread starts
};

struct Counts {
  std::atomic<uint64_t> writes{0}, removes{0}, compacts{0}, compact_calls{0}, saves{0}, loads{0},
      searches{0}, results{0}, problems{0};
};

// Problems with one query's k results; `exact` compares them with brute force over the
// allowed ids less the excluded ones (allow must hold only ids that are always present).
size_t Check(const Vectors& vs, const float* q, const uint32_t* ids, const float* scores,
             size_t k, const std::vector<uint32_t>* exclude, const std::vector<uint32_t>* allow,
             bool exact, std::string* why) {
  recserve_test::Problems fail{why};
  const double tol = recserve_test::ScoreTolerance(q, kDim, 5);  // |x| < ~5 for these draws
  std::vector<uint32_t> seen;
  const size_t filled =
      recserve_test::CheckWellFormed(ids, scores, k, kMaxIds, exclude, allow, &seen, fail);
  for (size_t i = 0; i < filled; i++) {
    if (ids[i] >= kMaxIds) continue;
    const double s = vs.Dot(ids[i], q);
    if (std::fabs(scores[i] - s) > tol)
      fail("id " + std::to_string(ids[i]) + " scored " + std::to_string(scores[i]) + ", not " +
           std::to_string(s) + " (a torn or misplaced row)");
  }
  if (exact && allow) {
    std::vector<std::pair<double, uint32_t>> truth;
    for (uint32_t id : *allow)
      if (!(exclude && std::binary_search(exclude->begin(), exclude->end(), id)))
        truth.emplace_back(vs.Dot(id, q), id);
    std::sort(truth.begin(), truth.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const size_t want = std::min(k, truth.size());
    if (filled != want) fail("scan returned " + std::to_string(filled) + " of " +
                             std::to_string(want) + " admissible items");
    // Ties within the tolerance may swap; compare scores rank by rank.
    for (size_t i = 0; i < std::min(filled, want); i++)
      if (std::fabs(scores[i] - truth[i].first) > tol)
        fail("scan rank " + std::to_string(i) + " scored " + std::to_string(scores[i]) +
             ", brute force " + std::to_string(truth[i].first));
  }
  return fail.count;
}

std::vector<uint32_t> Range(uint32_t lo, uint32_t hi) {
  std::vector<uint32_t> v;
  for (uint32_t i = lo; i < hi; i++) v.push_back(i);
  return v;
}

void AddRange(HnswIndex& index, const Vectors& vs, uint32_t lo, uint32_t hi) {
  const std::vector<uint32_t> ids = Range(lo, hi);
  const std::vector<float> rows(vs.all.begin() + lo * kDim, vs.all.begin() + hi * kDim);
  index.Add(ids, rows);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: hnsw-concurrency DIR [seconds]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  const bool cosine = argc > 3 && std::string(argv[3]) == "cosine";
  if (argc > 3 && !cosine && std::string(argv[3]) != "ip") {
    std::fprintf(stderr, "metric must be ip or cosine\n");
    return 2;
  }
  const auto metric = cosine ? HnswIndex::Metric::kCosine : HnswIndex::Metric::kInnerProduct;
  Vectors vs_rows;
  vs_rows.cosine = cosine;
  const Vectors& vs = vs_rows;
  HnswIndex index(kDim, 16, 40, metric);
  AddRange(index, vs, 0, kCold);

  Counts counts;
  std::atomic<bool> stop{false};
  std::mutex why_mu;
  std::string first_why;
  const auto note = [&](size_t bad, const std::string& why) {
    if (!bad) return;
    counts.problems += bad;
    std::lock_guard<std::mutex> lk(why_mu);
    if (first_why.empty()) first_why = why;
  };

  // What the writer left: ids [0, held_to) less `removed`.
  uint32_t held_to = kCold;
  std::vector<uint32_t> removed;
  // The compactor asks the writer not to load. The writer checks and loads under load_mu,
  // so once the compactor has set quiet under it, no Load is under way or to come.
  std::atomic<bool> quiet{false};
  std::mutex load_mu;
  std::thread writer([&] {
    std::mt19937 r(777);
    uint32_t next = kCold;
    std::vector<uint32_t> out;  // removed, to come back at the next step
    struct File {
      std::string path;
      uint32_t next;
      std::vector<uint32_t> out;
    };
    std::vector<File> files;
    try {
      for (size_t step = 0; !stop.load(); step++) {
        if (!out.empty()) {
          // Removed ids come back, with the same vectors (as new rows), up to 3 at a time:
          // small adds reconnect the graph from what they changed (PlanIncremental), the
          // batches below over the whole graph.
          for (size_t i = 0; i < out.size(); i += 3) {
            const std::vector<uint32_t> some(out.begin() + static_cast<std::ptrdiff_t>(i),
                                             out.begin() + static_cast<std::ptrdiff_t>(
                                                               std::min(i + 3, out.size())));
            std::vector<float> rows;
            for (uint32_t id : some) rows.insert(rows.end(), vs.Of(id), vs.Of(id) + kDim);
            index.Add(some, rows);
          }
          out.clear();
          counts.writes++;
        } else if (step % 2 == 1 && next > kCold + 100) {
          for (int i = 0; i < 20; i++) out.push_back(kCold + r() % (next - kCold));
          std::sort(out.begin(), out.end());
          out.erase(std::unique(out.begin(), out.end()), out.end());
          index.Remove(out);
          counts.removes++;
        }
        if (next + kBatch <= kMaxIds) {
          AddRange(index, vs, next, next + kBatch);
          next += kBatch;
          counts.writes++;
        }
        if (step % 3 == 2) {
          const std::string path = dir + "/w" + std::to_string(step % 4) + ".index";
          index.Save(path);
          counts.saves++;
          files.erase(std::remove_if(files.begin(), files.end(),
                                     [&](const File& f) { return f.path == path; }),
                      files.end());
          files.push_back({path, next, out});
        }
        // A file saved, the last or an older one (the index goes back to its ids and
        // removals), at every step, unless the compactor asked for quiet: a Compact that a
        // Load overtakes gives up, and one may take a second under ThreadSanitizer.
        std::lock_guard<std::mutex> lk(load_mu);
        if (!files.empty() && !quiet.load()) {
          const File& f = files[r() % files.size()];
          index.Load(f.path);
          next = f.next;
          out = f.out;
          counts.loads++;
        }
      }
    } catch (const std::exception& e) {
      note(1, std::string("writer: ") + e.what());
    }
    held_to = next;
    removed = out;
  });

  std::thread compactor([&] {
    try {
      for (size_t i = 0; !stop.load(); i++) {
        // Every other Compact runs without loads beside it, and only once a row is removed,
        // so it must drop rows (a busy host once let a Load slip into every one of six).
        // The others race the loads. 0: nothing was removed, or a Load replaced the index
        // meanwhile.
        const bool calm = i % 2 == 0;
        if (calm) {
          {
            std::lock_guard<std::mutex> lk(load_mu);
            quiet = true;
          }
          while (!stop.load() && index.RemovedRows() == 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          if (stop.load()) {
            quiet = false;
            break;
          }
        }
        const size_t dropped = index.Compact();
        if (dropped > 0) counts.compacts++;
        if (calm && dropped == 0) note(1, "a compaction with no load beside it dropped nothing");
        quiet = false;
        counts.compact_calls++;
        // A pause, or its last phase (under the writer mutex) would leave the writer little
        // time under ThreadSanitizer.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    } catch (const std::exception& e) {
      note(1, std::string("compactor: ") + e.what());
    }
  });

  std::vector<std::thread> searchers;
  for (size_t t = 0; t < kSearchers; t++) {
    searchers.emplace_back([&, t] {
      std::mt19937 r(1000 + t);
      std::normal_distribution<float> normal;
      const std::string own = dir + "/s" + std::to_string(t) + ".index";
      try {
        for (size_t step = 0; !stop.load(); step++) {
          const size_t nq = step % 4 == 3 ? 4 : 1;
          std::vector<float> q(nq * kDim);
          for (auto& x : q) x = normal(r) + (step % 7 == 0 ? 0.f : 1.f);
          const size_t k = 1 + r() % 30;
          const int ef = 8 + static_cast<int>(r() % 64);
          IdFilters f;
          auto mode = HnswIndex::FilterMode::kAuto;
          bool exact = false;
          switch (step % 5) {
            case 0:  // unfiltered
              break;
            case 1:  // exclusions only, a walk
              mode = HnswIndex::FilterMode::kGraph;
              break;
            case 2:  // a random allow list over every id ever added (some absent now)
              f.has_allow = true;
              for (uint32_t id = 0; id < kMaxIds; id++)
                if (r() % 5 == 0) f.allow.push_back(id);
              mode = step % 2 ? HnswIndex::FilterMode::kGraph : HnswIndex::FilterMode::kAuto;
              break;
            default:  // a scan over cold ids only: exact
              f.has_allow = true;
              for (uint32_t id = 0; id < kCold; id++)
                if (r() % 9 == 0) f.allow.push_back(id);
              mode = HnswIndex::FilterMode::kScan;
              exact = true;
              break;
          }
          if (step % 5 != 0) {
            f.exclude.resize(nq);
            for (auto& ex : f.exclude) {
              for (int i = 0; i < 40; i++) ex.push_back(r() % kMaxIds);
              std::sort(ex.begin(), ex.end());
            }
          }
          std::vector<uint32_t> ids;
          std::vector<float> scores;
          index.Search(q, nq, k, ef, nq > 1 ? 2 : 1, false, f, mode, &ids, &scores);
          counts.searches++;
          for (size_t i = 0; i < nq; i++) {
            std::string why;
            const size_t bad =
                Check(vs, q.data() + i * kDim, ids.data() + i * k, scores.data() + i * k, k,
                      f.exclude.empty() ? nullptr : &f.exclude[i],
                      f.has_allow ? &f.allow : nullptr, exact, &why);
            note(bad, why);
            counts.results++;
          }
          if (t == 0 && step % 50 == 49) {
            index.Save(own);
            counts.saves++;
          }
          if (step % 11 == 10) {
            // Racing writes it cannot be checked against a list, but it is always a set of
            // ids ever added, ascending, each once.
            const std::vector<uint32_t> held_now = index.HeldIds();
            for (size_t i = 0; i < held_now.size(); i++)
              if (held_now[i] >= kMaxIds || (i > 0 && held_now[i] <= held_now[i - 1]))
                note(1, "HeldIds: id " + std::to_string(held_now[i]) + " at " +
                            std::to_string(i) + " is past the ids added or out of order");
          }
        }
      } catch (const std::exception& e) {
        note(1, std::string("searcher: ") + e.what());
      }
    });
  }

  // At least `seconds`, then on until the race has had enough of each event to mean
  // something (the counts concurrency.test.ts asks for): on a busy host under
  // ThreadSanitizer, 3 s once gave 8 writes and 2 loads. At most 5 x `seconds`.
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  while (std::chrono::steady_clock::now() - start < std::chrono::duration<double>(5 * seconds) &&
         (counts.writes < 6 || counts.removes < 3 || counts.loads < 3 || counts.compacts < 1 ||
          counts.searches < 51))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  writer.join();
  compactor.join();
  for (auto& s : searchers) s.join();

  std::printf("hnsw %s writes %llu removes %llu compacts %llu/%llu saves %llu loads %llu searches "
              "%llu results %llu problems %llu%s%s\n",
              cosine ? "cosine" : "ip", (unsigned long long)counts.writes, (unsigned long long)counts.removes,
              (unsigned long long)counts.compacts, (unsigned long long)counts.compact_calls,
              (unsigned long long)counts.saves,
              (unsigned long long)counts.loads, (unsigned long long)counts.searches,
              (unsigned long long)counts.results, (unsigned long long)counts.problems,
              first_why.empty() ? "" : ": ", first_why.c_str());

  // After the race.
  size_t after = 0;
  std::string after_why;
  const auto fail = [&](const std::string& s) {
    if (after_why.empty()) after_why = s;
    after++;
  };
  try {
    // The searcher's file loads, whole (its id map matches its vectors).
    if (std::FILE* probe = std::fopen((dir + "/s0.index").c_str(), "rb")) {
      std::fclose(probe);
      HnswIndex other(kDim, 16, 40);
      other.Load(dir + "/s0.index");
      if (other.Size() < kCold) fail("the searcher's file holds " + std::to_string(other.Size()));
      if (other.GetMetric() != metric) fail("the searcher's file loaded with another metric");
    }
    // A walk as wide as the index returns every id held (Reconnect after each add and
    // load; removed rows are waypoints), and no other.
    std::vector<uint32_t> held;
    for (uint32_t id = 0; id < held_to; id++)
      if (!std::binary_search(removed.begin(), removed.end(), id)) held.push_back(id);
    std::vector<float> q(vs.Of(3), vs.Of(3) + kDim);
    std::vector<uint32_t> ids;
    std::vector<float> scores;
    const auto walk_all = [&](const char* when) {
      const size_t n = index.Size();
      if (n != held.size())
        fail(std::string(when) + ": size " + std::to_string(n) + ", but " +
             std::to_string(held.size()) + " ids held");
      index.Search(q, 1, held.size(), static_cast<int>(kMaxIds), 1, false, IdFilters{},
                   HnswIndex::FilterMode::kGraph, &ids, &scores);
      std::vector<uint32_t> got(ids.begin(), ids.end());
      std::sort(got.begin(), got.end());
      if (index.HeldIds() != held)
        fail(std::string(when) + ": HeldIds does not list the ids held");
      if (got != held)
        fail(std::string(when) + ": a full-width walk returned " +
             std::to_string(std::count_if(ids.begin(), ids.end(),
                                          [](uint32_t id) { return id != HnswIndex::kNoId; })) +
             " ids of the " + std::to_string(held.size()) + " held");
    };
    walk_all("after the race");
    // Every node reachable from the entry and back, however each add reconnected it.
    const HnswIndex::GraphReport g = index.CheckGraph();
    std::printf("after: reconnects full %llu incremental %llu\n",
                (unsigned long long)g.reconnects_full,
                (unsigned long long)g.reconnects_incremental);
    if (g.from_entry_missing || g.to_entry_missing || g.tree_faults)
      fail("after the race, " + std::to_string(g.from_entry_missing) +
           " rows unreachable from the entry, " + std::to_string(g.to_entry_missing) +
           " with no path back, and " + std::to_string(g.tree_faults) +
           " where the kept paths do not follow the graph");
    const size_t removed_rows = index.RemovedRows();
    const size_t dropped = index.Compact();
    if (dropped != removed_rows || index.RemovedRows() != 0)
      fail("a last Compact dropped " + std::to_string(dropped) + " of " +
           std::to_string(removed_rows) + " removed rows, and left " +
           std::to_string(index.RemovedRows()));
    walk_all("after a last Compact");
    // A search sized for dim 16, after a load of a dim-8 file, is refused.
    HnswIndex narrow(8, 16, 40);
    narrow.Add(Range(0, 50), std::vector<float>(50 * 8, 0.5f));
    narrow.Save(dir + "/narrow.index");
    index.Load(dir + "/narrow.index");
    bool refused = false;
    try {
      index.Search(q, 1, 5, 16, 1, false, IdFilters{}, HnswIndex::FilterMode::kAuto, &ids,
                   &scores);
    } catch (const recserve::ArgumentError&) {
      refused = true;
    }
    if (!refused) fail("a search sized for the old dim ran after a load of another");
    if (index.Dim() != 8 || index.Size() != 50) fail("the dim-8 file did not load whole");
    // The file's metric (inner product) replaced the index's.
    if (index.GetMetric() != HnswIndex::Metric::kInnerProduct)
      fail("a load of an inner-product file left the index's metric as it was");
  } catch (const std::exception& e) {
    fail(std::string("after: ") + e.what());
  }
  std::printf("after: problems %zu%s%s\n", after, after_why.empty() ? "" : ": ",
              after_why.c_str());
  return counts.problems == 0 && after == 0 ? 0 : 1;
}
