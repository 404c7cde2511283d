// N-API surface of the exact index: class NativeExactIndex. Arguments are checked and
// copied on the JS thread (queries, exclusions and the allow list are small next to the
// item rows), so the AsyncWorker owns its inputs outright: the caller may reuse its
// buffers at once, and Execute touches no JS value.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/napi_args.h"
#include "common/napi_async.h"
#include "exact/exact_index.h"

namespace recserve {
namespace {

// float16 rows hold magnitudes up to 65504; a larger value would be stored as infinity, and
// its scores would be infinite, or NaN against a zero component, which no top-k can rank (the
// row silently drops out of every result). A RangeError names it instead.
void CheckHalfRange(const float* p, size_t n) {
  constexpr float kHalfMax = 65504.0f;
  for (size_t i = 0; i < n; i++) {
    if (std::fabs(p[i]) > kHalfMax) {
      char v[32];
      std::snprintf(v, sizeof v, "%g", static_cast<double>(p[i]));
      ThrowRange("vectors[" + std::to_string(i) + "] is " + v +
                 ", beyond float16's range (magnitudes up to 65504); use storage 'f32'");
    }
  }
}

// What build and upsert accept as rows: finite, within the squared-norm bound
// (CheckRowValues), and for float16 storage within its range.
void CheckVectors(const float* p, size_t rows, size_t dim, Storage storage) {
  CheckRowValues(p, rows, dim, "vectors");
  if (storage == Storage::F16) CheckHalfRange(p, rows * dim);
}

// checkVectors(vectors, dim, storage): the same check without an index, for callers that
// must refuse rows before they become queries or items (a model version's embeddings).
Napi::Value CheckVectorsJs(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    auto vecs = ArgFloat32Array(info, 0, "vectors");
    const size_t d = static_cast<size_t>(ArgInt(info, 1, "dim", 1, 65536));
    const std::string storage = ArgString(info, 2, "storage");
    if (storage != "f32" && storage != "f16")
      ThrowRange("storage must be 'f32' or 'f16', got '" + storage + "'");
    if (vecs.ElementLength() % d != 0)
      ThrowRange("vectors.length (" + std::to_string(vecs.ElementLength()) +
                 ") must be a multiple of dim (" + std::to_string(d) + ")");
    CheckVectors(vecs.Data(), vecs.ElementLength() / d, d,
                 storage == "f16" ? Storage::F16 : Storage::F32);
    return info.Env().Undefined();
  });
}

// setTuning's fields (and the tuning getter's): JS name, ExactTuning member, accepted range.
struct TuningField {
  const char* key;
  size_t ExactTuning::*member;
  size_t lo, hi;
};
constexpr TuningField kTuningFields[] = {
    {"minRowsPerTask", &ExactTuning::min_rows_per_task, 1, size_t(1) << 31},
    {"blockBytes", &ExactTuning::block_bytes, 256, size_t(1) << 26},
    {"scanBlockBytes", &ExactTuning::scan_block_bytes, 256, size_t(1) << 26},
    {"claimDivisor", &ExactTuning::claim_divisor, 0, size_t(1) << 20},
    {"packMinBatch", &ExactTuning::pack_min_batch, 0, size_t(1) << 20},
    {"screenMinBatch", &ExactTuning::screen_min_batch, 0, size_t(1) << 20},
    {"screenStepBytes", &ExactTuning::screen_step_bytes, 0, size_t(1) << 40},
    {"sgemmMinBatch", &ExactTuning::sgemm_min_batch, 0, size_t(1) << 20},
    {"sgemmRows", &ExactTuning::sgemm_rows, 64, size_t(1) << 20},
    {"guessRank", &ExactTuning::guess_rank, 0, size_t(1) << 20},
    {"guessMinRows", &ExactTuning::guess_min_rows, 1, size_t(1) << 31},
};

struct ParsedSearch {
  std::vector<float> queries;
  size_t nq = 0;
  size_t k = 0;
  IdFilters filters;

  SearchRequest Request() const {
    SearchRequest r;
    r.queries = queries.data();
    r.nq = nq;
    r.k = k;
    r.exclude = &filters.exclude;
    r.allow = filters.has_allow ? &filters.allow : nullptr;
    return r;
  }
};

// search(queries, k, exclude?, allow?)
ParsedSearch ParseSearch(const Napi::CallbackInfo& info, size_t dim) {
  ParsedSearch p;
  auto q = ArgFloat32Array(info, 0, "queries");
  p.nq = CheckRows(q, dim, "queries");
  p.k = static_cast<size_t>(ArgInt(info, 1, "k", 1, kMaxK));
  if (p.nq * p.k > kMaxResultEntries)
    ThrowRange("queries x k is too large (" + std::to_string(p.nq) + " x " +
               std::to_string(p.k) + ")");
  p.queries.assign(q.Data(), q.Data() + q.ElementLength());
  p.filters = ArgIdFilters(info, 2, 3, p.nq);
  return p;
}

class ExactIndexWrap : public Napi::ObjectWrap<ExactIndexWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeExactIndex",
        {
            InstanceMethod<&ExactIndexWrap::Build>("build"),
            InstanceMethod<&ExactIndexWrap::Upsert>("upsert"),
            InstanceMethod<&ExactIndexWrap::Remove>("remove"),
            InstanceMethod<&ExactIndexWrap::BuildAsync>("buildAsync"),
            InstanceMethod<&ExactIndexWrap::UpsertAsync>("upsertAsync"),
            InstanceMethod<&ExactIndexWrap::RemoveAsync>("removeAsync"),
            InstanceMethod<&ExactIndexWrap::Search>("search"),
            InstanceMethod<&ExactIndexWrap::SearchSync>("searchSync"),
            InstanceMethod<&ExactIndexWrap::SetTuning>("setTuning"),
            InstanceAccessor<&ExactIndexWrap::GetTuning>("tuning"),
            InstanceAccessor<&ExactIndexWrap::GetDim>("dim"),
            InstanceAccessor<&ExactIndexWrap::GetSize>("size"),
            InstanceAccessor<&ExactIndexWrap::GetStorage>("storage"),
            InstanceAccessor<&ExactIndexWrap::GetThreads>("threads"),
            InstanceAccessor<&ExactIndexWrap::GetKernel>("kernel"),
            InstanceAccessor<&ExactIndexWrap::GetBackend>("backend"),
            InstanceAccessor<&ExactIndexWrap::GetScreen>("screen"),
            InstanceAccessor<&ExactIndexWrap::GetGuessRetries>("guessRetries"),
            InstanceAccessor<&ExactIndexWrap::GetScreenPrunes>("screenPrunes"),
            InstanceAccessor<&ExactIndexWrap::GetScreenedBatches>("screenedBatches"),
            InstanceAccessor<&ExactIndexWrap::GetScreenRefits>("screenRefits"),
            InstanceAccessor<&ExactIndexWrap::GetScreenOutliers>("screenOutliers"),
            InstanceAccessor<&ExactIndexWrap::GetCapacity>("capacity"),
            InstanceAccessor<&ExactIndexWrap::GetGrowths>("growths"),
        });
  }

  // new NativeExactIndex(dim, storage: 'f32'|'f16', threads (0 = all cores),
  //                      kernel: 'auto'|'scalar'|'avx2'|'avx512'|'avx512-bf16'|'avx512-scan',
  //                      device: 'cpu'|'cuda'|'auto', screen?: 'none'|'int8'|'auto')
  explicit ExactIndexWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ExactIndexWrap>(info) {
    Guard(info.Env(), [&] {
      const size_t dim = static_cast<size_t>(ArgInt(info, 0, "dim", 1, 65536));
      const std::string storage = ArgString(info, 1, "storage");
      if (storage != "f32" && storage != "f16")
        ThrowRange("storage must be 'f32' or 'f16', got '" + storage + "'");
      const size_t threads = static_cast<size_t>(ArgInt(info, 2, "threads", 0, 1024));
      const std::string kernel = ArgString(info, 3, "kernel");
      const Kernels* ks = nullptr;
      if (kernel == "auto") {
        ks = &BestKernels();
      } else if (kernel == "scalar") {
        ks = &ScalarKernels();
      } else if (kernel == "avx2" || kernel == "avx512" || kernel == "avx512-bf16" ||
                 kernel == "avx512-scan") {
        ks = kernel == "avx2"          ? Avx2Kernels()
             : kernel == "avx512"      ? Avx512Kernels()
             : kernel == "avx512-bf16" ? Avx512Bf16Kernels()
                                       : Avx512ScanKernels();
        if (ks == nullptr) ThrowRange("kernel '" + kernel + "' is not supported by this CPU");
      } else {
        ThrowRange("kernel must be 'auto', 'scalar', 'avx2', 'avx512', 'avx512-bf16' or "
                   "'avx512-scan', got '" +
                   kernel + "'");
      }
      const std::string device = ArgString(info, 4, "device");
      if (device != "cpu" && device != "cuda" && device != "auto")
        ThrowRange("device must be 'cpu', 'cuda' or 'auto', got '" + device + "'");
      // 'auto' (also when absent): the int8 screen where the kernel set has it.
      const std::string screen =
          info.Length() > 5 && !info[5].IsUndefined() ? ArgString(info, 5, "screen") : "auto";
      if (screen != "none" && screen != "int8" && screen != "auto")
        ThrowRange("screen must be 'none', 'int8' or 'auto', got '" + screen + "'");
      if (screen == "int8" && ks->screen_i8 == nullptr)
        ThrowRange("screen 'int8' needs an AVX2 or AVX-512 kernel set; kernel '" +
                   std::string(ks->name) + "' has none");
      index_ = std::make_shared<ExactIndex>(dim, storage == "f16" ? Storage::F16 : Storage::F32,
                                            threads, *ks, screen != "none");
      // The CUDA backend serves only when a device answers; otherwise the CPU engine does.
      if (device != "cpu") index_->EnableCuda();
      return 0;
    });
  }

 private:
  // A build or upsert with its rows copied, on a libuv worker once the async writes
  // before it have settled (writes_).
  Napi::Value WriteAsync(const Napi::CallbackInfo& info, const char* name,
                         void (ExactIndex::*write)(const uint32_t*, const float*, size_t)) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      // The values are checked on the worker, in the copy or the shared rows: at 1M x 64 the check held the
      // JS thread 60-130 ms; buildAsync now returns after 218-273 ms where it took 276-317
      // (the rest is the copy's page faults; bench:exact-writes --async, build_hold_ms). A
      // bad value rejects the promise with the same RangeError, before anything is written.
      auto [ids, vecs] = RowsArgs(info, false);
      auto idv = SharedCopy(ids);
      // Rows in a SharedArrayBuffer are read in place on the worker, the array held by a
      // reference until the promise settles (the worker and its closures are freed on the JS
      // thread): shared memory cannot be detached, and the caller shared it on purpose. The
      // server's item embeddings are such an array; copying them held the event loop
      // 0.4-0.6 s at 1M x 64 and doubled their memory while the index was built
      // (throwaway marks around the load's steps). Other rows are copied, since the caller may
      // reuse its array at once.
      std::shared_ptr<std::vector<float>> copy;
      std::shared_ptr<Napi::ObjectReference> held;
      const float* rows = nullptr;
      if (InSharedMemory(vecs)) {
        held = std::make_shared<Napi::ObjectReference>(Napi::Persistent(vecs.As<Napi::Object>()));
        rows = vecs.Data();
      } else {
        copy = SharedCopy(vecs);
        rows = copy->data();
      }
      auto index = index_;
      return writes_.Queue(
          info.Env(), name,
          [index, idv, copy, held, rows, write] {
            CheckVectors(rows, idv->size(), index->Dim(), index->StorageKind());
            ((*index).*write)(idv->data(), rows, idv->size());
          },
          [](Napi::Env env) { return env.Undefined(); });
    });
  }

  // The rows arguments of build and upsert: types and lengths, and the values unless
  // `values` is false (the async writes check them on the worker).
  std::pair<Napi::Uint32Array, Napi::Float32Array> RowsArgs(const Napi::CallbackInfo& info,
                                                            bool values = true) {
    auto ids = ArgUint32Array(info, 0, "ids");
    auto vecs = ArgFloat32Array(info, 1, "vectors");
    const size_t d = index_->Dim();
    if (vecs.ElementLength() != ids.ElementLength() * d)
      ThrowRange("vectors.length (" + std::to_string(vecs.ElementLength()) +
                 ") must equal ids.length x dim (" + std::to_string(ids.ElementLength()) +
                 " x " + std::to_string(d) + ")");
    if (values) CheckVectors(vecs.Data(), ids.ElementLength(), d, index_->StorageKind());
    return {ids, vecs};
  }

  // The synchronous writes refuse to run while an async write is queued or running: they
  // would overtake it (upsertAsync(id -> 1) then upsert(id -> 2) left 1 now and then), and
  // they cannot wait for it on the JS thread, whose completions move the queue on.
  void CheckNoAsyncWrite(const char* call) const {
    if (!writes_.Idle())
      throw std::runtime_error(std::string(call) +
                               " while an async write of this index is pending would run "
                               "before it; await the async writes first, or use " +
                               call + "Async");
  }
  Napi::Value Build(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      CheckNoAsyncWrite("build");
      auto [ids, vecs] = RowsArgs(info);
      index_->Build(ids.Data(), vecs.Data(), ids.ElementLength());
      return info.Env().Undefined();
    });
  }
  Napi::Value Upsert(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      CheckNoAsyncWrite("upsert");
      auto [ids, vecs] = RowsArgs(info);
      index_->Upsert(ids.Data(), vecs.Data(), ids.ElementLength());
      return info.Env().Undefined();
    });
  }
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      CheckNoAsyncWrite("remove");
      auto ids = ArgUint32Array(info, 0, "ids");
      index_->Remove(ids.Data(), ids.ElementLength());
      return info.Env().Undefined();
    });
  }
  // buildAsync / upsertAsync (ids, vectors) and removeAsync (ids): Promise<void>. The
  // arguments' types and lengths are checked here and the arrays copied (the caller may
  // reuse them at once), vectors in a SharedArrayBuffer excepted: those are read in place
  // until the promise settles (WriteAsync). The vectors' values are checked on the worker (as
  // the synchronous calls check them, with the same errors). The write runs on a libuv
  // worker, so the event loop goes on meanwhile (a build takes ~1 s at 1M rows), after the
  // async writes called before it (WriteQueue). An error found there (a bad value, an
  // unknown id on remove) rejects the promise before anything is written.
  Napi::Value BuildAsync(const Napi::CallbackInfo& info) {
    return WriteAsync(info, "recserve.exact.build", &ExactIndex::Build);
  }
  Napi::Value UpsertAsync(const Napi::CallbackInfo& info) {
    return WriteAsync(info, "recserve.exact.upsert", &ExactIndex::Upsert);
  }
  Napi::Value RemoveAsync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      auto ids = ArgUint32Array(info, 0, "ids");
      auto idv = SharedCopy(ids);
      auto index = index_;
      return writes_.Queue(
          info.Env(), "recserve.exact.remove",
          [index, idv] { index->Remove(idv->data(), idv->size()); },
          [](Napi::Env env) { return env.Undefined(); });
    });
  }
  Napi::Value Search(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      // The parsed arguments and the result live in the closures until the Promise
      // settles; `index` keeps the index alive while the search runs.
      auto p = std::make_shared<ParsedSearch>(ParseSearch(info, index_->Dim()));
      auto r = std::make_shared<SearchResult>();
      auto index = index_;
      return QueuePromise(
          info.Env(), "recserve.exact.search",
          [index, p, r] { index->Search(p->Request(), r.get()); },
          [p, r](Napi::Env env) { return TopKResult(env, r->ids, r->scores, p->k); });
    });
  }
  Napi::Value SearchSync(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      ParsedSearch p = ParseSearch(info, index_->Dim());
      SearchResult r;
      index_->Search(p.Request(), &r);
      return TopKResult(info.Env(), r.ids, r.scores, p.k);
    });
  }
  // setTuning({ minRowsPerTask?, claimDivisor?, blockBytes?, scanBlockBytes?, packMinBatch?,
  //             screenMinBatch?, screenStepBytes?, sgemmMinBatch?, sgemmRows?, guessRank?,
  //             guessMinRows? }):
  // benchmarks, tests. All or nothing: every field is checked before any applies, and
  // searches already running keep the settings they started with.
  Napi::Value SetTuning(const Napi::CallbackInfo& info) {
    return Guard(info.Env(), [&]() -> Napi::Value {
      if (info.Length() < 1 || !info[0].IsObject()) ThrowType("tuning must be an object");
      auto o = info[0].As<Napi::Object>();
      ExactTuning t = index_->Tuning();
      for (const TuningField& f : kTuningFields) {
        Napi::Value v = o.Get(f.key);
        if (v.IsUndefined()) continue;
        if (!v.IsNumber()) ThrowType(std::string("tuning.") + f.key + " must be a number");
        const double x = v.As<Napi::Number>().DoubleValue();
        if (!(x >= f.lo && x <= f.hi) || std::floor(x) != x)
          ThrowRange(std::string("tuning.") + f.key + " must be an integer in [" +
                     std::to_string(f.lo) + ", " + std::to_string(f.hi) + "]");
        t.*f.member = static_cast<size_t>(x);
      }
      index_->SetTuning(t);
      return info.Env().Undefined();
    });
  }
  // The settings searches start with now, under setTuning's names.
  Napi::Value GetTuning(const Napi::CallbackInfo& info) {
    const ExactTuning t = index_->Tuning();
    Napi::Object o = Napi::Object::New(info.Env());
    for (const TuningField& f : kTuningFields)
      o.Set(f.key, Napi::Number::New(info.Env(), static_cast<double>(t.*f.member)));
    return o;
  }
  Napi::Value GetDim(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->Dim()));
  }
  Napi::Value GetSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->Size()));
  }
  Napi::Value GetStorage(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), index_->StorageKind() == Storage::F16 ? "f16" : "f32");
  }
  Napi::Value GetThreads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->Threads()));
  }
  Napi::Value GetKernel(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), index_->KernelSet().name);
  }
  Napi::Value GetScreen(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), index_->Int8Screen() ? "int8" : "none");
  }
  Napi::Value GetGuessRetries(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->GuessRetries()));
  }
  Napi::Value GetScreenPrunes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ScreenPrunes()));
  }
  Napi::Value GetScreenedBatches(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ScreenedBatches()));
  }
  Napi::Value GetScreenRefits(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ScreenRefits()));
  }
  Napi::Value GetScreenOutliers(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->ScreenOutliers()));
  }
  Napi::Value GetCapacity(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(index_->Capacity()));
  }
  Napi::Value GetGrowths(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("moved", static_cast<double>(index_->GrowsMoved()));
    o.Set("copied", static_cast<double>(index_->GrowsCopied()));
    return o;
  }
  Napi::Value GetBackend(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), index_->CudaActive() ? "cuda" : "cpu");
  }

  std::shared_ptr<ExactIndex> index_;
  // buildAsync, upsertAsync and removeAsync, into the pool one at a time in call order.
  WriteQueue writes_;
};

}  // namespace

void InitExact(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeExactIndex", ExactIndexWrap::Define(env));
  exports.Set("exactKernel", Napi::String::New(env, BestKernels().name));
  exports.Set("exactHasSgemm", Napi::Boolean::New(env, ExactIndex::HasSgemm()));
  exports.Set("checkVectors", Napi::Function::New(env, CheckVectorsJs, "checkVectors"));
}

}  // namespace recserve
