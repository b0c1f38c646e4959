// Bf16StorageBackend: each op runs on the wrapped backend in fp32, then what it stored into bf16
// buffers is rounded. The output extents below are the ones backend.h documents for each op.
#include "backend/bf16_storage_backend.h"

#include <algorithm>

#include "base/error.h"

namespace origami {

Bf16StorageBackend::Bf16StorageBackend(std::unique_ptr<Backend> inner) : b_(std::move(inner)) {
  check(b_ != nullptr, "Bf16StorageBackend: no backend to wrap");
  // store() and store_permuted() read and round the values on the host.
  check(b_->device_stream() == nullptr,
        "training.precision bf16 with storage rounding needs a host backend, not '{}'", b_->name());
}

void* Bf16StorageBackend::allocate_as(size_t bytes, DType t) {
  void* p = b_->allocate(bytes);
  std::lock_guard lock(mu_);
  buffers_[static_cast<const char*>(p)] = {bytes, t};
  in_use_ += t == DType::bf16 ? bytes / 2 : bytes;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void Bf16StorageBackend::deallocate(void* p) {
  if (!p) return;
  {
    std::lock_guard lock(mu_);
    auto it = buffers_.find(static_cast<const char*>(p));
    check(it != buffers_.end(), "bf16 storage: deallocate({}) of a pointer it did not allocate", p);
    in_use_ -= it->second.second == DType::bf16 ? it->second.first / 2 : it->second.first;
    buffers_.erase(it);
  }
  b_->deallocate(p);
}

size_t Bf16StorageBackend::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}
size_t Bf16StorageBackend::peak_bytes() const {
  std::lock_guard lock(mu_);
  return peak_;
}

DType Bf16StorageBackend::stored_dtype(const void* p) const {
  const char* c = static_cast<const char*>(p);
  std::lock_guard lock(mu_);
  auto it = buffers_.upper_bound(c);
  if (it == buffers_.begin()) return DType::f32;
  --it;
  return c < it->first + std::max<size_t>(it->second.first, 1) ? it->second.second : DType::f32;
}

void Bf16StorageBackend::store(float* x, int64_t n) {
  if (!x || n <= 0 || stored_dtype(x) != DType::bf16) return;
  bf16_round_inplace(x, n);
  rounded_ += n;
}

void Bf16StorageBackend::store_rows(float* x, int64_t rows, int64_t cols, int64_t ld) {
  if (!x || rows <= 0 || cols <= 0 || stored_dtype(x) != DType::bf16) return;
  for (int64_t r = 0; r < rows; ++r) bf16_round_inplace(x + r * ld, cols);
  rounded_ += rows * cols;
}

void Bf16StorageBackend::store_permuted(float* x, const int32_t* row, int64_t N, int64_t k,
                                        int64_t dim) {
  if (!x || stored_dtype(x) != DType::bf16) return;
  // A host backend (checked in the constructor): row is readable here.
  for (int64_t i = 0; i < N * k; ++i) {
    if (row[i] < 0) continue;
    bf16_round_inplace(x + int64_t(row[i]) * dim, dim);
    rounded_ += dim;
  }
}

void Bf16StorageBackend::round_stored(float* x, int64_t n) { store(x, n); }

void Bf16StorageBackend::convert(const float* src, float* dst, int64_t n) {
  b_->copy(dst, src, size_t(n) * sizeof(float));
  if (stored_dtype(dst) == DType::bf16) converted_ += n;
  store(dst, n);
}

// A copy into a bf16 buffer is a store like any other (a copy of bf16 values leaves them as
// they are; a copy of fp32 values is a conversion, and counted as one).
void Bf16StorageBackend::copy(void* d, const void* s, size_t n) {
  b_->copy(d, s, n);
  if (stored_dtype(s) != DType::bf16 && stored_dtype(d) == DType::bf16)
    converted_ += int64_t(n / sizeof(float));
  store(static_cast<float*>(d), int64_t(n / sizeof(float)));
}

void Bf16StorageBackend::copy_from_host(void* d, const void* s, size_t n) {
  b_->copy_from_host(d, s, n);
  store(static_cast<float*>(d), int64_t(n / sizeof(float)));
}

// ---- ops: run, then store the outputs ------------------------------------------------------
void Bf16StorageBackend::gemm(const GemmDesc& g) {
  b_->gemm(g);
  store_rows(g.c, g.m, g.n, g.ldc);
}
void Bf16StorageBackend::gemm_batched(std::span<const GemmDesc> gs) {
  b_->gemm_batched(gs);
  for (const auto& g : gs) store_rows(g.c, g.m, g.n, g.ldc);
}
void Bf16StorageBackend::fill(float* x, float v, int64_t n) {
  b_->fill(x, v, n);
  store(x, n);
}
void Bf16StorageBackend::add(const float* a, const float* b, float* out, int64_t n) {
  b_->add(a, b, out, n);
  store(out, n);
}
void Bf16StorageBackend::axpy(float alpha, const float* x, float* y, int64_t n) {
  b_->axpy(alpha, x, y, n);
  store(y, n);
}
void Bf16StorageBackend::scale(float* x, float alpha, int64_t n) {
  b_->scale(x, alpha, n);
  store(x, n);
}
void Bf16StorageBackend::embedding_forward(const int32_t* ids, const float* table, float* out,
                                           int64_t n, int64_t dim) {
  b_->embedding_forward(ids, table, out, n, dim);
  store(out, n * dim);
}
void Bf16StorageBackend::embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                                            int64_t n, int64_t dim) {
  b_->embedding_backward(dout, ids, dtable, n, dim);
  // dtable is an fp32 main gradient in every configuration; a bf16 one would need its rows.
  check(stored_dtype(dtable) == DType::f32, "embedding_backward: dtable must be stored fp32");
}
void Bf16StorageBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                                         int64_t rows, int64_t dim, float eps) {
  b_->rmsnorm_forward(x, w, y, rstd, rows, dim, eps);
  store(y, rows * dim);
  store(rstd, rows);
}
void Bf16StorageBackend::rmsnorm_backward(const float* dy, const float* x, const float* w,
                                          const float* rstd, float* dx, float* dw, int64_t rows,
                                          int64_t dim) {
  b_->rmsnorm_backward(dy, x, w, rstd, dx, dw, rows, dim);
  store(dx, rows * dim);
  store(dw, dim);
}
void Bf16StorageBackend::rope_forward(float* x, const int32_t* pos, int64_t rows, int64_t heads,
                                      int64_t hd, float theta) {
  b_->rope_forward(x, pos, rows, heads, hd, theta);
  store(x, rows * heads * hd);
}
void Bf16StorageBackend::rope_backward(float* dx, const int32_t* pos, int64_t rows,
                                       int64_t heads, int64_t hd, float theta) {
  b_->rope_backward(dx, pos, rows, heads, hd, theta);
  store(dx, rows * heads * hd);
}
void Bf16StorageBackend::attention_forward(const float* q, const float* k, const float* v,
                                           float* out, float* lse, int64_t B, int64_t T,
                                           int64_t nh, int64_t nkv, int64_t hd) {
  b_->attention_forward(q, k, v, out, lse, B, T, nh, nkv, hd);
  store(out, B * T * nh * hd);
  store(lse, B * nh * T);
}
void Bf16StorageBackend::attention_backward(const float* dout, const float* q, const float* k,
                                            const float* v, const float* out, const float* lse,
                                            float* dq, float* dk, float* dv, int64_t B, int64_t T,
                                            int64_t nh, int64_t nkv, int64_t hd) {
  b_->attention_backward(dout, q, k, v, out, lse, dq, dk, dv, B, T, nh, nkv, hd);
  store(dq, B * T * nh * hd);
  store(dk, B * T * nkv * hd);
  store(dv, B * T * nkv * hd);
}
void Bf16StorageBackend::attention_forward_offset(const float* q, const float* k, const float* v,
                                                  float* out, float* lse, int64_t B, int64_t Tq,
                                                  int64_t Tk, int64_t q_start, int64_t nh,
                                                  int64_t nkv, int64_t hd) {
  b_->attention_forward_offset(q, k, v, out, lse, B, Tq, Tk, q_start, nh, nkv, hd);
  store(out, B * Tq * nh * hd);
  store(lse, B * nh * Tq);
}
void Bf16StorageBackend::attention_backward_offset(const float* dout, const float* q,
                                                   const float* k, const float* v,
                                                   const float* out, const float* lse, float* dq,
                                                   float* dk, float* dv, int64_t B, int64_t Tq,
                                                   int64_t Tk, int64_t q_start, int64_t nh,
                                                   int64_t nkv, int64_t hd) {
  b_->attention_backward_offset(dout, q, k, v, out, lse, dq, dk, dv, B, Tq, Tk, q_start, nh, nkv,
                                hd);
  store(dq, B * Tq * nh * hd);
  store(dk, B * Tk * nkv * hd);
  store(dv, B * Tk * nkv * hd);
}
void Bf16StorageBackend::swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) {
  b_->swiglu_forward(h, out, rows, F);
  store(out, rows * F);
}
void Bf16StorageBackend::swiglu_backward(const float* dout, const float* h, float* dh,
                                         int64_t rows, int64_t F) {
  b_->swiglu_backward(dout, h, dh, rows, F);
  store(dh, rows * 2 * F);
}
void Bf16StorageBackend::router_forward(const float* logits, float* probs, int32_t* idx,
                                        float* weights, float* lse, int64_t N, int64_t E,
                                        int64_t k, bool renormalize) {
  b_->router_forward(logits, probs, idx, weights, lse, N, E, k, renormalize);
  store(probs, N * E);
  store(weights, N * k);
  store(lse, N);
}
void Bf16StorageBackend::router_backward(const float* dweights, const float* dprobs,
                                         const float* dlse, const float* probs,
                                         const int32_t* idx, const float* weights,
                                         float* dlogits, int64_t N, int64_t E, int64_t k,
                                         bool renormalize) {
  b_->router_backward(dweights, dprobs, dlse, probs, idx, weights, dlogits, N, E, k, renormalize);
  store(dlogits, N * E);
}
void Bf16StorageBackend::router_gate_forward(const float* logits, const RouterGate& g,
                                             float* probs, float* gate, int32_t* idx,
                                             float* weights, float* lse, int64_t N, int64_t E) {
  b_->router_gate_forward(logits, g, probs, gate, idx, weights, lse, N, E);
  store(probs, N * E);
  if (g.dense_to_sparse) store(gate, N * E);
  store(weights, N * g.slots);
  store(lse, N);
}
void Bf16StorageBackend::router_gate_backward(const float* dweights, const float* dprobs,
                                              const float* dlse, const float* logits,
                                              const float* gate, const int32_t* idx,
                                              const float* weights, const RouterGate& g,
                                              float* dlogits, int64_t N, int64_t E) {
  b_->router_gate_backward(dweights, dprobs, dlse, logits, gate, idx, weights, g, dlogits, N, E);
  store(dlogits, N * E);
}
void Bf16StorageBackend::balance_loss(const float* probs, const int64_t* counts,
                                      const int32_t* row_block, int64_t N, int64_t E, int64_t B,
                                      bool routed_share, double slots, double scale, double n,
                                      float grad_scale, double* loss, float* dprobs) {
  b_->balance_loss(probs, counts, row_block, N, E, B, routed_share, slots, scale, n, grad_scale,
                   loss, dprobs);
  store(dprobs, N * E);
}
void Bf16StorageBackend::router_z_loss(const float* lse, int64_t N, float grad_scale,
                                       double* loss, float* dlse) {
  b_->router_z_loss(lse, N, grad_scale, loss, dlse);
  store(dlse, N);
}
void Bf16StorageBackend::moe_permute(const float* x, const int32_t* row, float* out, int64_t N,
                                     int64_t k, int64_t dim) {
  b_->moe_permute(x, row, out, N, k, dim);
  store_permuted(out, row, N, k, dim);
}
void Bf16StorageBackend::moe_permute_backward(const float* dout_perm, const int32_t* row,
                                              float* dx, int64_t N, int64_t k, int64_t dim) {
  b_->moe_permute_backward(dout_perm, row, dx, N, k, dim);
  store(dx, N * dim);
}
void Bf16StorageBackend::moe_unpermute(const float* y, const int32_t* row, const float* weights,
                                       float* out, int64_t N, int64_t k, int64_t dim) {
  b_->moe_unpermute(y, row, weights, out, N, k, dim);
  store(out, N * dim);
}
void Bf16StorageBackend::moe_unpermute_backward(const float* dout, const float* y,
                                                const int32_t* row, const float* weights,
                                                float* dy, float* dweights, int64_t N, int64_t k,
                                                int64_t dim) {
  b_->moe_unpermute_backward(dout, y, row, weights, dy, dweights, N, k, dim);
  store_permuted(dy, row, N, k, dim);
  store(dweights, N * k);
}
void Bf16StorageBackend::cross_entropy_forward(const float* logits, const int32_t* targets,
                                               float* losses, float* lse, int64_t N, int64_t V) {
  b_->cross_entropy_forward(logits, targets, losses, lse, N, V);
  store(losses, N);
  store(lse, N);
}
void Bf16StorageBackend::cross_entropy_backward(const float* logits, const int32_t* targets,
                                                const float* lse, float scale, float* dlogits,
                                                int64_t N, int64_t V) {
  b_->cross_entropy_backward(logits, targets, lse, scale, dlogits, N, V);
  store(dlogits, N * V);
}
void Bf16StorageBackend::adamw(float* param, const float* grad, float* m, float* v, int64_t n,
                               float lr, float beta1, float beta2, float eps, float wd,
                               int64_t t) {
  // The optimizer's state is fp32 in every precision (master weights, both moments).
  check(stored_dtype(param) == DType::f32 && stored_dtype(m) == DType::f32 &&
            stored_dtype(v) == DType::f32,
        "adamw: master weights and moments must be stored fp32");
  b_->adamw(param, grad, m, v, n, lr, beta1, beta2, eps, wd, t);
}

}  // namespace origami
