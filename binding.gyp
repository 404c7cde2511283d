# node-gyp build of the exact index alone: no FAISS, no BLAS, no CUDA, for hosts without
# CMake or FAISS. The HNSW and FAISS classes are absent from this addon (engineInfo().faiss
# is false). Built by scripts/build-gyp.mjs into build-gyp/ (never build/, which holds the
# CMake addon); test/retrieval/gyp.test.ts builds and loads it in CI.
{
  "targets": [
    {
      "target_name": "recserve_native",
      "sources": [
        "native/addon.cc",
        "native/common/thread_pool.cc",
        "native/exact/kernels_scalar.cc",
        "native/exact/exact_index.cc",
        "native/exact/exact_binding.cc",
        "native/exact/bench_binding.cc",
        "native/cuda/exact_cuda_stub.cc"
      ],
      "dependencies": ["recserve_avx2_kernels", "recserve_avx512_kernels"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-frtti"],
      "ldflags": ["-Wl,-z,nodelete"]
    },
    {
      # Only the AVX2 kernels get -mavx2/-mfma/-mf16c; they run after a CPU check.
      "target_name": "recserve_avx2_kernels",
      "type": "static_library",
      "sources": ["native/exact/kernels_avx2.cc"],
      "include_dirs": ["native"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fPIC", "-mavx2", "-mfma", "-mf16c"]
    },
    {
      # The AVX-512 kernels, entered after the same kind of CPU check.
      "target_name": "recserve_avx512_kernels",
      "type": "static_library",
      "sources": ["native/exact/kernels_avx512.cc"],
      "include_dirs": ["native"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fPIC", "-mavx2", "-mfma", "-mf16c", "-mavx512f",
                    "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    }
  ]
}
