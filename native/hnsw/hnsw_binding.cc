// JS classes over FAISS: NativeHnswIndex (the HNSW index of hnsw_index.h, its calls run
// on libuv workers and resolve Promises) and NativeFaissFlat (IndexFlatIP, used by the
// retrieval benchmark as the reference).
#include <faiss/IndexFlat.h>
#include <faiss/impl/FaissException.h>
#include <napi.h>
#include <omp.h>

#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/napi_args.h"
#include "common/napi_async.h"
#include "hnsw/hnsw_index.h"

namespace recserve {
namespace {

using faiss_idx = faiss::Index::idx_t;
class HnswWrap : public Napi::ObjectWrap<HnswWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeHnswIndex",
                       {
                           InstanceMethod<&HnswWrap::Add>("add"),
                           InstanceMethod<&HnswWrap::Remove>("remove"),
                           InstanceMethod<&HnswWrap::Compact>("compact"),
                           InstanceMethod<&HnswWrap::CheckGraph>("checkGraph"),
                           InstanceMethod<&HnswWrap::Search>("search"),
                           InstanceMethod<&HnswWrap::SearchSync>("searchSync"),
                           InstanceMethod<&HnswWrap::Save>("save"),
                           InstanceMethod<&HnswWrap::Load>("load"),
                           InstanceMethod<&HnswWrap::Ids>("ids"),
                           InstanceAccessor<&HnswWrap::GetDim>("dim"),
                           InstanceAccessor<&HnswWrap::GetSize>("size"),
                           InstanceAccessor<&HnswWrap::GetRemovedRows>("removedRows"),
                           InstanceAccessor<&HnswWrap::GetMetric>("metric"),
                       });
  }

  // new NativeHnswIndex(dim, M, efConstruction, metric? ('ip' (default) or 'cosine'))
  explicit HnswWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HnswWrap>(info) {
    Guard(info.Env(), [&] {
      const int dim = static_cast<int>(ArgInt(info, 0, "dim", 1, 65536));
      const int m = static_cast<int>(ArgInt(info, 1, "M", 2, 512));
      const int efc = static_cast<int>(ArgInt(info, 2, "efConstruction", 1, 1 << 16));
      auto metric = HnswIndex::Metric::kInnerProduct;
      if (info.Length() > 3 && !info[3].IsUndefined()) {
        const std::string name = ArgString(info, 3, "metric");
        if (name == "cosine")
          metric = HnswIndex::Metric::kCosine;
        else if (name != "ip")
          ThrowRange("metric must be 'ip' or 'cosine', got '" + name + "'");
      }
      engine_ = std::make_shared<HnswIndex>(dim, m, efc, metric);
      return 0;
    });
  }

 private:
  // `run` on a libuv worker, behind a Promise (common/napi_async.h); FAISS's own errors
  // (a file it cannot read or write) say so. With `queue`, after the calls queued there
  // before it: the calls that take the index's writer mutex (add, remove, load and
  // checkGraph), and save and ids, which must see the writes called before them, go to the
  // pool one at a time (WriteQueue), and searches keep the other threads. compact() builds
  // beside the writes, so it does not wait for them, and on a thread of its own
  // (ThreadPromise).
  static Napi::Value Async(Napi::Env env, const char* name, PromiseWorker::Run run,
                           PromiseWorker::Done done, WriteQueue* queue = nullptr) {
    if (queue) return queue->Queue(env, name, SayFaiss(std::move(run)), std::move(done));
    return QueuePromise(env, name, SayFaiss(std::move(run)), std::move(done));
  }
  // `run` wrapped so that FAISS's exceptions reject as "FAISS: ..." errors.
  static PromiseWorker::Run SayFaiss(PromiseWorker::Run run) {
    return [run = std::move(run)] {
      try {
        run();
      } catch (const faiss::FaissException& e) {
        throw std::runtime_error(std::string("FAISS: ") + e.what());
      }
    };
  }

  // add(ids, vectors): Promise<void>
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto ids = ArgUint32Array(info, 0, "ids");
      auto vecs = ArgFloat32Array(info, 1, "vectors");
      const size_t d = static_cast<size_t>(engine_->Dim());
      if (vecs.ElementLength() != ids.ElementLength() * d)
        ThrowRange("vectors.length (" + std::to_string(vecs.ElementLength()) +
                   ") must equal ids.length x dim (" + std::to_string(ids.ElementLength()) +
                   " x " + std::to_string(d) + ")");
      // The values are checked on the worker, in the copy (HnswIndex::Add): at 1M x 64 the
      // check held the event loop as long as the copy.
      auto engine = engine_;
      auto idv = SharedCopy(ids);
      auto vv = SharedCopy(vecs);
      return Async(
          info.Env(), "recserve.hnsw.add", [engine, idv, vv] { engine->Add(*idv, *vv); },
          [](Napi::Env env) { return env.Undefined(); }, &writes_);
    });
  }

  // remove(ids): Promise<void>
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto ids = ArgUint32Array(info, 0, "ids");
      auto engine = engine_;
      auto idv = SharedCopy(ids);
      return Async(
          info.Env(), "recserve.hnsw.remove", [engine, idv] { engine->Remove(*idv); },
          [](Napi::Env env) { return env.Undefined(); }, &writes_);
    });
  }

  // compact(threads? (0 = every core)): Promise<number>, the rows dropped
  Napi::Value Compact(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      const int threads =
          info.Length() > 0 && !info[0].IsUndefined()
              ? static_cast<int>(ArgInt(info, 0, "threads", 0, 1024))
              : 0;
      auto engine = engine_;
      auto dropped = std::make_shared<size_t>(0);
      // On a thread of its own (ThreadPromise): the build takes minutes at 1M rows, and
      // in libuv's pool it held a thread that searches need.
      return ThreadPromise(
          info.Env(), "recserve.hnsw.compact",
          SayFaiss([engine, dropped, threads] { *dropped = engine->Compact(threads); }),
          [dropped](Napi::Env env) {
            return Napi::Number::New(env, static_cast<double>(*dropped));
          });
    });
  }

  // checkGraph(): Promise<{rows, fromEntryMissing, toEntryMissing, treeFaults,
  // reconnectsFull, reconnectsIncremental}>
  Napi::Value CheckGraph(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto engine = engine_;
      auto report = std::make_shared<HnswIndex::GraphReport>();
      return Async(
          info.Env(), "recserve.hnsw.checkGraph",
          [engine, report] { *report = engine->CheckGraph(); },
          [report](Napi::Env env) {
            Napi::Object o = Napi::Object::New(env);
            const auto num = [&](double v) { return Napi::Number::New(env, v); };
            o.Set("rows", num(static_cast<double>(report->rows)));
            o.Set("fromEntryMissing", num(static_cast<double>(report->from_entry_missing)));
            o.Set("toEntryMissing", num(static_cast<double>(report->to_entry_missing)));
            o.Set("treeFaults", num(static_cast<double>(report->tree_faults)));
            o.Set("reconnectsFull", num(static_cast<double>(report->reconnects_full)));
            o.Set("reconnectsIncremental",
                  num(static_cast<double>(report->reconnects_incremental)));
            return o;
          },
          &writes_);
    });
  }

  struct SearchArgs {
    std::vector<float> queries;
    size_t nq = 0, k = 0;
    int ef = 0, threads = 0;
    bool use_faiss = false;
    IdFilters filters;
    HnswIndex::FilterMode mode = HnswIndex::FilterMode::kAuto;
  };
  // search(queries, k, efSearch, threads (0 = automatic), useFaiss?, exclude?, allow?,
  //        filterMode? (0 auto, 1 graph, 2 scan))
  SearchArgs ParseSearch(const Napi::CallbackInfo& info) {
    SearchArgs a;
    auto q = ArgFloat32Array(info, 0, "queries");
    a.nq = CheckRows(q, static_cast<size_t>(engine_->Dim()), "queries");
    // Copied before the filters are read: an element getter there can run JS that detaches
    // or frees the queries' buffer.
    a.queries.assign(q.Data(), q.Data() + q.ElementLength());
    a.k = static_cast<size_t>(ArgInt(info, 1, "k", 1, kMaxK));
    if (a.nq * a.k > kMaxResultEntries) ThrowRange("queries x k is too large");
    a.ef = static_cast<int>(ArgInt(info, 2, "efSearch", 1, 1 << 20));
    a.threads = static_cast<int>(ArgInt(info, 3, "threads", 0, 1024));
    a.use_faiss = info.Length() > 4 && info[4].ToBoolean().Value();
    a.filters = ArgIdFilters(info, 5, 6, a.nq);
    if (info.Length() > 7 && !info[7].IsUndefined())
      a.mode = static_cast<HnswIndex::FilterMode>(ArgInt(info, 7, "filterMode", 0, 2));
    if (a.use_faiss && (a.filters.has_allow || !a.filters.exclude.empty()))
      ThrowRange("exclude and allow need impl 'recserve' (FAISS's own search has no filters here)");
    return a;
  }

  Napi::Value Search(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto a = std::make_shared<SearchArgs>(ParseSearch(info));
      auto ids = std::make_shared<std::vector<uint32_t>>();
      auto scores = std::make_shared<std::vector<float>>();
      auto engine = engine_;
      return Async(
          info.Env(), "recserve.hnsw.search",
          [engine, a, ids, scores] {
            engine->Search(a->queries, a->nq, a->k, a->ef, a->threads, a->use_faiss, a->filters,
                           a->mode, ids.get(), scores.get());
          },
          [a, ids, scores](Napi::Env env) -> Napi::Value {
            return TopKResult(env, *ids, *scores, a->k);
          });
    });
  }

  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      SearchArgs a = ParseSearch(info);
      std::vector<uint32_t> ids;
      std::vector<float> scores;
      try {
        engine_->Search(a.queries, a.nq, a.k, a.ef, a.threads, a.use_faiss, a.filters, a.mode,
                        &ids, &scores);
      } catch (const faiss::FaissException& e) {
        throw std::runtime_error(std::string("FAISS: ") + e.what());
      }
      return TopKResult(info.Env(), ids, scores, a.k);
    });
  }

  Napi::Value Save(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      const std::string path = ArgString(info, 0, "path");
      if (path.empty()) ThrowRange("path must not be empty");
      auto engine = engine_;
      // Behind the writes called before it (writes_): `add(); save()` saves the add, where
      // beside it the file held whatever part of the add was in (148 of 3,100 rows once).
      return Async(
          info.Env(), "recserve.hnsw.save", [engine, path] { engine->Save(path); },
          [](Napi::Env env) { return env.Undefined(); }, &writes_);
    });
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      const std::string path = ArgString(info, 0, "path");
      if (path.empty()) ThrowRange("path must not be empty");
      auto engine = engine_;
      return Async(
          info.Env(), "recserve.hnsw.load", [engine, path] { engine->Load(path); },
          [](Napi::Env env) { return env.Undefined(); }, &writes_);
    });
  }

  // ids(): Promise<Uint32Array>, the ids held, ascending (HnswIndex::HeldIds)
  Napi::Value Ids(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto engine = engine_;
      auto held = std::make_shared<std::vector<uint32_t>>();
      // Behind the writes called before it (writes_), as save: `remove(x); ids()` leaves x
      // out, settled or not.
      return Async(
          info.Env(), "recserve.hnsw.ids", [engine, held] { *held = engine->HeldIds(); },
          [held](Napi::Env env) -> Napi::Value {
            auto buf = Napi::ArrayBuffer::New(env, held->size() * sizeof(uint32_t));
            if (!held->empty())
              std::memcpy(buf.Data(), held->data(), held->size() * sizeof(uint32_t));
            return Napi::Uint32Array::New(env, held->size(), buf, 0);
          },
          &writes_);
    });
  }

  Napi::Value GetDim(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), engine_->Dim());
  }
  Napi::Value GetSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(engine_->Size()));
  }
  Napi::Value GetRemovedRows(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(engine_->RemovedRows()));
  }
  Napi::Value GetMetric(const Napi::CallbackInfo& info) {
    return Napi::String::New(
        info.Env(), engine_->GetMetric() == HnswIndex::Metric::kCosine ? "cosine" : "ip");
  }

  std::shared_ptr<HnswIndex> engine_;
  WriteQueue writes_;  // add, remove, load, checkGraph, save, ids (Async)
};

// FAISS IndexFlatIP, for the benchmark's side-by-side figures. Synchronous on purpose.
class FaissFlatWrap : public Napi::ObjectWrap<FaissFlatWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeFaissFlat",
                       {
                           InstanceMethod<&FaissFlatWrap::Add>("add"),
                           InstanceMethod<&FaissFlatWrap::SearchSync>("searchSync"),
                           InstanceAccessor<&FaissFlatWrap::GetSize>("size"),
                       });
  }
  // new NativeFaissFlat(dim)
  explicit FaissFlatWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FaissFlatWrap>(info) {
    Guard(info.Env(), [&] {
      const int dim = static_cast<int>(ArgInt(info, 0, "dim", 1, 65536));
      index_ = std::make_unique<faiss::IndexFlatIP>(dim);
      return 0;
    });
  }

 private:
  // add(vectors): ids are the row numbers in insertion order.
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto v = ArgFloat32Array(info, 0, "vectors");
      const size_t n = CheckRows(v, static_cast<size_t>(index_->d), "vectors");
      index_->add(static_cast<faiss_idx>(n), v.Data());
      return info.Env().Undefined();
    });
  }
  // searchSync(queries, k, threads (0 = OpenMP default))
  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto q = ArgFloat32Array(info, 0, "queries");
      const size_t nq = CheckRows(q, static_cast<size_t>(index_->d), "queries");
      const size_t k = static_cast<size_t>(ArgInt(info, 1, "k", 1, kMaxK));
      const int threads =
          info.Length() > 2 ? static_cast<int>(ArgInt(info, 2, "threads", 0, 1024)) : 0;
      if (nq * k > kMaxResultEntries) ThrowRange("queries x k is too large");
      std::vector<faiss_idx> labels(nq * k, -1);
      std::vector<float> scores(nq * k);
      if (nq > 0) {
        omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
        try {
          index_->search(static_cast<faiss_idx>(nq), q.Data(), static_cast<faiss_idx>(k),
                         scores.data(), labels.data());
        } catch (const faiss::FaissException& e) {
          throw std::runtime_error(std::string("FAISS: ") + e.what());
        }
      }
      std::vector<uint32_t> ids;
      MapFaissLabels(labels, &scores, nullptr, &ids);
      return TopKResult(info.Env(), ids, scores, k);
    });
  }
  Napi::Value GetSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ntotal));
  }

  std::unique_ptr<faiss::IndexFlatIP> index_;
};

}  // namespace

void InitHnsw(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeHnswIndex", HnswWrap::Define(env));
  exports.Set("NativeFaissFlat", FaissFlatWrap::Define(env));
}

}  // namespace recserve
