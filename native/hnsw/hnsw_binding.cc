// FAISS engines: NativeHnswIndex (IndexHNSWFlat, inner product, uint32 external ids) and
// NativeFaissFlat (IndexFlatIP, used by the retrieval benchmark as the reference).
//
// Search runs our own traversal of the graph FAISS built (HnswEngine::SearchOne): per-call
// efSearch, no shared mutable setting, and no OpenMP at all. A single query runs on the
// calling thread; a batch is split over the addon's thread pool.
//
// OpenMP is used only by FAISS itself: by add() (graph construction, all cores) and by the
// benchmark-only FAISS search path. Each such call sets the OpenMP thread count of the
// thread it runs on (omp_set_num_threads is per calling thread): a per-call choice,
// nothing global. Measured on 100k x 64 (efSearch 16, 1000 single queries, CPU time per
// query): FAISS's search with 1 OpenMP thread 122 us, with 2 threads 126 us, and our
// traversal 68 us at the same efSearch; so single queries never use a second thread.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/HNSW.h>
#include <faiss/index_io.h>
#include <napi.h>
#include <omp.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/id_rows.h"
#include "common/napi_args.h"
#include "common/thread_pool.h"
#include "exact/kernels.h"

namespace recserve {
namespace {

using faiss_idx = faiss::Index::idx_t;
constexpr uint32_t kNoId = 0xFFFFFFFFu;

int SearchThreads(size_t nq, int requested) {
  if (requested > 0) return requested;
  const int max = omp_get_num_procs();
  return nq <= 1 ? 1 : static_cast<int>(std::min<size_t>(nq, static_cast<size_t>(max)));
}

// Runs FAISS search and maps labels to external ids (missing -> kNoId, -Infinity).
void MapResults(const std::vector<faiss_idx>& labels, std::vector<float>* scores,
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

class HnswEngine {
 public:
  HnswEngine(int dim, int m, int ef_construction) : dim_(dim), m_(m), efc_(ef_construction) {
    Reset();
  }
  int Dim() const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return dim_;
  }
  size_t Size() const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    return ids_.size();
  }

  // Ids must be new; checked (under the lock) before anything is added.
  void Add(const std::vector<uint32_t>& ids, const std::vector<float>& vecs) {
    std::unique_lock<std::shared_mutex> lk(mu_);
    if (vecs.size() != ids.size() * static_cast<size_t>(dim_))
      ThrowRange("vectors.length must equal ids.length x dim");
    std::unordered_set<uint32_t> batch;
    for (size_t i = 0; i < ids.size(); i++) {
      // kNoId pads short results, and Load rejects it (as every id past uint32).
      if (ids[i] == kNoId)
        ThrowRange("ids[" + std::to_string(i) + "]: id " + std::to_string(ids[i]) +
                   " is reserved (it pads results shorter than k)");
      if (row_of_.Contains(ids[i]) || !batch.insert(ids[i]).second)
        ThrowRange("ids[" + std::to_string(i) + "]: id " + std::to_string(ids[i]) +
                   " is already in the index (HNSW ids are add-only)");
    }
    if (ids_.size() + ids.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
      ThrowRange("ids: the index would exceed 2^31-1 vectors");
    // Building uses every core: it runs on a libuv worker, off the event loop.
    omp_set_num_threads(omp_get_num_procs());
    index_->add(static_cast<faiss_idx>(ids.size()), vecs.data());
    row_of_.Append(ids.data(), ids.size());
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    Reconnect();
  }

  // How a filtered search finds its results (see Search).
  enum class FilterMode { kAuto = 0, kGraph = 1, kScan = 2 };

  // Searches with our own traversal (see SearchOne) unless `use_faiss`, which calls
  // IndexHNSW::search with `threads` OpenMP threads (kept for the benchmark's comparison).
  // `f` filters the results: per query excluded ids, and a shared allow list. Excluded and
  // disallowed items are still walked through (the graph stays connected) but never
  // returned. A query whose admissible items are few is answered by scoring those items
  // exactly instead (ScanOne): the walk would otherwise cross most of the graph to fill its
  // beam. kAuto picks per query by the cost model in UseScan; the other modes force one
  // path (tests and the benchmark).
  void Search(const std::vector<float>& queries, size_t nq, size_t k, int ef, int threads,
              bool use_faiss, const IdFilters& f, FilterMode mode,
              std::vector<uint32_t>* out_ids, std::vector<float>* scores) const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    out_ids->assign(nq * k, kNoId);
    scores->assign(nq * k, -std::numeric_limits<float>::infinity());
    if (nq == 0 || ids_.empty()) return;
    const bool filtered = f.has_allow || !f.exclude.empty();
    if (use_faiss) {
      std::vector<faiss_idx> labels(nq * k, -1);
      faiss::SearchParametersHNSW params;
      params.efSearch = std::max<int>(ef, static_cast<int>(k));
      omp_set_num_threads(SearchThreads(nq, threads));
      index_->search(static_cast<faiss_idx>(nq), queries.data(), static_cast<faiss_idx>(k),
                     scores->data(), labels.data(), &params);
      MapResults(labels, scores, &ids_, out_ids);
      return;
    }
    Admissible adm;
    if (f.has_allow) adm.set.emplace(row_of_, f.allow.data(), f.allow.size(), ids_.size());
    const size_t d = static_cast<size_t>(dim_);
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
        const float* qv = queries.data() + q * d;
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

 private:
  // The allow list of one Search call in row terms; without a set every row is allowed.
  struct Admissible {
    std::optional<RowSet> set;
    std::vector<uint32_t> rows;  // the set's rows in order; built only when a query scans
    bool Allowed(int v) const { return !set || set->Has(static_cast<size_t>(v)); }
  };
  static const std::vector<uint32_t>* Excluded(const IdFilters& f, size_t q) {
    return f.exclude.empty() || f.exclude[q].empty() ? nullptr : &f.exclude[q];
  }
  using Node = std::pair<float, int>;  // (score, row)
  // Result order: higher score first, then the smaller row.
  static bool Better(const Node& a, const Node& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
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
  //   for a random share (0.98 or more at every share; see Reconnect).
  // With share = admissible / n, the two cost the same where scanned x admissible is about
  // 25 x ef x n. This scans up to 100 x ef x n, trading up to ~2x the walk's time for exact
  // results: below ~25% admissible at 100k items and ef 64, below ~8% at 1M.
  bool UseScan(const Admissible& adm, const std::vector<uint32_t>* ex, size_t ef) const {
    const double n = static_cast<double>(ids_.size());
    const double scanned = adm.set ? static_cast<double>(adm.set->Count()) : n;
    const double admissible = std::max(1.0, scanned - (ex ? static_cast<double>(ex->size()) : 0));
    return scanned * admissible <= kScanPerWalk * static_cast<double>(ef) * n;
  }
  static constexpr double kScanPerWalk = 100;

  // Exact top-k over the admissible items (every allowed row, or every row, less `ex`).
  // Caller holds the shared lock.
  void ScanOne(const float* q, size_t k, const Admissible& adm, const std::vector<uint32_t>* ex,
               uint32_t* out_ids, float* out_scores) const {
    const float* xb = static_cast<const faiss::IndexFlat*>(index_->storage)->get_xb();
    const size_t d = static_cast<size_t>(dim_);
    const auto dot = kernels_.dot_f32;
    std::vector<Node> top;  // heap with the worst kept result on top
    top.reserve(k + 1);
    const size_t count = adm.set ? adm.rows.size() : ids_.size();
    for (size_t i = 0; i < count; i++) {
      const int v = static_cast<int>(adm.set ? adm.rows[i] : i);
      if (i + 8 < count) __builtin_prefetch(xb + (adm.set ? adm.rows[i + 8] : i + 8) * d);
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
  void SearchOne(const float* q, size_t k, int ef_in, const Admissible& adm,
                 const std::vector<uint32_t>* ex, uint32_t* out_ids, float* out_scores) const {
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
    int batch[512];
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
      for (size_t i = 0; i < l0 && nb < 512; i++) {
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

 public:
  // Written as a FAISS IndexIDMap over the IndexHNSWFlat, so the file is a standard FAISS
  // index (faiss.read_index in Python reads it, external ids included).
  void Save(const std::string& path) const {
    std::shared_lock<std::shared_mutex> lk(mu_);
    faiss::IndexIDMap map;
    map.index = index_.get();
    map.own_fields = false;
    map.d = index_->d;
    map.metric_type = index_->metric_type;
    map.is_trained = true;
    map.ntotal = index_->ntotal;
    map.id_map.assign(ids_.begin(), ids_.end());
    faiss::write_index(&map, path.c_str());
    map.index = nullptr;
  }

  void Load(const std::string& path) {
    std::unique_ptr<faiss::Index> raw(faiss::read_index(path.c_str()));
    std::unique_ptr<faiss::IndexHNSWFlat> hnsw;
    std::vector<uint32_t> ids;
    if (auto* map = dynamic_cast<faiss::IndexIDMap*>(raw.get())) {
      auto* inner = dynamic_cast<faiss::IndexHNSWFlat*>(map->index);
      if (!inner) ThrowRange("path: " + path + " holds an IndexIDMap over a non-HNSWFlat index");
      ids.reserve(map->id_map.size());
      for (faiss_idx id : map->id_map) {
        if (id < 0 || id > 0xFFFFFFFEll) ThrowRange("path: " + path + " holds a non-uint32 id");
        ids.push_back(static_cast<uint32_t>(id));
      }
      map->own_fields = false;
      hnsw.reset(inner);
    } else if (auto* inner = dynamic_cast<faiss::IndexHNSWFlat*>(raw.get())) {
      raw.release();
      hnsw.reset(inner);
      for (faiss_idx i = 0; i < hnsw->ntotal; i++) ids.push_back(static_cast<uint32_t>(i));
    } else {
      ThrowRange("path: " + path + " is not an HNSW inner-product index");
    }
    if (hnsw->metric_type != faiss::METRIC_INNER_PRODUCT)
      ThrowRange("path: " + path + " holds an HNSW index whose metric is not inner product");
    if (static_cast<size_t>(hnsw->ntotal) != ids.size())
      ThrowRange("path: " + path + " has an id map that does not match its vectors");
    std::unique_lock<std::shared_mutex> lk(mu_);
    dim_ = hnsw->d;
    m_ = hnsw->hnsw.nb_neighbors(1);
    efc_ = hnsw->hnsw.efConstruction;
    index_ = std::move(hnsw);
    ids_ = std::move(ids);
    row_of_.Clear();
    row_of_.Append(ids_.data(), ids_.size());
    Reconnect();
  }

 private:
  // Links every layer-0 node no search can reach from a reachable node near it.
  //
  // FAISS builds the inner-product graph with the neighbour heuristic of a metric space: a
  // node keeps few links, most of them to high-norm hubs whose lists are full, and nothing
  // links back to the low-norm nodes. On bench:retrieval's 100k x 64 clustered set a node
  // kept 4.4 of its 64 layer-0 slots on average and 37% of the nodes were nobody's
  // neighbour, so no walk could return them: recall@10 stopped at 0.965 however wide the
  // beam, and a filter that left them the best admissible items cut a walk's recall to
  // ~0.7. On the 1M-item reference bundle (M 16) 97% were unreachable.
  //
  // Each unreachable node gets one link from a reachable node (see the two passes below),
  // and what it links to becomes reachable with it. No node takes more than kExtraLinks
  // links beyond the ones FAISS gave it: every extra link is one more score for each walk
  // that expands the node, and on the reference bundle, whose true neighbours are nearly
  // all high-norm reachable items, unbounded extras made walks 1.3-2x slower for no
  // recall. With 3: 100k clustered, recall@10 0.957 -> 0.970 at efSearch 32 and 0.965 ->
  // 0.991 at 256 for 1.03-1.18x the time; the reference bundle, the same recall for
  // ~1.15x (bench/README.md, "The HNSW graph reconnected"). Hubs keep their lists; the file
  // stays a standard FAISS index. Caller holds the lock exclusively.
  static constexpr size_t kExtraLinks = 3;
  void Reconnect() {
    faiss::HNSW& g = index_->hnsw;
    const size_t n = ids_.size();
    if (n == 0 || g.entry_point < 0) return;
    const float* xb = static_cast<const faiss::IndexFlat*>(index_->storage)->get_xb();
    const size_t d = static_cast<size_t>(dim_);
    const size_t l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
    const auto links = [&](size_t v) { return g.neighbors.data() + g.offsets[v]; };
    std::vector<uint32_t> fill(n, 0), room(n, 0);
    for (size_t v = 0; v < n; v++) {
      while (fill[v] < l0 && links(v)[fill[v]] >= 0) fill[v]++;
      room[v] = static_cast<uint32_t>(std::min(l0, fill[v] + kExtraLinks));
    }
    // Who links to whom on layer 0, reversed (CSR): the nodes that chose v as a neighbour.
    std::vector<size_t> in_at(n + 1, 0);
    for (size_t v = 0; v < n; v++)
      for (size_t i = 0; i < fill[v]; i++) in_at[static_cast<size_t>(links(v)[i]) + 1]++;
    for (size_t v = 0; v < n; v++) in_at[v + 1] += in_at[v];
    std::vector<int> in(in_at[n]);
    {
      std::vector<size_t> at(in_at.begin(), in_at.end() - 1);
      for (size_t v = 0; v < n; v++)
        for (size_t i = 0; i < fill[v]; i++) in[at[static_cast<size_t>(links(v)[i])]++] = int(v);
    }
    std::vector<char> reached(n, 0);
    std::vector<int> queue;
    const auto reach = [&](int v) {
      if (!reached[static_cast<size_t>(v)]) reached[static_cast<size_t>(v)] = 1, queue.push_back(v);
    };
    const auto link = [&](size_t from, int to) {
      links(from)[fill[from]++] = to;
      reach(to);
    };
    // First pass: everything a reached node links to is reached; and a reached node with
    // room links back to each unreached node that chose it as a neighbour (it scores high
    // against that node, so a walk near the node passes it).
    const auto drain = [&]() {
      while (!queue.empty()) {
        const size_t v = static_cast<size_t>(queue.back());
        queue.pop_back();
        for (size_t i = 0; i < fill[v]; i++) reach(links(v)[i]);
        for (size_t i = in_at[v]; i < in_at[v + 1] && fill[v] < room[v]; i++)
          if (!reached[static_cast<size_t>(in[i])]) link(v, in[i]);
      }
    };
    reach(g.entry_point);
    drain();
    // Second pass, for the rest, which chose only full or unreached neighbours (on a graph
    // of hubs, most nodes: all their links go to a few hundred full hubs). Each gets its
    // link from the reached node with room that scores highest against it among its
    // neighbours' neighbours, the last nodes linked here that chose the same first
    // neighbour (so the nodes around one hub form a tree a walk can descend), and the last
    // nodes linked here at all. A bounded search keeps this linear: scanning all reached
    // nodes for each leftover took over 5 minutes on the reference bundle, where 96% were
    // left after the first pass. There it takes ~1.3 s, at 100k ~0.15 s.
    constexpr size_t kRecent = 16;
    std::unordered_map<int, std::vector<int>> by_hub;  // first neighbour -> last linked
    std::vector<int> recent;                           // ring of the last linked
    size_t next_recent = 0;
    for (size_t u = 0; u < n; u++) {
      if (reached[u]) continue;
      const float* xu = xb + u * d;
      int best = -1;
      float best_s = -std::numeric_limits<float>::infinity();
      const auto consider = [&](int v) {
        const auto vi = static_cast<size_t>(v);
        if (!reached[vi] || fill[vi] >= room[vi]) return;
        const float sv = kernels_.dot_f32(xu, xb + static_cast<size_t>(v) * d, d);
        if (sv > best_s) best_s = sv, best = v;
      };
      for (size_t i = 0; i < fill[u]; i++) {
        const size_t w = static_cast<size_t>(links(u)[i]);
        for (size_t j = 0; j < fill[w]; j++) consider(links(w)[j]);
      }
      std::vector<int>* members = fill[u] > 0 ? &by_hub[links(u)[0]] : nullptr;
      if (members)
        for (int v : *members) consider(v);
      for (int v : recent) consider(v);
      if (best < 0) best = g.entry_point;  // nothing near has room: the entry, if it has
      // Else u stays unreached (not seen on the sets measured: every node was reached).
      if (fill[static_cast<size_t>(best)] >= room[static_cast<size_t>(best)]) continue;
      link(static_cast<size_t>(best), static_cast<int>(u));
      drain();
      if (members) {
        if (members->size() == kRecent) members->erase(members->begin());
        members->push_back(static_cast<int>(u));
      }
      if (recent.size() < kRecent) {
        recent.push_back(static_cast<int>(u));
      } else {
        recent[next_recent++ % kRecent] = static_cast<int>(u);
      }
    }
  }

  void Reset() {
    index_ = std::make_unique<faiss::IndexHNSWFlat>(dim_, m_, faiss::METRIC_INNER_PRODUCT);
    index_->hnsw.efConstruction = efc_;
  }

  mutable std::shared_mutex mu_;
  const Kernels& kernels_ = BestKernels();
  int dim_, m_, efc_;
  std::unique_ptr<faiss::IndexHNSWFlat> index_;
  std::vector<uint32_t> ids_;  // FAISS row -> external id
  IdRows row_of_;              // external id -> FAISS row
};

// One async operation on an HnswEngine: `run` executes on a libuv worker; `done` builds
// the resolved value on the JS thread.
class HnswWorker : public Napi::AsyncWorker {
 public:
  using Run = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  HnswWorker(Napi::Env env, const char* name, Run run, Done done)
      : Napi::AsyncWorker(env, name),
        run_(std::move(run)),
        done_(std::move(done)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      run_();
    } catch (const ArgumentError& e) {
      SetError(e.what());
      range_ = e.kind() == ArgumentError::Kind::Range;
    } catch (const faiss::FaissException& e) {
      SetError(std::string("recserve native: FAISS: ") + e.what());
    } catch (const std::exception& e) {
      SetError(std::string("recserve native: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(done_(Env())); }
  void OnError(const Napi::Error& e) override {
    if (range_) {
      deferred_.Reject(Napi::RangeError::New(Env(), e.Message()).Value());
    } else {
      deferred_.Reject(e.Value());
    }
  }

 private:
  Run run_;
  Done done_;
  Napi::Promise::Deferred deferred_;
  bool range_ = false;
};

class HnswWrap : public Napi::ObjectWrap<HnswWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeHnswIndex",
                       {
                           InstanceMethod<&HnswWrap::Add>("add"),
                           InstanceMethod<&HnswWrap::Search>("search"),
                           InstanceMethod<&HnswWrap::SearchSync>("searchSync"),
                           InstanceMethod<&HnswWrap::Save>("save"),
                           InstanceMethod<&HnswWrap::Load>("load"),
                           InstanceAccessor<&HnswWrap::GetDim>("dim"),
                           InstanceAccessor<&HnswWrap::GetSize>("size"),
                       });
  }

  // new NativeHnswIndex(dim, M, efConstruction)
  explicit HnswWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HnswWrap>(info) {
    Guard(info.Env(), [&] {
      const int dim = static_cast<int>(ArgInt(info, 0, "dim", 1, 65536));
      const int m = static_cast<int>(ArgInt(info, 1, "M", 2, 512));
      const int efc = static_cast<int>(ArgInt(info, 2, "efConstruction", 1, 1 << 16));
      engine_ = std::make_shared<HnswEngine>(dim, m, efc);
      return 0;
    });
  }

 private:
  template <typename F>
  Napi::Value Async(Napi::Env env, const char* name, HnswWorker::Run run, F done) {
    auto* w = new HnswWorker(env, name, std::move(run), std::move(done));
    auto p = w->Promise();
    w->Queue();
    return p;
  }

  // add(ids, vectors): Promise<void>
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto ids = ArgUint32Array(info, 0, "ids");
      auto vecs = ArgFloat32Array(info, 1, "vectors");
      const size_t d = static_cast<size_t>(engine_->Dim());
      if (vecs.ElementLength() != ids.ElementLength() * d)
        ThrowRange("vectors.length (" + std::to_string(vecs.ElementLength()) +
                   ") must equal ids.length x dim (" + std::to_string(ids.ElementLength()) +
                   " x " + std::to_string(d) + ")");
      CheckFinite(vecs.Data(), vecs.ElementLength(), "vectors");
      auto engine = engine_;
      auto idv = std::make_shared<std::vector<uint32_t>>(ids.Data(),
                                                         ids.Data() + ids.ElementLength());
      auto vv = std::make_shared<std::vector<float>>(vecs.Data(),
                                                     vecs.Data() + vecs.ElementLength());
      return Async(
          info.Env(), "recserve.hnsw.add", [engine, idv, vv] { engine->Add(*idv, *vv); },
          [](Napi::Env env) { return env.Undefined(); });
    });
  }

  struct SearchArgs {
    std::vector<float> queries;
    size_t nq = 0, k = 0;
    int ef = 0, threads = 0;
    bool use_faiss = false;
    IdFilters filters;
    HnswEngine::FilterMode mode = HnswEngine::FilterMode::kAuto;
  };
  // search(queries, k, efSearch, threads (0 = automatic), useFaiss?, exclude?, allow?,
  //        filterMode? (0 auto, 1 graph, 2 scan))
  SearchArgs ParseSearch(const Napi::CallbackInfo& info) {
    SearchArgs a;
    auto q = ArgFloat32Array(info, 0, "queries");
    a.nq = CheckRows(q, static_cast<size_t>(engine_->Dim()), "queries");
    a.k = static_cast<size_t>(ArgInt(info, 1, "k", 1, kMaxK));
    if (a.nq * a.k > kMaxResultEntries) ThrowRange("queries x k is too large");
    a.ef = static_cast<int>(ArgInt(info, 2, "efSearch", 1, 1 << 20));
    a.threads = static_cast<int>(ArgInt(info, 3, "threads", 0, 1024));
    a.use_faiss = info.Length() > 4 && info[4].ToBoolean().Value();
    a.filters = ArgIdFilters(info, 5, 6, a.nq);
    if (info.Length() > 7 && !info[7].IsUndefined())
      a.mode = static_cast<HnswEngine::FilterMode>(ArgInt(info, 7, "filterMode", 0, 2));
    if (a.use_faiss && (a.filters.has_allow || !a.filters.exclude.empty()))
      ThrowRange("exclude and allow need impl 'recserve' (FAISS's own search has no filters here)");
    a.queries.assign(q.Data(), q.Data() + q.ElementLength());
    return a;
  }

  Napi::Value Search(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto a = std::make_shared<SearchArgs>(ParseSearch(info));
      auto ids = std::make_shared<std::vector<uint32_t>>();
      auto scores = std::make_shared<std::vector<float>>();
      auto engine = engine_;
      return Async(
          info.Env(), "recserve.hnsw.search",
          [engine, a, ids, scores] {
            engine->Search(a->queries, a->nq, a->k, a->ef, a->threads, a->use_faiss, a->filters,
                           a->mode, ids.get(), scores.get());
          },
          [a, ids, scores](Napi::Env env) -> Napi::Value {
            return TopKResult(env, *ids, *scores, a->k);
          });
    });
  }

  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      SearchArgs a = ParseSearch(info);
      std::vector<uint32_t> ids;
      std::vector<float> scores;
      try {
        engine_->Search(a.queries, a.nq, a.k, a.ef, a.threads, a.use_faiss, a.filters, a.mode,
                        &ids, &scores);
      } catch (const faiss::FaissException& e) {
        throw std::runtime_error(std::string("FAISS: ") + e.what());
      }
      return TopKResult(info.Env(), ids, scores, a.k);
    });
  }

  Napi::Value Save(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      const std::string path = ArgString(info, 0, "path");
      if (path.empty()) ThrowRange("path must not be empty");
      auto engine = engine_;
      return Async(
          info.Env(), "recserve.hnsw.save", [engine, path] { engine->Save(path); },
          [](Napi::Env env) { return env.Undefined(); });
    });
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      const std::string path = ArgString(info, 0, "path");
      if (path.empty()) ThrowRange("path must not be empty");
      auto engine = engine_;
      return Async(
          info.Env(), "recserve.hnsw.load", [engine, path] { engine->Load(path); },
          [](Napi::Env env) { return env.Undefined(); });
    });
  }

  Napi::Value GetDim(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), engine_->Dim());
  }
  Napi::Value GetSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(engine_->Size()));
  }

  std::shared_ptr<HnswEngine> engine_;
};

// FAISS IndexFlatIP, for the benchmark's side-by-side figures. Synchronous on purpose.
class FaissFlatWrap : public Napi::ObjectWrap<FaissFlatWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeFaissFlat",
                       {
                           InstanceMethod<&FaissFlatWrap::Add>("add"),
                           InstanceMethod<&FaissFlatWrap::SearchSync>("searchSync"),
                           InstanceAccessor<&FaissFlatWrap::GetSize>("size"),
                       });
  }
  // new NativeFaissFlat(dim)
  explicit FaissFlatWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FaissFlatWrap>(info) {
    Guard(info.Env(), [&] {
      const int dim = static_cast<int>(ArgInt(info, 0, "dim", 1, 65536));
      index_ = std::make_unique<faiss::IndexFlatIP>(dim);
      return 0;
    });
  }

 private:
  // add(vectors): ids are the row numbers in insertion order.
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto v = ArgFloat32Array(info, 0, "vectors");
      const size_t n = CheckRows(v, static_cast<size_t>(index_->d), "vectors");
      index_->add(static_cast<faiss_idx>(n), v.Data());
      return info.Env().Undefined();
    });
  }
  // searchSync(queries, k, threads (0 = OpenMP default))
  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto q = ArgFloat32Array(info, 0, "queries");
      const size_t nq = CheckRows(q, static_cast<size_t>(index_->d), "queries");
      const size_t k = static_cast<size_t>(ArgInt(info, 1, "k", 1, kMaxK));
      const int threads =
          info.Length() > 2 ? static_cast<int>(ArgInt(info, 2, "threads", 0, 1024)) : 0;
      if (nq * k > kMaxResultEntries) ThrowRange("queries x k is too large");
      std::vector<faiss_idx> labels(nq * k, -1);
      std::vector<float> scores(nq * k);
      if (nq > 0) {
        omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
        try {
          index_->search(static_cast<faiss_idx>(nq), q.Data(), static_cast<faiss_idx>(k),
                         scores.data(), labels.data());
        } catch (const faiss::FaissException& e) {
          throw std::runtime_error(std::string("FAISS: ") + e.what());
        }
      }
      std::vector<uint32_t> ids;
      MapResults(labels, &scores, nullptr, &ids);
      return TopKResult(info.Env(), ids, scores, k);
    });
  }
  Napi::Value GetSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ntotal));
  }

  std::unique_ptr<faiss::IndexFlatIP> index_;
};

}  // namespace

void InitHnsw(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeHnswIndex", HnswWrap::Define(env));
  exports.Set("NativeFaissFlat", FaissFlatWrap::Define(env));
}

}  // namespace recserve
