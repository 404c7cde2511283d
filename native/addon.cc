// Module entry point of the recserve addon: registers each engine's exports.
#include <napi.h>

namespace {

// Reports which SIMD kernels this CPU can run, so the TypeScript side can log the
// engine it got and benchmarks can print it beside their figures.
Napi::Value EngineInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  __builtin_cpu_init();
  out.Set("avx2", Napi::Boolean::New(env, __builtin_cpu_supports("avx2")));
  out.Set("fma", Napi::Boolean::New(env, __builtin_cpu_supports("fma")));
  out.Set("f16c", Napi::Boolean::New(env, __builtin_cpu_supports("f16c")));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("engineInfo", Napi::Function::New(env, EngineInfo, "engineInfo"));
  return exports;
}

}  // namespace

NODE_API_MODULE(recserve_native, Init)
