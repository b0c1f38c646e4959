// defines: CpuBackend::gemm, CpuBackend::gemm_batched (OpenBLAS cblas_sgemm, row-major)
// A leading dimension of 0 means "contiguous" (the row length of the stored matrix). A batch of
// many small GEMMs (the experts' groups) runs one GEMM per OpenMP thread with OpenBLAS held to one
// thread; each GEMM is still a single sgemm call, so results do not depend on the thread count.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <exception>

#include "backend/cpu/cpu_backend.h"
#include "base/error.h"

namespace origami {

namespace {

// Validates shapes and leading dimensions and runs one GEMM. K == 0 is handled here (C = beta*C)
// rather than trusting every BLAS build with an empty inner dimension.
void run_gemm(const GemmDesc& g) {
  check(g.m >= 0 && g.n >= 0 && g.k >= 0, "gemm: negative shape m={} n={} k={}", g.m, g.n, g.k);
  if (g.m == 0 || g.n == 0) return;
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  const int64_t lda = g.lda ? g.lda : std::max<int64_t>(1, a_cols);
  const int64_t ldb = g.ldb ? g.ldb : std::max<int64_t>(1, b_cols);
  const int64_t ldc = g.ldc ? g.ldc : g.n;
  check(lda >= a_cols && ldb >= b_cols && ldc >= g.n,
        "gemm: leading dimension too small (m={} n={} k={} trans_a={} trans_b={}: lda={} needs "
        ">= {}, ldb={} needs >= {}, ldc={} needs >= {})",
        g.m, g.n, g.k, g.trans_a, g.trans_b, lda, a_cols, ldb, b_cols, ldc, g.n);
  check(g.c != nullptr && (g.k == 0 || (g.a != nullptr && g.b != nullptr)),
        "gemm: null operand (m={} n={} k={})", g.m, g.n, g.k);
  if (g.k == 0) {
    for (int64_t i = 0; i < g.m; ++i) {
      float* c = g.c + i * ldc;
      for (int64_t j = 0; j < g.n; ++j) c[j] = g.beta == 0.f ? 0.f : g.beta * c[j];
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, blasint(g.m), blasint(g.n), blasint(g.k),
              g.alpha, g.a, blasint(lda), g.b, blasint(ldb), g.beta, g.c, blasint(ldc));
}

// Below this many flops per GEMM, OpenBLAS's own threading costs more than it gains, so a
// batch of such GEMMs is better spread one per thread.
constexpr double kSmallGemmFlops = 2.0 * 256 * 256 * 256;

}  // namespace

void CpuBackend::gemm(const GemmDesc& g) { run_gemm(g); }

void CpuBackend::gemm_batched(std::span<const GemmDesc> gs) {
  const int64_t count = int64_t(gs.size());
  const int threads = omp_get_max_threads();
  double max_flops = 0;
  for (const GemmDesc& g : gs) max_flops = std::max(max_flops, 2.0 * g.m * g.n * g.k);
  if (threads < 2 || count < 2 * threads || max_flops > kSmallGemmFlops) {
    for (const GemmDesc& g : gs) run_gemm(g);
    return;
  }
  // Shape errors are raised before the parallel region (exceptions cannot leave it).
  for (const GemmDesc& g : gs) {
    check(g.m >= 0 && g.n >= 0 && g.k >= 0, "gemm_batched: negative shape m={} n={} k={}", g.m,
          g.n, g.k);
  }
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    try {
      run_gemm(gs[i]);
    } catch (...) {
#pragma omp critical(origami_gemm_batched_error)
      if (!error) error = std::current_exception();
    }
  }
  openblas_set_num_threads(blas_threads);
  if (error) std::rethrow_exception(error);
}

}  // namespace origami
