// The exact inner-product index: N rows of dimension d with external uint32 ids, scanned
// in full for every batch of queries. No N-API here; native/exact/exact_binding.cc wraps it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "common/huge_alloc.h"
#include "common/id_rows.h"
#include "cuda/exact_cuda.h"
#include "exact/kernels.h"

namespace recserve {

enum class Storage { F32, F16 };

struct SearchRequest {
  const float* queries = nullptr;  // nq rows of d floats, unpadded
  size_t nq = 0;
  size_t k = 0;
  // Per query (empty, or nq entries): sorted ids to skip. An empty inner vector skips none.
  const std::vector<std::vector<uint32_t>>* exclude = nullptr;
  // When set: only these ids are candidates (unknown ids are ignored: they match nothing).
  const std::vector<uint32_t>* allow = nullptr;
};

struct SearchResult {
  static constexpr uint32_t kNoId = 0xFFFFFFFFu;
  std::vector<uint32_t> ids;  // nq * k, best first, padded with kNoId
  std::vector<float> scores;  // nq * k, padded with -Infinity
};

// Tunables, named so benchmarks can report them and tests can force the parallel path.
struct ExactTuning {
  // Rows one task scans before the pool is worth waking: below ~this many rows per task,
  // the hand-off costs more than the second core gives back.
  size_t min_rows_per_task = 16384;
  // The scan's threads claim its blocks as they go, each claim a run of consecutive blocks:
  // those left over claim_divisor x threads, at least one (0: one block at a time). Long
  // runs first keep each core's reads sequential; single blocks at the end let the threads
  // finish together, and a core that other work slows takes fewer. Against 8 equal runs per
  // thread: 0.81-0.98 of the time at B = 4 and 8, 0.93-1.02 at B = 1 and 32 (one reading of
  // 1.07), 100k x 64 and x 128, both storages; 0.97-0.99 at 1M rows (bench:exact-ab
  // --kernels avx512-bf16,avx512-bf16 with either tuned, either way round). Divisors 1, 2
  // and 4 measured alike.
  size_t claim_divisor = 2;
  // Target bytes of item rows per cache block for the batch kernels (pack_min_batch and
  // up); the block is reused by every query of the batch before the scan moves on (one
  // pass over item memory per batch).
  size_t block_bytes = 32 * 1024;
  // The same for the direct scans of smaller batches (B = 1 among them), where each block
  // costs its bookkeeping (the shared floors, the filter's call, the ids' prefetch) and
  // little is reused. 64 KiB against 32: 0.92-0.98 of the time at 100k rows, B = 1 and 4,
  // d = 64 and 128, both storages (one outlier 1.06 not repeated over 60 rounds), 0.97-1.03
  // at 1M rows (bench:exact-ab --kernels avx512-bf16,avx512-bf16 --tune-a); 128 KiB no
  // faster than 64. The batch kernels' block stays at 32 KiB: 64 took 1.07x at B = 32.
  size_t scan_block_bytes = 64 * 1024;
  // Batches of at least this many queries are scored by the batch (query-panel) kernels
  // (Kernels::panel_f32, see kernels_avx2.cc), which also filter by the top-k thresholds;
  // 0 never uses them, nor does the scalar kernel set, which has none.
  size_t pack_min_batch = 12;
  // Where the index keeps int8 codes (the screen), batches of at least this many queries
  // (and fewer than pack_min_batch) take the batch kernels too: a single-panel screen tile
  // scores 16 queries at about what a direct scan spends on one. Against the direct scans
  // (screen_min_batch 0), 100k x 64 and x 128, both storages: 0.24-0.52 of the time at
  // B = 8 and 11, 0.55-0.83 at B = 3 and 4 (0.97 once, float16 at 1M x 64), where B = 2
  // through the screen measured 0.87-1.17, all before the screen's half-width tile
  // (kernels_avx512.cc, I8Lanes) (bench:exact-ab --kernels avx512-bf16,avx512-bf16
  // --tune-a '{"screenMinBatch":0}', and '{"packMinBatch":2}' for B = 2). 0 leaves such
  // batches to pack_min_batch; pack_min_batch 0 still turns every batch kernel off. The
  // index starts from its kernel set's figure for its storage (Kernels::screen_min_batch_f16,
  // _f32): 3 for float16 and 2 for float32 in every set (the AVX2 set's were 6 and 4 until
  // its kernel for B <= 4, now ScreenI8Split in kernels_avx2.cc). Since the AVX-512
  // screen scores groups of up to 8 queries 8 lanes wide, single queries through it
  // measured, against the direct scan: float32 0.51-0.87 of the time at 100k rows and
  // 0.35-0.36 at 1M; float16 1.17-1.61 at 100k, 0.82-1.05 at 1M (--tune-b
  // '{"screenMinBatch":1}'). They stay direct by default:
  // through the screen a float32 single query reads a byte an element, as a float16 one
  // does, so float16 would stop being the faster storage at B = 1 (an open choice,
  // bench/README.md), and a single query would take the guess's rare retries (1-5 in
  // 10,000) as batches do.
  size_t screen_min_batch = 3;
  // Larger scans take smaller batches through the screen: from this many bytes of stored
  // rows scanned (all rows, or an allow list's), one query fewer than screen_min_batch, and
  // one fewer again at each doubling, down to 2 (0: screen_min_batch alone). A direct scan
  // of a small batch reads every stored row, the screen a byte an element, and the screen's
  // fixed costs (packing, the guess, the merge's rescoring) matter less as the rows grow.
  // The index starts from its kernel set's figure for its storage
  // (Kernels::screen_step_bytes_f16, _f32): the AVX2 set's 12 MiB for float16, which takes
  // float16 batches of 2 through its screen from there (kernels_avx2.cc); none for
  // float32, and none in the AVX-512 sets (not measured there).
  size_t screen_step_bytes = 0;
  // Batches of at least this many queries are scored with BLAS sgemm (OpenBLAS threads
  // itself) instead of the register-tiled kernels; 0 turns the path off. Only in builds
  // with BLAS (the CMake addon), and only for full scans (no allow list).
  size_t sgemm_min_batch = 0;
  // Item rows per sgemm call.
  size_t sgemm_rows = 4096;
  // Guessed floors for the batch kernels' scans (0 turns them off). Before the scan, a
  // stratified sample of S = guess_rank * N / (3k) rows is scored, and each query starts at
  // its guess_rank-th best sample score: about the 3k-th best of all N instead of minus
  // infinity. A guess is not a bound, so each query's result is checked: its k-th best
  // must reach the guess, or the query is searched again without one. With the sample
  // drawn at random, a guess overshoots the k-th best in P(Poisson(r / 3) >= r) of the
  // queries (3e-4 at r = 14). Used where the sample is at most 1/16 of the rows (k >= 75
  // at r = 14) and N >= guess_min_rows.
  size_t guess_rank = 14;
  size_t guess_min_rows = 16384;
};

class ExactIndex {
 public:
  // The least and greatest finite element of a row as stored, and 0 (the padding's).
  using Range = std::pair<float, float>;

  // int8_screen: keep an int8 code row beside every stored row (I8RowBytes(dpad) bytes more
  // a row) and score batches through the kernels' int8 screen (Kernels::screen_i8), whose
  // results are the float32 kernels'. Requires kernels.screen_i8.
  ExactIndex(size_t dim, Storage storage, size_t threads, const Kernels& kernels,
             bool int8_screen = false);

  size_t Dim() const { return dim_; }
  size_t Size() const;
  // Rows the buffers hold before an upsert must grow them (Build leaves headroom).
  size_t Capacity() const;
  Storage StorageKind() const { return storage_; }
  size_t Threads() const { return threads_; }
  const Kernels& KernelSet() const { return kernels_; }
  bool Int8Screen() const { return i8_; }
  // The settings, and new ones for every search that starts after. A search reads them
  // under its read lock and SetTuning takes the write lock, so each search runs on one
  // setting throughout (a guess rank changed between the check that a guess applies and the
  // guess itself would have sampled for rank 0).
  ExactTuning Tuning() const;
  void SetTuning(const ExactTuning& tuning);

  // Replaces the contents. Throws ArgumentError on duplicate ids and on the id kNoId (it
  // pads short results), before anything changes.
  void Build(const uint32_t* ids, const float* vectors, size_t n);
  // Inserts new ids and overwrites existing ones; visible to every search that starts after.
  // Throws ArgumentError on the id kNoId, before anything changes.
  void Upsert(const uint32_t* ids, const float* vectors, size_t n);
  // Removes ids; throws ArgumentError (and changes nothing) when one is unknown.
  void Remove(const uint32_t* ids, size_t n);

  void Search(const SearchRequest& req, SearchResult* out) const { Search(req, out, true); }
  // Queries searched again because their guessed floor overshot (ExactTuning::guess_rank).
  uint64_t GuessRetries() const { return guess_retries_.load(); }
  // Times the int8 screen rescored a query's candidates during a scan because its bound
  // could not narrow them (ScreenTopK in exact_index.cc).
  uint64_t ScreenPrunes() const { return screen_prunes_.load(); }
  // Batches searched through the int8 screen (ExactTuning::screen_min_batch).
  uint64_t ScreenedBatches() const { return screened_batches_.load(); }
  // Upserts that fitted the int8 screen again (more outlier rows than it leaves out: Upsert).
  uint64_t ScreenRefits() const { return screen_refits_.load(); }
  // Rows the int8 screen leaves out, now (outliers_): batches score them exactly.
  size_t ScreenOutliers() const;
  // Upserts that grew the buffers: those whose row pages moved into the larger ones, and
  // those that copied the rows (buffers under 1 MiB, which are not mappings of their own,
  // or where the kernel refused the move).
  uint64_t GrowsMoved() const { return grows_moved_.load(); }
  uint64_t GrowsCopied() const { return grows_copied_.load(); }

  // True when this build has the BLAS path (see ExactTuning::sgemm_min_batch).
  static bool HasSgemm();

  // Routes float32 full scans to the CUDA backend when a device answers; returns whether
  // it is in use. Any later CUDA failure turns it off for good and the CPU engine serves
  // that same search, so callers never see a GPU error.
  bool EnableCuda();
  bool CudaActive() const { return cuda_active_.load(); }

 private:
  struct Buffer {
    uint8_t* data = nullptr;
    size_t capacity = 0;  // rows
    // Where it maps (Linux), data is map.data() and a larger buffer can take its pages
    // (MappedRegion::TakePages); elsewhere data is AllocLarge's.
    MappedRegion map;
    ~Buffer() {
      if (!map.data()) std::free(data);
    }
  };
  // An empty buffer of `rows` rows of `row_bytes`.
  static std::unique_ptr<Buffer> NewBuffer(size_t rows, size_t row_bytes);

  size_t RowBytes() const { return dpad_ * (storage_ == Storage::F32 ? 4 : 2); }
  // Stored row `row`'s float32 score for a padded query, by the kernel set's rescoring
  // kernels (Kernels::exact_f32/f16: the sets with the int8 screen). Caller holds the
  // shared lock.
  float ExactScore(uint32_t row, const float* query) const;
  // Writes n unpadded input vectors as padded rows at dst; returns a bound on the stored
  // rows' Euclidean norms (rounded up). With ranges: also each row's Range, in order.
  float EncodeRows(const float* vectors, size_t n, uint8_t* dst,
                   std::vector<Range>* ranges = nullptr) const;
  // The Range of each of n stored rows at `rows`.
  std::vector<Range> RowRanges(const uint8_t* rows, size_t n) const;
  // Larger row and code buffers when `rows` rows would not fit (empty otherwise). Mapped
  // ones are filled later, under the unique lock, by moving the current buffers' pages
  // into them (moves: Install); others hold copies made here, while searches go on reading
  // the current buffers. The caller holds write_mu_, so no writer changes them meanwhile.
  struct Grown {
    std::unique_ptr<Buffer> rows, codes;
    bool move_rows = false, move_codes = false;
  };
  Grown Grow(size_t rows) const;
  // Under the unique lock: puts grown buffers in place of the current ones, moving their
  // pages first where Grow left that to here (a copy where the kernel refuses the move).
  // The replaced buffers go back in `grown`, to be freed after the lock.
  void Install(Grown* grown);
  // The row each of an upsert's n ids will write (Upsert's loop under the lock assigns
  // them): its id's, or for a new id the next row in order of first appearance; and the
  // row count after. The caller holds write_mu_.
  std::vector<uint32_t> BatchRows(const uint32_t* ids, size_t n, size_t* rows_after) const;
  // Writes the int8 code rows (I8Screen) of n stored rows at dst, with screen->scale and
  // zero. Rows that code within the screen's step widen its err, l1 and amax to cover them;
  // the others (an element past the range, or not finite) go to `outliers` as first + i.
  void EncodeCodes(const uint8_t* rows, size_t n, uint8_t* dst, I8Screen* screen,
                   std::vector<uint32_t>* outliers, uint32_t first = 0) const;
  void Search(const SearchRequest& req, SearchResult* out, bool guess) const;
  // Caller holds the shared lock. Each query's guess_rank-th best score over a sample of
  // the scan list (rows, or allowed when non-null); screen: scored by the int8 screen.
  std::vector<float> GuessFloors(const float* qpad, size_t nq, size_t k, size_t total,
                                 const std::vector<uint32_t>* allowed, size_t block,
                                 bool screen) const;

  // Writers take gate_ before the unique lock, and readers pass through gate_ before the
  // shared lock, so a steady stream of searches cannot starve an upsert (glibc's rwlock
  // prefers readers).
  std::shared_lock<std::shared_mutex> ReadLock() const;

  const size_t dim_;
  const size_t dpad_;
  const Storage storage_;
  const size_t threads_;
  const Kernels& kernels_;
  const bool i8_;
  ExactTuning tuning_;

  // Build's swap, Upsert and Remove, one at a time (searches never take it): under it an
  // Upsert reads the rows (to copy them into larger buffers, or code them again for the
  // screen) before it takes gate_.
  std::mutex write_mu_;
  mutable std::mutex gate_;
  mutable std::shared_mutex rw_;
  // The CUDA backend's device copy of the rows, refreshed when version_ moved on.
  bool SearchCuda(const float* qpad, size_t nq, size_t k,
                  const std::vector<const std::vector<uint32_t>*>& ex, void* heaps) const;
  mutable std::atomic<uint64_t> guess_retries_{0};
  mutable std::atomic<uint64_t> screen_prunes_{0};
  mutable std::atomic<uint64_t> screened_batches_{0};
  std::atomic<uint64_t> grows_moved_{0}, grows_copied_{0}, screen_refits_{0};
  mutable std::atomic<bool> cuda_active_{false};
  mutable std::mutex cuda_mu_;
  mutable std::unique_ptr<CudaRows> cuda_rows_;
  mutable uint64_t cuda_version_ = ~uint64_t(0);
  uint64_t version_ = 0;  // bumped by every write, under the unique lock

  std::unique_ptr<Buffer> rows_;
  // With i8_: row r's int8 code row at codes_->data + r * I8RowBytes(dpad_), same capacity
  // as rows_, moved with it by every write; screen_ holds the scale and error bounds.
  std::unique_ptr<Buffer> codes_;
  I8Screen screen_;
  // With i8_: the rows, ascending, whose codes the screen's bounds do not cover (an element
  // past its range: EncodeCodes). Screened batches skip them and score them exactly, so a
  // few far-out rows do not widen the one step and error bound every other row is screened
  // with. Build fits the range to leave out up to OutlierBudget rows where that narrows it
  // enough (ScreenRange); upserts add rows past it here, up to OutlierCap, then fit again.
  std::vector<uint32_t> outliers_;
  size_t n_ = 0;
  // At least the largest norm of a stored row (removals leave it): the bfloat16 batch
  // kernels' error margins scale with it (Kernels::pack_queries).
  float row_norm_max_ = 0;
  std::vector<uint32_t> ids_;                      // row -> id
  IdRows row_of_;  // id -> row
};

}  // namespace recserve
