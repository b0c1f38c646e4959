#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "base/error.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_backend_factory.h"
#endif

namespace origami {

std::unique_ptr<Backend> make_backend(const std::string& name, int local_rank,
                                      const std::string& precision) {
  check(precision == "fp32" || precision == "bf16",
        "training.precision: unknown precision '{}' (allowed: fp32, bf16)", precision);
  if (name == "cpu") {
    check(precision == "fp32", "training.precision: bf16 needs backend cuda (the cpu backend is fp32)");
    return make_cpu_backend();
  }
  if (name == "cuda") {
#ifdef ORIGAMI_WITH_CUDA
    return cuda::make_cuda_backend(local_rank, precision == "bf16");
#else
    fail("training.backend: 'cuda' requested but this build has no CUDA backend "
         "(nvcc was not found at configure time); use backend: cpu or rebuild with CUDA");
#endif
  }
  fail("training.backend: unknown backend '{}' (allowed: cpu, cuda)", name);
}

}  // namespace origami
