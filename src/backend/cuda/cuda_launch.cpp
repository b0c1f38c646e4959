// defines: cuda::check_launch (see cuda_launch.h)
#include "backend/cuda/cuda_launch.h"

#include <fmt/format.h>

#include <string>

#include "base/error.h"

namespace origami::cuda {

void fail_message(const std::string& message) { fail("{}", message); }

void check_launch(const char* op, std::initializer_list<int64_t> shape) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  std::string dims;
  for (int64_t d : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
  fail("CUDA kernel {} [{}] failed to launch: {} ({})", op, dims, cudaGetErrorName(err),
       cudaGetErrorString(err));
}

}  // namespace origami::cuda
