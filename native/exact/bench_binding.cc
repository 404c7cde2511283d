// Machine probes for the retrieval benchmark, measured in the same run as the engines:
// streaming read bandwidth (the bound of a B = 1 scan) and the BLAS sgemm rate (the bound
// of a large batch). Synchronous: benchmarks only.
#include <napi.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/huge_alloc.h"
#include "common/napi_args.h"
#include "common/thread_pool.h"
#include "exact/kernels.h"

#ifdef RECSERVE_WITH_BLAS
#include <cblas.h>
#endif

namespace recserve {
namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// benchStreamRead(mebibytes, threads, reps, hugePages = true) -> GB/s (1e9 bytes/s), best
// of reps passes. The buffer is allocated the way the exact index allocates its rows (2 MiB
// pages where available), so the probe measures the memory the scan reads; hugePages false
// measures 4 KiB pages.
Napi::Value BenchStreamRead(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    const size_t mib = static_cast<size_t>(ArgInt(info, 0, "mebibytes", 1, 1 << 16));
    const size_t threads = static_cast<size_t>(ArgInt(info, 1, "threads", 1, 1024));
    const int reps = static_cast<int>(ArgInt(info, 2, "reps", 1, 1000));
    bool huge = true;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      if (!info[3].IsBoolean()) ThrowType("hugePages must be a boolean");
      huge = info[3].As<Napi::Boolean>().Value();
    }
    const size_t n = mib * (1 << 20) / sizeof(float);
    float* buf = static_cast<float*>(AllocLarge(n * sizeof(float), huge));
    for (size_t i = 0; i < n; i++) buf[i] = static_cast<float>(i & 7);  // fault pages in
    const Kernels& k = BestKernels();
    const size_t tasks = std::min(threads, ThreadPool::Shared().Workers() + 1);
    std::vector<float> sink(tasks);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      const double t0 = Seconds();
      ThreadPool::Shared().ParallelFor(tasks, [&](size_t t) {
        const size_t a = n * t / tasks / 8 * 8;
        const size_t b = t + 1 == tasks ? n : n * (t + 1) / tasks / 8 * 8;
        sink[t] += k.sum_f32(buf + a, b - a);
      });
      best = std::min(best, Seconds() - t0);
    }
    std::free(buf);
    volatile float keep = sink[0];
    (void)keep;
    return Napi::Number::New(info.Env(), static_cast<double>(n * sizeof(float)) / best / 1e9);
  });
}

#ifdef RECSERVE_WITH_BLAS
// benchSgemm(size, reps) -> GFLOP/s of a size^3 sgemm with OpenBLAS's own threading.
Napi::Value BenchSgemm(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), [&]() -> Napi::Value {
    const int s = static_cast<int>(ArgInt(info, 0, "size", 16, 8192));
    const int reps = static_cast<int>(ArgInt(info, 1, "reps", 1, 1000));
    std::vector<float> a(size_t(s) * s, 0.5f), b(size_t(s) * s, 0.25f), c(size_t(s) * s);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {  // the first call warms OpenBLAS's threads up
      const double t0 = Seconds();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s, s, s, 1.f, a.data(), s, b.data(),
                  s, 0.f, c.data(), s);
      if (r > 0) best = std::min(best, Seconds() - t0);
    }
    return Napi::Number::New(info.Env(), 2.0 * s * s * s / best / 1e9);
  });
}
#endif

}  // namespace

void InitBench(Napi::Env env, Napi::Object exports) {
  exports.Set("benchStreamRead", Napi::Function::New(env, BenchStreamRead, "benchStreamRead"));
#ifdef RECSERVE_WITH_BLAS
  exports.Set("benchSgemm", Napi::Function::New(env, BenchSgemm, "benchSgemm"));
#endif
}

}  // namespace recserve
