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

// A device-resident copy of an exact index's float32 rows (padded stride dpad). Every
// method returns false with *error set on any CUDA failure; the index then serves the
// search on the CPU and stops using the device.
class CudaRows {
 public:
  CudaRows() = default;
  ~CudaRows();
  CudaRows(const CudaRows&) = delete;
  CudaRows& operator=(const CudaRows&) = delete;

  bool Upload(const float* rows, size_t n, size_t dpad, std::string* error);
  // out[q * nr + i] = dot(row r0 + i, query q) for i < nr.
  bool Score(const float* queries, size_t nq, size_t r0, size_t nr, float* out,
             std::string* error);

 private:
  void Free();
  float* rows_ = nullptr;
  float* queries_ = nullptr;
  float* scores_ = nullptr;
  size_t n_ = 0, dpad_ = 0, q_cap_ = 0, s_cap_ = 0;
};

}  // namespace recserve
