// CUDA causal GQA attention against the CPU reference: SIMT kernels in fp32 and tensor-core
// kernels in bf16 on ragged shapes, and context parallelism's offset op on unaligned chunks.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

// T keys; Tq > 0: the offset op, Tq queries at positions q_start.. (context parallelism).
struct AttnShape {
  int64_t B, T, nh, nkv, hd;
  int64_t Tq = 0, q_start = 0;
};
struct AttnTolerance {
  double out, lse, grad;
};

// Forward and backward of one shape on both backends; with `rerun`, a second backward on the GPU
// must reproduce the first bitwise.
void check_attention(Backend& cpu_be, CudaBackend& gpu_be, uint32_t& seed, AttnShape s,
                     AttnTolerance tol, bool rerun) {
  Backend* cpu = &cpu_be;
  CudaBackend* gpu = &gpu_be;
  const bool offset = s.Tq > 0;
  const int64_t Tq = offset ? s.Tq : s.T;
  const size_t nq = size_t(s.B * Tq * s.nh * s.hd), nk = size_t(s.B * s.T * s.nkv * s.hd);
  const size_t nl = size_t(s.B * s.nh * Tq);
  auto q = randn(nq, ++seed), k = randn(nk, ++seed), v = randn(nk, ++seed), dout = randn(nq, ++seed);
  Buf<float> cq(*cpu, q), ck(*cpu, k), cv(*cpu, v), gq(*gpu, q), gk(*gpu, k), gv(*gpu, v);
  Buf<float> co(*cpu, nq), go(*gpu, nq), cl(*cpu, nl), gl(*gpu, nl);
  go.poison(), gl.poison();
  auto forward = [&](Backend& be, Buf<float>& q_, Buf<float>& k_, Buf<float>& v_, Buf<float>& o_,
                     Buf<float>& l_) {
    if (offset)
      be.attention_forward_offset(q_.p, k_.p, v_.p, o_.p, l_.p, s.B, Tq, s.T, s.q_start, s.nh,
                                  s.nkv, s.hd);
    else
      be.attention_forward(q_.p, k_.p, v_.p, o_.p, l_.p, s.B, s.T, s.nh, s.nkv, s.hd);
  };
  forward(*cpu, cq, ck, cv, co, cl);
  forward(*gpu, gq, gk, gv, go, gl);
  expect_close(go.get(), co.get(), tol.out, "attention out");
  expect_close(gl.get(), cl.get(), tol.lse, "attention lse");
  Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdq(*cpu, nq), gdq(*gpu, nq), cdk(*cpu, nk), gdk(*gpu, nk);
  Buf<float> cdv(*cpu, nk), gdv(*gpu, nk);
  gdq.poison(), gdk.poison(), gdv.poison();
  auto backward = [&](Backend& be, Buf<float>& d_, Buf<float>& q_, Buf<float>& k_, Buf<float>& v_,
                      Buf<float>& o_, Buf<float>& l_, Buf<float>& dq_, Buf<float>& dk_,
                      Buf<float>& dv_) {
    if (offset)
      be.attention_backward_offset(d_.p, q_.p, k_.p, v_.p, o_.p, l_.p, dq_.p, dk_.p, dv_.p, s.B, Tq,
                                   s.T, s.q_start, s.nh, s.nkv, s.hd);
    else
      be.attention_backward(d_.p, q_.p, k_.p, v_.p, o_.p, l_.p, dq_.p, dk_.p, dv_.p, s.B, s.T, s.nh,
                            s.nkv, s.hd);
  };
  auto gpu_backward = [&] { backward(*gpu, gd, gq, gk, gv, go, gl, gdq, gdk, gdv); };
  backward(*cpu, cd, cq, ck, cv, co, cl, cdq, cdk, cdv);
  gpu_backward();
  expect_close(gdq.get(), cdq.get(), tol.grad, "attention dq");
  expect_close(gdk.get(), cdk.get(), tol.grad, "attention dk");
  expect_close(gdv.get(), cdv.get(), tol.grad, "attention dv");
  if (rerun) {
    const std::vector<float> first = gdk.get();
    gdk.poison();
    gpu_backward();
    EXPECT_EQ(gdk.get(), first) << "run-to-run identical";
  }
}

TEST_F(CudaOps, AttentionForwardBackwardGqaManyShapes) {
  for (AttnShape s : {AttnShape{2, 37, 4, 2, 8}, AttnShape{1, 130, 4, 4, 64},
                      AttnShape{2, 77, 8, 2, 128}, AttnShape{1, 64, 2, 1, 96}})
    // fp32 SIMT kernels: the same products, summed over <= 200 keys in tiles with an online
    // softmax instead of the reference's order: ~1e-6 relative norm (lse: fp64-like, 1e-6).
    check_attention(*cpu, *gpu, seed, s, {1e-5, 1e-6, 1e-5}, false);
}

// Below fp32 GEMM precision, head sizes 32/64/96/128 take the tensor-core kernels (bf16
// operands): they must match the fp32 reference to bf16 accuracy, on ragged sequence lengths.
TEST_F(CudaOps, AttentionOnTensorCoresMatchesToBf16Accuracy) {
  gpu->set_gemm_precision(GemmPrecision::bf16);
  for (AttnShape s : {AttnShape{2, 37, 4, 2, 64}, AttnShape{1, 200, 4, 4, 128},
                      AttnShape{2, 129, 8, 2, 32}, AttnShape{1, 64, 2, 1, 96}})
    // bf16 operands of QK^T and PV (2^-9 = 2e-3 relative each), compounded through the softmax;
    // the backward adds two more bf16 products: 2e-2 out, 1e-2 lse, 3e-2 gradients.
    check_attention(*cpu, *gpu, seed, s, {2e-2, 1e-2, 3e-2}, true);
}

// Context parallelism's offset op, native on the GPU: a chunk of Tq queries at q_start against
// all T keys, ragged and unaligned to every tile size, including the first and last chunks and
// keys past the last query (zero dk/dv, which must still be written over the poison).
TEST_F(CudaOps, OffsetAttentionMatchesTheReference) {
  const AttnShape shapes[] = {{2, 64, 4, 2, 8, 16, 0},     {2, 64, 4, 2, 8, 16, 48},
                              {1, 150, 4, 4, 64, 37, 41},  {2, 200, 8, 2, 128, 50, 100},
                              {1, 96, 2, 1, 96, 24, 72},   {2, 129, 8, 2, 32, 33, 5}};
  // The same tolerances as the square op (fp32, then bf16): the offset changes which key tiles
  // are visited, not the arithmetic.
  for (AttnShape s : shapes) check_attention(*cpu, *gpu, seed, s, {1e-5, 1e-6, 1e-5}, false);
  gpu->set_gemm_precision(GemmPrecision::bf16);  // the tensor-core kernels
  for (AttnShape s : shapes) check_attention(*cpu, *gpu, seed, s, {2e-2, 1e-2, 3e-2}, true);
}

}  // namespace
}  // namespace origami::cuda
#endif
