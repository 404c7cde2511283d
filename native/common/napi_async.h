// One async operation behind a Promise, for both bindings: `run` executes on a libuv
// worker thread (off the event loop); `done` builds the resolved value back on the JS
// thread. An ArgumentError thrown by `run` rejects with a RangeError or TypeError as the
// synchronous calls would throw; any other exception rejects with an Error.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
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
  void OnOK() override { deferred_.Resolve(done_(Env())); }
  void OnError(const Napi::Error& e) override {
    if (kind_ == Kind::kRange)
      deferred_.Reject(Napi::RangeError::New(Env(), e.Message()).Value());
    else if (kind_ == Kind::kType)
      deferred_.Reject(Napi::TypeError::New(Env(), e.Message()).Value());
    else
      deferred_.Reject(e.Value());
  }

 private:
  enum class Kind { kOther, kRange, kType };
  Run run_;
  Done done_;
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

}  // namespace recserve
