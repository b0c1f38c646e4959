// defines: cuda::make_cuda_backend()
// Plain C++ header (no CUDA includes), so the backend factory in backend.cpp can create the CUDA
// backend without the CUDA toolkit on its include path.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace origami::cuda {

// The CUDA backend on device (local_rank % visible devices), GEMMs in bf16 with fp32 accumulation.
std::unique_ptr<Backend> make_cuda_backend(int local_rank);

}  // namespace origami::cuda
