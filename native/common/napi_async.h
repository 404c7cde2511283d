// One async operation behind a Promise, for both bindings: `run` executes on a libuv
// worker thread (off the event loop), or on a thread of its own (ThreadPromise); `done`
// builds the resolved value back on the JS thread. An ArgumentError thrown by `run`
// rejects with a RangeError or TypeError as the synchronous calls would throw; any other
// exception rejects with an Error.
#pragma once
#include <napi.h>

#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "common/errors.h"

namespace recserve {

// What a call's `run` threw: an ArgumentError's kind and message (rejected as the RangeError
// or TypeError the synchronous calls throw), or another exception's message (an Error).
struct Failure {
  enum class Kind { kNone, kOther, kRange, kType };
  Kind kind = Kind::kNone;
  std::string message;
  bool Failed() const { return kind != Kind::kNone; }
};

inline Failure RunCatching(const std::function<void()>& run) {
  Failure f;
  try {
    run();
  } catch (const ArgumentError& e) {
    f.kind = e.kind() == ArgumentError::Kind::Range ? Failure::Kind::kRange : Failure::Kind::kType;
    f.message = e.what();
  } catch (const std::exception& e) {
    f.kind = Failure::Kind::kOther;
    f.message = std::string("recserve native: ") + e.what();
  }
  return f;
}

inline Napi::Value RejectionOf(Napi::Env env, const Failure& f) {
  if (f.kind == Failure::Kind::kRange) return Napi::RangeError::New(env, f.message).Value();
  if (f.kind == Failure::Kind::kType) return Napi::TypeError::New(env, f.message).Value();
  return Napi::Error::New(env, f.message).Value();
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Run = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  PromiseWorker(Napi::Env env, const char* name, Run run, Done done)
      : Napi::AsyncWorker(env, name),
        run_(std::move(run)),
        done_(std::move(done)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    failure_ = RunCatching(run_);
    if (failure_.Failed()) SetError(failure_.message);
  }
  void OnOK() override {
    deferred_.Resolve(done_(Env()));
    if (settled_) settled_();
  }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(RejectionOf(Env(), failure_));
    if (settled_) settled_();
  }
  // Called on the JS thread once the Promise is settled.
  void OnSettled(std::function<void()> f) { settled_ = std::move(f); }

 private:
  Run run_;
  Done done_;
  std::function<void()> settled_;
  Napi::Promise::Deferred deferred_;
  Failure failure_;
};

// Queues `run` on a worker; the Promise resolves to done(env).
inline Napi::Value QueuePromise(Napi::Env env, const char* name, PromiseWorker::Run run,
                                PromiseWorker::Done done) {
  auto* w = new PromiseWorker(env, name, std::move(run), std::move(done));
  auto p = w->Promise();
  w->Queue();
  return p;
}

namespace detail {
struct ThreadJob {
  PromiseWorker::Run run;
  PromiseWorker::Done done;
  Napi::Promise::Deferred deferred;
  Failure failure;
};
// On the JS thread: settles the job's Promise and frees it (env is null when the
// environment is going away, and nothing is left to settle).
inline void SettleThreadJob(Napi::Env env, Napi::Function, void*, ThreadJob* job) {
  std::unique_ptr<ThreadJob> owned(job);
  if (env == nullptr) return;
  if (job->failure.Failed()) {
    job->deferred.Reject(RejectionOf(env, job->failure));
  } else {
    job->deferred.Resolve(job->done(env));
  }
}
// Whether a ThreadPromise's thread-safe function still exists. When its environment is torn
// down (a worker thread terminated while the call runs), Node calls the function's finalizer
// and deletes it, though the thread still holds it: a call on it afterwards read freed
// memory (a compaction's thread crashed the process once it finished). The finalizer sets
// `gone` under `mu`, and the thread calls the function only under `mu` while it is not set.
struct TsfnLink {
  std::mutex mu;
  bool gone = false;
};
}  // namespace detail

// As QueuePromise, but `run` gets a thread of its own rather than one of libuv's pool: for
// calls that take minutes (an HNSW compaction, ~80 s at 1M rows). In the pool such a call
// held one of its threads (4 unless UV_THREADPOOL_SIZE says otherwise) throughout, and
// searches, which need one too, queued behind a few of them. The thread-safe function keeps
// the event loop alive until the Promise settles, as a pool job does.
inline Napi::Value ThreadPromise(Napi::Env env, const char* name, PromiseWorker::Run run,
                                 PromiseWorker::Done done) {
  using Tsfn = Napi::TypedThreadSafeFunction<void, detail::ThreadJob, detail::SettleThreadJob>;
  auto job = std::make_unique<detail::ThreadJob>(
      detail::ThreadJob{std::move(run), std::move(done), Napi::Promise::Deferred::New(env), {}});
  Napi::Promise promise = job->deferred.Promise();
  auto link = std::make_shared<detail::TsfnLink>();
  using LinkRef = std::shared_ptr<detail::TsfnLink>;
  Tsfn tsfn = Tsfn::New(
      env, name, 0, 1, nullptr,
      [](Napi::Env, LinkRef* l, void*) {
        std::unique_ptr<LinkRef> owned(l);
        std::lock_guard<std::mutex> g((*l)->mu);
        (*l)->gone = true;
      },
      new LinkRef(link));
  detail::ThreadJob* j = job.get();
  try {
    std::thread([tsfn, j, link]() mutable {
      j->failure = RunCatching(j->run);
      // Gone or refused only while the environment goes away: then nobody waits for the
      // Promise. (Queued calls still pending then are handed back with no env, and freed.)
      std::lock_guard<std::mutex> g(link->mu);
      if (link->gone) {
        delete j;
        return;
      }
      if (tsfn.BlockingCall(j) != napi_ok) delete j;
      tsfn.Release();
    }).detach();
  } catch (...) {  // no thread (std::system_error): nothing was handed over
    tsfn.Release();
    throw;
  }
  job.release();  // the thread's now, then SettleThreadJob's
  return promise;
}

// The writes of one index, handed to libuv's thread pool one at a time, in call order.
// They take the index's writer mutex in turn anyway. Queued into the pool together, each
// waited for that mutex on a pool thread, so a few writes could hold every pool thread (4
// unless UV_THREADPOOL_SIZE says otherwise), and searches, which need a pool thread too,
// waited for all of them: an exact search issued beside 8 concurrent HNSW adds of 200
// rows into 100k took 1,153 ms. Only the JS thread touches the queue (calls and the
// workers' completions run there).
class WriteQueue {
 public:
  // As QueuePromise; `run` starts once every write queued before it has settled.
  Napi::Value Queue(Napi::Env env, const char* name, PromiseWorker::Run run,
                    PromiseWorker::Done done) {
    auto* w = new PromiseWorker(env, name, std::move(run), std::move(done));
    auto p = w->Promise();
    // Each queued write keeps the queue alive, so that the ones after it still start
    // if the index's wrapper is collected meanwhile.
    std::shared_ptr<State> st = state_;
    w->OnSettled([st] { st->Next(); });
    st->pending.push_back(w);
    if (!st->busy) st->Next();
    return p;
  }
  // No write queued or running: a synchronous write now would not overtake one.
  bool Idle() const { return !state_->busy && state_->pending.empty(); }

 private:
  struct State {
    std::deque<PromiseWorker*> pending;  // not yet handed to the pool
    bool busy = false;                   // one is in the pool
    void Next() {
      busy = !pending.empty();
      if (!busy) return;
      PromiseWorker* w = pending.front();
      pending.pop_front();
      w->Queue();
    }
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace recserve
