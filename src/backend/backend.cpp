// make_backend() and the Backend defaults every backend inherits: the padded offset attention
// (exact, built from the square op) for backends without a native kernel.
#include "backend/backend.h"

#include "backend/bf16_storage_backend.h"
#include "backend/cpu/cpu_backend.h"
#include "base/error.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_backend_factory.h"
#endif

namespace origami {

namespace {

// Scratch memory of one backend call, returned on scope exit.
struct Scratch {
  Backend& be;
  float* p;
  Scratch(Backend& b, int64_t n) : be(b), p(static_cast<float*>(b.allocate(size_t(n) * sizeof(float)))) {}
  ~Scratch() { be.deallocate(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Copies rows [0, rows) of each of B blocks (block stride src_stride / dst_stride rows of
// `width` floats) from src + src_row to dst + dst_row.
void copy_rows(Backend& be, float* dst, int64_t dst_stride, int64_t dst_row, const float* src,
               int64_t src_stride, int64_t src_row, int64_t B, int64_t rows, int64_t width) {
  for (int64_t b = 0; b < B; ++b)
    be.copy(dst + (b * dst_stride + dst_row) * width, src + (b * src_stride + src_row) * width,
            size_t(rows * width) * sizeof(float));
}

void check_offset_shape(int64_t Tq, int64_t Tk, int64_t q_start, const char* op) {
  check(Tq >= 0 && q_start >= 0 && q_start + Tq <= Tk,
        "{}: queries at positions [{}, {}) need keys up to there, but Tk = {}", op, q_start,
        q_start + Tq, Tk);
}

}  // namespace

// The padded fallback: queries placed at their positions in a zero [B,Tk] block. A zero query
// row's output is never read and, with dout = 0 there, it adds nothing to dk/dv (dS = P (dP - D)
// with dP = 0 and D = <dout, out> = 0), so the square kernel's results on the real rows are
// exactly the offset op's.
void Backend::attention_forward_offset(const float* q, const float* k, const float* v,
                                       float* out, float* lse, int64_t B, int64_t Tq, int64_t Tk,
                                       int64_t q_start, int64_t nh, int64_t nkv, int64_t hd) {
  check_offset_shape(Tq, Tk, q_start, "attention_forward_offset");
  if (q_start == 0 && Tq == Tk) return attention_forward(q, k, v, out, lse, B, Tq, nh, nkv, hd);
  const int64_t w = nh * hd;
  Scratch qp(*this, B * Tk * w), op(*this, B * Tk * w), lp(*this, B * nh * Tk);
  fill(qp.p, 0.f, B * Tk * w);
  copy_rows(*this, qp.p, Tk, q_start, q, Tq, 0, B, Tq, w);
  attention_forward(qp.p, k, v, op.p, lp.p, B, Tk, nh, nkv, hd);
  copy_rows(*this, out, Tq, 0, op.p, Tk, q_start, B, Tq, w);
  copy_rows(*this, lse, Tq, 0, lp.p, Tk, q_start, B * nh, Tq, 1);
}

void Backend::attention_backward_offset(const float* dout, const float* q, const float* k,
                                        const float* v, const float* out, const float* lse,
                                        float* dq, float* dk, float* dv, int64_t B, int64_t Tq,
                                        int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv,
                                        int64_t hd) {
  check_offset_shape(Tq, Tk, q_start, "attention_backward_offset");
  if (q_start == 0 && Tq == Tk)
    return attention_backward(dout, q, k, v, out, lse, dq, dk, dv, B, Tq, nh, nkv, hd);
  const int64_t w = nh * hd, n = B * Tk * w;
  Scratch qp(*this, n), op(*this, n), dop(*this, n), dqp(*this, n), lp(*this, B * nh * Tk);
  for (float* p : {qp.p, op.p, dop.p}) fill(p, 0.f, n);
  fill(lp.p, 0.f, B * nh * Tk);
  copy_rows(*this, qp.p, Tk, q_start, q, Tq, 0, B, Tq, w);
  copy_rows(*this, op.p, Tk, q_start, out, Tq, 0, B, Tq, w);
  copy_rows(*this, dop.p, Tk, q_start, dout, Tq, 0, B, Tq, w);
  copy_rows(*this, lp.p, Tk, q_start, lse, Tq, 0, B * nh, Tq, 1);
  attention_backward(dop.p, qp.p, k, v, op.p, lp.p, dqp.p, dk, dv, B, Tk, nh, nkv, hd);
  copy_rows(*this, dq, Tq, 0, dqp.p, Tk, q_start, B, Tq, w);
}

std::unique_ptr<Backend> make_backend(const std::string& name, int local_rank,
                                      const std::string& precision) {
  check(precision == "fp32" || precision == "bf16",
        "training.precision: unknown precision '{}' (allowed: fp32, bf16)", precision);
  if (name == "cpu") {
    // bf16 on the cpu: the reference a device bf16 run is compared with (bf16_storage_backend.h).
    if (precision == "bf16") return std::make_unique<Bf16StorageBackend>(make_cpu_backend());
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
