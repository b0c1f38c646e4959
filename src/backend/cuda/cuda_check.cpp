// defines: cuda::check_cuda (the body behind CUDA_CHECK)
#include "backend/cuda/cuda_check.h"

#include "base/error.h"

namespace origami::cuda {

void check_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  int device = -1;
  cudaGetDevice(&device);  // best effort: the message is useful even if this fails too
  fail("CUDA error {} ({}) in `{}` at {}:{} (device {})", cudaGetErrorName(err),
       cudaGetErrorString(err), expr, file, line, device);
}

}  // namespace origami::cuda
