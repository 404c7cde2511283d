// CUDA backend of the exact index. Compiled from exact_cuda.cu when CMake finds nvcc
// (RECSERVE_WITH_CUDA); otherwise exact_cuda_stub.cc provides the same functions, and
// they report no device, so the CPU engine serves.
#pragma once
#include <cstddef>
#include <string>

namespace recserve {

// True when this binary contains the CUDA backend.
bool CudaCompiled();
// Devices the CUDA runtime reports; 0 when none (or when not compiled). Never throws.
int CudaDeviceCount();
// Why there is no device, when there is none ("" otherwise).
std::string CudaStatus();

// Scores rows (n x dpad, float32, padded) against queries (nq x dpad) on the device:
// out[q * n + r]. Returns false (and the caller falls back to the CPU) on any CUDA error.
bool CudaScoreF32(const float* rows, size_t n, size_t dpad, const float* queries, size_t nq,
                  float* out, std::string* error);

}  // namespace recserve
