// defines: ProfilingBackend (see profiling_backend.h)
// Every op forwards to the wrapped backend inside timed(), which waits for the device before and
// after, so each op's total is its own time; an op not forwarded here would run the Backend
// default (a host fallback or padded path) and hide the backend's native kernel.
#include "backend/profiling_backend.h"

#include <algorithm>
#include <chrono>

#include "base/cpu_clock.h"

namespace origami {

template <typename F>
auto ProfilingBackend::timed(const char* op, F&& f) {
  b_.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  struct Stop {  // records on every exit path, including a returned value
    ProfilingBackend* self;
    const char* op;
    std::chrono::steady_clock::time_point t0;
    double cpu0;
    ~Stop() {
      self->b_.synchronize();
      OpTime& t = self->times_[op];
      t.op = op;
      ++t.calls;
      t.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      t.cpu_ms += 1e3 * (thread_cpu_seconds() - cpu0);
    }
  } stop{this, op, t0, thread_cpu_seconds()};
  return f();
}

std::vector<OpTime> ProfilingBackend::report() const {
  std::vector<OpTime> out;
  for (const auto& [k, v] : times_) out.push_back(v);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

// gemm (projections, head) and gemm_batched (the experts) are reported apart.
void ProfilingBackend::gemm(const GemmDesc& g) { timed("gemm", [&] { b_.gemm(g); }); }
void ProfilingBackend::gemm_batched(std::span<const GemmDesc> gs) { timed("gemm_batched (experts)", [&] { b_.gemm_batched(gs); }); }
void ProfilingBackend::copy_to_host(void* d, const void* s, size_t n) { timed("copy_to_host", [&] { b_.copy_to_host(d, s, n); }); }
void ProfilingBackend::copy_from_host(void* d, const void* s, size_t n) { timed("copy_from_host", [&] { b_.copy_from_host(d, s, n); }); }
void ProfilingBackend::copy(void* d, const void* s, size_t n) { timed("copy", [&] { b_.copy(d, s, n); }); }
void ProfilingBackend::convert(const float* s, float* d, int64_t n) {
  timed("convert", [&] { b_.convert(s, d, n); });
}
void ProfilingBackend::fill(float* x, float v, int64_t n) { timed("fill", [&] { b_.fill(x, v, n); }); }
void ProfilingBackend::add(const float* a, const float* b, float* out, int64_t n) { timed("add", [&] { b_.add(a, b, out, n); }); }
void ProfilingBackend::axpy(float alpha, const float* x, float* y, int64_t n) { timed("axpy", [&] { b_.axpy(alpha, x, y, n); }); }
void ProfilingBackend::scale(float* x, float alpha, int64_t n) { timed("scale", [&] { b_.scale(x, alpha, n); }); }
double ProfilingBackend::sum_squares(const float* x, int64_t n) { return timed("sum_squares", [&] { return b_.sum_squares(x, n); }); }
double ProfilingBackend::sum(const float* x, int64_t n) { return timed("sum", [&] { return b_.sum(x, n); }); }
void ProfilingBackend::embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n, int64_t dim) { timed("embedding_forward", [&] { b_.embedding_forward(ids, table, out, n, dim); }); }
void ProfilingBackend::embedding_backward(const float* dout, const int32_t* ids, float* dtable, int64_t n, int64_t dim) { timed("embedding_backward", [&] { b_.embedding_backward(dout, ids, dtable, n, dim); }); }
void ProfilingBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim, float eps) { timed("rmsnorm_forward", [&] { b_.rmsnorm_forward(x, w, y, rstd, rows, dim, eps); }); }
void ProfilingBackend::rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw, int64_t rows, int64_t dim) { timed("rmsnorm_backward", [&] { b_.rmsnorm_backward(dy, x, w, rstd, dx, dw, rows, dim); }); }
void ProfilingBackend::rope_forward(float* x, const int32_t* pos, int64_t rows, int64_t heads, int64_t hd, float theta) { timed("rope_forward", [&] { b_.rope_forward(x, pos, rows, heads, hd, theta); }); }
void ProfilingBackend::rope_backward(float* dx, const int32_t* pos, int64_t rows, int64_t heads, int64_t hd, float theta) { timed("rope_backward", [&] { b_.rope_backward(dx, pos, rows, heads, hd, theta); }); }
void ProfilingBackend::attention_forward(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) { timed("attention_forward", [&] { b_.attention_forward(q, k, v, out, lse, B, T, nh, nkv, hd); }); }
void ProfilingBackend::attention_backward(const float* dout, const float* q, const float* k, const float* v, const float* out, const float* lse, float* dq, float* dk, float* dv, int64_t B, int64_t T, int64_t nh, int64_t nkv, int64_t hd) { timed("attention_backward", [&] { b_.attention_backward(dout, q, k, v, out, lse, dq, dk, dv, B, T, nh, nkv, hd); }); }
void ProfilingBackend::attention_forward_offset(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) { timed("attention_forward_offset", [&] { b_.attention_forward_offset(q, k, v, out, lse, B, Tq, Tk, q_start, nh, nkv, hd); }); }
void ProfilingBackend::attention_backward_offset(const float* dout, const float* q, const float* k, const float* v, const float* out, const float* lse, float* dq, float* dk, float* dv, int64_t B, int64_t Tq, int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) { timed("attention_backward_offset", [&] { b_.attention_backward_offset(dout, q, k, v, out, lse, dq, dk, dv, B, Tq, Tk, q_start, nh, nkv, hd); }); }
void ProfilingBackend::swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) { timed("swiglu_forward", [&] { b_.swiglu_forward(h, out, rows, F); }); }
void ProfilingBackend::swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows, int64_t F) { timed("swiglu_backward", [&] { b_.swiglu_backward(dout, h, dh, rows, F); }); }
void ProfilingBackend::router_forward(const float* logits, float* probs, int32_t* idx, float* weights, float* lse, int64_t N, int64_t E, int64_t k, bool r) { timed("router_forward", [&] { b_.router_forward(logits, probs, idx, weights, lse, N, E, k, r); }); }
void ProfilingBackend::router_backward(const float* dw, const float* dp, const float* dl, const float* probs, const int32_t* idx, const float* w, float* dz, int64_t N, int64_t E, int64_t k, bool r) { timed("router_backward", [&] { b_.router_backward(dw, dp, dl, probs, idx, w, dz, N, E, k, r); }); }
void ProfilingBackend::router_gate_forward(const float* z, const RouterGate& g, float* probs, float* gate, int32_t* idx, float* w, float* lse, int64_t N, int64_t E) { timed("router_gate_forward", [&] { b_.router_gate_forward(z, g, probs, gate, idx, w, lse, N, E); }); }
void ProfilingBackend::router_gate_backward(const float* dw, const float* dp, const float* dl, const float* z, const float* gate, const int32_t* idx, const float* w, const RouterGate& g, float* dz, int64_t N, int64_t E) { timed("router_gate_backward", [&] { b_.router_gate_backward(dw, dp, dl, z, gate, idx, w, g, dz, N, E); }); }
void ProfilingBackend::expert_counts_per_block(const int32_t* idx, const int32_t* rb, int64_t N, int64_t k, int64_t E, int64_t B, int64_t* counts) { timed("expert_counts_per_block", [&] { b_.expert_counts_per_block(idx, rb, N, k, E, B, counts); }); }
void ProfilingBackend::balance_loss(const float* probs, const int64_t* counts, const int32_t* rb, int64_t N, int64_t E, int64_t B, bool rs, double slots, double scale, double n, float gs, double* loss, float* dprobs) { timed("balance_loss", [&] { b_.balance_loss(probs, counts, rb, N, E, B, rs, slots, scale, n, gs, loss, dprobs); }); }
void ProfilingBackend::router_z_loss(const float* lse, int64_t N, float gs, double* loss, float* dlse) { timed("router_z_loss", [&] { b_.router_z_loss(lse, N, gs, loss, dlse); }); }
void ProfilingBackend::moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E, int64_t* counts, int32_t* row) { timed("moe_permute_indices", [&] { b_.moe_permute_indices(idx, N, k, E, counts, row); }); }
void ProfilingBackend::moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k, int64_t dim) { timed("moe_permute", [&] { b_.moe_permute(x, row, out, N, k, dim); }); }
void ProfilingBackend::moe_permute_backward(const float* d, const int32_t* row, float* dx, int64_t N, int64_t k, int64_t dim) { timed("moe_permute_backward", [&] { b_.moe_permute_backward(d, row, dx, N, k, dim); }); }
void ProfilingBackend::moe_unpermute(const float* y, const int32_t* row, const float* w, float* out, int64_t N, int64_t k, int64_t dim) { timed("moe_unpermute", [&] { b_.moe_unpermute(y, row, w, out, N, k, dim); }); }
void ProfilingBackend::moe_unpermute_backward(const float* d, const float* y, const int32_t* row, const float* w, float* dy, float* dw, int64_t N, int64_t k, int64_t dim) { timed("moe_unpermute_backward", [&] { b_.moe_unpermute_backward(d, y, row, w, dy, dw, N, k, dim); }); }
void ProfilingBackend::cross_entropy_forward(const float* z, const int32_t* t, float* l, float* lse, int64_t N, int64_t V) { timed("cross_entropy_forward", [&] { b_.cross_entropy_forward(z, t, l, lse, N, V); }); }
void ProfilingBackend::cross_entropy_backward(const float* z, const int32_t* t, const float* lse, float s, float* dz, int64_t N, int64_t V) { timed("cross_entropy_backward", [&] { b_.cross_entropy_backward(z, t, lse, s, dz, N, V); }); }
void ProfilingBackend::adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd, int64_t t) { timed("adamw", [&] { b_.adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t); }); }

}  // namespace origami
