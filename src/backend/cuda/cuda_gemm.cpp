// defines: CudaBackend::gemm (cuBLASLt, plans cached per shape), CudaBackend::gemm_batched
// Row-major C = op(A) op(B) is the column-major product C^T = op(B)^T op(A)^T, so every GEMM is
// handed to cuBLAS with the operands swapped and nothing transposed in memory.
// cuBLASLt's heuristic query costs tens of microseconds; a training step repeats the same few
// dozen shapes, so the descriptors and the chosen algorithm are kept per (shape, transposes,
// leading dimensions, pointer alignment, beta == 0, precision); the heuristic's answers are
// reused per power-of-two shape bucket, since expert row counts change every step.
// bf16 precision rounds A and B to bf16 copies (weights once per optimizer step) and runs the
// plain bf16 kernels with fp32 output.
// The experts' GEMMs go to cublasGemmGroupedBatchedEx as one call per weight; cuBLAS 13.0
// refuses bf16 operands with an fp32 output there, so in bf16 the backend falls back to a loop
// of cuBLASLt calls and reports it (grouped_gemm_path()).
#include <algorithm>
#include <bit>
#include <cstdint>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_launch.h"
#include "base/error.h"
#include "base/logging.h"

namespace origami::cuda {


CudaBackend::GemmPlan::~GemmPlan() {
  if (op) cublasLtMatmulDescDestroy(op);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (c) cublasLtMatrixLayoutDestroy(c);
}

namespace {

cublasComputeType_t compute_type(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::fp32: return CUBLAS_COMPUTE_32F;
    case GemmPrecision::tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmPrecision::bf16: return CUBLAS_COMPUTE_32F;  // bf16 operands, fp32 accumulation
  }
  return CUBLAS_COMPUTE_32F;
}

int alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  for (int a = 16; a > 4; a /= 2)
    if (v % a == 0) return a;
  return 4;
}

void lt_check(cublasStatus_t s, const char* what, const GemmDesc& g) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    fail("cuBLASLt error {} ({}) in {} for gemm m={} n={} k={} trans_a={} trans_b={} lda={} ldb={} "
         "ldc={}",
         int(s), cublasGetStatusString(s), what, g.m, g.n, g.k, g.trans_a, g.trans_b, g.lda, g.ldb,
         g.ldc);
  }
}

// Elements spanned by a row-major [rows, cols] matrix with leading dimension ld.
int64_t span(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 ? 0 : (rows - 1) * ld + cols; }

// Leading dimensions resolved (0 = contiguous) and checked, as the CPU backend does.
GemmDesc resolved(const GemmDesc& g0, const char* op) {
  GemmDesc g = g0;
  check(g.m >= 0 && g.n >= 0 && g.k >= 0, "{}: negative shape m={} n={} k={}", op, g.m, g.n, g.k);
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  if (!g.lda) g.lda = std::max<int64_t>(1, a_cols);
  if (!g.ldb) g.ldb = std::max<int64_t>(1, b_cols);
  if (!g.ldc) g.ldc = std::max<int64_t>(1, g.n);
  check(g.lda >= a_cols && g.ldb >= b_cols && g.ldc >= g.n,
        "{}: leading dimension too small (m={} n={} k={} trans_a={} trans_b={}: lda={} needs >= "
        "{}, ldb={} needs >= {}, ldc={} needs >= {})",
        op, g.m, g.n, g.k, g.trans_a, g.trans_b, g.lda, a_cols, g.ldb, b_cols, g.ldc, g.n);
  check(g.m == 0 || g.n == 0 || (g.c != nullptr && (g.k == 0 || (g.a && g.b))),
        "{}: null operand (m={} n={} k={})", op, g.m, g.n, g.k);
  return g;
}

}  // namespace

size_t CudaBackend::GemmKeyHash::operator()(const GemmKey& k) const {
  size_t h = 1469598103934665603ull;
  auto mix = [&h](int64_t v) { h = (h ^ size_t(v)) * 1099511628211ull; };
  for (int64_t v : {int64_t(k.ta), int64_t(k.tb), int64_t(k.beta_zero), int64_t(k.precision), k.m,
                    k.n, k.k, k.lda, k.ldb, k.ldc, int64_t(k.align_a), int64_t(k.align_b),
                    int64_t(k.align_c)})
    mix(v);
  return h;
}

const CudaBackend::GemmPlan& CudaBackend::plan_for(const GemmKey& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  GemmDesc g;  // for error messages only
  g.m = key.m, g.n = key.n, g.k = key.k, g.trans_a = key.ta, g.trans_b = key.tb;
  g.lda = key.lda, g.ldb = key.ldb, g.ldc = key.ldc;
  auto plan = std::make_unique<GemmPlan>();
  lt_check(cublasLtMatmulDescCreate(&plan->op, compute_type(GemmPrecision(key.precision)), CUDA_R_32F),
           "cublasLtMatmulDescCreate", g);
  const cublasOperation_t op_a = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // Lt's A is our B
  const cublasOperation_t op_b = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // Lt's B is our A
  lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)),
           "set TRANSA", g);
  lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)),
           "set TRANSB", g);
  // Column-major views of the row-major operands; bf16 precision reads bf16 copies of A and B
  // (rounded once by to_bf16) and runs the plain bf16 tensor-core kernels, C stays fp32.
  const cudaDataType_t ab = GemmPrecision(key.precision) == GemmPrecision::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  lt_check(cublasLtMatrixLayoutCreate(&plan->a, ab, key.tb ? key.k : key.n,
                                      key.tb ? key.n : key.k, key.ldb),
           "layout of B", g);
  lt_check(cublasLtMatrixLayoutCreate(&plan->b, ab, key.ta ? key.m : key.k,
                                      key.ta ? key.k : key.m, key.lda),
           "layout of A", g);
  lt_check(cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32F, key.n, key.m, key.ldc), "layout of C", g);
  GemmKey bucket = key;
  for (int64_t* d : {&bucket.m, &bucket.n, &bucket.k}) *d = int64_t(std::bit_ceil(uint64_t(std::max<int64_t>(*d, 16))));
  bucket.lda = bucket.ldb = bucket.ldc = 0;
  if (auto it = algos_.find(bucket); it != algos_.end()) {
    cublasLtMatmulHeuristicResult_t check_result{};
    if (cublasLtMatmulAlgoCheck(lt_, plan->op, plan->a, plan->b, plan->c, plan->c, &it->second,
                                &check_result) == CUBLAS_STATUS_SUCCESS &&
        check_result.workspaceSize <= workspace_bytes_) {
      plan->algo = it->second;
      return *plans_.emplace(key, std::move(plan)).first->second;
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "preference", g);
  const uint64_t ws = workspace_bytes_;
  const uint32_t al_a = key.align_b, al_b = key.align_a, al_c = key.align_c;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt_, plan->op, plan->a, plan->b, plan->c,
                                                          plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  lt_check(s, "cublasLtMatmulAlgoGetHeuristic", g);
  check(found > 0,
        "cuBLASLt found no algorithm for gemm m={} n={} k={} trans_a={} trans_b={} lda={} ldb={} "
        "ldc={} at precision {}",
        key.m, key.n, key.k, key.ta, key.tb, key.lda, key.ldb, key.ldc,
        to_string(GemmPrecision(key.precision)));
  plan->algo = result.algo;
  algos_[bucket] = result.algo;
  return *plans_.emplace(key, std::move(plan)).first->second;
}

std::vector<std::pair<const void*, const void*>> CudaBackend::stage_bf16(std::span<const GemmDesc> gs) {
  std::vector<int64_t> offsets;  // element offsets of each A and B copy, 128-element aligned
  int64_t total = 0;
  for (const GemmDesc& g : gs) {
    for (int64_t n : {span(g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda),
                      g.b_is_weight ? 0 : span(g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb)}) {
      offsets.push_back(total);
      total += (n + 127) / 128 * 128;
    }
  }
  const size_t bytes = size_t(total) * 2;
  if (bytes > staging_bytes_) {
    if (staging_) alloc_->deallocate(staging_);
    staging_bytes_ = std::max(bytes, staging_bytes_ + staging_bytes_ / 2);
    staging_ = alloc_->allocate(staging_bytes_);
  }
  auto* base = static_cast<char*>(staging_);
  std::vector<std::pair<const void*, const void*>> out;
  for (size_t i = 0; i < gs.size(); ++i) {
    const GemmDesc& g = gs[i];
    void* a = base + 2 * offsets[2 * i];
    void* b = base + 2 * offsets[2 * i + 1];
    to_bf16(g.a, a, span(g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda), stream_);
    const int64_t nb = span(g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb);
    if (g.b_is_weight) b = const_cast<void*>(weight_bf16(g.b, nb));
    else to_bf16(g.b, b, nb, stream_);
    out.emplace_back(a, b);
  }
  return out;
}

const void* CudaBackend::weight_bf16(const float* w, int64_t elems) {
  WeightCopy& c = weights_[reinterpret_cast<uintptr_t>(w)];
  if (c.bf16 && c.elems < elems) {  // a wider view of the same start: convert afresh
    alloc_->deallocate(c.bf16);
    c = WeightCopy{};
  }
  if (!c.bf16) {
    c.bf16 = alloc_->allocate(size_t(elems) * 2);
    c.elems = elems;
  }
  if (!c.valid) {
    to_bf16(w, c.bf16, c.elems, stream_);
    c.valid = true;
    ++weight_conversions_;
  }
  return c.bf16;
}

void CudaBackend::invalidate_weights(const void* p, size_t bytes) {
  if (weights_.empty() || bytes == 0) return;
  const auto lo = reinterpret_cast<uintptr_t>(p), hi = lo + bytes;
  // Every copy starting before hi whose fp32 range reaches past lo overlaps [lo, hi).
  for (auto it = weights_.begin(), end = weights_.lower_bound(hi); it != end; ++it)
    if (it->first + uintptr_t(it->second.elems) * 4 > lo) it->second.valid = false;
}

void CudaBackend::run_gemm(const GemmDesc& g, const void* a16, const void* b16) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // C = beta * C: no product to run
    scale_matrix(g.c, g.m, g.n, g.ldc, g.beta, stream_);
    return;
  }
  const void* a = g.a;
  const void* b = g.b;
  if (precision_ == GemmPrecision::bf16) {
    if (!a16) std::tie(a16, b16) = stage_bf16(std::span<const GemmDesc>(&g, 1))[0];
    a = a16, b = b16;
  }
  const GemmKey key{g.trans_a, g.trans_b, g.beta == 0.f, int(precision_), g.m, g.n, g.k,
                    g.lda, g.ldb, g.ldc, alignment_of(a), alignment_of(b), alignment_of(g.c)};
  const GemmPlan& p = plan_for(key);
  lt_check(cublasLtMatmul(lt_, p.op, &g.alpha, b, p.a, a, p.b, &g.beta, g.c, p.c, g.c, p.c,
                          &p.algo, workspace_, workspace_bytes_, stream_),
           "cublasLtMatmul", g);
}

void CudaBackend::gemm(const GemmDesc& g) { run_gemm(resolved(g, "gemm")); }

void CudaBackend::gemm_batched(std::span<const GemmDesc> gs) {
  std::vector<GemmDesc> work;
  work.reserve(gs.size());
  for (const GemmDesc& g0 : gs) {
    const GemmDesc g = resolved(g0, "gemm_batched");
    if (g.m == 0 || g.n == 0) continue;
    if (g.k == 0) {
      scale_matrix(g.c, g.m, g.n, g.ldc, g.beta, stream_);
      continue;
    }
    work.push_back(g);
  }
  if (work.empty()) return;
  std::vector<std::pair<const void*, const void*>> ab16;
  if (precision_ == GemmPrecision::bf16) ab16 = stage_bf16(work);
  auto loop = [&] {
    for (size_t i = 0; i < work.size(); ++i)
      run_gemm(work[i], ab16.empty() ? nullptr : ab16[i].first, ab16.empty() ? nullptr : ab16[i].second);
  };
  if (work.size() == 1 || !grouped_ok_) return loop();
  // One cublasGemmGroupedBatchedEx call, each GEMM its own group of size 1 (shapes differ).
  const int G = int(work.size());
  std::vector<cublasOperation_t> op_a(G), op_b(G);
  std::vector<int> m(G), n(G), k(G), lda(G), ldb(G), ldc(G), size(G, 1);
  std::vector<float> alpha(G), beta(G);
  std::vector<const void*> ptrs(size_t(3) * G);
  for (int i = 0; i < G; ++i) {
    const GemmDesc& g = work[i];
    op_a[i] = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    op_b[i] = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = int(g.n), n[i] = int(g.m), k[i] = int(g.k);
    lda[i] = int(g.ldb), ldb[i] = int(g.lda), ldc[i] = int(g.ldc);
    alpha[i] = g.alpha, beta[i] = g.beta;
    ptrs[i] = ab16.empty() ? g.b : ab16[i].second;
    ptrs[G + i] = ab16.empty() ? g.a : ab16[i].first;
    ptrs[2 * G + i] = g.c;
  }
  auto* dev_ptrs = static_cast<const void**>(scratch(ptrs.size() * sizeof(void*)));
  // From pageable memory: the call returns once the source is staged, so `ptrs` may go.
  CUDA_CHECK(cudaMemcpyAsync(dev_ptrs, ptrs.data(), ptrs.size() * sizeof(void*),
                             cudaMemcpyHostToDevice, stream_));
  const cudaDataType_t ab = ab16.empty() ? CUDA_R_32F : CUDA_R_16BF;
  const cublasStatus_t s = cublasGemmGroupedBatchedEx(
      blas_, op_a.data(), op_b.data(), m.data(), n.data(), k.data(), alpha.data(), dev_ptrs,
      ab, lda.data(), dev_ptrs + G, ab, ldb.data(), beta.data(),
      reinterpret_cast<void* const*>(const_cast<void**>(dev_ptrs + 2 * G)), CUDA_R_32F,
      ldc.data(), G, size.data(), compute_type(precision_));
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE) {
    spdlog::warn("cublasGemmGroupedBatchedEx refused {} operands ({}); the experts' GEMMs fall "
                 "back to one cuBLASLt call each",
                 to_string(precision_), cublasGetStatusString(s));
    grouped_ok_ = false;
    return loop();
  }
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cublasGemmGroupedBatchedEx error {} ({}) for {} GEMMs", int(s), cublasGetStatusString(s), G);
}

}  // namespace origami::cuda
