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

 private:
  struct Batch;
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch*> queue_;
  // queue_.size(), readable without the mutex: what an idle worker spins on.
  std::atomic<size_t> queued_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace recserve
