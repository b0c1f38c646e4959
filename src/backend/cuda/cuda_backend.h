// defines: cuda::CudaBackend (the Backend contract on one GPU), cuda::GemmPrecision
// Every op runs on one stream owned by the backend, in the order called, so the model's
// top-to-bottom step needs no events of its own; the host waits only where it must read a
// result (copy_to_host, sum, sum_squares) or hand memory back to the caller.
// Storage is fp32 (the interface's type); GEMMs run on the tensor cores at the precision chosen
// here (bf16 inputs with fp32 accumulation by default), router/softmax/loss math is fp32 or fp64.
// The kernels live in cuda_<family>.cu (or .cpp), one per family, each paired with the CPU
// reference's cpu_<family>.cpp: elementwise, gemm, embedding, norm_rope, swiglu, attention (plus
// attention_tc), router_permute, router_aux_loss, loss_adamw; memory in cuda_backend.cpp.
// Per-element math shared with the CPU backend is in backend/kernel_math.h.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_allocator.h"

namespace origami::cuda {

// What the GEMMs' inputs are rounded to on the tensor cores (accumulation is fp32 in all three).
enum class GemmPrecision { fp32, tf32, bf16 };
const char* to_string(GemmPrecision p);

class CudaBackend final : public Backend {
 public:
  // Selects device (local_rank % device count) and creates the stream, allocator and handles.
  explicit CudaBackend(int local_rank, GemmPrecision precision = GemmPrecision::bf16);
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }

  GemmPrecision gemm_precision() const { return precision_; }
  void set_gemm_precision(GemmPrecision p) { precision_ = p; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  // How the last gemm_batched ran: "grouped" (one cublasGemmGroupedBatchedEx) or "loop".
  const char* grouped_gemm_path() const { return grouped_ok_ ? "grouped" : "loop"; }
  size_t gemm_plans() const { return plans_.size(); }        // distinct GEMM shapes seen
  size_t gemm_heuristics() const { return algos_.size(); }  // heuristic queries made
  size_t weight_conversions() const { return weight_conversions_; }

  // memory (cuda_backend.cpp)
  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;
  size_t bytes_in_use() const override { return alloc_->bytes_in_use(); }
  size_t peak_bytes() const override { return alloc_->peak_bytes(); }
  bool is_device_memory(const void* p) const override;
  void* device_stream() const override { return stream_; }

  // cuda_gemm.cpp
  void gemm(const GemmDesc& g) override;
  void gemm_batched(std::span<const GemmDesc> gs) override;

  // cuda_elementwise.cu
  void fill(float* x, float value, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;
  void axpy(float alpha, const float* x, float* y, int64_t n) override;
  void scale(float* x, float alpha, int64_t n) override;
  double sum_squares(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;

  // cuda_embedding.cu
  void embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n,
                         int64_t dim) override;
  void embedding_backward(const float* dout, const int32_t* ids, float* dtable, int64_t n,
                          int64_t dim) override;

  // cuda_norm_rope.cu
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                       int64_t dim, float eps) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                        float* dx, float* dw, int64_t rows, int64_t dim) override;
  void rope_forward(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                    int64_t head_dim, float theta) override;
  void rope_backward(float* dx, const int32_t* positions, int64_t rows, int64_t heads,
                     int64_t head_dim, float theta) override;

  // cuda_swiglu.cu
  void swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) override;
  void swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows,
                       int64_t F) override;

  // cuda_attention.cu
  void attention_forward(const float* q, const float* k, const float* v, float* out, float* lse,
                         int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                          const float* out, const float* lse, float* dq, float* dk, float* dv,
                          int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  // Context parallelism's chunk of queries against all the keys: the same kernels, visiting only
  // the key tiles at or before each query's position (no padding to Tk).
  void attention_forward_offset(const float* q, const float* k, const float* v, float* out,
                                float* lse, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start,
                                int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward_offset(const float* dout, const float* q, const float* k,
                                 const float* v, const float* out, const float* lse, float* dq,
                                 float* dk, float* dv, int64_t B, int64_t Tq, int64_t Tk,
                                 int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) override;

  // cuda_router_permute.cu
  void router_forward(const float* logits, float* probs, int32_t* idx, float* weights,
                      float* lse, int64_t N, int64_t E, int64_t k, bool renormalize) override;
  void router_backward(const float* dweights, const float* dprobs, const float* dlse,
                       const float* probs, const int32_t* idx, const float* weights,
                       float* dlogits, int64_t N, int64_t E, int64_t k,
                       bool renormalize) override;
  void moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E, int64_t* counts,
                           int32_t* row) override;
  void moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k,
                   int64_t dim) override;
  void moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx, int64_t N,
                            int64_t k, int64_t dim) override;
  void moe_unpermute(const float* y, const int32_t* row, const float* weights, float* out,
                     int64_t N, int64_t k, int64_t dim) override;
  void moe_unpermute_backward(const float* dout, const float* y, const int32_t* row,
                              const float* weights, float* dy, float* dweights, int64_t N,
                              int64_t k, int64_t dim) override;

  // cuda_router_aux_loss.cu
  void expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N,
                               int64_t k, int64_t E, int64_t B, int64_t* counts) override;
  void balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block,
                    int64_t N, int64_t E, int64_t B, bool routed_share, double slots,
                    double scale, double n, float grad_scale, double* loss,
                    float* dprobs) override;
  void router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss,
                     float* dlse) override;

  // cuda_loss_adamw.cu
  void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses,
                             float* lse, int64_t N, int64_t V) override;
  void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                              float scale, float* dlogits, int64_t N, int64_t V) override;
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
             float beta1, float beta2, float eps, float weight_decay, int64_t t) override;

 private:
  struct GemmKey {
    bool ta, tb, beta_zero;
    int precision;
    int64_t m, n, k, lda, ldb, ldc;
    int align_a, align_b, align_c;
    bool operator==(const GemmKey&) const = default;
  };
  struct GemmKeyHash {
    size_t operator()(const GemmKey& k) const;
  };
  // cuBLASLt descriptors and the heuristic's algorithm for one GemmKey.
  struct GemmPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // Lt's A (our B), B (our A), C
    cublasLtMatmulAlgo_t algo{};
    GemmPlan() = default;
    GemmPlan(const GemmPlan&) = delete;
    GemmPlan& operator=(const GemmPlan&) = delete;
    ~GemmPlan();
  };
  const GemmPlan& plan_for(const GemmKey& key);
  // a16/b16: the operands already rounded to bf16 (same leading dimensions), for bf16 precision.
  void run_gemm(const GemmDesc& g, const void* a16 = nullptr, const void* b16 = nullptr);
  // Rounds the GEMMs' A and B operands to bf16 into the staging buffer: pointers per GEMM.
  std::vector<std::pair<const void*, const void*>> stage_bf16(std::span<const GemmDesc> gs);
  // The bf16 copy of a weight operand (GemmDesc::b_is_weight), converted on first use and kept
  // until an op writes into its fp32 range (invalidate_weights).
  const void* weight_bf16(const float* w, int64_t elems);
  void invalidate_weights(const void* p, size_t bytes);
  // Device scratch owned by the backend, grown on demand (stream-ordered, so reuse is safe).
  void* scratch(size_t bytes);
  // Ordered (deterministic) fp64 reduction of f(x) over n elements; waits for the result.
  double reduce(const float* x, int64_t n, bool squares);

  int device_ = -1;
  GemmPrecision precision_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CachingAllocator> alloc_;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  void* staging_ = nullptr;  // bf16 copies of GEMM operands (grown on demand, stream-ordered)
  size_t staging_bytes_ = 0;
  double* host_result_ = nullptr;  // pinned, for the reductions' results
  bool grouped_ok_ = true;  // false once cuBLAS refused the grouped call for these types
  size_t weight_conversions_ = 0;
  std::unordered_map<GemmKey, std::unique_ptr<GemmPlan>, GemmKeyHash> plans_;
  // Heuristic results by shape bucket (m, n, k rounded up to powers of two, leading dimensions
  // dropped): the experts' GEMMs change their row count every step, and a heuristic query per
  // new shape would cost more than the GEMM.
  std::unordered_map<GemmKey, cublasLtMatmulAlgo_t, GemmKeyHash> algos_;
  struct WeightCopy {
    int64_t elems = 0;
    void* bf16 = nullptr;
    bool valid = false;
  };
  std::map<uintptr_t, WeightCopy> weights_;  // by fp32 start address
};

}  // namespace origami::cuda
