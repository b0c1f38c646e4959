// defines: cuda::make_cuda_backend()
// Plain C++ header (no CUDA includes), so the backend factory in backend.cpp can create the CUDA
// backend without the CUDA toolkit on its include path.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace origami::cuda {

// The CUDA backend on device (local_rank % visible devices); GEMMs and attention products with
// bf16 operands (fp32 accumulation) if bf16, else in fp32 throughout.
std::unique_ptr<Backend> make_cuda_backend(int local_rank, bool bf16);

}  // namespace origami::cuda
