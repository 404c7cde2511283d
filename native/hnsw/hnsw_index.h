// The HNSW index (FAISS IndexHNSWFlat, inner product, uint32 external ids), without N-API:
// hnsw_binding.cc wraps it for JS, and test/retrieval/native/hnsw-concurrency.cc races it
// under sanitizers.
//
// Search runs our own traversal of the graph FAISS built (SearchOne in hnsw_index.cc):
// per-call efSearch, no shared mutable setting, and no OpenMP at all. A single query runs
// on the calling thread; a batch is split over the addon's thread pool.
//
// OpenMP is used only by FAISS itself: by Add (graph construction, all cores) and by the
// benchmark-only FAISS search path. Each such call sets the OpenMP thread count of the
// thread it runs on (omp_set_num_threads is per calling thread): a per-call choice,
// nothing global. Measured on 100k x 64 (efSearch 16, 1000 single queries, CPU time per
// query): FAISS's search with 1 OpenMP thread 122 us, with 2 threads 126 us, and our
// traversal 68 us at the same efSearch; so single queries never use a second thread.
//
// Every method is safe to call from any thread at any time: searches and saves share a
// read lock, Add, Remove and Load take it exclusively. Bad arguments throw ArgumentError.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/id_filters.h"
#include "common/id_rows.h"
#include "exact/kernels.h"

namespace faiss {
struct IndexHNSWFlat;
}

namespace recserve {

class HnswIndex {
 public:
  // Pads results shorter than k (with a score of -Infinity); never an item's id.
  static constexpr uint32_t kNoId = 0xFFFFFFFFu;

  HnswIndex(int dim, int m, int ef_construction);
  ~HnswIndex();
  HnswIndex(const HnswIndex&) = delete;
  HnswIndex& operator=(const HnswIndex&) = delete;

  int Dim() const;
  // Items held: added and not removed.
  size_t Size() const;

  // Adds rows of Dim() floats; ids must not be held (checked, under the lock, before
  // anything is added; a removed id may come back). The graph is reconnected afterwards
  // (Reconnect).
  void Add(const std::vector<uint32_t>& ids, const std::vector<float>& vecs);

  // Removes held ids (all checked before any goes; an id listed twice goes once). FAISS's
  // graph cannot drop a node, so a removed item's row stays in it as a waypoint: walks
  // still pass through it (the graph stays connected) but never return it, and scans skip
  // it. Visible to the next search. Its id can be added again, as a new row.
  void Remove(const std::vector<uint32_t>& ids);

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
  // row is written with id -1, which FAISS's own search reports as "no result".
  void Save(const std::string& path) const;
  // Replaces the whole index (dimension, graph, ids and removals) with the file's.
  void Load(const std::string& path);

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
  void Reconnect();
  void Reset();

  mutable std::shared_mutex mu_;
  const Kernels& kernels_ = BestKernels();
  int dim_, m_, efc_;
  std::unique_ptr<faiss::IndexHNSWFlat> index_;
  std::vector<uint32_t> ids_;  // FAISS row -> external id (stale for a removed row)
  IdRows row_of_;              // external id -> FAISS row, for the ids held
  RowBits removed_;            // by row
};

// FAISS labels (row numbers, -1 for none) to external ids: through `ids` (row -> id) when
// given, else the row itself; a missing label becomes kNoId with a score of -Infinity.
void MapFaissLabels(const std::vector<int64_t>& labels, std::vector<float>* scores,
                    const std::vector<uint32_t>* ids, std::vector<uint32_t>* out_ids);

}  // namespace recserve
