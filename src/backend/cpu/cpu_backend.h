// defines: CpuBackend, make_cpu_backend()
// The fp32 reference implementation of Backend (OpenBLAS for GEMMs, OpenMP over rows/heads).
// Every op is deterministic and independent of the thread count: parallel loops only split
// work whose results do not interact, and every reduction runs in a fixed order. The ops are
// spread over cpu_<family>.cpp files named for the op family they hold, each paired with the
// CUDA backend's cuda_<family>.cu (or .cpp); per-element math is in backend/kernel_math.h.
#pragma once
#include <memory>
#include <mutex>
#include <unordered_map>

#include "backend/backend.h"

namespace origami {

class CpuBackend : public Backend {
 public:
  ~CpuBackend() override;
  std::string name() const override { return "cpu"; }

  // memory (cpu_backend.cpp)
  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override {}
  size_t bytes_in_use() const override;
  size_t peak_bytes() const override;

  // cpu_gemm.cpp
  void gemm(const GemmDesc& g) override;
  void gemm_batched(std::span<const GemmDesc> gs) override;

  // cpu_elementwise.cpp
  void fill(float* x, float value, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;
  void axpy(float alpha, const float* x, float* y, int64_t n) override;
  void scale(float* x, float alpha, int64_t n) override;
  double sum_squares(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;

  // cpu_embedding.cpp
  void embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n,
                         int64_t dim) override;
  void embedding_backward(const float* dout, const int32_t* ids, float* dtable, int64_t n,
                          int64_t dim) override;

  // cpu_swiglu.cpp
  void swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) override;
  void swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows,
                       int64_t F) override;

  // cpu_norm_rope.cpp
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                       int64_t dim, float eps) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                        float* dx, float* dw, int64_t rows, int64_t dim) override;
  void rope_forward(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                    int64_t head_dim, float theta) override;
  void rope_backward(float* dx, const int32_t* positions, int64_t rows, int64_t heads,
                     int64_t head_dim, float theta) override;

  // cpu_attention.cpp
  void attention_forward(const float* q, const float* k, const float* v, float* out, float* lse,
                         int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                          const float* out, const float* lse, float* dq, float* dk, float* dv,
                          int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_forward_offset(const float* q, const float* k, const float* v, float* out,
                                float* lse, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start,
                                int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward_offset(const float* dout, const float* q, const float* k,
                                 const float* v, const float* out, const float* lse, float* dq,
                                 float* dk, float* dv, int64_t B, int64_t Tq, int64_t Tk,
                                 int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) override;

  // cpu_router_permute.cpp
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

  // cpu_router_aux_loss.cpp
  void expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N,
                               int64_t k, int64_t E, int64_t B, int64_t* counts) override;
  void balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block,
                    int64_t N, int64_t E, int64_t B, bool routed_share, double slots,
                    double scale, double n, float grad_scale, double* loss,
                    float* dprobs) override;
  void router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss,
                     float* dlse) override;

  // cpu_loss_adamw.cpp
  void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses,
                             float* lse, int64_t N, int64_t V) override;
  void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                              float scale, float* dlogits, int64_t N, int64_t V) override;
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
             float beta1, float beta2, float eps, float weight_decay, int64_t t) override;

 private:
  mutable std::mutex mu_;  // guards the allocation table (allocate may be called from threads)
  std::unordered_map<void*, size_t> sizes_;
  size_t in_use_ = 0, peak_ = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace origami
