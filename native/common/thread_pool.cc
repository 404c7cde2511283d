#include "common/thread_pool.h"

#include <atomic>
#include <chrono>
#include <exception>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace recserve {
namespace {

// How long a worker that ran out of work, and a caller whose tasks are all claimed, poll
// before they sleep on a condition variable. On these VMs a sleeping vCPU took tens of
// microseconds to wake: a 100k x 64 float16 B = 1 search ran 0.364 ms on one thread and
// 0.226 ms on two, 45 us over half. Searches arrive back to back under load (the batcher,
// the benchmarks), so a short poll finds the next one awake; idle, it costs at most this
// much CPU per search.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Polls until ready() or kSpin has passed; returns ready().
template <class F>
bool SpinUntil(F ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 0;; i++) {
    if (ready()) return true;
    for (int p = 0; p < 16; p++) CpuRelax();
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) return ready();
  }
}

}  // namespace

struct ThreadPool::Batch {
  const std::function<void(size_t)>* fn;
  size_t n;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  // Workers inside Drain(); incremented under the pool mutex while the batch is queued,
  // so once the caller has dequeued it only these can still touch it.
  size_t active = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::exception_ptr error;

  // Claims and runs tasks until none is left unclaimed.
  void Drain() {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> g(mu);
        cv.notify_all();
      }
    }
  }
};

ThreadPool& ThreadPool::Shared() {
  // Leaked on purpose: joining threads from a static destructor at process exit races
  // with Node tearing down the addon.
  static ThreadPool* pool = [] {
    const unsigned hc = std::thread::hardware_concurrency();
    return new ThreadPool(hc > 1 ? hc - 1 : 1);
  }();
  return *pool;
}

ThreadPool::ThreadPool(size_t workers) {
  for (size_t i = 0; i < workers; i++) threads_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

ThreadPool::Hold::Hold(ThreadPool& pool) : pool_(pool) {
  // (A worker checks holds_ under the mutex before it sleeps, so one that has not yet
  // counted itself in sleeping_ sees this Hold and stays up.)
  if (pool_.holds_.fetch_add(1) == 0 && pool_.sleeping_.load() > 0) {
    std::lock_guard<std::mutex> g(pool_.mu_);
    pool_.cv_.notify_all();
  }
}

ThreadPool::Hold::~Hold() { pool_.holds_.fetch_sub(1); }

void ThreadPool::WorkerLoop() {
  for (;;) {
    Batch* b;
    // Poll for kSpin, and on while a Hold lives.
    while (!SpinUntil([this] { return stop_.load() || queued_.load() > 0; }) &&
           holds_.load() > 0) {
    }
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (!stop_ && queue_.empty()) {
        sleeping_++;
        cv_.wait(lk, [this] { return stop_.load() || !queue_.empty() || holds_.load() > 0; });
        sleeping_--;
        if (!stop_ && queue_.empty()) continue;  // woken by a Hold: poll
      }
      if (stop_) return;
      b = queue_.front();
      // A batch stays queued until its tasks are all claimed, so several workers join it.
      if (b->next.load() >= b->n) {
        queue_.pop_front();
        queued_--;
        continue;
      }
      std::lock_guard<std::mutex> g(b->mu);
      b->active++;
    }
    b->Drain();
    std::lock_guard<std::mutex> g(b->mu);
    b->active--;
    b->cv.notify_all();
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (n == 1 || threads_.empty()) {
    for (size_t i = 0; i < n; i++) fn(i);
    return;
  }
  Batch b;
  b.fn = &fn;
  b.n = n;
  {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back(&b);
    queued_++;
  }
  cv_.notify_all();
  b.Drain();
  {
    // Dequeue first so no new worker can join, then wait for the ones already inside.
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (*it == &b) {
        queue_.erase(it);
        queued_--;
        break;
      }
    }
  }
  SpinUntil([&] { return b.done.load() == n; });
  {
    std::unique_lock<std::mutex> lk(b.mu);
    b.cv.wait(lk, [&] { return b.done.load() == n && b.active == 0; });
  }
  if (b.error) std::rethrow_exception(b.error);
}

}  // namespace recserve
