// Module entry point of the recserve addon: registers each engine's exports.
//   native/exact/  exact dot-product top-k (SIMD kernels, own thread pool)
//   native/hnsw/   FAISS HNSW + FAISS flat (only when built with FAISS, i.e. by CMake)
//   native/cuda/   CUDA backend of the exact index (compiled when nvcc was found)
#include <napi.h>

#include <thread>

#include "cuda/exact_cuda.h"
#include "exact/kernels.h"

namespace recserve {
void InitExact(Napi::Env env, Napi::Object exports);
void InitBench(Napi::Env env, Napi::Object exports);
#ifdef RECSERVE_WITH_FAISS
void InitHnsw(Napi::Env env, Napi::Object exports);
#endif
}  // namespace recserve

namespace {

// Reports which SIMD kernels this CPU can run and which engines this build contains, so
// the TypeScript side can log the engine it got and benchmarks can print it.
Napi::Value EngineInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  __builtin_cpu_init();
  out.Set("avx2", Napi::Boolean::New(env, __builtin_cpu_supports("avx2")));
  out.Set("fma", Napi::Boolean::New(env, __builtin_cpu_supports("fma")));
  out.Set("f16c", Napi::Boolean::New(env, __builtin_cpu_supports("f16c")));
  out.Set("exactKernel", Napi::String::New(env, recserve::BestKernels().name));
#ifdef RECSERVE_WITH_FAISS
  out.Set("faiss", Napi::Boolean::New(env, true));
#else
  out.Set("faiss", Napi::Boolean::New(env, false));
#endif
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", Napi::Boolean::New(env, recserve::CudaCompiled()));
  cuda.Set("devices", Napi::Number::New(env, recserve::CudaDeviceCount()));
  cuda.Set("status", Napi::String::New(env, recserve::CudaStatus()));
  out.Set("cuda", cuda);
  out.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("engineInfo", Napi::Function::New(env, EngineInfo, "engineInfo"));
  recserve::InitExact(env, exports);
  recserve::InitBench(env, exports);
#ifdef RECSERVE_WITH_FAISS
  recserve::InitHnsw(env, exports);
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(recserve_native, Init)
