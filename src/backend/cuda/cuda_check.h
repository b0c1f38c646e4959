// defines: CUDA_CHECK(expr), cuda::check_cuda()
// Every CUDA runtime call goes through CUDA_CHECK, which turns a failure into an origami::Error
// naming the error, the call as written and its file:line, so a failing rank says exactly
// which operation broke instead of surfacing later as a corrupt result.
#pragma once
#include <cuda_runtime.h>

namespace origami::cuda {

void check_cuda(cudaError_t err, const char* expr, const char* file, int line);

}  // namespace origami::cuda

#define CUDA_CHECK(expr) ::origami::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
