// The HNSW index: FAISS builds the graph, we walk it (see hnsw_index.h).
#include "hnsw/hnsw_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/HNSW.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/errors.h"
#include "common/huge_alloc.h"
#include "common/row_values.h"
#include "common/thread_pool.h"
#include "hnsw/reconnect.h"

namespace recserve {
namespace {

using faiss_idx = faiss::Index::idx_t;
constexpr uint32_t kNoId = HnswIndex::kNoId;

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int SearchThreads(size_t nq, int requested) {
  if (requested > 0) return requested;
  const int max = omp_get_num_procs();
  return nq <= 1 ? 1 : static_cast<int>(std::min<size_t>(nq, static_cast<size_t>(max)));
}

// Per-thread visited marks for the layer-0 beam, cleared by bumping an epoch rather than
// by touching every entry.
struct Visited {
  std::vector<uint32_t> mark;
  uint32_t epoch = 0;
  void Reset(size_t n) {
    if (mark.size() < n) mark.resize(n, 0);
    if (++epoch == 0) {
      std::fill(mark.begin(), mark.end(), 0);
      epoch = 1;
    }
  }
  // True when i was already seen; marks it otherwise.
  bool Seen(int i) {
    uint32_t& m = mark[static_cast<size_t>(i)];
    if (m == epoch) return true;
    m = epoch;
    return false;
  }
};
thread_local Visited tl_visited;

// Scales each of n rows of d floats to unit length, in place; a zero row stays zero. In
// double: the rows are finite, but a row of tiny values would take its scale past float's
// range.
void ScaleToUnit(float* x, size_t n, size_t d) {
  for (size_t r = 0; r < n; r++) {
    float* row = x + r * d;
    double ss = 0;
    for (size_t j = 0; j < d; j++) ss += static_cast<double>(row[j]) * row[j];
    if (!(ss > 0)) continue;
    const double norm = std::sqrt(ss);
    for (size_t j = 0; j < d; j++) row[j] = static_cast<float>(row[j] / norm);
  }
}

const std::vector<uint32_t>* Excluded(const IdFilters& f, size_t q) {
  return f.exclude.empty() || f.exclude[q].empty() ? nullptr : &f.exclude[q];
}
using Node = std::pair<float, int>;  // (score, row)
// Result order: higher score first, then the smaller row.
bool Better(const Node& a, const Node& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// The longest layer-0 list a search expands: 2 M links, M at most 512 (the binding's
// bound; a loaded file's is checked against it).
constexpr size_t kMaxLayer0Links = 1024;

// A file's graph, checked before anything reads it. read_index takes the structure as it
// finds it, so a flipped byte in a neighbour id, a level, an offset or the entry point sent
// the reconnect pass or a search far outside the graph (a crash in ~40% of files with 1-4
// random bytes flipped). These are FAISS's own invariants (HNSW::add_links_starting_from,
// HNSW::prepare_level_tab): levels[i] - 1 is row i's top layer, its lists take
// cum_nneighbor_per_level[levels[i]] slots from offsets[i], each slot a row or -1, and the
// entry point is a row on the top layer. The rows are checked as Add checks them.
void CheckFileGraph(const faiss::IndexHNSWFlat& g, const std::string& source) {
  const auto bad = [&](const std::string& what) { ThrowRange(source + ": " + what); };
  if (g.d < 1 || g.d > 65536) bad("dimension " + std::to_string(g.d) + " outside [1, 65536]");
  if (g.ntotal < 0 || g.ntotal > 0xFFFFFFFEll) bad("row count out of range");
  const size_t n = static_cast<size_t>(g.ntotal), d = static_cast<size_t>(g.d);
  const auto* flat = dynamic_cast<const faiss::IndexFlat*>(g.storage);
  if (!flat || flat->d != g.d || flat->ntotal != g.ntotal ||
      flat->metric_type != faiss::METRIC_INNER_PRODUCT || flat->codes.size() != n * d * 4)
    bad("the graph's rows are not an inner-product IndexFlat of its size");
  CheckRowValues(flat->get_xb(), n, d, (source + ": rows").c_str());
  const faiss::HNSW& h = g.hnsw;
  const std::vector<int>& cum = h.cum_nneighbor_per_level;
  if (cum.size() < 3 || cum.size() > 64 || cum[0] != 0 || h.assign_probas.size() + 1 != cum.size())
    bad("malformed layer table");
  for (size_t l = 1; l < cum.size(); l++)
    if (cum[l] < cum[l - 1] || cum[l] - cum[l - 1] > static_cast<int>(kMaxLayer0Links))
      bad("malformed layer table");
  if (h.efConstruction < 1 || h.efConstruction > (1 << 16)) bad("efConstruction out of range");
  if (h.levels.size() != n || h.offsets.size() != n + 1 || h.offsets[0] != 0)
    bad("levels or offsets do not match the row count");
  for (size_t i = 0; i < n; i++) {
    const int lv = h.levels[i];
    if (lv < 1 || static_cast<size_t>(lv) >= cum.size())
      bad("row " + std::to_string(i) + " has level " + std::to_string(lv));
    if (h.offsets[i + 1] < h.offsets[i] ||
        h.offsets[i + 1] - h.offsets[i] != static_cast<size_t>(cum[lv]))
      bad("row " + std::to_string(i) + "'s neighbour lists have the wrong size");
  }
  if (h.offsets[n] != h.neighbors.size()) bad("neighbour lists do not match their offsets");
  for (size_t j = 0; j < h.neighbors.size(); j++) {
    const auto v = h.neighbors[j];
    if (v != -1 && (v < 0 || static_cast<size_t>(v) >= n))
      bad("a neighbour list holds row " + std::to_string(v) + " of " + std::to_string(n));
  }
  if (n == 0) {
    if (h.entry_point != -1) bad("an empty graph has an entry point");
    return;
  }
  if (h.entry_point < 0 || static_cast<size_t>(h.entry_point) >= n ||
      h.max_level != h.levels[h.entry_point] - 1)
    bad("the entry point is not a row on the top layer");
}

}  // namespace

// FAISS's graph construction (HNSW::add_with_locks, highest level first, rows of a level
// spread over the cores) without IndexHNSW::add's costs per call, which Add's small
// chunks would pay again and again:
// - it initialises and destroys one lock per row of the whole graph (here they persist);
// - it allocates a visited table the size of the graph per thread and level (here one per
//   thread persists);
// - it runs a level's rows on one thread below 100 of them (here on every core from 8).
// Measured on 1M x 64 (M 16), IndexHNSW::add of 1 row took 8.5 ms, of 64 rows 32 ms.
// Rows are scored with our dot product (FAISS's distance computer negated: its graph
// keeps the smallest "distances").
class HnswIndex::Inserter {
 public:
  explicit Inserter(const Kernels& kernels) : kernels_(kernels) {}
  ~Inserter() {
    for (omp_lock_t& l : locks_) omp_destroy_lock(&l);
  }
  Inserter(const Inserter&) = delete;
  Inserter& operator=(const Inserter&) = delete;

  // Appends n rows of index->d floats to the index and links them into its graph, with
  // omp_get_max_threads() threads. With `linked`, one row at a time instead, appending to
  // it each row's layer-0 list as FAISS left it: the nodes FAISS then linked back to the
  // row (PlanIncremental's `linked`; another thread could change the list in between).
  void Insert(faiss::IndexHNSWFlat* index, size_t n, const float* x,
              std::vector<int>* linked = nullptr) {
    if (n == 0) return;
    faiss::HNSW& g = index->hnsw;
    const size_t n0 = static_cast<size_t>(index->ntotal);
    index->storage->add(static_cast<faiss_idx>(n), x);
    index->ntotal = index->storage->ntotal;
    g.prepare_level_tab(n, false);
    const int threads = std::max(1, omp_get_max_threads());
    Fit(n0 + n);
    std::vector<std::vector<int>> by_level;
    for (size_t r = n0; r < n0 + n; r++) {
      const auto level = static_cast<size_t>(g.levels[r] - 1);
      if (by_level.size() <= level) by_level.resize(level + 1);
      by_level[level].push_back(static_cast<int>(r));
    }
    const float* xb = static_cast<const faiss::IndexFlat*>(index->storage)->get_xb();
    const size_t d = static_cast<size_t>(index->d);
    std::mt19937 rng(static_cast<uint32_t>(n0) * 2654435761u + 789);
    for (size_t level = by_level.size(); level-- > 0;) {
      std::vector<int>& rows = by_level[level];
      // In random order, as FAISS does: the order the rows arrive in would bias the graph.
      std::shuffle(rows.begin(), rows.end(), rng);
      const auto count = static_cast<int64_t>(rows.size());
#pragma omp parallel num_threads(count >= 8 && !linked ? threads : 1)
      {
        NegatedDot dis(xb, d, kernels_.dot_f32);
        faiss::VisitedTable& vt = *visited_[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 2)
        for (int64_t i = 0; i < count; i++) {
          const int row = rows[static_cast<size_t>(i)];
          dis.set_query(xb + static_cast<size_t>(row) * d);
          g.add_with_locks(dis, static_cast<int>(level), row, locks_, vt);
          if (linked) {
            const int* l = g.neighbors.data() + g.offsets[static_cast<size_t>(row)];
            for (int j = 0; j < g.nb_neighbors(0) && l[j] >= 0; j++) linked->push_back(l[j]);
          }
        }
      }
    }
  }

  // Locks and visited tables for `rows` rows and omp_get_max_threads() threads, with room
  // for a quarter more (WithHeadroom). Add calls it before it takes the lock, and Load
  // once the graph is in: the first add after a load had paid for them.
  void Fit(size_t rows) {
    const auto threads = static_cast<size_t>(std::max(1, omp_get_max_threads()));
    if (locks_.size() < rows) {
      for (omp_lock_t& l : locks_) omp_destroy_lock(&l);
      locks_ = std::vector<omp_lock_t>(std::max(WithHeadroom(rows), locks_.size() * 3 / 2));
      for (omp_lock_t& l : locks_) omp_init_lock(&l);
    }
    for (auto& v : visited_)
      if (v->visited.size() < locks_.size()) v->visited.resize(locks_.size(), 0);
    while (visited_.size() < threads)
      visited_.push_back(std::make_unique<faiss::VisitedTable>(static_cast<int>(locks_.size())));
  }

 private:
  class NegatedDot final : public faiss::DistanceComputer {
   public:
    NegatedDot(const float* xb, size_t d, float (*dot)(const float*, const float*, size_t))
        : xb_(xb), d_(d), dot_(dot) {}
    void set_query(const float* q) override { q_ = q; }
    float operator()(idx_t i) override { return -dot_(q_, Row(i), d_); }
    float symmetric_dis(idx_t i, idx_t j) override { return -dot_(Row(i), Row(j), d_); }

   private:
    const float* Row(idx_t i) const { return xb_ + static_cast<size_t>(i) * d_; }
    const float* xb_;
    size_t d_;
    float (*dot_)(const float*, const float*, size_t);
    const float* q_ = nullptr;
  };

  const Kernels& kernels_;
  std::vector<omp_lock_t> locks_;
  std::vector<std::unique_ptr<faiss::VisitedTable>> visited_;
};

void MapFaissLabels(const std::vector<int64_t>& labels, std::vector<float>* scores,
                    const std::vector<uint32_t>* ids, std::vector<uint32_t>* out_ids) {
  out_ids->resize(labels.size());
  for (size_t i = 0; i < labels.size(); i++) {
    const faiss_idx l = labels[i];
    if (l < 0) {
      (*out_ids)[i] = kNoId;
      (*scores)[i] = -std::numeric_limits<float>::infinity();
    } else {
      (*out_ids)[i] = ids ? (*ids)[static_cast<size_t>(l)] : static_cast<uint32_t>(l);
    }
  }
}

HnswIndex::HnswIndex(int dim, int m, int ef_construction, Metric metric)
    : dim_(dim),
      m_(m),
      efc_(ef_construction),
      cosine_(metric == Metric::kCosine),
      index_(std::make_unique<faiss::IndexHNSWFlat>(dim, m, faiss::METRIC_INNER_PRODUCT)),
      inserter_(std::make_unique<Inserter>(kernels_)) {
  index_->hnsw.efConstruction = efc_;
  Publish();
}
HnswIndex::~HnswIndex() = default;

void HnswIndex::Publish() {
  dim_seen_ = dim_;
  held_seen_ = ids_.size() - removed_.Count();
  removed_seen_ = removed_.Count();
}

void HnswIndex::Add(const std::vector<uint32_t>& ids, const std::vector<float>& vecs) {
  std::lock_guard<std::mutex> w(write_mu_);
  if (vecs.size() != ids.size() * static_cast<size_t>(dim_))
    ThrowRange("vectors.length (" + std::to_string(vecs.size()) +
               ") must equal ids.length x dim (" + std::to_string(ids.size()) + " x " +
               std::to_string(dim_) + ")");
  // Against the dimension this add writes with (a load may have changed it since the call),
  // before anything is written.
  CheckRowValues(vecs.data(), ids.size(), static_cast<size_t>(dim_), "vectors");
  std::unordered_set<uint32_t> batch;
  for (size_t i = 0; i < ids.size(); i++) {
    // kNoId pads short results, and Load rejects it (as every id past uint32).
    if (ids[i] == kNoId)
      ThrowRange("ids[" + std::to_string(i) + "]: id " + std::to_string(ids[i]) +
                 " is reserved (it pads results shorter than k)");
    if (row_of_.Contains(ids[i]) || !batch.insert(ids[i]).second)
      ThrowRange("ids[" + std::to_string(i) + "]: id " + std::to_string(ids[i]) +
                 " is already in the index (remove it first to replace its vector)");
  }
  if (ids_.size() + ids.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    ThrowRange("ids: the index would exceed 2^31-1 vectors");
  // Building uses every core: it runs on a libuv worker, off the event loop.
  omp_set_num_threads(omp_get_num_procs());
  size_t done = 0;
  // A small add goes in kStepRows rows at a time, each step reconnected from what it
  // changed (PlanIncremental, reconnect.h), where a reconnection over the whole graph
  // costs about as much as 1 row in 2,000 added this way (1M x 64, M 16: 0.5-0.6 s
  // against 0.8 ms a row; 100k x 64, M 32: 50-75 ms against 0.6 ms a row). A step that
  // cannot (too many lists at risk, or no path found within bounds) leaves the rest to
  // the path below.
  if (ids.size() <= std::clamp(ids_.size() / 2048, kStepRows, kIncrementalRows)) {
    while (done < ids.size() && trees_.ok) {
      const size_t n = std::min(kStepRows, ids.size() - done);
      ListSnapshot snap;
      if (!SnapshotLists(*index_, trees_, n,
                         std::max<size_t>(kIncrementalLists, ids_.size() / 64), &snap))
        break;
      // Not whole until the plan repairs them (an add that throws part way leaves the
      // next one to reconnect over the whole graph).
      trees_.ok = false;
      std::vector<int> linked;
      InsertRows(ids, vecs, done, n, &linked);
      done += n;
      trees_.ok = true;  // whole before this step, which the plan now follows
      std::vector<NewLink> links;
      if (!PlanIncremental(*index_, kernels_, snap, linked, &trees_, &links)) {
        trees_.ok = false;
        break;
      }
      reconnects_incremental_++;
      std::unique_lock<std::shared_mutex> lk(mu_);
      ApplyLinks(index_.get(), links);
    }
    if (done == ids.size() && trees_.ok) return;
  }
  trees_.ok = false;
  // A build from empty goes in chunks too: with the Inserter they cost no more (100k x 64
  // clustered: 5.8-5.9 s in ~10 ms chunks, 5.2-6.5 s in one call; through IndexHNSW::add
  // such chunks took 18 s against 9.8 s).
  while (done < ids.size()) {
    const size_t n = std::min(add_chunk_, ids.size() - done);
    const double t0 = NowMs();
    InsertRows(ids, vecs, done, n, nullptr);
    // The next chunk's size, from this one's time (a full chunk's: a short last one times
    // the fixed costs of a chunk more than its rows).
    const double ms = NowMs() - t0;
    if (n == add_chunk_ && ms > 0)
      add_chunk_ = std::clamp<size_t>(static_cast<size_t>(n * kAddChunkMs / ms), 16, 1 << 16);
    done += n;
  }
  const std::vector<NewLink> links = PlanReconnect(*index_, kernels_, &trees_);
  reconnects_full_++;
  std::unique_lock<std::shared_mutex> lk(mu_);
  ApplyLinks(index_.get(), links);
}

// Inserts ids[first, first + n) with their vectors, under the lock (the storage grows
// before it); `linked` as Inserter::Insert's.
void HnswIndex::InsertRows(const std::vector<uint32_t>& ids, const std::vector<float>& vecs,
                           size_t first, size_t n, std::vector<int>* linked) {
  Reserve(n);
  // An id map that would reallocate under the lock (a table that grows, a hash map that
  // rehashes, or ids far past the others that turn the table into a hash map) is copied
  // larger here, before it (IdRows::Reallocates).
  std::optional<IdRows> id_room;
  const uint32_t* add = ids.data() + first;
  const size_t d = static_cast<size_t>(dim_);
  const float* rows = vecs.data() + first * d;
  std::vector<float> unit;  // the rows scaled, for a cosine index (a chunk at a time)
  if (cosine_) {
    unit.assign(rows, rows + n * d);
    ScaleToUnit(unit.data(), n, d);
    rows = unit.data();
  }
  if (n > 0) {
    const uint32_t max_id = *std::max_element(add, add + n);
    if (row_of_.Reallocates(max_id, row_of_.Count() + n))
      id_room = row_of_.WithRoom(max_id, row_of_.Count() + n);
  }
  std::unique_lock<std::shared_mutex> lk(mu_);
  if (id_room) std::swap(row_of_, *id_room);  // the old map goes after the lock
  inserter_->Insert(index_.get(), n, rows, linked);
  row_of_.Append(add, n, ids_.size());
  ids_.insert(ids_.end(), ids.begin() + static_cast<std::ptrdiff_t>(first),
              ids.begin() + static_cast<std::ptrdiff_t>(first + n));
  removed_.Resize(ids_.size());
  Publish();
}

// Grows the graph's vectors (and `ids`) to room for at least `rows` rows: each one that
// must grow, to WithHeadroom(rows) or half as much again as it has. Each larger vector is a
// copy, handed to swap(old, larger) to put in place.
template <class Swap>
static void GrowStorage(faiss::IndexHNSWFlat* index, std::vector<uint32_t>* ids, size_t rows,
                        Swap swap) {
  auto* flat = static_cast<faiss::IndexFlat*>(index->storage);
  faiss::HNSW& g = index->hnsw;
  const size_t room = WithHeadroom(rows);
  const auto grow = [&](auto* v, size_t need, size_t want) {
    if (v->capacity() >= need) return;
    std::remove_reference_t<decltype(*v)> bigger;
    bigger.reserve(std::max({need, want, v->capacity() + v->capacity() / 2}));
    bigger.assign(v->begin(), v->end());
    swap(v, &bigger);
  };  // the old buffer is freed when `bigger` goes, after swap
  grow(&flat->codes, rows * flat->code_size, room * flat->code_size);
  grow(&g.levels, rows, room);
  grow(&g.offsets, rows + 1, room + 1);
  // A row's lists at its level; no level is above the last with a probability.
  const auto most_links = static_cast<size_t>(g.cum_nneighbor_per_level.back());
  const size_t held = static_cast<size_t>(index->ntotal);
  // Rows mostly sit at level 0 only: room for the rows to come at the lists' average size
  // (the new rows themselves at most_links each are checked by Reserve).
  const size_t avg = held > 0 ? g.neighbors.size() / held : most_links;
  grow(&g.neighbors, g.neighbors.size() + (rows - std::min(rows, held)) * most_links,
       g.neighbors.size() + (room - std::min(room, held)) * avg);
  grow(ids, rows, room);
}

// Gives the storage room for n more rows before Add takes the lock. A vector that grows
// inside the insert copies every row under the lock (IndexHNSW::add's first call on a
// loaded 1M x 64 graph took 273 ms, its next one 8.5 ms): here the copy is made while
// searches go on reading the old one (both only read it), and only the swap takes the
// lock. The inserter's locks and visited tables grow here too.
void HnswIndex::Reserve(size_t n) {
  GrowStorage(index_.get(), &ids_, ids_.size() + n, [&](auto* v, auto* bigger) {
    std::unique_lock<std::shared_mutex> lk(mu_);
    v->swap(*bigger);
  });
  inserter_->Fit(ids_.size() + n);
}

// Room for a quarter more rows in a graph that is not yet searched (loaded or compacted):
// FAISS sizes its vectors to the rows they hold, and the first add then copied them all
// (on a loaded 1M x 64 graph, 0.4 s before the item could be found).
static void GiveHeadroom(faiss::IndexHNSWFlat* index, std::vector<uint32_t>* ids) {
  // One row more than it holds: every vector, sized to what it holds, grows to
  // WithHeadroom of that.
  GrowStorage(index, ids, ids->size() + 1, [](auto* v, auto* bigger) { v->swap(*bigger); });
}

void HnswIndex::Remove(const std::vector<uint32_t>& ids) {
  std::lock_guard<std::mutex> w(write_mu_);
  for (size_t i = 0; i < ids.size(); i++)
    if (!row_of_.Contains(ids[i]))
      ThrowRange("ids[" + std::to_string(i) + "]: unknown id " + std::to_string(ids[i]));
  std::unique_lock<std::shared_mutex> lk(mu_);
  for (const uint32_t id : ids) {
    const uint32_t row = row_of_.Find(id);
    if (row == IdRows::kNone) continue;  // listed twice
    row_of_.Erase(id);
    removed_.Set(row);
  }
  Publish();
}

void HnswIndex::Search(const std::vector<float>& queries, size_t nq, size_t k, int ef,
                       int threads, bool use_faiss, const IdFilters& f, FilterMode mode,
                       std::vector<uint32_t>* out_ids, std::vector<float>* scores) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  // The caller sized the queries by Dim() before taking the lock; a Load of a file with
  // another dimension may have come between. Read with the new one, they would be read
  // past their end.
  if (queries.size() != nq * static_cast<size_t>(dim_))
    ThrowRange("queries: " + std::to_string(queries.size()) + " floats for " +
               std::to_string(nq) + " queries, but the index now has dim " +
               std::to_string(dim_) + " (it was loaded from a file meanwhile)");
  out_ids->assign(nq * k, kNoId);
  scores->assign(nq * k, -std::numeric_limits<float>::infinity());
  const bool removals = removed_.Count() > 0;
  if (nq == 0 || ids_.size() == removed_.Count()) return;
  const size_t d = static_cast<size_t>(dim_);
  // A cosine index's queries are scaled to unit length as its rows were (a copy).
  const float* qdata = queries.data();
  std::vector<float> unit;
  if (cosine_) {
    unit = queries;
    ScaleToUnit(unit.data(), nq, d);
    qdata = unit.data();
  }
  // Removed rows are filtered out like excluded ones.
  const bool filtered = f.has_allow || !f.exclude.empty() || removals;
  if (use_faiss) {
    if (removals)
      ThrowRange("impl 'faiss' cannot skip removed items (FAISS's own search has no filter here)");
    std::vector<faiss_idx> labels(nq * k, -1);
    faiss::SearchParametersHNSW params;
    params.efSearch = std::max<int>(ef, static_cast<int>(k));
    omp_set_num_threads(SearchThreads(nq, threads));
    index_->search(static_cast<faiss_idx>(nq), qdata, static_cast<faiss_idx>(k),
                   scores->data(), labels.data(), &params);
    MapFaissLabels(labels, scores, &ids_, out_ids);
    return;
  }
  Admissible adm;
  if (f.has_allow) adm.set.emplace(row_of_, f.allow.data(), f.allow.size(), ids_.size());
  if (removals) adm.removed = &removed_;
  // Which queries scan instead of walking; the allowed rows in storage order, for them.
  std::vector<char> scan(filtered ? nq : 0, mode == FilterMode::kScan);
  if (mode == FilterMode::kAuto) {
    const size_t beam = std::max<size_t>(static_cast<size_t>(ef), k);
    for (size_t q = 0; q < scan.size(); q++) scan[q] = UseScan(adm, Excluded(f, q), beam);
  }
  if (adm.set && std::find(scan.begin(), scan.end(), 1) != scan.end())
    adm.rows = adm.set->Rows();
  const size_t want = threads > 0 ? static_cast<size_t>(threads) : nq;
  const size_t tasks =
      std::max<size_t>(1, std::min({nq, want, ThreadPool::Shared().Workers() + 1}));
  auto run = [&](size_t t) {
    const size_t q0 = nq * t / tasks, q1 = nq * (t + 1) / tasks;
    for (size_t q = q0; q < q1; q++) {
      const float* qv = qdata + q * d;
      uint32_t* oi = out_ids->data() + q * k;
      float* os = scores->data() + q * k;
      if (!filtered) {
        SearchOne<false>(qv, k, ef, adm, nullptr, oi, os);
        continue;
      }
      const std::vector<uint32_t>* ex = Excluded(f, q);
      if (scan[q]) {
        ScanOne(qv, k, adm, ex, oi, os);
      } else {
        SearchOne<true>(qv, k, ef, adm, ex, oi, os);
      }
    }
  };
  if (tasks == 1) {
    run(0);
  } else {
    ThreadPool::Shared().ParallelFor(tasks, run);
  }
}

// Whether to score every admissible item (exact) rather than walk the graph for them.
// From bench:hnsw-filters (100k x 64 clustered, k 10, ef 64, one thread; bench/README.md,
// "filtered HNSW search"):
// - a scan costs ~15 ns per row it reads (the allowed rows, or all of them);
// - a walk that may return only admissible items costs about 0.5 / share times the
//   unfiltered walk (~0.8 us per unit of ef) once the admissible share is 0.2 or less,
//   since it must cross the others to fill its beam;
// - and its recall falls when the admitted items sit together away from the query
//   (0.91 at 20% of the items taken from one region, 0.76-0.84 at 1-10%), though not
//   for a random share (0.98 or more at every share; see PlanReconnect in reconnect.cc).
// With share = admissible / n, the two cost the same where scanned x admissible is about
// 25 x ef x n. This scans up to 100 x ef x n, trading up to ~2x the walk's time for exact
// results: below ~25% admissible at 100k items and ef 64, below ~8% at 1M.
constexpr double kScanPerWalk = 100;
bool HnswIndex::UseScan(const Admissible& adm, const std::vector<uint32_t>* ex,
                        size_t ef) const {
  const double n = static_cast<double>(ids_.size());
  const double scanned = adm.set ? static_cast<double>(adm.set->Count()) : n;
  const double held = adm.set ? scanned : n - static_cast<double>(removed_.Count());
  const double admissible = std::max(1.0, held - (ex ? static_cast<double>(ex->size()) : 0));
  return scanned * admissible <= kScanPerWalk * static_cast<double>(ef) * n;
}

// Exact top-k over the admissible items (every allowed row, or every row, less `ex`).
// Caller holds the shared lock.
void HnswIndex::ScanOne(const float* q, size_t k, const Admissible& adm,
                        const std::vector<uint32_t>* ex, uint32_t* out_ids,
                        float* out_scores) const {
  const float* xb = static_cast<const faiss::IndexFlat*>(index_->storage)->get_xb();
  const size_t d = static_cast<size_t>(dim_);
  const auto dot = kernels_.dot_f32;
  std::vector<Node> top;  // heap with the worst kept result on top
  top.reserve(k + 1);
  const size_t count = adm.set ? adm.rows.size() : ids_.size();
  for (size_t i = 0; i < count; i++) {
    const int v = static_cast<int>(adm.set ? adm.rows[i] : i);
    if (i + 8 < count) __builtin_prefetch(xb + (adm.set ? adm.rows[i + 8] : i + 8) * d);
    if (!adm.set && !adm.Allowed(v)) continue;  // removed (a set holds only held rows)
    const Node c{dot(q, xb + static_cast<size_t>(v) * d, d), v};
    if (top.size() == k && !Better(c, top.front())) continue;
    if (ex && std::binary_search(ex->begin(), ex->end(), ids_[static_cast<size_t>(v)]))
      continue;
    top.push_back(c);
    std::push_heap(top.begin(), top.end(), Better);
    if (top.size() > k) {
      std::pop_heap(top.begin(), top.end(), Better);
      top.pop_back();
    }
  }
  std::sort(top.begin(), top.end(), Better);
  for (size_t i = 0; i < top.size(); i++) {
    out_ids[i] = ids_[static_cast<size_t>(top[i].second)];
    out_scores[i] = top[i].first;
  }
}

// One query over the graph FAISS built: greedy descent through the upper layers, then a
// beam of width ef on layer 0 (the HNSW search of Malkov & Yashunin). Written here rather
// than calling IndexHNSW::search because FAISS 1.7.3 sizes its layer-0 queue from the
// shared hnsw.efSearch and ignores SearchParametersHNSW::efSearch there (measured:
// recall did not move with the per-call value), and a shared setting cannot serve
// concurrent calls with different ef. It also keeps OpenMP off the single-query path.
// kFiltered: only items admitted by `adm` and not in `ex` enter the results; the others
// still enter the candidate queue, so the walk goes through them.
// Caller holds the shared lock.
template <bool kFiltered>
void HnswIndex::SearchOne(const float* q, size_t k, int ef_in, const Admissible& adm,
                          const std::vector<uint32_t>* ex, uint32_t* out_ids,
                          float* out_scores) const {
  const faiss::HNSW& g = index_->hnsw;
  const float* xb = static_cast<const faiss::IndexFlat*>(index_->storage)->get_xb();
  const size_t d = static_cast<size_t>(dim_);
  const auto dot = kernels_.dot_f32;
  const size_t ef = std::max<size_t>(static_cast<size_t>(ef_in), k);
  const auto admit = [&](int v) {
    return !kFiltered || (adm.Allowed(v) && !(ex && std::binary_search(
                                                        ex->begin(), ex->end(),
                                                        ids_[static_cast<size_t>(v)])));
  };

  int cur = g.entry_point;
  float cur_s = dot(q, xb + static_cast<size_t>(cur) * d, d);
  for (int level = g.max_level; level >= 1; level--) {
    for (bool moved = true; moved;) {
      moved = false;
      const size_t b = g.offsets[cur] + g.cum_nneighbor_per_level[level];
      const size_t e = g.offsets[cur] + g.cum_nneighbor_per_level[level + 1];
      for (size_t i = b; i < e; i++) {
        const int v = g.neighbors[i];
        if (v < 0) break;
        const float sv = dot(q, xb + static_cast<size_t>(v) * d, d);
        if (sv > cur_s) {
          cur_s = sv;
          cur = v;
          moved = true;
        }
      }
    }
  }

  Visited& vt = tl_visited;
  vt.Reset(ids_.size());
  vt.Seen(cur);
  std::vector<Node> cand{{cur_s, cur}};  // max-heap: best candidate on top
  std::vector<Node> res;                 // min-heap (by greater): worst kept on top
  if (admit(cur)) res.emplace_back(cur_s, cur);
  const auto greater = std::greater<Node>();
  // A whole layer-0 list: 2 M slots, M at most 512 (the binding's bound, and the load's).
  int batch[kMaxLayer0Links];
  const size_t l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
  while (!cand.empty()) {
    std::pop_heap(cand.begin(), cand.end());
    const Node c = cand.back();
    cand.pop_back();
    if (res.size() >= ef && c.first < res.front().first) break;
    // Gather the unvisited neighbours and prefetch their rows before scoring them: the
    // row reads are random, and overlapping them is most of the speed.
    const size_t b = g.offsets[c.second];
    size_t nb = 0;
    for (size_t i = 0; i < l0; i++) {
      const int v = g.neighbors[b + i];
      if (v < 0) break;
      if (vt.Seen(v)) continue;
      __builtin_prefetch(xb + static_cast<size_t>(v) * d);
      batch[nb++] = v;
    }
    for (size_t i = 0; i < nb; i++) {
      const int v = batch[i];
      const float sv = dot(q, xb + static_cast<size_t>(v) * d, d);
      if (res.size() < ef || sv > res.front().first) {
        cand.emplace_back(sv, v);
        std::push_heap(cand.begin(), cand.end());
        if (!admit(v)) continue;
        res.emplace_back(sv, v);
        std::push_heap(res.begin(), res.end(), greater);
        if (res.size() > ef) {
          std::pop_heap(res.begin(), res.end(), greater);
          res.pop_back();
        }
      }
    }
  }
  std::sort(res.begin(), res.end(), Better);
  const size_t m = std::min(k, res.size());
  for (size_t i = 0; i < m; i++) {
    out_ids[i] = ids_[static_cast<size_t>(res[i].second)];
    out_scores[i] = res[i].first;
  }
}

void HnswIndex::Save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  faiss::IndexIDMap map;
  map.index = index_.get();
  map.own_fields = false;
  map.d = index_->d;
  map.metric_type = index_->metric_type;
  map.is_trained = true;
  map.ntotal = index_->ntotal;
  map.id_map.assign(ids_.begin(), ids_.end());
  for (size_t r = 0; r < ids_.size(); r++)
    if (removed_.Has(r)) map.id_map[r] = -1;
  if (cosine_) {
    // Neither owns its parts (own_fields false): they are this frame's and the index's.
    faiss::NormalizationTransform unit(dim_, 2.0f);
    faiss::IndexPreTransform pre;
    pre.chain.push_back(&unit);
    pre.index = &map;
    pre.d = map.d;
    pre.metric_type = map.metric_type;
    pre.is_trained = true;
    pre.ntotal = map.ntotal;
    faiss::write_index(&pre, path.c_str());
    pre.chain.clear();
    pre.index = nullptr;
  } else {
    faiss::write_index(&map, path.c_str());
  }
  map.index = nullptr;
}

void HnswIndex::Load(const std::string& path) {
  std::unique_ptr<faiss::Index> raw;
  try {
    raw.reset(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    // FAISS's message names its own source line, not the file.
    ThrowRange("path: " + path + " is not a graph file FAISS can read: " + e.msg);
  }
  // A cosine index (Save): an L2 normalisation, then the index. Any other transform
  // would have to be applied to every query, and is refused.
  bool cosine = false;
  if (auto* pre = dynamic_cast<faiss::IndexPreTransform*>(raw.get())) {
    const auto* unit = pre->chain.size() == 1
                           ? dynamic_cast<const faiss::NormalizationTransform*>(pre->chain[0])
                           : nullptr;
    if (!unit || unit->norm != 2.0f)
      ThrowRange("path: " + path +
                 " holds an IndexPreTransform other than one L2 normalisation (cosine)");
    faiss::Index* inner = pre->index;
    pre->index = nullptr;  // read_index made it own its parts: the chain goes with it
    raw.reset(inner);
    cosine = true;
  }
  std::unique_ptr<faiss::IndexHNSWFlat> hnsw;
  std::vector<uint32_t> ids;
  RowBits removed;
  if (auto* map = dynamic_cast<faiss::IndexIDMap*>(raw.get())) {
    auto* inner = dynamic_cast<faiss::IndexHNSWFlat*>(map->index);
    if (!inner) ThrowRange("path: " + path + " holds an IndexIDMap over a non-HNSWFlat index");
    ids.reserve(map->id_map.size());
    removed.Resize(map->id_map.size());
    for (faiss_idx id : map->id_map) {
      if (id == -1) {  // a removed item's row (Save)
        removed.Set(ids.size());
        ids.push_back(kNoId);
        continue;
      }
      if (id < 0 || id > 0xFFFFFFFEll) ThrowRange("path: " + path + " holds a non-uint32 id");
      ids.push_back(static_cast<uint32_t>(id));
    }
    map->own_fields = false;
    hnsw.reset(inner);
  } else if (auto* inner = dynamic_cast<faiss::IndexHNSWFlat*>(raw.get())) {
    raw.release();
    hnsw.reset(inner);
    for (faiss_idx i = 0; i < hnsw->ntotal; i++) ids.push_back(static_cast<uint32_t>(i));
    removed.Resize(ids.size());
  } else {
    ThrowRange("path: " + path + " is not an HNSW inner-product index");
  }
  if (hnsw->metric_type != faiss::METRIC_INNER_PRODUCT)
    ThrowRange("path: " + path + " holds an HNSW index whose metric is not inner product");
  if (static_cast<size_t>(hnsw->ntotal) != ids.size())
    ThrowRange("path: " + path + " has an id map that does not match its vectors");
  CheckFileGraph(*hnsw, "path: " + path);
  IdRows row_of = HeldRows(ids, removed, "path: " + path);
  // Reconnected before it is searched, and before the lock: searches go on meanwhile.
  ReachTrees trees;
  ApplyLinks(hnsw.get(), PlanReconnect(*hnsw, kernels_, &trees));
  GiveHeadroom(hnsw.get(), &ids);
  std::lock_guard<std::mutex> w(write_mu_);
  loads_++;
  reconnects_full_++;
  SwapIn(&hnsw, std::move(ids), std::move(row_of), std::move(removed), std::move(trees),
         cosine);
  inserter_->Fit(ids_.size());
}

std::vector<uint32_t> HnswIndex::HeldIds() const {
  std::vector<uint32_t> held;
  {
    std::shared_lock<std::shared_mutex> lk(mu_);
    held.reserve(ids_.size() - removed_.Count());
    for (size_t r = 0; r < ids_.size(); r++)
      if (!removed_.Has(r)) held.push_back(ids_[r]);  // a removed row's id is stale
  }
  std::sort(held.begin(), held.end());
  return held;
}

// The rows held (not removed) by external id; an id held twice is refused, named after
// `source`.
IdRows HnswIndex::HeldRows(const std::vector<uint32_t>& ids, const RowBits& removed,
                           const std::string& source) {
  IdRows row_of;
  uint32_t max_id = 0;
  for (size_t r = 0; r < ids.size(); r++)
    if (!removed.Has(r)) max_id = std::max(max_id, ids[r]);
  row_of.Expect(max_id, ids.size() - removed.Count());
  for (size_t r = 0; r < ids.size(); r++) {
    if (removed.Has(r)) continue;
    if (row_of.Contains(ids[r]))
      ThrowRange(source + " holds id " + std::to_string(ids[r]) + " twice");
    row_of.Set(ids[r], static_cast<uint32_t>(r));
  }
  return row_of;
}

// Makes `graph` (reconnected) the index searched, and leaves the old one in `graph`, to be
// freed after the lock goes. Caller holds write_mu_.
void HnswIndex::SwapIn(std::unique_ptr<faiss::IndexHNSWFlat>* graph, std::vector<uint32_t> ids,
                       IdRows row_of, RowBits removed, ReachTrees trees, bool cosine) {
  trees_ = std::move(trees);  // the writer's alone
  std::unique_lock<std::shared_mutex> lk(mu_);
  cosine_ = cosine;
  dim_ = (*graph)->d;
  m_ = (*graph)->hnsw.nb_neighbors(1);
  efc_ = (*graph)->hnsw.efConstruction;
  index_.swap(*graph);
  ids_ = std::move(ids);
  row_of_ = std::move(row_of);
  removed_ = std::move(removed);
  Publish();
}

size_t HnswIndex::Compact(int threads) {
  std::lock_guard<std::mutex> one(compact_mu_);
  // The rows held, copied: new row i is old row from[i].
  std::vector<uint32_t> from, ids;
  std::vector<float> vecs;
  size_t seen = 0;  // old rows looked at
  // Copies the held rows of [seen, end); returns the new row of the first. Under
  // write_mu_ (rows, removals and dim stay as they are).
  const auto copy_rows = [&](size_t end) {
    const float* xb = static_cast<const faiss::IndexFlat*>(index_->storage)->get_xb();
    const size_t d = static_cast<size_t>(dim_);
    const size_t first = from.size();
    for (size_t r = seen; r < end; r++) {
      if (removed_.Has(r)) continue;
      from.push_back(static_cast<uint32_t>(r));
      ids.push_back(ids_[r]);
    }
    vecs.resize(from.size() * d);
    for (size_t i = first; i < from.size(); i++)
      std::copy_n(xb + static_cast<size_t>(from[i]) * d, d, vecs.data() + i * d);
    seen = end;
    return first;
  };
  std::unique_ptr<faiss::IndexHNSWFlat> fresh;
  uint64_t loads;
  size_t d;
  {
    std::lock_guard<std::mutex> w(write_mu_);
    if (removed_.Count() == 0) return 0;
    loads = loads_;
    d = static_cast<size_t>(dim_);
    fresh = std::make_unique<faiss::IndexHNSWFlat>(dim_, m_, faiss::METRIC_INNER_PRODUCT);
    fresh->hnsw.efConstruction = efc_;
    copy_rows(ids_.size());
  }
  // The build (on a libuv worker), while writes go on.
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
  Inserter inserter(kernels_);
  inserter.Insert(fresh.get(), from.size(), vecs.data());
  GiveHeadroom(fresh.get(), &ids);

  std::lock_guard<std::mutex> w(write_mu_);
  if (loads_ != loads) return 0;  // a Load replaced the index this graph was built from
  // Rows added meanwhile come over, and rows removed meanwhile are removed again.
  const size_t first = copy_rows(ids_.size());
  inserter.Insert(fresh.get(), from.size() - first, vecs.data() + first * d);
  ReachTrees trees;
  ApplyLinks(fresh.get(), PlanReconnect(*fresh, kernels_, &trees));
  reconnects_full_++;
  RowBits removed(from.size());
  for (size_t i = 0; i < from.size(); i++)
    if (removed_.Has(from[i])) removed.Set(i);
  IdRows row_of = HeldRows(ids, removed, "the index");
  const size_t dropped = ids_.size() - from.size();
  // The rows copied are already at unit length when the index is a cosine one.
  SwapIn(&fresh, std::move(ids), std::move(row_of), std::move(removed), std::move(trees),
         cosine_);
  return dropped;
}

HnswIndex::GraphReport HnswIndex::CheckGraph() {
  // The trees are the writer's: no change may run meanwhile.
  std::lock_guard<std::mutex> w(write_mu_);
  std::shared_lock<std::shared_mutex> lk(mu_);
  const ReachCounts c = CountUnreachable(*index_);
  GraphReport r;
  r.tree_faults = CountTreeFaults(*index_, trees_);
  r.rows = static_cast<size_t>(index_->ntotal);
  r.from_entry_missing = c.from_entry_missing;
  r.to_entry_missing = c.to_entry_missing;
  r.reconnects_full = reconnects_full_.load();
  r.reconnects_incremental = reconnects_incremental_.load();
  return r;
}

}  // namespace recserve
