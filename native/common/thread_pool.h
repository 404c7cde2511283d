// A small fixed pool shared by every exact index in the process. Search splits its rows
// into a few tasks; the calling thread (a libuv worker or the JS thread for searchSync)
// runs tasks too, so a pool of hardware_concurrency - 1 workers keeps every core busy
// without a thread per search.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace recserve {

class ThreadPool {
 public:
  static ThreadPool& Shared();

  explicit ThreadPool(size_t workers);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn(0) .. fn(n - 1), returning when all have finished. The caller runs tasks
  // itself while it waits, so nested or concurrent calls cannot deadlock.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

  size_t Workers() const { return threads_.size(); }

  // While a Hold lives, idle workers poll for work instead of sleeping, and one asleep is
  // woken when it starts. A search that runs several ParallelFors in a row (a batch: the
  // guess, the scan, the merge) holds the pool for its whole length: a worker that finished
  // its part of one phase more than the poll (kSpin) before the next went to sleep, and
  // waking it took ~30 us each time on these VMs.
  class Hold {
   public:
    explicit Hold(ThreadPool& pool);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    ThreadPool& pool_;
  };

 private:
  struct Batch;
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch*> queue_;
  // queue_.size(), readable without the mutex: what an idle worker spins on.
  std::atomic<size_t> queued_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> holds_{0};     // live Holds
  std::atomic<int> sleeping_{0};  // workers waiting on cv_
  std::vector<std::thread> threads_;
};

}  // namespace recserve
