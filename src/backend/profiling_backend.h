// defines: ProfilingBackend (a Backend decorator that times every op), OpTime
// Wraps any backend and, around each op, waits for the device and reads the host clock, so the
// per-op totals are device time plus one launch each: coarse, but enough to say where a step's
// time goes (origami-bench-train --profile) on any backend without a vendor profiler.
// Synchronising after every op removes all overlap: use it to attribute time, not to measure
// throughput.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace origami {

struct OpTime {
  std::string op;
  int64_t calls = 0;
  double ms = 0;      // wall time, the device waited for around each call
  double cpu_ms = 0;  // the calling thread's CPU time: on a CPU backend with ranks that share
                      // cores, the op's own work; ms - cpu_ms is time it was not scheduled
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : b_(inner) {}
  // Owns what it times (the trainer's backend under logging.profile).
  explicit ProfilingBackend(std::unique_ptr<Backend> owned) : owned_(std::move(owned)), b_(*owned_) {}
  std::string name() const override { return b_.name(); }
  std::vector<OpTime> report() const;  // by total time, largest first
  void reset() { times_.clear(); }

  void* allocate(size_t bytes) override { return b_.allocate(bytes); }
  void deallocate(void* p) override { b_.deallocate(p); }
  void* allocate_as(size_t bytes, DType t) override { return b_.allocate_as(bytes, t); }
  DType stored_dtype(const void* p) const override { return b_.stored_dtype(p); }
  DType storage_for(DType t) const override { return b_.storage_for(t); }
  void round_stored(float* x, int64_t n) override { b_.round_stored(x, n); }
  void convert(const float* src, float* dst, int64_t n) override;
  int64_t converted_elements() const override { return b_.converted_elements(); }
  void copy_to_host(void* d, const void* s, size_t n) override;
  void copy_from_host(void* d, const void* s, size_t n) override;
  void copy(void* d, const void* s, size_t n) override;
  void synchronize() override { b_.synchronize(); }
  size_t bytes_in_use() const override { return b_.bytes_in_use(); }
  size_t peak_bytes() const override { return b_.peak_bytes(); }
  bool is_device_memory(const void* p) const override { return b_.is_device_memory(p); }
  void* device_stream() const override { return b_.device_stream(); }

  void gemm(const GemmDesc& g) override;
  void gemm_batched(std::span<const GemmDesc> gs) override;
  void fill(float* x, float v, int64_t n) override;
  void add(const float* a, const float* b, float* out, int64_t n) override;
  void axpy(float alpha, const float* x, float* y, int64_t n) override;
  void scale(float* x, float alpha, int64_t n) override;
  double sum_squares(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;
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
  void router_gate_forward(const float* logits, const RouterGate& g, float* probs, float* gate, int32_t* idx, float* weights, float* lse, int64_t N, int64_t E) override;
  void router_gate_backward(const float* dweights, const float* dprobs, const float* dlse, const float* logits, const float* gate, const int32_t* idx, const float* weights, const RouterGate& g, float* dlogits, int64_t N, int64_t E) override;
  void router_backward(const float* dweights, const float* dprobs, const float* dlse, const float* probs, const int32_t* idx, const float* weights, float* dlogits, int64_t N, int64_t E, int64_t k, bool renormalize) override;
  void expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N, int64_t k, int64_t E, int64_t B, int64_t* counts) override;
  void balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block, int64_t N, int64_t E, int64_t B, bool routed_share, double slots, double scale, double n, float grad_scale, double* loss, float* dprobs) override;
  void router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss, float* dlse) override;
  void moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E, int64_t* counts, int32_t* row) override;
  void moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k, int64_t dim) override;
  void moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx, int64_t N, int64_t k, int64_t dim) override;
  void moe_unpermute(const float* y, const int32_t* row, const float* weights, float* out, int64_t N, int64_t k, int64_t dim) override;
  void moe_unpermute_backward(const float* dout, const float* y, const int32_t* row, const float* weights, float* dy, float* dweights, int64_t N, int64_t k, int64_t dim) override;
  void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, float* lse, int64_t N, int64_t V) override;
  void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, float scale, float* dlogits, int64_t N, int64_t V) override;
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t) override;

 private:
  template <typename F>
  auto timed(const char* op, F&& f);
  std::unique_ptr<Backend> owned_;
  Backend& b_;
  std::map<std::string, OpTime> times_;
};

}  // namespace origami
