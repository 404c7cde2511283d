// The HNSW index (FAISS IndexHNSWFlat, inner product or cosine, uint32 external ids),
// without N-API:
// hnsw_binding.cc wraps it for JS, and test/retrieval/native/hnsw-concurrency.cc races it
// under sanitizers.
//
// Search runs our own traversal of the graph FAISS built (SearchOne in hnsw_index.cc):
// per-call efSearch, no shared mutable setting, and no OpenMP at all. A single query runs
// on the calling thread; a batch is split over the addon's thread pool.
//
// OpenMP is used only to build the graph (Add and Compact, all cores: the Inserter in
// hnsw_index.cc, over FAISS's HNSW::add_with_locks) and by the benchmark-only FAISS
// search path. Each such call sets the OpenMP thread count of the thread it runs on
// (omp_set_num_threads is per calling thread): a per-call choice, nothing global.
// Measured on 100k x 64 (efSearch 16, 1000 single queries, CPU time per query): FAISS's
// search with 1 OpenMP thread 122 us, with 2 threads 126 us, and our traversal 68 us at
// the same efSearch; so single queries never use a second thread.
//
// Every method is safe to call from any thread at any time. Searches and saves share a
// read lock. The calls that change the index (Add, Remove, Load, Compact) run one at a
// time, and take the lock exclusively only for the moments they change what a search
// reads, so searches go on beside them:
// - Add inserts its rows a chunk at a time, each chunk sized to hold the lock for about
//   kAddChunkMs; the storage grows, and Reconnect plans its links, outside the lock. A
//   small add goes a few rows at a time, each step reconnected from what it changed
//   (reconnect.h), not over the whole graph.
// - Load and Compact build the new graph beside the one searched, and swap it in.
// Before, Add and Load held the lock throughout: adding one item to a 1M-item graph
// stopped every search for 0.5-0.8 s, mostly Reconnect's passes over the whole graph
// (bench:hnsw-writes; bench/README.md, "HNSW searches beside writes").
// Bad arguments throw ArgumentError.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/id_filters.h"
#include "common/id_rows.h"
#include "exact/kernels.h"
#include "hnsw/reconnect.h"

namespace faiss {
struct IndexHNSWFlat;
}

namespace recserve {

class HnswIndex {
 public:
  // Pads results shorter than k (with a score of -Infinity); never an item's id.
  static constexpr uint32_t kNoId = 0xFFFFFFFFu;

  // What a score is. kCosine keeps every row scaled to unit length (Add scales them as
  // they come, a zero row stays zero) and scales each query the same way, so the graph's
  // inner products are cosines. Why it matters for "similar items": trained embeddings'
  // norms grow with popularity, and an inner-product neighbour is then mostly a popular
  // item, whatever the query (bench:similar, bench/README.md).
  enum class Metric { kInnerProduct = 0, kCosine = 1 };

  HnswIndex(int dim, int m, int ef_construction, Metric metric = Metric::kInnerProduct);
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  // These three never wait for a change in progress (the JS getters call them on the
  // event loop).
  int Dim() const { return dim_seen_.load(); }
  // Items held: added and not removed.
  size_t Size() const { return held_seen_.load(); }
  // Rows removed but still in the graph, as waypoints (Remove); Compact drops them.
  size_t RemovedRows() const { return removed_seen_.load(); }
  // The constructor's, or the last Load's file's.
  Metric GetMetric() const { return cosine_.load() ? Metric::kCosine : Metric::kInnerProduct; }

  // Adds rows of Dim() floats; ids must not be held (checked before anything is added; a
  // removed id may come back). Searches that run meanwhile may see some of the rows; every
  // search that starts after it returns sees all of them. The graph is reconnected
  // afterwards (reconnect.h): from what the add changed when it is small, else over the
  // whole graph.
  void Add(const std::vector<uint32_t>& ids, const std::vector<float>& vecs);

  // Removes held ids (all checked before any goes; an id listed twice goes once). FAISS's
  // graph cannot drop a node, so a removed item's row stays in it as a waypoint: walks
  // still pass through it (the graph stays connected) but never return it, and scans skip
  // it. Visible to the next search. Its id can be added again, as a new row.
  void Remove(const std::vector<uint32_t>& ids);

  // Rebuilds the graph over the items held, without the removed rows, and swaps it in;
  // returns how many rows went. Removed rows cost memory and walk time (every walk still
  // scores them), and an item replaced again and again (remove, then add) leaves a row
  // each time. Searches run on the old graph meanwhile; adds and removes made meanwhile
  // are carried over into the new one before the swap (the index holds two copies of the
  // rows until then). A Load meanwhile wins: the graph built is dropped, and Compact
  // returns 0. Builds with `threads` OpenMP threads, 0 for every core (as Add); fewer
  // leave cores to the searches meanwhile. One Compact runs at a time.
  size_t Compact(int threads = 0);

  // How a filtered search finds its results (see Search).
  enum class FilterMode { kAuto = 0, kGraph = 1, kScan = 2 };

  // nq queries of Dim() floats (a RangeError when the index was loaded with another dim
  // since the caller checked); writes nq x k ids and scores, best first.
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
              std::vector<uint32_t>* out_ids, std::vector<float>* scores) const;

  // Written as a FAISS IndexIDMap over the IndexHNSWFlat, so the file is a standard FAISS
  // index (faiss.read_index in Python reads it, external ids included). A removed item's
  // row is written with id -1, which FAISS's own search reports as "no result". A kCosine
  // index is written inside an IndexPreTransform whose one transform is FAISS's L2
  // NormalizationTransform, FAISS's own way to search by cosine: its queries are scaled
  // there too, and Load knows the metric from it.
  void Save(const std::string& path) const;
  // Replaces the whole index (dimension, metric, graph, ids and removals) with the file's.
  void Load(const std::string& path);

  // The ids held (added and not removed), ascending: removed rows, still in the graph as
  // waypoints, are left out. Ascending rather than by graph row, so that the answer says
  // what the index holds whatever Compact or a Load renumbered. Copied under the shared
  // lock (changes wait for the copy, not for the sort; searches go on).
  std::vector<uint32_t> HeldIds() const;

  // Target time Add holds the lock for a chunk of rows (searches wait that long at most).
  static constexpr double kAddChunkMs = 10;
  // An add of at most one row per 2,048 held (from kStepRows up to kIncrementalRows) goes
  // in kStepRows at a time, each step reconnected from what it changed, while the lists a
  // step could shrink number at most kIncrementalLists, or rows / 64 (see Add).
  static constexpr size_t kIncrementalRows = 1024;
  static constexpr size_t kStepRows = 4;
  static constexpr size_t kIncrementalLists = 4096;

  // Checks the whole graph (two breadth-first passes; changes wait, searches do not):
  // layer-0 nodes no walk reaches from the entry, and nodes with no path back to it, and
  // nodes where the paths kept for small adds (ReachTrees) do not follow the graph (all
  // three 0 after every change); and how the graph was reconnected so far.
  struct GraphReport {
    size_t rows = 0;
    size_t from_entry_missing = 0, to_entry_missing = 0, tree_faults = 0;
    uint64_t reconnects_full = 0, reconnects_incremental = 0;
  };
  GraphReport CheckGraph();

 private:
  // What one Search call may return, in row terms: the allow list's rows (without a set,
  // every row) less the removed rows.
  struct Admissible {
    std::optional<RowSet> set;
    std::vector<uint32_t> rows;  // the set's rows in order; built only when a query scans
    const RowBits* removed = nullptr;  // HnswIndex::removed_, when any row is removed
    bool Allowed(int v) const {
      const auto r = static_cast<size_t>(v);
      return (!set || set->Has(r)) && !(removed && removed->Has(r));
    }
  };
  bool UseScan(const Admissible& adm, const std::vector<uint32_t>* ex, size_t ef) const;
  void ScanOne(const float* q, size_t k, const Admissible& adm, const std::vector<uint32_t>* ex,
               uint32_t* out_ids, float* out_scores) const;
  template <bool kFiltered>
  void SearchOne(const float* q, size_t k, int ef_in, const Admissible& adm,
                 const std::vector<uint32_t>* ex, uint32_t* out_ids, float* out_scores) const;
  void Reserve(size_t n);
  void InsertRows(const std::vector<uint32_t>& ids, const std::vector<float>& vecs, size_t first,
                  size_t n, std::vector<int>* linked);
  static IdRows HeldRows(const std::vector<uint32_t>& ids, const RowBits& removed,
                         const std::string& source);
  void SwapIn(std::unique_ptr<faiss::IndexHNSWFlat>* graph, std::vector<uint32_t> ids,
              IdRows row_of, RowBits removed, ReachTrees trees, bool cosine);
  // Copies dim_ and the counts for Dim(), Size() and RemovedRows(); under mu_, exclusive.
  void Publish();

  // Searches and saves hold mu_ shared; a change holds write_mu_ throughout and mu_
  // exclusively while it changes what searches read. Under write_mu_ a change may read the
  // index without mu_: nothing else writes it meanwhile.
  mutable std::shared_mutex mu_;
  std::mutex write_mu_;
  std::mutex compact_mu_;  // one Compact at a time
  uint64_t loads_ = 0;     // Loads so far (a Compact that sees one gives up)
  size_t add_chunk_ = 64;  // rows Add inserts per exclusive hold (adapts to kAddChunkMs)
  std::atomic<int> dim_seen_{0};
  std::atomic<size_t> held_seen_{0}, removed_seen_{0};
  const Kernels& kernels_ = BestKernels();
  int dim_, m_, efc_;
  // Metric::kCosine. Changed only by Load, under write_mu_ and mu_ exclusively; atomic for
  // GetMetric on the event loop.
  std::atomic<bool> cosine_{false};
  std::unique_ptr<faiss::IndexHNSWFlat> index_;
  class Inserter;                       // builds the graph (hnsw_index.cc)
  std::unique_ptr<Inserter> inserter_;  // Add's, under write_mu_
  std::vector<uint32_t> ids_;  // FAISS row -> external id (stale for a removed row)
  IdRows row_of_;              // external id -> FAISS row, for the ids held
  RowBits removed_;            // by row
  ReachTrees trees_;           // paths to and from the entry, for Add (under write_mu_)
  std::atomic<uint64_t> reconnects_full_{0}, reconnects_incremental_{0};
};

// FAISS labels (row numbers, -1 for none) to external ids: through `ids` (row -> id) when
// given, else the row itself; a missing label becomes kNoId with a score of -Infinity.
void MapFaissLabels(const std::vector<int64_t>& labels, std::vector<float>* scores,
                    const std::vector<uint32_t>* ids, std::vector<uint32_t>* out_ids);

}  // namespace recserve
