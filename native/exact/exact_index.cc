#include "exact/exact_index.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>

#ifdef RECSERVE_WITH_BLAS
#include <cblas.h>
#endif

#include "common/errors.h"
#include "common/huge_alloc.h"
#include "common/thread_pool.h"

namespace recserve {
namespace {

// A candidate as one integer whose order is the result order: the score's bits mapped so
// that unsigned order is float order (-0 folded into +0, as float compare sees them) in
// the high half, the id's complement in the low half (equal scores: smaller id first). The
// selection below then compares plain integers; with a (score, id) comparator the
// nth_element cuts spent most of their time on the float compares' branches.
using Key = uint64_t;
inline Key MakeKey(float score, uint32_t id) {
  score += 0.0f;  // -0 + 0 = +0
  uint32_t u;
  std::memcpy(&u, &score, 4);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<Key>(u) << 32) | static_cast<uint32_t>(~id);
}
inline float KeyScore(Key key) {
  uint32_t u = static_cast<uint32_t>(key >> 32);
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t KeyId(Key key) { return ~static_cast<uint32_t>(key); }

// Reorders a[0, n) so that a[m] holds what a descending sort would put there, with
// everything before it >= a[m] >= everything after it (std::nth_element with
// std::greater). Quickselect whose partition has no data-dependent branch: each element is
// swapped to the front part and the front grows by (v >= pivot). On candidate keys the
// comparisons are coin flips, and std::nth_element's branchy partition mispredicted about
// half of them.
inline void NthLargest(Key* a, size_t n, size_t m) {
  size_t lo = 0, hi = n;  // a[m] is in [lo, hi); [0, lo) >= [lo, hi) >= [hi, n)
  while (hi - lo > 16) {
    const Key x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
    const Key p = std::max(std::min(x, y), std::min(std::max(x, y), z));  // median of 3
    size_t j = lo;
    for (size_t i = lo; i < hi; i++) {
      const Key v = a[i];
      a[i] = a[j];
      a[j] = v;
      j += v >= p;
    }
    // [lo, j) >= p > [j, hi). The front always holds p; with distinct keys the back holds
    // at least the smallest of the three. Equal keys could leave the back empty, and such
    // a range goes to the library.
    if (j == hi) {
      std::nth_element(a + lo, a + m, a + hi, std::greater<Key>());
      return;
    }
    if (m < j) {
      hi = j;
    } else {
      lo = j;
    }
  }
  std::sort(a + lo, a + hi, std::greater<Key>());
}

// One query's running top-k: an unsorted buffer of candidates, cut back to the best k with
// NthLargest whenever it holds 2k. Only scores above Threshold() are offered, and the
// threshold rises at each cut. On uniform data a scan inserts about k ln(N/k) candidates
// per query; a binary heap paid ~150 cycles for each (sift down and up over k entries),
// which was a third of a B = 32 search over 100k x 64 at k = 100. Appending costs a few
// cycles, and a cut costs O(2k) per k inserts.
class TopK {
 public:
  void Reset(size_t k) {
    k_ = k;
    cap_ = std::max<size_t>(2 * k, 16);
    buf_.clear();
    buf_.reserve(std::min<size_t>(cap_, 8192));
    threshold_ = -std::numeric_limits<float>::infinity();
    threshold_key_ = 0;
  }
  // A candidate can be among the best k only if its score is at least Threshold()
  // (-Infinity until k are known) and its key above ThresholdKey() (0 until then).
  float Threshold() const { return threshold_; }
  Key ThresholdKey() const { return threshold_key_; }
  // Returns whether the threshold rose.
  bool Push(Key key) {
    buf_.push_back(key);
    if (buf_.size() < cap_) return false;
    Cut();
    return true;
  }
  // Raises Threshold() to a score that k candidates elsewhere (another thread's part of the
  // scan) reach: nothing below it can be among the best k of the whole scan. The key stays
  // this buffer's own, so a tie with the floor is still decided by id.
  void RaiseFloor(float floor) { threshold_ = std::max(threshold_, floor); }
  // The kept candidates, unordered: the best k of all pushed, possibly with more behind
  // them (the merge sorts and keeps k).
  const std::vector<Key>& Entries() const { return buf_; }

 private:
  void Cut() {
    NthLargest(buf_.data(), buf_.size(), k_ - 1);
    buf_.resize(k_);
    // The k-th best after the selection; everything before it is at least as good.
    threshold_key_ = buf_[k_ - 1];
    threshold_ = std::max(threshold_, KeyScore(threshold_key_));
  }

  size_t k_ = 0;
  size_t cap_ = 0;
  float threshold_ = 0;
  Key threshold_key_ = 0;
  std::vector<Key> buf_;
};

// The least batch the screen takes where a scan reads `bytes` of stored rows
// (ExactTuning::screen_step_bytes): screen_min_batch, less one from step bytes and one more
// at each doubling, never below 2 (nor above screen_min_batch: 0 and 1 stay as set).
inline size_t ScreenMinBatch(const ExactTuning& t, size_t bytes) {
  size_t b = t.screen_min_batch;
  if (t.screen_step_bytes == 0 || b <= 2) return b;
  for (size_t step = t.screen_step_bytes; bytes >= step && b > 2; step *= 2) {
    b--;
    if (step > SIZE_MAX / 2) break;
  }
  return b;
}

// Keeps in v[0, n) (n > k screen keys, I8Key) the k best by D and every key within margin
// of the k-th best, D_k: a pair more than margin below D_k scores below k others in float32
// (I8Query), so it cannot be among the best k. Raises *floor to D_k - margin; returns how
// many stay (the k best first).
inline size_t CutByScreen(Key* v, size_t n, size_t k, int64_t margin, int32_t* floor) {
  NthLargest(v, n, k - 1);
  const int64_t f = int64_t(I8KeyScore(v[k - 1])) - margin;
  if (f <= int64_t(INT32_MIN)) return n;
  size_t kept = k;
  for (size_t i = k; i < n; i++)
    if (I8KeyScore(v[i]) >= f) v[kept++] = v[i];
  *floor = std::max(*floor, static_cast<int32_t>(f));
  return kept;
}

// One query's running candidates under the int8 screen, kept by integer score alone:
// nothing is rescored while the scan runs, and the rows that survive are rescored in
// float32 once, at the end (Search's merge). An unsorted buffer as TopK, which the kernel
// (Kernels::screen_i8) appends to directly, up to `fill` (the caller's count, kept in one
// array for all queries), with room for `room` more keys past Cap(); cut by CutByScreen
// once full, and the floor (the least D the kernel passes) rises at each cut. Rescoring the
// pairs as the scan found them read a stored row for each, and was a third of a
// 100k x 64 float16 B = 32 search (perf).
// Where the band within the margin holds more than 8k + 1024 rows (bounds loose against
// the scores' spread, or no bound at all: a query of zeros), prune() rescores the buffer
// and keeps its best k in float32, so the buffer stays bounded and such a query costs what
// rescoring every pair costs.
class ScreenTopK {
 public:
  void Reset(size_t k, int64_t margin, size_t room) {
    k_ = k;
    margin_ = margin;
    room_ = room;
    cap_ = std::max<size_t>(2 * k, 16);
    valve_ = 8 * k + 1024;
    Grow(0, cap_ + room_);
    floor_ = INT32_MIN;
  }
  int32_t Floor() const { return floor_; }
  void RaiseFloor(int32_t f) { floor_ = std::max(floor_, f); }
  Key* Data() { return buf_.get(); }
  size_t Cap() const { return cap_; }
  // Cuts buf[0, *fill); prune(keys, &n, k, &floor) keeps the best k of keys[0, n) by
  // float32 score and raises floor to what the k-th needs. Data() may move. Returns whether
  // the floor rose.
  template <class Prune>
  bool Cut(uint32_t* fill, const Prune& prune) {
    const int32_t before = floor_;
    size_t n = CutByScreen(buf_.get(), *fill, k_, margin_, &floor_);
    if (n > valve_) prune(buf_.get(), &n, k_, &floor_);
    *fill = static_cast<uint32_t>(n);
    cap_ = std::max(2 * k_, n + k_);
    Grow(n, cap_ + room_);
    return floor_ > before;
  }

 private:
  size_t k_ = 0;
  size_t cap_ = 0;
  size_t room_ = 0;
  size_t valve_ = 0;
  int64_t margin_ = 0;
  int32_t floor_ = INT32_MIN;
  // Uninitialised (the kernel writes before anything reads): zeroing a vector's 3.6 KB for
  // each of 2 x 32 queries was a memset of 230 KB a B = 32 search.
  std::unique_ptr<Key[]> buf_;
  size_t size_ = 0;

  // At least n keys, the first `keep` kept.
  void Grow(size_t keep, size_t n) {
    if (size_ >= n) return;
    std::unique_ptr<Key[]> b(new Key[n]);
    if (keep > 0) std::memcpy(b.get(), buf_.get(), keep * sizeof(Key));
    buf_ = std::move(b);
    size_ = n;
  }
};

// Ids are uint32 below kNoId: that value pads the results of queries with fewer than k
// candidates, so an item holding it would read as padding (and the HNSW index's files
// reject it).
void CheckIds(const uint32_t* ids, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (ids[i] == SearchResult::kNoId)
      ThrowRange("ids[" + std::to_string(i) + "]: id " + std::to_string(ids[i]) +
                 " is reserved (it pads results shorter than k)");
  }
}

// Share of the rows from which an allow list is applied while reading every row rather than
// by gathering the allowed ones (direct kernels only; see Search), per storage. Float32 rows
// are whole cache lines, so gathering them wastes less of each read, and it stays the
// cheaper way further: at 30% allowed, reading every float32 row took 1.27-1.38x the time
// of gathering (bench:exact-ab --allow, 1M x 64 and x 128), float16 rows 0.85-0.95x.
constexpr double kDenseAllowF16 = 0.25;
constexpr double kDenseAllowF32 = 0.5;

inline bool Excluded(const std::vector<uint32_t>* ex, uint32_t id) {
  return ex != nullptr && std::binary_search(ex->begin(), ex->end(), id);
}

// Offers one block of scores (row i of the block is storage row row_of(i)) to a query's
// top-k. Only candidates above the threshold reach the exclusion check and the buffer, so
// exclusions cost nothing for the rows that could not enter anyway. hits is scratch of at
// least nr entries.
template <typename RowOf>
inline bool Offer(const Kernels& kern, TopK& top, const float* s, size_t nr, RowOf row_of,
                  const uint32_t* ids, const std::vector<uint32_t>* exq, uint32_t* hits,
                  const RowSet* admit = nullptr) {
  // Once the threshold is up almost no score reaches it: the SIMD filter finds the few
  // that do in one pass. Scores equal to the threshold pass it, and their keys decide (a
  // smaller id wins a tie); a cut inside the loop raises the threshold, hence the key test.
  const size_t nh = kern.select_at_least(s, nr, top.Threshold(), hits);
  bool rose = false;
  for (size_t h = 0; h < nh; h++) {
    const size_t i = hits[h];
    const uint32_t row = row_of(i);
    const uint32_t id = ids[row];
    const Key key = MakeKey(s[i], id);
    if (key <= top.ThresholdKey() || Excluded(exq, id) || (admit && !admit->Has(row))) continue;
    rose |= top.Push(key);
  }
  return rose;
}

// Each query's best threshold among the threads of one scan. A thread's k-th best score is a
// floor for every thread: k candidates reach it already. Sharing it, a thread stops offering
// what another thread's part has beaten; alone, each of T threads inserted about
// k ln(N / (T k)) candidates per query instead of the whole scan's k ln(N / k) between them.
// (T: float32 thresholds, or the int8 screen's integer floors.)
template <class T>
class SharedFloors {
 public:
  explicit SharedFloors(size_t nq) : f_(new std::atomic<T>[nq]) {
    const T least = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                         : std::numeric_limits<T>::lowest();
    for (size_t q = 0; q < nq; q++) f_[q].store(least);
  }
  T Get(size_t q) const { return f_[q].load(std::memory_order_relaxed); }
  void Publish(size_t q, T t) {
    T cur = f_[q].load(std::memory_order_relaxed);
    while (t > cur && !f_[q].compare_exchange_weak(cur, t, std::memory_order_relaxed)) {
    }
  }

 private:
  std::unique_ptr<std::atomic<T>[]> f_;
};

// A batch kernel's scratch, 64-byte aligned. Up to kKeptFloats of it stay with the thread
// between searches: freed after each search, the pool threads' malloc arena gave the pages
// back to the kernel, and the next search's first writes (the tiles' scores, the packed
// queries) faulted them in again, zeroed. 100k x 64 float16, B = 32, two threads, 2 x 300
// rounds of bench:exact-ab: ~2,700 page faults before, ~600 after, all in malloc's own
// bookkeeping for the search's other buffers (perf record -e page-faults). A second scratch
// live on the same thread gets memory of its own.
class AlignedFloats {
 public:
  explicit AlignedFloats(size_t n) {
    Kept& k = kept_;
    if (n <= kKeptFloats && !k.in_use) {
      if (k.n < n) {
        std::free(k.p);
        k.p = Allocate(n);
        k.n = n;
      }
      k.in_use = true;
      p_ = k.p;
      owned_ = false;
    } else {
      p_ = Allocate(n);
    }
  }
  ~AlignedFloats() {
    if (owned_) {
      std::free(p_);
    } else {
      kept_.in_use = false;
    }
  }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* get() const { return p_; }

 private:
  static constexpr size_t kKeptFloats = size_t(1) << 18;  // 1 MiB
  struct Kept {
    float* p = nullptr;
    size_t n = 0;
    bool in_use = false;
    ~Kept() { std::free(p); }
  };
  static float* Allocate(size_t n) {
    float* p = static_cast<float*>(std::aligned_alloc(64, (n * 4 + 127) / 64 * 64));
    if (!p) throw std::bad_alloc();
    return p;
  }
  static thread_local Kept kept_;
  float* p_;
  bool owned_ = true;
};
thread_local AlignedFloats::Kept AlignedFloats::kept_;

}  // namespace

ExactIndex::ExactIndex(size_t dim, Storage storage, size_t threads, const Kernels& kernels,
                       bool int8_screen)
    : dim_(dim),
      dpad_(PaddedDim(dim)),
      storage_(storage),
      threads_(std::max<size_t>(
          1, std::min<size_t>(threads == 0 ? SIZE_MAX : threads,
                              ThreadPool::Shared().Workers() + 1))),
      kernels_(kernels),
      i8_(int8_screen && kernels.screen_i8 != nullptr),
      rows_(new Buffer()),
      codes_(new Buffer()) {
  const bool f16 = storage == Storage::F16;
  tuning_.screen_min_batch = f16 ? kernels.screen_min_batch_f16 : kernels.screen_min_batch_f32;
  tuning_.screen_step_bytes = f16 ? kernels.screen_step_bytes_f16 : kernels.screen_step_bytes_f32;
}

size_t ExactIndex::Size() const {
  auto lk = ReadLock();
  return n_;
}

size_t ExactIndex::Capacity() const {
  auto lk = ReadLock();
  return rows_->capacity;
}

ExactTuning ExactIndex::Tuning() const {
  auto lk = ReadLock();
  return tuning_;
}

void ExactIndex::SetTuning(const ExactTuning& tuning) {
  std::lock_guard<std::mutex> g(gate_);
  std::unique_lock<std::shared_mutex> lk(rw_);
  tuning_ = tuning;
}

std::shared_lock<std::shared_mutex> ExactIndex::ReadLock() const {
  { std::lock_guard<std::mutex> g(gate_); }
  return std::shared_lock<std::shared_mutex>(rw_);
}

size_t ExactIndex::ScreenOutliers() const {
  auto lk = ReadLock();
  return outliers_.size();
}

float ExactIndex::EncodeRows(const float* vectors, size_t n, uint8_t* dst,
                             std::vector<Range>* ranges) const {
  const size_t rb = RowBytes();
  std::memset(dst, 0, n * rb);
  if (storage_ == Storage::F32) {
    for (size_t i = 0; i < n; i++)
      std::memcpy(dst + i * rb, vectors + i * dim_, dim_ * sizeof(float));
  } else {
    for (size_t i = 0; i < n; i++)
      kernels_.to_f16(vectors + i * dim_, reinterpret_cast<uint16_t*>(dst + i * rb), dim_);
  }
  // The norms of the rows as stored (float16 rows decoded: an element beyond its range is
  // infinite, and the bound with it), rounded up.
  std::vector<float> row(storage_ == Storage::F16 ? dpad_ : 0);
  double max2 = 0;
  if (ranges) ranges->assign(n, Range{0.f, 0.f});  // the padding's zeros count
  for (size_t i = 0; i < n; i++) {
    const float* v = vectors + i * dim_;
    if (storage_ == Storage::F16) {
      kernels_.from_f16(reinterpret_cast<const uint16_t*>(dst + i * rb), row.data(), dpad_);
      v = row.data();
    }
    double s = 0;
    for (size_t j = 0; j < dim_; j++) s += double(v[j]) * v[j];
    max2 = std::max(max2, s);
    // (Only indexes with the int8 screen ask, and their kernel set has finite_range.)
    if (ranges) kernels_.finite_range(v, dim_, &(*ranges)[i].first, &(*ranges)[i].second);
  }
  const double bound = std::sqrt(max2) * (1 + 1e-6);
  return static_cast<float>(std::min<double>(bound, std::numeric_limits<float>::infinity()));
}

std::vector<ExactIndex::Range> ExactIndex::RowRanges(const uint8_t* rows, size_t n) const {
  const size_t rb = RowBytes();
  std::vector<Range> out(n, Range{0.f, 0.f});
  std::vector<float> row(storage_ == Storage::F16 ? dpad_ : 0);
  for (size_t i = 0; i < n; i++) {
    const float* v = reinterpret_cast<const float*>(rows + i * rb);
    if (storage_ == Storage::F16) {
      kernels_.from_f16(reinterpret_cast<const uint16_t*>(rows + i * rb), row.data(), dpad_);
      v = row.data();
    }
    kernels_.finite_range(v, dpad_, &out[i].first, &out[i].second);
  }
  return out;
}

// Room the int8 screen's refit (Upsert) leaves either side of the range it must cover, as
// a share of that range: a range creeping outward is fitted again at every eighth of
// growth, not at every batch, for a step an eighth coarser. (Throwaway script, 200k x 64
// float32 rows then 1,000 upserted at 1.5x, 2x and 4x the spread: margins 0, 1/8 and 1/4
// refitted 3, 3 and 2 times, and B = 32 batches ran 2.5-3.7 ms after each at every margin,
// within the runs' noise; that was before the outlier rows.) A range that leaves its most
// extreme rows out (ScreenRange) gets the same room, so that rows just past the bulk stay
// in.
constexpr double kRefitMargin = 0.125;

// The int8 screen leaves out of its range up to this many rows of n (ScreenRange), and
// upserts add rows past the range up to OutlierCap(n) before it is fitted again (Upsert).
// Each costs a batch one exact score per query: 1,000 rows at B = 32, d = 64 are ~2M
// multiply-adds, against the 2G products of screening 1M rows.
constexpr size_t OutlierBudget(size_t n) { return std::max<size_t>(16, n / 2048); }
constexpr size_t OutlierCap(size_t n) { return 2 * OutlierBudget(n); }
// Build leaves rows out only where that narrows the range by this factor or more: the
// step, and with it every pair's bound, shrinks in proportion. (A throwaway script: for
// 1M x 64 normal draws the whole range is 1.24x the one without the 488 most extreme rows,
// and 1.00x that one with its margin, so they keep it whole, and the scan its single runs;
// for the 1M-item bundle bench:load builds, 2.10x and 1.68x, and 130-odd rows go.)
constexpr double kTrimGain = 1.5;
// A row whose worst element codes with an error past this many steps was clamped (the
// in-range error is half a step, plus the coding's float rounding, far below 1/256).
constexpr double kOutlierSteps = 0.5 + 1.0 / 256;

// The screen's range for rows whose extremes are `rows`: all of them (widened by
// kRefitMargin of its width either side with `pad`), or, where that is at least kTrimGain
// times narrower, the range without the budget / 2 rows reaching lowest and the budget / 2
// reaching highest, widened by that margin: rows a little past the bulk stay in, and only
// those far out are left out. One item vector far out (a 10x element among 200k normal
// rows) had made every B = 32 batch 19-23x slower through the widened step
// (bench:exact-ab --data normal --far 1,10).
static ExactIndex::Range ScreenRange(const std::vector<ExactIndex::Range>& rows, size_t budget,
                                     bool pad) {
  ExactIndex::Range all{0.f, 0.f};
  for (const auto& r : rows) {
    all.first = std::min(all.first, r.first);
    all.second = std::max(all.second, r.second);
  }
  auto widen = [](double lo, double hi) {
    const double m = (hi - lo) * kRefitMargin;
    return ExactIndex::Range{static_cast<float>(lo - m), static_cast<float>(hi + m)};
  };
  const ExactIndex::Range whole = pad ? widen(all.first, all.second) : all;
  const size_t e = budget / 2;
  if (e == 0 || rows.size() <= 2 * e) return whole;
  std::vector<float> v(rows.size());
  for (size_t i = 0; i < rows.size(); i++) v[i] = rows[i].first;
  std::nth_element(v.begin(), v.begin() + e, v.end());
  const float lo = v[e];  // at most e rows reach below it
  for (size_t i = 0; i < rows.size(); i++) v[i] = rows[i].second;
  std::nth_element(v.begin(), v.begin() + e, v.end(), std::greater<float>());
  const float hi = v[e];
  ExactIndex::Range trimmed = widen(lo, hi);
  trimmed = {std::max(trimmed.first, all.first), std::min(trimmed.second, all.second)};
  const double wide = double(whole.second) - whole.first;
  return wide >= kTrimGain * (double(trimmed.second) - trimmed.first) ? trimmed : whole;
}

// The centre and step that code [lo, hi] as [-127, 127]; a step of 0 (all elements equal)
// codes every element as 0, with the whole of |x - z| in err.
static void FitScreen(ExactIndex::Range range, I8Screen* screen) {
  screen->zero = static_cast<float>((double(range.first) + range.second) / 2);
  const float s = static_cast<float>((double(range.second) - range.first) / 254);
  screen->scale = s >= std::numeric_limits<float>::min() ? s : 0.f;
}

void ExactIndex::EncodeCodes(const uint8_t* rows, size_t n, uint8_t* dst, I8Screen* screen,
                             std::vector<uint32_t>* outliers, uint32_t first) const {
  const size_t rb = RowBytes(), cb = I8RowBytes(dpad_);
  std::vector<float> row(dpad_);
  double err = screen->err, l1max = screen->l1, amax = screen->amax;
  const double clamped = kOutlierSteps * double(screen->scale);
  for (size_t i = 0; i < n; i++) {
    // The codes of the values as stored (float16 rows decoded), which the rescoring reads.
    const float* v = reinterpret_cast<const float*>(rows + i * rb);
    if (storage_ == Storage::F16) {
      kernels_.from_f16(reinterpret_cast<const uint16_t*>(rows + i * rb), row.data(), dpad_);
      v = row.data();
    }
    const I8RowCode c = kernels_.code_row_i8(v, dpad_, screen->scale, screen->zero,
                                             reinterpret_cast<int8_t*>(dst + i * cb));
    PutI8RowTrailer(dst + i * cb, dpad_, c);
    // A clamped element, or a non-finite one (a float16 overflow, coded 0), leaves the row
    // out of the screen: its codes are still written, but no batch reads them, and the
    // bounds stay those of the rows that fit. (A step of 0 clamps nothing: every element is
    // z, or the step underflowed and err takes the difference.)
    if (!c.finite || (clamped > 0 && c.err > clamped)) {
      outliers->push_back(first + static_cast<uint32_t>(i));
      continue;
    }
    l1max = std::max(l1max, double(c.l1));
    err = std::max(err, c.err);
    amax = std::max(amax, c.amax);
  }
  // Rounded up: the kernels' bounds take these as upper bounds.
  screen->err = RoundUpToFloat(err * (1 + 1e-9));
  screen->l1 = RoundUpToFloat(l1max);
  screen->amax = RoundUpToFloat(amax);
}

std::unique_ptr<ExactIndex::Buffer> ExactIndex::NewBuffer(size_t rows, size_t row_bytes) {
  // Rows start on cache lines whenever row_bytes is a multiple of 64; large stores sit on
  // 2 MiB pages (see common/huge_alloc.h).
  auto buf = std::make_unique<Buffer>();
  const size_t bytes = std::max<size_t>(rows * row_bytes, 64);
  if (bytes >= kHugePage / 2 && buf->map.Map(bytes))
    buf->data = buf->map.data();
  else
    buf->data = static_cast<uint8_t*>(AllocLarge(bytes));
  buf->capacity = rows;
  return buf;
}

// Build leaves room for upserts to come (WithHeadroom, common/huge_alloc.h). Growing a full
// buffer moves its pages into a larger mapping (Grow, Install): with the rows copied
// instead, an upsert at 1M x 64 float32 held its caller for 1 s, most of it faulting in the
// fresh pages.

ExactIndex::Grown ExactIndex::Grow(size_t rows) const {
  Grown g;
  if (rows <= rows_->capacity) return g;
  const size_t cap = std::max(WithHeadroom(rows), rows_->capacity + rows_->capacity / 2);
  g.rows = NewBuffer(cap, RowBytes());
  // Mapped buffers move their pages where the kernel allows it (tried once); otherwise
  // the rows are copied here, before the lock.
  const bool can_move = MappedRegion::CanTakePages();
  g.move_rows = can_move && rows_->map.data() && g.rows->map.data();
  if (!g.move_rows && n_ > 0) std::memcpy(g.rows->data, rows_->data, n_ * RowBytes());
  if (i8_) {
    g.codes = NewBuffer(cap, I8RowBytes(dpad_));
    g.move_codes = can_move && codes_->map.data() && g.codes->map.data();
    if (!g.move_codes && n_ > 0)
      std::memcpy(g.codes->data, codes_->data, n_ * I8RowBytes(dpad_));
  }
  return g;
}

void ExactIndex::Install(Grown* grown) {
  // Where the kernel refuses a move, the rows are copied here instead, under the lock:
  // slow, but whole.
  const auto put = [&](std::unique_ptr<Buffer>* cur, std::unique_ptr<Buffer>* next,
                       bool move, size_t row_bytes) {
    if (!*next) return false;
    bool moved = false;
    if (move) {
      moved = (*next)->map.TakePages(&(*cur)->map);
      if (moved)
        (*cur)->data = nullptr;  // its pages are next's now
      else if (n_ > 0)
        std::memcpy((*next)->data, (*cur)->data, n_ * row_bytes);
    }
    cur->swap(*next);
    return moved;
  };
  const bool grew = grown->rows != nullptr;  // (codes alone: a refit, Upsert)
  const bool moved = put(&rows_, &grown->rows, grown->move_rows, RowBytes());
  put(&codes_, &grown->codes, grown->move_codes, I8RowBytes(dpad_));
  if (grew) (moved ? grows_moved_ : grows_copied_)++;
}

void ExactIndex::Build(const uint32_t* ids, const float* vectors, size_t n) {
  CheckIds(ids, n);
  // Everything heavy happens before the lock: searches keep running on the old contents.
  IdRows row_of;
  if (n > 0) row_of.Expect(*std::max_element(ids, ids + n), n);
  for (size_t i = 0; i < n; i++) {
    if (row_of.Contains(ids[i]))
      ThrowRange("ids: duplicate id " + std::to_string(ids[i]) + " at index " +
                 std::to_string(i));
    row_of.Set(ids[i], static_cast<uint32_t>(i));
  }
  auto buf = NewBuffer(WithHeadroom(n), RowBytes());
  std::vector<Range> ranges;
  const float norm_max = EncodeRows(vectors, n, buf->data, i8_ ? &ranges : nullptr);
  auto codes = std::make_unique<Buffer>();
  I8Screen screen;
  std::vector<uint32_t> outliers;
  if (i8_) {
    // One centre and step for all rows: the range's least element codes as -127, its
    // greatest as 127 (ScreenRange: every row's, or all but a few far out).
    FitScreen(ScreenRange(ranges, OutlierBudget(n), false), &screen);
    codes = NewBuffer(WithHeadroom(n), I8RowBytes(dpad_));
    EncodeCodes(buf->data, n, codes->data, &screen, &outliers);
  }
  std::vector<uint32_t> idv(ids, ids + n);

  std::lock_guard<std::mutex> w(write_mu_);
  std::lock_guard<std::mutex> g(gate_);
  std::unique_lock<std::shared_mutex> lk(rw_);
  rows_ = std::move(buf);
  codes_ = std::move(codes);
  screen_ = screen;
  outliers_.swap(outliers);
  version_++;
  ids_ = std::move(idv);
  row_of_ = std::move(row_of);
  n_ = n;
  row_norm_max_ = norm_max;
}

std::vector<uint32_t> ExactIndex::BatchRows(const uint32_t* ids, size_t n,
                                            size_t* rows_after) const {
  std::vector<uint32_t> target(n);
  size_t total = n_;
  std::unordered_map<uint32_t, uint32_t> added;  // new id -> row (a new id may repeat)
  for (size_t i = 0; i < n; i++) {
    uint32_t row = row_of_.Find(ids[i]);
    if (row == IdRows::kNone) {
      const auto it = added.emplace(ids[i], static_cast<uint32_t>(total)).first;
      if (it->second == total) total++;
      row = it->second;
    }
    target[i] = row;
  }
  *rows_after = total;
  return target;
}

// The outlier list after a batch: `stored` (ascending rows of the stored contents) less
// the rows the batch writes, plus those it writes with an outlier (`coded`: the batch rows
// EncodeCodes left out; batch row i is written to target[i], and the last write of a row
// decides).
static std::vector<uint32_t> AfterBatch(const std::vector<uint32_t>& stored,
                                        const std::vector<uint32_t>& target,
                                        const std::vector<uint32_t>& coded) {
  std::vector<char> out_row(target.size(), 0);
  for (uint32_t i : coded) out_row[i] = 1;
  std::vector<std::pair<uint32_t, uint32_t>> w(target.size());  // (row, batch index)
  for (size_t i = 0; i < target.size(); i++) w[i] = {target[i], static_cast<uint32_t>(i)};
  std::sort(w.begin(), w.end());
  std::vector<uint32_t> out;
  out.reserve(stored.size() + coded.size());
  size_t a = 0;
  for (size_t j = 0; j < w.size(); j++) {
    if (j + 1 < w.size() && w[j + 1].first == w[j].first) continue;  // a later write wins
    const uint32_t row = w[j].first;
    while (a < stored.size() && stored[a] < row) out.push_back(stored[a++]);
    if (a < stored.size() && stored[a] == row) a++;
    if (out_row[w[j].second]) out.push_back(row);
  }
  out.insert(out.end(), stored.begin() + a, stored.end());
  return out;
}

void ExactIndex::Upsert(const uint32_t* ids, const float* vectors, size_t n) {
  CheckIds(ids, n);
  std::vector<uint8_t> encoded(n * RowBytes());
  std::vector<Range> ranges;
  const float norm_max = EncodeRows(vectors, n, encoded.data(), i8_ ? &ranges : nullptr);
  const size_t rb = RowBytes();

  std::lock_guard<std::mutex> w(write_mu_);
  // New ids, and room for them: larger buffers are made here, before gate_ and the write
  // lock, while searches go on reading the current ones (write_mu_ keeps other writers
  // out); they take the rows under the lock (Install). (A new id listed twice counts twice:
  // a little more room.)
  size_t fresh = 0;
  for (size_t i = 0; i < n; i++) fresh += !row_of_.Contains(ids[i]);
  const size_t total = n_ + fresh;
  Grown grown = Grow(total);
  if (!grown.rows) {
    // The new rows' pages fault in here rather than under the lock (searches never read
    // past row n_, nor does the prefault change what they read).
    rows_->map.Prefault(n_ * rb, fresh * rb);
    if (i8_) codes_->map.Prefault(n_ * I8RowBytes(dpad_), fresh * I8RowBytes(dpad_));
  }
  // Likewise the id map and the row -> id list, when they would reallocate under the lock
  // (IdRows::Reallocates): larger copies are made here and swapped in.
  const uint32_t max_id = n > 0 ? *std::max_element(ids, ids + n) : 0;
  std::optional<IdRows> id_room;
  if (n > 0 && row_of_.Reallocates(max_id, total)) id_room = row_of_.WithRoom(max_id, total);
  std::vector<uint32_t> ids_room;
  if (ids_.capacity() < total) {
    ids_room.reserve(std::max(total, ids_.size() + ids_.size() / 2));
    ids_room.assign(ids_.begin(), ids_.end());
  }
  // The code rows, before the lock too, with the index's centre and step. An empty index
  // takes this batch's; one whose step is 0 (every element so far equal to z, coded 0, and
  // exact with any step) takes a step from this batch about its centre. Rows with an element
  // past the range join the outliers (outliers_), which the screen leaves to exact scores.
  const size_t cb = I8RowBytes(dpad_);
  std::vector<uint8_t> codes(i8_ ? n * cb : 0);
  I8Screen screen = screen_;
  std::vector<uint32_t> outliers;
  const bool coding = i8_ && n > 0;
  if (coding) {
    Range range{0.f, 0.f};
    for (const auto& r : ranges)
      range = {std::min(range.first, r.first), std::max(range.second, r.second)};
    const double z = screen.zero, s = screen.scale;
    if (n_ == 0) {
      screen = I8Screen{};
      FitScreen(ScreenRange(ranges, OutlierBudget(n), false), &screen);
    } else if (s == 0) {
      const double reach = std::max(double(range.second) - z, z - double(range.first));
      const float step = static_cast<float>(reach / 127);
      if (step >= std::numeric_limits<float>::min()) screen.scale = step;
    }
    std::vector<uint32_t> coded;  // batch rows past the range
    EncodeCodes(encoded.data(), n, codes.data(), &screen, &coded);
    // Each batch row's stored row, where the outliers need it (when a row is out or was).
    std::vector<uint32_t> target;
    size_t rows_after = n_;
    if (!outliers_.empty() || !coded.empty()) {
      target = BatchRows(ids, n, &rows_after);
      outliers = AfterBatch(outliers_, target, coded);
    }
    if (outliers.size() > OutlierCap(rows_after)) {
      // More rows past the range than the screen leaves out: every row is coded again, into
      // a new buffer, with a range fitted to the rows after this batch (ScreenRange) and a
      // margin either side (the rows are stable: write_mu_ is held). Clamping them instead
      // widened the one error bound every pair shares: after 1,000 rows drawn at 1.5x the
      // spread of 200k built ones, a B = 32 search rescored so many pairs that it took 54x
      // as long, until the next build.
      std::vector<Range> all = RowRanges(rows_->data, n_);
      all.resize(rows_after);
      for (size_t i = 0; i < n; i++) all[target[i]] = ranges[i];
      screen = I8Screen{};
      FitScreen(ScreenRange(all, OutlierBudget(rows_after), true), &screen);
      if (!grown.codes) grown.codes = NewBuffer(codes_->capacity, cb);
      grown.move_codes = false;
      std::vector<uint32_t> stored;
      EncodeCodes(rows_->data, n_, grown.codes->data, &screen, &stored);
      coded.clear();
      EncodeCodes(encoded.data(), n, codes.data(), &screen, &coded);
      outliers = AfterBatch(stored, target, coded);
      screen_refits_++;
    }
  }

  std::lock_guard<std::mutex> g(gate_);
  std::unique_lock<std::shared_mutex> lk(rw_);
  Install(&grown);  // the old buffers go after the lock, as do the old id map and list
  if (id_room) std::swap(row_of_, *id_room);
  if (ids_room.capacity() > 0) ids_.swap(ids_room);
  version_++;
  row_norm_max_ = std::max(row_norm_max_, norm_max);
  screen_ = screen;
  if (coding) outliers_.swap(outliers);
  if (n > 0) row_of_.Expect(max_id, total);
  for (size_t i = 0; i < n; i++) {
    uint32_t row = row_of_.Find(ids[i]);
    if (row == IdRows::kNone) {
      row = static_cast<uint32_t>(n_++);
      row_of_.Set(ids[i], row);
      ids_.push_back(ids[i]);
    }
    std::memcpy(rows_->data + row * rb, encoded.data() + i * rb, rb);
    if (i8_) std::memcpy(codes_->data + size_t(row) * cb, codes.data() + i * cb, cb);
  }
}

void ExactIndex::Remove(const uint32_t* ids, size_t n) {
  const size_t rb = RowBytes();
  std::lock_guard<std::mutex> w(write_mu_);
  std::lock_guard<std::mutex> g(gate_);
  std::unique_lock<std::shared_mutex> lk(rw_);
  for (size_t i = 0; i < n; i++) {
    if (!row_of_.Contains(ids[i]))
      ThrowRange("ids[" + std::to_string(i) + "]: unknown id " + std::to_string(ids[i]));
  }
  version_++;
  for (size_t i = 0; i < n; i++) {
    const uint32_t row = row_of_.Find(ids[i]);
    if (row == IdRows::kNone) continue;  // listed twice
    // Swap-remove: the last row moves into the hole, so rows stay dense for the scan.
    const uint32_t last = static_cast<uint32_t>(n_ - 1);
    row_of_.Erase(ids[i]);
    if (!outliers_.empty()) {
      // The outlier list follows: the row leaves it, and the last row (the list's greatest,
      // where it is one) moves to the hole.
      auto at = std::lower_bound(outliers_.begin(), outliers_.end(), row);
      if (at != outliers_.end() && *at == row) outliers_.erase(at);
      if (row != last && !outliers_.empty() && outliers_.back() == last) {
        outliers_.pop_back();
        outliers_.insert(std::lower_bound(outliers_.begin(), outliers_.end(), row), row);
      }
    }
    if (row != last) {
      std::memcpy(rows_->data + row * rb, rows_->data + last * rb, rb);
      if (i8_) {
        const size_t cb = I8RowBytes(dpad_);
        std::memcpy(codes_->data + row * cb, codes_->data + last * cb, cb);
      }
      ids_[row] = ids_[last];
      row_of_.Set(ids_[row], row);
    }
    ids_.pop_back();
    n_--;
  }
}

bool ExactIndex::EnableCuda() {
  cuda_active_ = CudaDeviceCount() > 0;
  return cuda_active_;
}

// Caller holds the shared lock. Scores on the device in chunks of rows, offers each chunk
// on the host. Never run on a GPU: no machine this was written on has one.
bool ExactIndex::SearchCuda(const float* qpad, size_t nq, size_t k,
                            const std::vector<const std::vector<uint32_t>*>& ex,
                            void* heaps_out) const {
  auto& heaps = *static_cast<std::vector<TopK>*>(heaps_out);
  for (auto& h : heaps) h.Reset(k);
  std::lock_guard<std::mutex> g(cuda_mu_);
  std::string error;
  bool ok = true;
  if (!cuda_rows_ || cuda_version_ != version_) {
    if (!cuda_rows_) cuda_rows_ = std::make_unique<CudaRows>();
    ok = cuda_rows_->Upload(reinterpret_cast<const float*>(rows_->data), n_, dpad_, &error);
    if (ok) cuda_version_ = version_;
  }
  // Chunks of at most 2^24 scores (64 MiB) per round trip.
  const size_t chunk = std::max<size_t>(1, (size_t(1) << 24) / std::max<size_t>(1, nq));
  std::vector<float> scores;
  std::vector<uint32_t> hits;
  for (size_t r0 = 0; ok && r0 < n_; r0 += chunk) {
    const size_t nr = std::min(chunk, n_ - r0);
    scores.resize(nq * nr);
    hits.resize(nr);
    ok = cuda_rows_->Score(qpad, nq, r0, nr, scores.data(), &error);
    for (size_t q = 0; ok && q < nq; q++) {
      Offer(
          kernels_, heaps[q], scores.data() + q * nr, nr,
          [&](size_t i) { return static_cast<uint32_t>(r0 + i); }, ids_.data(), ex[q],
          hits.data());
    }
  }
  if (!ok) {
    cuda_active_ = false;
    cuda_rows_.reset();
  }
  return ok;
}

bool ExactIndex::HasSgemm() {
#ifdef RECSERVE_WITH_BLAS
  return true;
#else
  return false;
#endif
}

float ExactIndex::ExactScore(uint32_t row, const float* query) const {
  const uint8_t* p = rows_->data + static_cast<size_t>(row) * RowBytes();
  return storage_ == Storage::F16
             ? kernels_.exact_f16(reinterpret_cast<const uint16_t*>(p), query, dpad_)
             : kernels_.exact_f32(reinterpret_cast<const float*>(p), query, dpad_);
}

std::vector<float> ExactIndex::GuessFloors(const float* qpad, size_t nq, size_t k, size_t total,
                                           const std::vector<uint32_t>* allowed, size_t block,
                                           bool screen) const {
  const size_t r = tuning_.guess_rank;
  const size_t ns = (r * total + 3 * k - 1) / (3 * k);
  const size_t nq16 = PanelStride(nq);
  // Thresholds of +Infinity: the kernel reports no hit, rescores nothing, and leaves every
  // row's scores (a bfloat16 kernel's approximate ones, which serve a guess as well).
  const std::vector<float> never(nq16, std::numeric_limits<float>::infinity());
  const size_t rb = RowBytes();
  // The sample is split between the scan's threads, each keeping its own lists, merged
  // below: on one thread the guess took a sixth of a 100k x 64 float16 B = 32 search while
  // the other core waited (perf: 8% of the samples, all on one thread).
  const size_t tasks = std::max<size_t>(1, std::min(threads_, ns / std::max<size_t>(1, block)));
  // Per task and query: up to 2r sample candidates as keys (the score's order bits, then
  // the storage row), unsorted, cut back to the best r by NthLargest when full. A row's
  // scores reach the lists through select_each against the running r-th best, so the
  // typical row costs two vector compares. (std::nth_element over the whole sample, query
  // by query, took as long as the batch's whole top-k work; lists kept sorted by insertion
  // were 6% of a 100k x 64 float16 B = 32 search, most of it in the insertions' moves.)
  // Under the int8 screen the sample is scored by the screen's own kernel (screen_i8, four
  // products per lane and instruction against the bfloat16 tile's two, and no conversion of
  // the rows) in runs of kRun rows, which append screen keys (I8Key: the integer score, then
  // the row) to the lists directly: room for kRun more past the cap.
  constexpr size_t kRun = 12;
  const size_t cap = 2 * r;
  const size_t stride = cap + (screen ? kRun : 0);
  const double step = double(total) / double(ns);
  std::vector<Key> lists(tasks * nq * stride);
  std::vector<uint32_t> fill(tasks * nq, 0);
  const size_t cb = I8RowBytes(dpad_);
  // A call scores up to a block of sample rows, or one run under the screen: with blocks
  // of fewer rows than a run (a tuning of a few hundred bytes), the run sets the sizes.
  const size_t most = screen ? std::max(block, kRun) : block;
  auto part = [&](size_t t) {
    AlignedFloats scratch(ScoreScratchFloats(most, nq, dpad_));
    std::vector<int32_t> dfloor(screen ? nq16 : 0, INT32_MAX);
    std::vector<const uint8_t*> cptrs(screen ? most : 0);
    std::vector<Key*> out(screen ? nq : 0);
    for (size_t q = 0; q < out.size(); q++) out[q] = lists.data() + (t * nq + q) * stride;
    if (screen) {
      kernels_.pack_queries_i8(qpad, nq, dpad_, screen_, scratch.get());
      std::fill(dfloor.begin(), dfloor.begin() + nq, INT32_MIN);
    } else {
      kernels_.pack_queries(qpad, nq, dpad_, scratch.get(), row_norm_max_);
    }
    std::vector<uint32_t> rows(most);
    if (screen) {
      // Runs of 12 consecutive rows (one tile of the screen's kernel), one from each of
      // ns / 12 equal strata at a hashed offset. Rows drawn one by one were a random read
      // each, from memory when the index had left the cache (100k x 64 float16 and its
      // codes, beside another index): the guess took ~150 us of a 1.1 ms B = 32 search on
      // each thread (temporary timers, not in the repo). A run's code rows are 13 cache
      // lines in a row, prefetched a run ahead.
      const size_t nt = (ns + kRun - 1) / kRun;
      const double tstep = double(total) / double(nt);
      auto start = [&](size_t j) {
        const size_t lo = static_cast<size_t>(double(j) * tstep);
        const size_t hi = std::min(total, static_cast<size_t>(double(j + 1) * tstep));
        const size_t span = hi > lo + kRun ? hi - lo - kRun + 1 : 1;
        uint64_t h = (j + 1) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
        return lo + static_cast<size_t>(((h >> 32) * span) >> 32);
      };
      const size_t from = nt * t / tasks, to = nt * (t + 1) / tasks;
      for (size_t j = from; j < to; j++) {
        if (!allowed && j + 1 < to) {
          const char* p = reinterpret_cast<const char*>(codes_->data + start(j + 1) * cb);
          for (size_t b = 0; b < kRun * cb; b += 64) __builtin_prefetch(p + b);
        }
        const size_t pos = start(j);
        const size_t nr = std::min(kRun, total - pos);
        for (size_t i = 0; i < nr; i++) {
          rows[i] = static_cast<uint32_t>(allowed ? (*allowed)[pos + i] : pos + i);
          cptrs[i] = codes_->data + static_cast<size_t>(rows[i]) * cb;
        }
        const auto codes = allowed ? RowSpan<uint8_t>::Gathered(cptrs.data())
                                   : RowSpan<uint8_t>::Consecutive(codes_->data + pos * cb, cb);
        uint32_t* f = fill.data() + t * nq;
        if (kernels_.screen_i8(codes, nr, nq, dpad_, scratch.get(), dfloor.data(), rows.data(), 0,
                               out.data(), f) == 0)
          continue;
        for (size_t q = 0; q < nq; q++) {
          if (f[q] < cap) continue;
          NthLargest(out[q], f[q], r - 1);
          f[q] = static_cast<uint32_t>(r);
          dfloor[q] = I8KeyScore(out[q][r - 1]);
        }
      }
      return;
    }
    std::vector<float> least(nq, -std::numeric_limits<float>::infinity());  // r-th best so far
    std::vector<const uint8_t*> ptrs(block);
    std::vector<uint32_t> hits(std::max(block, nq) + 16);  // + 16: select_each's slack
    const size_t from = ns * t / tasks, to = ns * (t + 1) / tasks;
    for (size_t s0 = from; s0 < to; s0 += block) {
      const size_t nr = std::min(block, to - s0);
      for (size_t i = 0; i < nr; i++) {
        // One row drawn from each of ns equal strata, at a hashed offset: random enough
        // that an ordered or periodic list does not bias the guess, and the same on every
        // call. (Strata bounds in double and the offset by a multiply and a shift: three
        // 64-bit divisions a row were a sixth of the sampling loop's time.)
        const size_t j = s0 + i;
        const size_t lo = static_cast<size_t>(double(j) * step);
        const size_t hi =
            std::min(total, std::max(lo + 1, static_cast<size_t>(double(j + 1) * step)));
        uint64_t h = (j + 1) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
        const size_t pos = lo + static_cast<size_t>(((h >> 32) * (hi - lo)) >> 32);
        rows[i] = static_cast<uint32_t>(allowed ? (*allowed)[pos] : pos);
        ptrs[i] = rows_->data + static_cast<size_t>(rows[i]) * rb;
      }
      const float* sc = nullptr;
      if (storage_ == Storage::F16) {
        kernels_.panel_f16(reinterpret_cast<const uint16_t* const*>(ptrs.data()), nr, nq, dpad_,
                           scratch.get(), never.data(), hits.data(), &sc);
      } else {
        kernels_.panel_f32(reinterpret_cast<const float* const*>(ptrs.data()), nr, nq, dpad_,
                           scratch.get(), never.data(), hits.data(), &sc);
      }
      for (size_t i = 0; i < nr; i++) {
        const float* srow = sc + i * nq16;
        const size_t nh = kernels_.select_each(srow, least.data(), nq, hits.data());
        for (size_t x = 0; x < nh; x++) {
          const size_t q = hits[x];
          Key* list = lists.data() + (t * nq + q) * stride;
          uint32_t& f = fill[t * nq + q];
          list[f++] = MakeKey(srow[q], rows[i]);
          if (f == cap) {
            NthLargest(list, cap, r - 1);
            f = r;
            least[q] = KeyScore(list[r - 1]);
          }
        }
      }
    }
  };
  if (tasks == 1) {
    part(0);
  } else {
    ThreadPool::Shared().ParallelFor(tasks, part);
  }
  std::vector<float> guess(nq, -std::numeric_limits<float>::infinity());
  // A bfloat16 kernel's scores are approximate, and its errors can lift the r-th best above
  // every exact sample score near it: on uniform [0, 1) data (scores all positive, large
  // against their spread) 2 of 32 queries overshot and were searched again on every call.
  // The guess is the least exact score of the r rows kept: r sample rows reach it, so it is
  // at most the sample's exact r-th best, and the guess keeps its float32 odds.
  // Two passes: every query's r best rows first, each row prefetched as it is named, then
  // their scores, under the screen by the screen's rescoring kernels (exact_f32/f16: no
  // float32 copy of a float16 row; another summation order, which the slack below covers).
  // This tail runs on one thread while the other waits: 100k x 64 float16, B = 32, ~10 us
  // against ~20 us scoring each row as its query came (temporary timers, not in the repo).
  std::vector<uint32_t> best(nq * r);
  std::vector<char> have(nq, 0);
  std::vector<Key> all;
  for (size_t q = 0; q < nq; q++) {
    // The query's r best over all tasks' lists.
    all.clear();
    for (size_t t = 0; t < tasks; t++) {
      const Key* list = lists.data() + (t * nq + q) * stride;
      all.insert(all.end(), list, list + fill[t * nq + q]);
    }
    if (all.size() < r) continue;  // fewer than r sample rows
    if (all.size() > r) NthLargest(all.data(), all.size(), r - 1);
    have[q] = 1;
    for (size_t x = 0; x < r; x++) {
      const uint32_t at = screen ? I8KeyRow(all[x]) : KeyId(all[x]);
      best[q * r + x] = at;
      const uint8_t* row = rows_->data + static_cast<size_t>(at) * rb;
      for (size_t b = 0; b < rb; b += 64) __builtin_prefetch(row + b);
    }
  }
  std::vector<float> row32(storage_ == Storage::F16 ? dpad_ : 0);
  for (size_t q = 0; q < nq; q++) {
    if (!have[q]) continue;
    const float* query = qpad + q * dpad_;
    float g = std::numeric_limits<float>::infinity();
    for (size_t x = 0; x < r; x++) {
      const uint8_t* row = rows_->data + static_cast<size_t>(best[q * r + x]) * rb;
      float sc;
      if (screen) {
        sc = ExactScore(best[q * r + x], query);
      } else if (storage_ == Storage::F16) {
        kernels_.from_f16(reinterpret_cast<const uint16_t*>(row), row32.data(), dpad_);
        sc = kernels_.dot_f32(row32.data(), query, dpad_);
      } else {
        sc = kernels_.dot_f32(reinterpret_cast<const float*>(row), query, dpad_);
      }
      g = std::min(g, sc);
    }
    // The scan sums each dot product in another order, which moves a score by up to
    // 2 d u sum|x_j q_j| <= (d / 2^23) |q| |x| (u = 2^-24, Cauchy-Schwarz). Without that
    // slack, rows tied at the guess (duplicate items) scored an ulp below it in the scan,
    // no row reached the floor, and the query was searched again on every call.
    double qn = 0;
    for (size_t j = 0; j < dpad_; j++) qn += double(query[j]) * query[j];
    const double slack = 1.01 * double(dpad_ + 2) / 8388608.0 * std::sqrt(qn) * row_norm_max_;
    g = static_cast<float>(double(g) - slack - 1e-30);
    guess[q] = g;
  }
  return guess;
}

void ExactIndex::Search(const SearchRequest& req, SearchResult* out, bool guess_floors) const {
  const size_t nq = req.nq;
  const size_t k = req.k;
  out->ids.assign(nq * k, SearchResult::kNoId);
  out->scores.assign(nq * k, -std::numeric_limits<float>::infinity());
  if (nq == 0) return;
  // The pool stays awake from here to the merge (ThreadPool::Hold), and a sleeping worker
  // starts waking while the queries are copied. B = 32, float16, 100k x 64, two threads,
  // timed with temporary timers (not in the repo): unheld, the guess's second task started
  // ~30 us after the first and the merge waited on a worker that had gone to sleep.
  std::optional<ThreadPool::Hold> hold;
  if (threads_ > 1) hold.emplace(ThreadPool::Shared());

  // Queries are copied into the padded layout the kernels expect (zeros past d).
  std::vector<float> qpad(nq * dpad_, 0.f);
  for (size_t q = 0; q < nq; q++)
    std::memcpy(qpad.data() + q * dpad_, req.queries + q * dim_, dim_ * sizeof(float));
  std::vector<const std::vector<uint32_t>*> ex(nq, nullptr);
  bool any_ex = false;
  if (req.exclude && !req.exclude->empty()) {
    for (size_t q = 0; q < nq; q++)
      if (!(*req.exclude)[q].empty()) ex[q] = &(*req.exclude)[q], any_ex = true;
  }

  auto lk = ReadLock();
  const uint8_t* base = rows_->data;
  const size_t rb = RowBytes();

  // The scan list: all rows, or the allowed rows in storage order (so an allowed subset is
  // still read front to back; RowSet dedupes and orders them without a sort).
  std::optional<RowSet> set;
  if (req.allow != nullptr) {
    set.emplace(row_of_, req.allow->data(), req.allow->size(), n_);
    if (set->Count() == 0) return;
  }
  const size_t screen_min = ScreenMinBatch(tuning_, (set ? set->Count() : n_) * rb);
  const bool pack = tuning_.pack_min_batch > 0 && kernels_.panel_f32 != nullptr &&
                    (nq >= tuning_.pack_min_batch || (i8_ && screen_min > 0 && nq >= screen_min));
  // The direct kernels read the rows at memory speed, and reading them through pointers
  // costs them more than reading all of them in order once a quarter (float16) or half
  // (float32) of the rows or more are allowed. Those scans read every row, and a candidate
  // must be in `dense` to reach a top-k. The batch kernels are bound by arithmetic, not by
  // reading, so they score only the allowed rows however many there are. B = 1 against the
  // build that always gathered, 1M rows, `bench:exact-ab --allow 0.8,0.5,0.3,0.1`
  // (bench/README.md, "Allow lists"): 0.62-0.80 of the time at 80% allowed, 0.65-0.90 at
  // 50%, 0.87-1.00 below.
  std::vector<uint32_t> allowed;
  std::optional<RowSet> dense;
  if (set) {
    const double from = storage_ == Storage::F16 ? kDenseAllowF16 : kDenseAllowF32;
    if (!pack && static_cast<double>(set->Count()) >= from * static_cast<double>(n_)) {
      dense.emplace(std::move(*set));
    } else {
      allowed = set->Rows();
    }
  }
  const bool gather = req.allow != nullptr && !dense;
  // Only the direct kernels' Offer tests `admit`: a dense list never reaches the batch
  // kernels, the CUDA backend or sgemm (checked where each is chosen).
  const RowSet* admit = dense ? &*dense : nullptr;
  // Batches the panel kernels score go through the int8 screen where the index keeps codes.
  // The screen leaves its outliers (outliers_) to the merge, which scores them exactly: an
  // allowed list loses them here, and a scan of every row steps over them.
  const bool screen = pack && i8_;
  std::vector<uint32_t> allowed_out;
  if (screen && gather && !outliers_.empty()) {
    size_t kept = 0, o = 0;
    for (const uint32_t row : allowed) {
      while (o < outliers_.size() && outliers_[o] < row) o++;
      if (o < outliers_.size() && outliers_[o] == row) {
        allowed_out.push_back(row);
      } else {
        allowed[kept++] = row;
      }
    }
    allowed.resize(kept);
  }
  const std::vector<uint32_t>& apart = screen && !gather ? outliers_ : allowed_out;
  const size_t total = gather ? allowed.size() : n_;
  if (total == 0 && apart.empty()) return;

  // Rows per cache block: a multiple of 8 (the widest tile), 8..512 for the batch kernels
  // (the int8 screen's block of tiles holds at most 512), 8..2048 for the direct scans.
  size_t block = (pack ? tuning_.block_bytes : tuning_.scan_block_bytes) / rb;
  block = std::max<size_t>(8, std::min<size_t>(pack ? 512 : 2048, block / 8 * 8));
  const size_t nblocks = (total + block - 1) / block;
  size_t tasks = std::min(threads_, (total + tuning_.min_rows_per_task - 1) /
                                        std::max<size_t>(1, tuning_.min_rows_per_task));
  tasks = std::max<size_t>(1, std::min(tasks, nblocks));

  const uint8_t* cbase = i8_ ? codes_->data : nullptr;
  const size_t cb = I8RowBytes(dpad_);
  std::vector<float> guess;  // empty: no guessed floors (set below, for the kernels' scan)

  std::vector<std::vector<TopK>> heaps(tasks, std::vector<TopK>(nq));
  // The next block no thread has claimed (ExactTuning::claim_divisor).
  std::atomic<size_t> next_block{0};
  const bool f16 = storage_ == Storage::F16;
  SharedFloors<float> floors(tasks > 1 && !screen ? nq : 0);
  SharedFloors<int32_t> dfloors(tasks > 1 && screen ? nq : 0);
  // The int8 screen's per-query figures, from the first task's packed queries (every task
  // packs the same), for the merge; and each task's candidates.
  std::vector<I8Query> figures(screen ? nq : 0);
  std::vector<std::vector<ScreenTopK>> screened(screen ? tasks : 0);
  for (auto& v : screened) v.resize(nq);
  std::vector<std::vector<uint32_t>> screen_fill(screen ? tasks : 0, std::vector<uint32_t>(nq));
  // Query q's candidates v[0, n) (screen keys) rescored: the float32 keys of those whose
  // score is a number (a NaN reaches no threshold, as in the rescoring kernels), appended
  // to out, each with its screen key beside it. The rows were last read when the index was
  // built or the B = 1 scan ran, and may be in memory: prefetched 16 candidates ahead.
  auto rescore = [&](const Key* v, size_t n, size_t q, std::vector<std::pair<Key, Key>>* out) {
    constexpr size_t kAhead = 16;
    auto fetch = [&](size_t i) {
      const uint8_t* p = base + static_cast<size_t>(I8KeyRow(v[i])) * rb;
      for (size_t b = 0; b < rb; b += 64) __builtin_prefetch(p + b);
    };
    for (size_t i = 0; i < std::min(kAhead, n); i++) fetch(i);
    for (size_t i = 0; i < n; i++) {
      if (i + kAhead < n) fetch(i + kAhead);
      const uint32_t row = I8KeyRow(v[i]);
      const float sc = ExactScore(row, qpad.data() + q * dpad_);
      if (sc == sc) out->emplace_back(MakeKey(sc, ids_[row]), v[i]);
    }
  };

  auto worker = [&](size_t t) {
    // The unscreened scan's top-k, pointers, hits and thresholds (the screen has its own
    // below).
    std::vector<TopK>& h = heaps[t];
    if (!screen) {
      for (auto& x : h) x.Reset(k);
      if (!guess.empty())
        for (size_t q = 0; q < nq; q++) h[q].RaiseFloor(guess[q]);
    }
    std::vector<const uint8_t*> ptrs(screen ? 0 : block), cptrs(screen ? block : 0);
    std::vector<uint32_t> rowidx(block), hits(screen ? 0 : block),
        qhits(pack && !screen ? nq + 16 : 0);
    std::vector<float> scores(pack ? 0 : nq * block);
    AlignedFloats scratch(pack ? ScoreScratchFloats(block, nq, dpad_) : 0);
    // The batch kernels' thresholds: each query's current top-k threshold, +Infinity for
    // the padding queries of the last panel. A threshold moves only when its TopK cuts.
    const size_t nq16 = PanelStride(nq);
    std::vector<float> thr(pack && !screen ? nq16 : 0, std::numeric_limits<float>::infinity());
    // The int8 screen's candidates, their counts and where the kernel appends (refreshed
    // after a cut), floors (INT32_MAX for padding queries) and query figures.
    std::vector<ScreenTopK>* sh = screen ? &screened[t] : nullptr;
    uint32_t* fill = screen ? screen_fill[t].data() : nullptr;
    std::vector<Key*> out(screen ? nq : 0);
    std::vector<uint32_t> before(screen && any_ex ? nq : 0);
    std::vector<int32_t> dfl(screen ? nq16 : 0, INT32_MAX);
    std::vector<I8Query> qf(screen ? nq : 0);
    std::vector<std::pair<Key, Key>> pruned;
    // Cuts query q's full buffer (ScreenTopK::Cut); past 8k + 1024 kept rows, the best k in
    // float32 stay and the floor rises to what the k-th needs.
    auto cut = [&](size_t q) {
      const bool rose = (*sh)[q].Cut(&fill[q], [&](Key* v, size_t* n, size_t kk, int32_t* floor) {
        screen_prunes_++;
        pruned.clear();
        rescore(v, *n, q, &pruned);
        if (pruned.size() > kk) {
          std::nth_element(pruned.begin(), pruned.begin() + (kk - 1), pruned.end(),
                           [](const auto& a, const auto& b) { return a.first > b.first; });
          pruned.resize(kk);
          *floor = std::max(*floor, I8Floor(qf[q], KeyScore(pruned[kk - 1].first)));
        }
        for (size_t i = 0; i < pruned.size(); i++) v[i] = pruned[i].second;
        *n = pruned.size();
      });
      out[q] = (*sh)[q].Data();
      return rose;
    };
    if (screen) {
      kernels_.pack_queries_i8(qpad.data(), nq, dpad_, screen_, scratch.get());
      kernels_.query_i8(scratch.get(), nq, dpad_, qf.data());
      if (t == 0) figures = qf;
      for (size_t q = 0; q < nq; q++) {
        (*sh)[q].Reset(k, qf[q].margin, block);
        if (!guess.empty()) (*sh)[q].RaiseFloor(I8Floor(qf[q], guess[q]));
        dfl[q] = (*sh)[q].Floor();
        out[q] = (*sh)[q].Data();
        fill[q] = 0;
      }
    } else if (pack) {
      kernels_.pack_queries(qpad.data(), nq, dpad_, scratch.get(), row_norm_max_);
    }
    if (pack && !screen) {
      for (size_t q = 0; q < nq; q++) thr[q] = h[q].Threshold();
    }
    // Runs of consecutive blocks are claimed dynamically: a core slowed by other work takes
    // fewer of them, and each core still reads long stretches of consecutive memory.
    for (;;) {
      size_t b_begin = next_block.load(std::memory_order_relaxed), run = 1;
      do {
        if (b_begin >= nblocks) break;
        if (tuning_.claim_divisor > 0)
          run = std::max<size_t>(1, (nblocks - b_begin) / (tuning_.claim_divisor * tasks));
      } while (!next_block.compare_exchange_weak(b_begin, b_begin + run,
                                                 std::memory_order_relaxed));
      if (b_begin >= nblocks) break;
      const size_t b_end = b_begin + run;
      for (size_t b = b_begin; b < b_end; b++) {
        const size_t r0 = b * block;
        const size_t nr = std::min(block, total - r0);
        if (tasks > 1 && screen) {
          for (size_t q = 0; q < nq; q++) {
            (*sh)[q].RaiseFloor(dfloors.Get(q));
            dfl[q] = (*sh)[q].Floor();
          }
        } else if (tasks > 1) {
          for (size_t q = 0; q < nq; q++) h[q].RaiseFloor(floors.Get(q));
          if (pack)
            for (size_t q = 0; q < nq; q++) thr[q] = h[q].Threshold();
        }
        // Without a filter the rows are consecutive, and their addresses are sums: the
        // multiply per row, which the compiler vectorised into 64-bit SSE2 multiplies (the
        // addon's baseline ISA), took 10% of a 1M x 64 float16 B = 1 search (perf). The
        // direct and int8 kernels take consecutive rows as a base and a stride (RowSpan) and
        // get no arrays at all; only the unscreened batch kernels index rows by pointer.
        const bool spans = !gather && (screen || !pack);
        // This block's rows for a kernel: consecutive from r0, or the pointers built below.
        auto rows_as = [&](auto* type) {
          using T = std::remove_pointer_t<decltype(type)>;
          return spans ? RowSpan<T>::Consecutive(base + r0 * rb, rb)
                       : RowSpan<T>::Gathered(reinterpret_cast<const T* const*>(ptrs.data()));
        };
        auto row_at = [&](size_t i) { return spans ? static_cast<uint32_t>(r0 + i) : rowidx[i]; };
        if (gather) {
          for (size_t i = 0; i < nr; i++) rowidx[i] = allowed[r0 + i];
          if (screen) {
            for (size_t i = 0; i < nr; i++) cptrs[i] = cbase + static_cast<size_t>(rowidx[i]) * cb;
          } else {
            for (size_t i = 0; i < nr; i++) ptrs[i] = base + static_cast<size_t>(rowidx[i]) * rb;
          }
        } else if (!spans) {
          const uint8_t* p = base + r0 * rb;
          for (size_t i = 0; i < nr; i++, p += rb) {
            rowidx[i] = static_cast<uint32_t>(r0 + i);
            ptrs[i] = p;
          }
        }
        if (screen) {
          // The int8 screen names the pairs whose integer score reaches the query's floor;
          // each joins its query's candidates by that score (ScreenTopK), and no stored
          // row is read until the merge.
          const auto codes = spans ? RowSpan<uint8_t>::Consecutive(cbase + r0 * cb, cb)
                                   : RowSpan<uint8_t>::Gathered(cptrs.data());
          if (any_ex) std::copy_n(fill, nq, before.data());
          size_t got = 0;
          auto o = spans ? std::lower_bound(outliers_.begin(), outliers_.end(), r0)
                         : outliers_.end();
          if (o == outliers_.end() || *o >= r0 + nr) {
            got = kernels_.screen_i8(codes, nr, nq, dpad_, scratch.get(), dfl.data(),
                                     spans ? nullptr : rowidx.data(), static_cast<uint32_t>(r0),
                                     out.data(), fill);
          } else {
            // The runs of rows between this block's outliers, each a span of its own.
            for (size_t at = r0; at < r0 + nr;) {
              const bool out_row = o != outliers_.end() && *o < r0 + nr;
              const size_t stop = out_row ? *o++ : r0 + nr;
              if (stop > at)
                got += kernels_.screen_i8(RowSpan<uint8_t>::Consecutive(cbase + at * cb, cb),
                                          stop - at, nq, dpad_, scratch.get(), dfl.data(),
                                          nullptr, static_cast<uint32_t>(at), out.data(), fill);
              at = stop + 1;
            }
          }
          if (got == 0) continue;
          for (size_t q = 0; q < nq; q++) {
            // Excluded ids leave before they can count among the best k.
            if (any_ex && ex[q] != nullptr) {
              uint32_t kept = before[q];
              for (uint32_t i = before[q]; i < fill[q]; i++)
                if (!Excluded(ex[q], ids_[I8KeyRow(out[q][i])])) out[q][kept++] = out[q][i];
              fill[q] = kept;
            }
            if (fill[q] >= (*sh)[q].Cap() && cut(q)) {
              dfl[q] = (*sh)[q].Floor();
              if (tasks > 1) dfloors.Publish(q, dfl[q]);
            }
          }
          continue;
        }
        if (pack) {
          // The batch kernel filters on its accumulators and names the rows that hold a
          // candidate for some query; only those rows are read back, row-major.
          const float* sc = nullptr;
          const size_t nh =
              f16 ? kernels_.panel_f16(reinterpret_cast<const uint16_t* const*>(ptrs.data()), nr,
                                       nq, dpad_, scratch.get(), thr.data(), hits.data(), &sc)
                  : kernels_.panel_f32(reinterpret_cast<const float* const*>(ptrs.data()), nr, nq,
                                       dpad_, scratch.get(), thr.data(), hits.data(), &sc);
          for (size_t x = 0; x < nh; x++) {
            const size_t i = hits[x];
            const float* srow = sc + i * nq16;
            const uint32_t id = ids_[row_at(i)];
            // A hit row holds a candidate for at least one query; early in a scan, or with
            // many queries, for several. One vector compare per 8 queries finds them.
            const size_t nqh = kernels_.select_each(srow, thr.data(), nq, qhits.data());
            for (size_t y = 0; y < nqh; y++) {
              const size_t q = qhits[y];
              const Key key = MakeKey(srow[q], id);
              if (key <= h[q].ThresholdKey() || Excluded(ex[q], id)) continue;
              if (h[q].Push(key)) {
                thr[q] = h[q].Threshold();
                if (tasks > 1) floors.Publish(q, thr[q]);
              }
            }
          }
          continue;
        }
        // The block's ids, for its candidates: the scan streams the rows through the caches,
        // and a candidate's id was a miss each (the top-k's pushes, perf: a fifth of this
        // loop's own samples at B = 1). Prefetched here, they arrive while the block is scored.
        if (!gather) {
          const char* first = reinterpret_cast<const char*>(ids_.data() + r0);
          for (size_t o = 0; o < nr * sizeof(uint32_t); o += 64) __builtin_prefetch(first + o);
        }
        if (f16) {
          kernels_.score_f16(rows_as(static_cast<uint16_t*>(nullptr)), nr, qpad.data(), nq, dpad_,
                             scores.data(), block);
        } else {
          kernels_.score_f32(rows_as(static_cast<float*>(nullptr)), nr, qpad.data(), nq, dpad_,
                             scores.data(), block);
        }
        for (size_t q = 0; q < nq; q++) {
          if (Offer(kernels_, h[q], scores.data() + q * block, nr, row_at, ids_.data(), ex[q],
                    hits.data(), admit) &&
              tasks > 1)
            floors.Publish(q, h[q].Threshold());
        }
      }
    }
  };
  bool done = false;
  if (!gather && !admit && !f16 && cuda_active_.load()) {
    std::vector<TopK> gpu(nq);
    if (SearchCuda(qpad.data(), nq, k, ex, &gpu)) {
      tasks = 1;
      heaps.assign(1, std::move(gpu));
      done = true;
    }
  }
#ifdef RECSERVE_WITH_BLAS
  if (!done && !gather && !admit && tuning_.sgemm_min_batch > 0 &&
      nq >= tuning_.sgemm_min_batch) {
    // One sgemm per chunk of rows: OpenBLAS spreads each call over its own threads, then
    // the pool offers the chunk's scores to the heaps, split by query.
    tasks = 1;
    heaps.assign(1, std::vector<TopK>(nq));
    for (auto& x : heaps[0]) x.Reset(k);
    const size_t chunk = std::max<size_t>(64, tuning_.sgemm_rows);
    std::vector<float> scores(nq * chunk);
    std::vector<float> conv(f16 ? chunk * dpad_ : 0);
    const size_t qtasks = std::max<size_t>(1, std::min(threads_, nq / 16));
    std::vector<uint32_t> hits(qtasks * chunk);
    for (size_t r0 = 0; r0 < total; r0 += chunk) {
      const size_t nr = std::min(chunk, total - r0);
      const float* rows;
      if (f16) {
        kernels_.from_f16(reinterpret_cast<const uint16_t*>(base + r0 * rb), conv.data(),
                          nr * dpad_);
        rows = conv.data();
      } else {
        rows = reinterpret_cast<const float*>(base + r0 * rb);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq),
                  static_cast<int>(nr), static_cast<int>(dpad_), 1.f, qpad.data(),
                  static_cast<int>(dpad_), rows, static_cast<int>(dpad_), 0.f, scores.data(),
                  static_cast<int>(chunk));
      auto offer = [&](size_t t) {
        uint32_t* h = hits.data() + t * chunk;
        for (size_t q = nq * t / qtasks; q < nq * (t + 1) / qtasks; q++) {
          Offer(
              kernels_, heaps[0][q], scores.data() + q * chunk, nr,
              [&](size_t i) { return static_cast<uint32_t>(r0 + i); }, ids_.data(), ex[q], h);
        }
      };
      if (qtasks == 1) {
        offer(0);
      } else {
        ThreadPool::Shared().ParallelFor(qtasks, offer);
      }
    }
    done = true;
  }
#endif
  const bool by_screen = screen && !done;
  if (by_screen) screened_batches_++;
  if (!done) {
    if (guess_floors && pack && tuning_.guess_rank > 0 && total >= tuning_.guess_min_rows &&
        tuning_.guess_rank * total / (3 * k) * 16 <= total)
      guess = GuessFloors(qpad.data(), nq, k, total, gather ? &allowed : nullptr, block, screen);
    if (tasks == 1) {
      worker(0);
    } else {
      ThreadPool::Shared().ParallelFor(tasks, worker);
    }
  }
  // Merge the tasks' candidates per query: best first, ties by smaller id. A selection
  // (NthLargest) then a sort of the k kept (Kernels::sort_desc) is linear plus the sort;
  // partial_sort's heap over every candidate cost ~15 us per query at k = 100. Batches of
  // 4 or more merge on every thread (queries are independent). From 16 queries before: at
  // B = 4 to 12 one thread merged while the other spun (perf, B = 8: 10% of the samples in
  // the pool's wait), and splitting took 0.88-0.99 of the time at B = 4 to 12, 100k x 64 and
  // x 128, both storages; at B = 2, 0.99-1.06, so pairs keep one (bench:exact-ab --addons).
  std::vector<char> retry(guess.empty() ? 0 : nq, 0);
  const size_t merge_tasks = nq >= 4 ? std::min(threads_, nq / 2) : 1;
  // Under the int8 screen, the tasks' candidates are first cut by integer score over their
  // union, and the rows kept are rescored in float32 (under the read lock: they are read).
  auto merge = [&](size_t t0) {
    std::vector<Key> all;
    std::vector<std::pair<Key, Key>> scored;
    for (size_t q = nq * t0 / merge_tasks; q < nq * (t0 + 1) / merge_tasks; q++) {
      all.clear();
      if (by_screen) {
        for (size_t t = 0; t < tasks; t++) {
          const Key* e = screened[t][q].Data();
          all.insert(all.end(), e, e + screen_fill[t][q]);
        }
        scored.clear();
        if (all.size() > k) {
          // The best k by D first (CutByScreen leaves them in front); the rest only where
          // their bound reaches the least float32 score of those k.
          int32_t unused = INT32_MIN;
          all.resize(CutByScreen(all.data(), all.size(), k, figures[q].margin, &unused));
          rescore(all.data(), k, q, &scored);
          size_t rest = all.size();
          if (scored.size() == k) {
            // Those whose bound reaches the least score of the k, gathered before they are
            // rescored: no row is prefetched for nothing.
            Key least = scored[0].first;
            for (const auto& e : scored) least = std::min(least, e.first);
            const int32_t dmin = I8Floor(figures[q], KeyScore(least));
            rest = k;
            for (size_t i = k; i < all.size(); i++)
              if (I8KeyScore(all[i]) >= dmin) all[rest++] = all[i];
          }
          rescore(all.data() + k, rest - k, q, &scored);
        } else {
          rescore(all.data(), all.size(), q, &scored);
        }
        all.clear();
        for (const auto& e : scored) all.push_back(e.first);
        // The rows the screen left out, scored exactly (as the rescoring scores).
        const float* query = qpad.data() + q * dpad_;
        for (const uint32_t row : apart) {
          const uint32_t id = ids_[row];
          if (Excluded(ex[q], id)) continue;
          const float sc = ExactScore(row, query);
          if (sc == sc) all.push_back(MakeKey(sc, id));
        }
      } else {
        for (size_t t = 0; t < tasks; t++) {
          const auto& e = heaps[t][q].Entries();
          all.insert(all.end(), e.begin(), e.end());
        }
      }
      const size_t m = std::min(k, all.size());
      if (m < all.size()) NthLargest(all.data(), all.size(), m - 1);
      kernels_.sort_desc(all.data(), m);
      // A guessed floor overshot unless k candidates reach it: this query is searched again.
      if (!guess.empty() && (m < k || KeyScore(all[m - 1]) < guess[q])) retry[q] = 1;
      for (size_t i = 0; i < m; i++) {
        out->ids[q * k + i] = KeyId(all[i]);
        out->scores[q * k + i] = KeyScore(all[i]);
      }
    }
  };
  if (merge_tasks == 1) {
    merge(0);
  } else {
    ThreadPool::Shared().ParallelFor(merge_tasks, merge);
  }
  lk.unlock();

  // The queries whose guess overshot, searched again without guesses (after the lock is
  // released: a read lock taken twice could wait behind a writer at the gate). They may see
  // a write that landed in between, as any search that starts later would.
  std::vector<size_t> again;
  for (size_t q = 0; q < retry.size(); q++)
    if (retry[q]) again.push_back(q);
  if (again.empty()) return;
  guess_retries_ += again.size();
  std::vector<float> qs(again.size() * dim_);
  std::vector<std::vector<uint32_t>> exs(req.exclude && !req.exclude->empty() ? again.size() : 0);
  for (size_t i = 0; i < again.size(); i++) {
    std::memcpy(qs.data() + i * dim_, req.queries + again[i] * dim_, dim_ * sizeof(float));
    if (!exs.empty() && ex[again[i]]) exs[i] = *ex[again[i]];
  }
  SearchRequest sub = req;
  sub.queries = qs.data();
  sub.nq = again.size();
  sub.exclude = exs.empty() ? nullptr : &exs;
  SearchResult r;
  Search(sub, &r, false);
  for (size_t i = 0; i < again.size(); i++) {
    std::copy_n(r.ids.begin() + i * k, k, out->ids.begin() + again[i] * k);
    std::copy_n(r.scores.begin() + i * k, k, out->scores.begin() + again[i] * k);
  }
}

}  // namespace recserve
