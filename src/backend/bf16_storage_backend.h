// defines: Bf16StorageBackend (training.precision bf16 on a host backend: the bf16 reference)
// Wraps a host backend (the cpu one) and gives it bf16 storage semantics: buffers allocated as
// bf16 hold only bf16 values, because every op's result is rounded (nearest, ties to even) when
// it is stored into such a buffer, while each op still computes and accumulates in fp32 (or
// fp64) inside, as the wrapped backend always did. That is where a GPU bf16 kernel rounds too:
// fp32 accumulators, one rounding on the store. So a cpu bf16 run is the reference a device
// bf16 run is compared with, op by op and step by step.
//
// The values live in fp32 containers (4 bytes) on the host; bytes_in_use()/peak_bytes() count a
// bf16 buffer at 2 bytes per element, the storage a device needs for it, so the start-up memory
// estimate of a bf16 run is checked against this accounting (docs/precision.md).
#pragma once
#include <map>
#include <memory>
#include <mutex>

#include "backend/backend.h"

namespace origami {

class Bf16StorageBackend final : public Backend {
 public:
  explicit Bf16StorageBackend(std::unique_ptr<Backend> inner);
  std::string name() const override { return b_->name(); }

  void* allocate(size_t bytes) override { return allocate_as(bytes, DType::f32); }
  void* allocate_as(size_t bytes, DType t) override;
  void deallocate(void* p) override;
  DType stored_dtype(const void* p) const override;
  DType storage_for(DType requested) const override { return requested; }
  void round_stored(float* x, int64_t n) override;
  void convert(const float* src, float* dst, int64_t n) override;
  int64_t converted_elements() const override { return converted_; }
  // Elements rounded by stores into bf16 buffers (ops, collectives' sums, conversions).
  int64_t rounded_elements() const { return rounded_; }

  void copy_to_host(void* d, const void* s, size_t n) override { b_->copy_to_host(d, s, n); }
  void copy_from_host(void* d, const void* s, size_t n) override;
  void copy(void* d, const void* s, size_t n) override;
  void synchronize() override { b_->synchronize(); }
  size_t bytes_in_use() const override;
  size_t peak_bytes() const override;
  bool is_device_memory(const void* p) const override { return b_->is_device_memory(p); }
  void* device_stream() const override { return b_->device_stream(); }

  void gemm(const GemmDesc& g) override;
  void gemm_batched(std::span<const GemmDesc> gs) override;
  void fill(float* x, float v, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;
  void axpy(float alpha, const float* x, float* y, int64_t n) override;
  void scale(float* x, float alpha, int64_t n) override;
  double sum_squares(const float* x, int64_t n) override { return b_->sum_squares(x, n); }
  double sum(const float* x, int64_t n) override { return b_->sum(x, n); }
  void embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n, int64_t dim) override;
  void embedding_backward(const float* dout, const int32_t* ids, float* dtable, int64_t n, int64_t dim) override;
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim, float eps) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw, int64_t rows, int64_t dim) override;
  void rope_forward(float* x, const int32_t* pos, int64_t rows, int64_t heads, int64_t hd, float theta) override;
  void rope_backward(float* dx, const int32_t* pos, int64_t rows, int64_t heads, int64_t hd, float theta) override;
  void attention_forward(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward(const float* dout, const float* q, const float* k, const float* v, const float* out, const float* lse, float* dq, float* dk, float* dv, int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_forward_offset(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) override;
  void attention_backward_offset(const float* dout, const float* q, const float* k, const float* v, const float* out, const float* lse, float* dq, float* dk, float* dv, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) override;
  void swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) override;
  void swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows, int64_t F) override;
  void router_forward(const float* logits, float* probs, int32_t* idx, float* weights, float* lse, int64_t N, int64_t E, int64_t k, bool renormalize) override;
  void router_backward(const float* dweights, const float* dprobs, const float* dlse, const float* probs, const int32_t* idx, const float* weights, float* dlogits, int64_t N, int64_t E, int64_t k, bool renormalize) override;
  void router_gate_forward(const float* logits, const RouterGate& g, float* probs, float* gate, int32_t* idx, float* weights, float* lse, int64_t N, int64_t E) override;
  void router_gate_backward(const float* dweights, const float* dprobs, const float* dlse, const float* logits, const float* gate, const int32_t* idx, const float* weights, const RouterGate& g, float* dlogits, int64_t N, int64_t E) override;
  void expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N, int64_t k, int64_t E, int64_t B, int64_t* counts) override {
    b_->expert_counts_per_block(idx, row_block, N, k, E, B, counts);
  }
  void balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block, int64_t N, int64_t E, int64_t B, bool routed_share, double slots, double scale, double n, float grad_scale, double* loss, float* dprobs) override;
  void router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss, float* dlse) override;
  void moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E, int64_t* counts, int32_t* row) override {
    b_->moe_permute_indices(idx, N, k, E, counts, row);
  }
  void moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k, int64_t dim) override;
  void moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx, int64_t N, int64_t k, int64_t dim) override;
  void moe_unpermute(const float* y, const int32_t* row, const float* weights, float* out, int64_t N, int64_t k, int64_t dim) override;
  void moe_unpermute_backward(const float* dout, const float* y, const int32_t* row, const float* weights, float* dy, float* dweights, int64_t N, int64_t k, int64_t dim) override;
  void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, float* lse, int64_t N, int64_t V) override;
  void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, float scale, float* dlogits, int64_t N, int64_t V) override;
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t) override;

 private:
  // Rounds x[0..n) to bf16 if x lies in a bf16 buffer (a buffer is one type throughout).
  void store(float* x, int64_t n);
  // The rows of a [rows, cols] block with leading dimension ld.
  void store_rows(float* x, int64_t rows, int64_t cols, int64_t ld);
  // The rows row[t,s] >= 0 of a permuted [*, dim] buffer.
  void store_permuted(float* x, const int32_t* row, int64_t N, int64_t k, int64_t dim);

  std::unique_ptr<Backend> b_;
  mutable std::mutex mu_;
  std::map<const char*, std::pair<size_t, DType>> buffers_;  // start -> (bytes, type)
  size_t in_use_ = 0, peak_ = 0;
  int64_t converted_ = 0, rounded_ = 0;
};

}  // namespace origami
