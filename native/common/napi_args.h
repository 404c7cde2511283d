// Argument checks shared by every native entry point. Each throws ArgumentError naming
// the argument; Guard() turns that into a JS TypeError/RangeError, and any other C++
// exception into a JS Error, so no input can crash the process.
#pragma once
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/id_filters.h"
#include "common/row_values.h"

namespace recserve {

template <typename F>
auto Guard(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const ArgumentError& e) {
    if (e.kind() == ArgumentError::Kind::Type) throw Napi::TypeError::New(env, e.what());
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("recserve native: ") + e.what());
  }
}

inline Napi::Float32Array ArgFloat32Array(const Napi::CallbackInfo& info, size_t i,
                                          const char* name) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    ThrowType(std::string(name) + " must be a Float32Array");
  return info[i].As<Napi::Float32Array>();
}

inline Napi::Uint32Array AsUint32Array(const Napi::Value& v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    ThrowType(name + " must be a Uint32Array");
  return v.As<Napi::Uint32Array>();
}

inline Napi::Uint32Array ArgUint32Array(const Napi::CallbackInfo& info, size_t i,
                                        const char* name) {
  if (info.Length() <= i) ThrowType(std::string(name) + " must be a Uint32Array");
  return AsUint32Array(info[i], name);
}

// An integer in [lo, hi]; TypeError when not a number, RangeError otherwise.
inline int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo,
                      int64_t hi) {
  if (info.Length() <= i || !info[i].IsNumber())
    ThrowType(std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::floor(v) != v || v < static_cast<double>(lo) ||
      v > static_cast<double>(hi))
    ThrowRange(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " +
               std::to_string(hi) + "], got " + info[i].ToString().Utf8Value());
  return static_cast<int64_t>(v);
}

inline std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    ThrowType(std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// Whether a typed array lies in a SharedArrayBuffer (napi_is_arraybuffer is false for one).
// Such memory is never detached or freed while a reference to the array is held, so an
// async call may read it in place on its worker rather than copy it first.
inline bool InSharedMemory(const Napi::TypedArray& a) {
  napi_value buffer = nullptr;
  if (napi_get_typedarray_info(a.Env(), a, nullptr, nullptr, nullptr, &buffer, nullptr) !=
      napi_ok)
    return false;
  bool plain = true;
  if (napi_is_arraybuffer(a.Env(), buffer, &plain) != napi_ok) return false;
  return !plain;
}

// A copy of a typed array's elements that an async call's closures can share (the caller
// may reuse its array as soon as the call returns).
template <typename T>
std::shared_ptr<std::vector<T>> SharedCopy(const Napi::TypedArrayOf<T>& a) {
  return std::make_shared<std::vector<T>>(a.Data(), a.Data() + a.ElementLength());
}

// Copies a Float32Array of rows of `dim` floats; checks the length and values.
inline size_t CheckRows(const Napi::Float32Array& a, size_t dim, const char* name) {
  if (a.ElementLength() % dim != 0)
    ThrowRange(std::string(name) + ".length (" + std::to_string(a.ElementLength()) +
               ") must be a multiple of dim (" + std::to_string(dim) + ")");
  CheckRowValues(a.Data(), a.ElementLength() / dim, dim, name);
  return a.ElementLength() / dim;
}

inline Napi::Object TopKResult(Napi::Env env, const std::vector<uint32_t>& ids,
                               const std::vector<float>& scores, size_t k) {
  Napi::Object o = Napi::Object::New(env);
  auto idbuf = Napi::ArrayBuffer::New(env, ids.size() * sizeof(uint32_t));
  if (!ids.empty()) std::memcpy(idbuf.Data(), ids.data(), ids.size() * sizeof(uint32_t));
  auto scbuf = Napi::ArrayBuffer::New(env, scores.size() * sizeof(float));
  if (!scores.empty()) std::memcpy(scbuf.Data(), scores.data(), scores.size() * sizeof(float));
  o.Set("ids", Napi::Uint32Array::New(env, ids.size(), idbuf, 0));
  o.Set("scores", Napi::Float32Array::New(env, scores.size(), scbuf, 0));
  o.Set("k", Napi::Number::New(env, static_cast<double>(k)));
  return o;
}

// The optional id filters of a search (IdFilters, common/id_filters.h): info[ex_arg] is
// null/undefined or an array of one (Uint32Array | null) per query (excluded ids, returned
// sorted), info[allow_arg] null/undefined or a Uint32Array (the allowed ids, as given).
// Both indexes take them alike.
inline IdFilters ArgIdFilters(const Napi::CallbackInfo& info, size_t ex_arg, size_t allow_arg,
                              size_t nq) {
  IdFilters f;
  if (info.Length() > ex_arg && !info[ex_arg].IsUndefined() && !info[ex_arg].IsNull()) {
    if (!info[ex_arg].IsArray()) ThrowType("exclude must be an array of (Uint32Array | null)");
    auto arr = info[ex_arg].As<Napi::Array>();
    if (arr.Length() != nq)
      ThrowRange("exclude.length (" + std::to_string(arr.Length()) +
                 ") must equal the number of queries (" + std::to_string(nq) + ")");
    f.exclude.resize(nq);
    // To nq, the length checked: Get can run a getter, and a getter can grow the array.
    for (uint32_t i = 0; i < nq; i++) {
      Napi::Value v = arr.Get(i);
      if (v.IsUndefined() || v.IsNull()) continue;
      auto ids = AsUint32Array(v, "exclude[" + std::to_string(i) + "]");
      f.exclude[i].assign(ids.Data(), ids.Data() + ids.ElementLength());
      std::sort(f.exclude[i].begin(), f.exclude[i].end());
    }
  }
  if (info.Length() > allow_arg && !info[allow_arg].IsUndefined() && !info[allow_arg].IsNull()) {
    auto ids = AsUint32Array(info[allow_arg], "allow");
    f.allow.assign(ids.Data(), ids.Data() + ids.ElementLength());
    f.has_allow = true;
  }
  return f;
}

// Largest k and B*k any search accepts: keeps a typo'd k from allocating gigabytes. 2^24
// entries are 128 MiB of ids and scores (a search's heaps hold as much again); 2^28 let one
// call of 256 queries x k = 2^20 on a 3-row index take 4 GB and 10 s.
constexpr int64_t kMaxK = 1 << 20;
constexpr size_t kMaxResultEntries = size_t(1) << 24;

}  // namespace recserve
