// CUDA backend of the exact index: scores item rows against a batch of queries on the
// device. Compiled only when CMake finds nvcc. It has never run on a GPU: these machines
// have none, so every entry point must fail cleanly (false / 0) and leave the CPU engine
// serving. Top-k selection stays on the host, so the scores are all that cross the bus.
#include <cuda_runtime.h>

#include <string>

#include "cuda/exact_cuda.h"

namespace recserve {
namespace {

// One thread per (row, query) pair; rows and queries share the padded stride dpad.
__global__ void ScoreKernel(const float* __restrict__ rows, unsigned long long n,
                            unsigned long long dpad, const float* __restrict__ queries,
                            unsigned long long nq, float* __restrict__ out) {
  const unsigned long long r = blockIdx.x * 1ull * blockDim.x + threadIdx.x;
  const unsigned long long q = blockIdx.y;
  if (r >= n || q >= nq) return;
  const float* row = rows + r * dpad;
  const float* qv = queries + q * dpad;
  float s = 0.f;
  for (unsigned long long j = 0; j < dpad; j++) s = fmaf(row[j], qv[j], s);
  out[q * n + r] = s;
}

bool Check(cudaError_t e, const char* what, std::string* error) {
  if (e == cudaSuccess) return true;
  if (error) *error = std::string(what) + ": " + cudaGetErrorString(e);
  return false;
}

}  // namespace

bool CudaCompiled() { return true; }

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

std::string CudaStatus() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("compiled; no usable device: ") + cudaGetErrorString(e);
  }
  return n > 0 ? "" : "compiled; no device";
}

bool CudaScoreF32(const float* rows, size_t n, size_t dpad, const float* queries, size_t nq,
                  float* out, std::string* error) {
  if (n == 0 || nq == 0) return true;
  float *d_rows = nullptr, *d_q = nullptr, *d_out = nullptr;
  bool ok = Check(cudaMalloc(&d_rows, n * dpad * sizeof(float)), "cudaMalloc rows", error) &&
            Check(cudaMalloc(&d_q, nq * dpad * sizeof(float)), "cudaMalloc queries", error) &&
            Check(cudaMalloc(&d_out, n * nq * sizeof(float)), "cudaMalloc scores", error) &&
            Check(cudaMemcpy(d_rows, rows, n * dpad * sizeof(float), cudaMemcpyHostToDevice),
                  "copy rows", error) &&
            Check(cudaMemcpy(d_q, queries, nq * dpad * sizeof(float), cudaMemcpyHostToDevice),
                  "copy queries", error);
  if (ok) {
    const unsigned threads = 256;
    const dim3 grid(static_cast<unsigned>((n + threads - 1) / threads), static_cast<unsigned>(nq));
    ScoreKernel<<<grid, threads>>>(d_rows, n, dpad, d_q, nq, d_out);
    ok = Check(cudaGetLastError(), "launch", error) &&
         Check(cudaMemcpy(out, d_out, n * nq * sizeof(float), cudaMemcpyDeviceToHost),
               "copy scores", error);
  }
  cudaFree(d_rows);
  cudaFree(d_q);
  cudaFree(d_out);
  return ok;
}

}  // namespace recserve
