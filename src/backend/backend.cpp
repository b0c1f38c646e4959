#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "base/error.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_backend_factory.h"
#endif

namespace origami {

std::unique_ptr<Backend> make_backend(const std::string& name, int local_rank) {
  if (name == "cpu") return make_cpu_backend();
  if (name == "cuda") {
#ifdef ORIGAMI_WITH_CUDA
    return cuda::make_cuda_backend(local_rank);
#else
    fail("training.backend: 'cuda' requested but this build has no CUDA backend "
         "(nvcc was not found at configure time); use backend: cpu or rebuild with CUDA");
#endif
  }
  fail("training.backend: unknown backend '{}' (allowed: cpu, cuda)", name);
}

}  // namespace origami
