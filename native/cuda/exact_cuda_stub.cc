// Built when CMake found no CUDA toolkit: the backend is absent and reports so.
#include "cuda/exact_cuda.h"

namespace recserve {

bool CudaCompiled() { return false; }
int CudaDeviceCount() { return 0; }
std::string CudaStatus() { return "not compiled (no CUDA toolkit at build time)"; }
CudaRows::~CudaRows() = default;
void CudaRows::Free() {}
bool CudaRows::Upload(const float*, size_t, size_t, std::string* error) {
  if (error) *error = CudaStatus();
  return false;
}
bool CudaRows::Score(const float*, size_t, size_t, size_t, float*, std::string* error) {
  if (error) *error = CudaStatus();
  return false;
}

}  // namespace recserve
