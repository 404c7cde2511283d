// CUDA backend of the exact index: scores item rows against a batch of queries on the
// device. Compiled only when CMake finds nvcc. It has never run on a GPU: these machines
// have none, so every entry point must fail cleanly (false / 0) and leave the CPU engine
// serving. The rows stay resident on the device (re-uploaded after a write); top-k
// selection stays on the host, so queries and scores are what cross the bus per search.
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

CudaRows::~CudaRows() { Free(); }

void CudaRows::Free() {
  cudaFree(rows_);
  cudaFree(queries_);
  cudaFree(scores_);
  rows_ = queries_ = scores_ = nullptr;
  n_ = q_cap_ = s_cap_ = 0;
}

bool CudaRows::Upload(const float* rows, size_t n, size_t dpad, std::string* error) {
  Free();
  dpad_ = dpad;
  if (n == 0) return true;
  if (!Check(cudaMalloc(&rows_, n * dpad * sizeof(float)), "cudaMalloc rows", error)) {
    Free();
    return false;
  }
  if (!Check(cudaMemcpy(rows_, rows, n * dpad * sizeof(float), cudaMemcpyHostToDevice),
             "copy rows", error)) {
    Free();
    return false;
  }
  n_ = n;
  return true;
}

bool CudaRows::Score(const float* queries, size_t nq, size_t r0, size_t nr, float* out,
                     std::string* error) {
  if (nq == 0 || nr == 0) return true;
  if (r0 + nr > n_) {
    if (error) *error = "row range outside the uploaded rows";
    return false;
  }
  if (nq * dpad_ > q_cap_) {
    cudaFree(queries_);
    queries_ = nullptr;
    q_cap_ = 0;
    if (!Check(cudaMalloc(&queries_, nq * dpad_ * sizeof(float)), "cudaMalloc queries", error))
      return false;
    q_cap_ = nq * dpad_;
  }
  if (nq * nr > s_cap_) {
    cudaFree(scores_);
    scores_ = nullptr;
    s_cap_ = 0;
    if (!Check(cudaMalloc(&scores_, nq * nr * sizeof(float)), "cudaMalloc scores", error))
      return false;
    s_cap_ = nq * nr;
  }
  if (!Check(cudaMemcpy(queries_, queries, nq * dpad_ * sizeof(float), cudaMemcpyHostToDevice),
             "copy queries", error))
    return false;
  const unsigned threads = 256;
  const dim3 grid(static_cast<unsigned>((nr + threads - 1) / threads), static_cast<unsigned>(nq));
  ScoreKernel<<<grid, threads>>>(rows_ + r0 * dpad_, nr, dpad_, queries_, nq, scores_);
  return Check(cudaGetLastError(), "launch", error) &&
         Check(cudaMemcpy(out, scores_, nq * nr * sizeof(float), cudaMemcpyDeviceToHost),
               "copy scores", error);
}

}  // namespace recserve
