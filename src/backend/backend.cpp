#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "base/error.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace origami {

std::unique_ptr<Backend> make_backend(const std::string& name, int local_rank) {
  if (name == "cpu") return make_cpu_backend();
  if (name == "cuda") {
#ifdef ORIGAMI_WITH_CUDA
    // The device plumbing exists (device selection, allocator statistics); the kernels behind
    // this interface arrive with the CUDA backend issue, so training on cuda is refused clearly.
    cuda::select_device_for_local_rank(local_rank);
    fail("training.backend: 'cuda' kernels are not implemented yet in this build "
         "(device {} selected and working); use backend: cpu", local_rank);
#else
    fail("training.backend: 'cuda' requested but this build has no CUDA backend "
         "(nvcc was not found at configure time); use backend: cpu or rebuild with CUDA");
#endif
  }
  fail("training.backend: unknown backend '{}' (allowed: cpu, cuda)", name);
}

}  // namespace origami
