// One async operation behind a Promise, for both bindings: `run` executes on a libuv
// worker thread (off the event loop); `done` builds the resolved value back on the JS
// thread. An ArgumentError thrown by `run` rejects with a RangeError or TypeError as the
// synchronous calls would throw; any other exception rejects with an Error.
#pragma once
#include <napi.h>

#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "common/errors.h"

namespace recserve {

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
    try {
      run_();
    } catch (const ArgumentError& e) {
      SetError(e.what());
      kind_ = e.kind() == ArgumentError::Kind::Range ? Kind::kRange : Kind::kType;
    } catch (const std::exception& e) {
      SetError(std::string("recserve native: ") + e.what());
    }
  }
  void OnOK() override {
    deferred_.Resolve(done_(Env()));
    if (settled_) settled_();
  }
  void OnError(const Napi::Error& e) override {
    if (kind_ == Kind::kRange)
      deferred_.Reject(Napi::RangeError::New(Env(), e.Message()).Value());
    else if (kind_ == Kind::kType)
      deferred_.Reject(Napi::TypeError::New(Env(), e.Message()).Value());
    else
      deferred_.Reject(e.Value());
    if (settled_) settled_();
  }
  // Called on the JS thread once the Promise is settled.
  void OnSettled(std::function<void()> f) { settled_ = std::move(f); }

 private:
  enum class Kind { kOther, kRange, kType };
  Run run_;
  Done done_;
  std::function<void()> settled_;
  Napi::Promise::Deferred deferred_;
  Kind kind_ = Kind::kOther;
};

// Queues `run` on a worker; the Promise resolves to done(env).
inline Napi::Value QueuePromise(Napi::Env env, const char* name, PromiseWorker::Run run,
                                PromiseWorker::Done done) {
  auto* w = new PromiseWorker(env, name, std::move(run), std::move(done));
  auto p = w->Promise();
  w->Queue();
  return p;
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
