// defines: Backend (the compute interface), GemmDesc, make_backend()
// Every numeric kernel the model and optimizer run goes through this interface; the CPU backend
// (fp32, OpenBLAS + OpenMP) is the reference, the CUDA backend implements the same contract.
// Conventions, shared by every op:
//   - row-major, contiguous unless a leading dimension is given; pointers are backend memory;
//   - backward ops OVERWRITE input gradients (dx, dq, ...) and ACCUMULATE (+=) parameter
//     gradients (dw, dtable), so gradient accumulation over micro-batches needs no extra pass;
//   - int32 index arrays; a negative index means "absent" (ignored target, dropped slot).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tensor/dtype.h"

namespace origami {

// One GEMM of a batch: C[M,N] = alpha * op(A) * op(B) + beta * C, op = transpose if flagged.
// A is [M,K] (or [K,M] if trans_a), B is [K,N] (or [N,K] if trans_b).
struct GemmDesc {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.f;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float beta = 0.f;
  float* c = nullptr;
  int64_t ldc = 0;
  // B is a parameter (constant until the optimizer or a copy writes it): a device backend may
  // keep a converted (e.g. bf16) copy of it across GEMMs instead of converting it every call.
  bool b_is_weight = false;
};

// The generalised router's options (router_gate_forward / backward): sigmoid scores, top-k of
// the logits, scaling, group-limited top-k, the auxiliary-loss-free selection bias and the
// dense-to-sparse Gumbel gate. Pointers are backend memory.
struct RouterGate {
  bool sigmoid = false;          // scores s = sigmoid(z); else p = softmax(z)
  bool topk_on_logits = false;   // softmax: weights = softmax over the selected logits
  bool renormalize = true;       // weights divided by their sum over the token's selected experts
  float scaling_factor = 1.f;    // weights multiplied by this (after renormalising)
  int64_t k = 1;                 // experts per token (dense_to_sparse: the fewest)
  int64_t slots = 1;             // columns of idx / weights, >= k; unused ones hold -1 / 0
  int64_t num_groups = 0;        // group-limited top-k (DeepSeek-V3): the best group_topk groups
  int64_t group_topk = 0;        //   by the sum of their top (k / group_topk) scores; 0 = off
  const float* bias = nullptr;   // [E] added to the scores for selection only; null = none
  // Dense-to-sparse (EvoMoE DTS-Gate): gate = softmax((z + noise) / temperature); the experts
  // with gate > threshold are selected (at least k, at most slots, by descending gate).
  bool dense_to_sparse = false;
  const float* noise = nullptr;  // [N,E] Gumbel noise; null = none
  float temperature = 1.f;
  float threshold = 0.f;
  bool gate_weights = false;     // combine with the gate's values instead of the scores
  // Experts [silent_from, E) output nothing (MoE++'s zero experts, AdaMoE's null experts): a
  // selected one gets weight 0 and stays out of the renormalising sum, which then runs over the
  // other selected experts only (all selected silent: every weight 0). 0 = none.
  int64_t silent_from = 0;
  // [E] factors on the balance-loss scores (MoE++'s tau for its zero-computation experts):
  // probs[t,e] = w_e p[t,e], and dprobs is scaled back by w_e. null = all 1.
  const float* score_weight = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory (bytes; zero-initialised) --------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;
  virtual size_t bytes_in_use() const = 0;
  virtual size_t peak_bytes() const = 0;
  // True if p points into memory the host cannot dereference (device memory), so that host-side
  // code (the MPI communicator's staging) knows to copy through copy_to_host/copy_from_host.
  virtual bool is_device_memory(const void* p) const { return false; }
  // The device stream every op is queued on (a cudaStream_t for cuda), null for host backends:
  // device communicators queue their collectives on it to stay ordered with the kernels.
  virtual void* device_stream() const { return nullptr; }

  // ---- storage types (tensor/dtype.h; docs/precision.md) ------------------------------------
  // Memory for values stored as `dtype`. Ops round what they store into a bf16 buffer to bf16
  // (nearest, ties to even) and compute in fp32 inside. A backend that stores everything in fp32
  // (training.precision fp32) ignores the type.
  virtual void* allocate_as(size_t bytes, DType dtype) { return allocate(bytes); }
  // The type a buffer allocated as `requested` holds here (f32 where the type is ignored).
  virtual DType storage_for(DType requested) const { return DType::f32; }
  // The type the values at p are stored as: bf16 if p lies in an allocate_as(bf16) buffer.
  virtual DType stored_dtype(const void* p) const { return DType::f32; }
  // x[0..n) was written by something other than an op of this backend (a collective's sum over
  // ranks): store it at its buffer's type. Nothing to do for fp32 buffers.
  virtual void round_stored(float* x, int64_t n) {}
  // dst = src, stored at dst's type: the one explicit fp32 -> bf16 conversion (the parameters'
  // compute copy after each optimizer step). Counted in converted_elements().
  virtual void convert(const float* src, float* dst, int64_t n) {
    copy(dst, src, size_t(n) * sizeof(float));
  }
  virtual int64_t converted_elements() const { return 0; }

  // ---- dense linear algebra ---------------------------------------------------------------
  virtual void gemm(const GemmDesc& g) = 0;
  // A batch of independent GEMMs of different shapes (the experts' per-group GEMMs): one call,
  // so a device backend can issue one grouped kernel. Zero-sized entries are allowed.
  virtual void gemm_batched(std::span<const GemmDesc> gs) = 0;

  // ---- elementwise / reductions ------------------------------------------------------------
  virtual void fill(float* x, float value, int64_t n) = 0;
  virtual void add(const float* a, const float* b, float* out, int64_t n) = 0;  // out = a + b
  virtual void axpy(float alpha, const float* x, float* y, int64_t n) = 0;     // y += alpha*x
  virtual void scale(float* x, float alpha, int64_t n) = 0;                    // x *= alpha
  virtual double sum_squares(const float* x, int64_t n) = 0;                  // fp64 accumulate
  virtual double sum(const float* x, int64_t n) = 0;

  // ---- embedding: out[i,:] = table[ids[i],:]; dtable[ids[i],:] += dout[i,:] ----------------
  virtual void embedding_forward(const int32_t* ids, const float* table, float* out, int64_t n,
                                 int64_t dim) = 0;
  virtual void embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                                  int64_t n, int64_t dim) = 0;

  // ---- RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), per row -------------------
  virtual void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                               int64_t rows, int64_t dim, float eps) = 0;
  virtual void rmsnorm_backward(const float* dy, const float* x, const float* w,
                                const float* rstd, float* dx, float* dw, int64_t rows,
                                int64_t dim) = 0;

  // ---- rotary embedding, in place, Llama/HF half-split convention --------------------------
  // x is [rows, heads, head_dim]; row r has position positions[r]; angle for pair i is
  // pos * theta^(-2i/head_dim), pairs are (i, i + head_dim/2). backward rotates by -angle.
  virtual void rope_forward(float* x, const int32_t* positions, int64_t rows, int64_t heads,
                            int64_t head_dim, float theta) = 0;
  virtual void rope_backward(float* dx, const int32_t* positions, int64_t rows, int64_t heads,
                             int64_t head_dim, float theta) = 0;

  // ---- causal grouped-query attention --------------------------------------------------------
  // q [B,T,nh,hd], k/v [B,T,nkv,hd], out [B,T,nh,hd], lse [B,nh,T] (log-sum-exp of the scaled
  // scores, saved for backward). Query head h uses kv head h / (nh/nkv). scale = 1/sqrt(hd).
  virtual void attention_forward(const float* q, const float* k, const float* v, float* out,
                                 float* lse, int64_t B, int64_t T, int64_t nh, int64_t nkv,
                                 int64_t hd) = 0;
  virtual void attention_backward(const float* dout, const float* q, const float* k,
                                  const float* v, const float* out, const float* lse, float* dq,
                                  float* dk, float* dv, int64_t B, int64_t T, int64_t nh,
                                  int64_t nkv, int64_t hd) = 0;
  // Context parallelism: q/out [B,Tq,nh,hd] are positions q_start .. q_start+Tq-1 of sequences
  // whose keys/values k/v [B,Tk,nkv,hd] are positions 0 .. Tk-1 (q_start + Tq <= Tk); the query
  // at position p attends keys 0..p. lse [B,nh,Tq]. Backward overwrites dq and the whole dk/dv
  // (zero past the last query's position). The default runs the square op on queries padded
  // with zero rows to Tk (exact: padded rows carry no gradient, but they cost compute); a
  // backend overrides it with a native kernel (the CPU and CUDA backends do).
  virtual void attention_forward_offset(const float* q, const float* k, const float* v, float* out,
                                        float* lse, int64_t B, int64_t Tq, int64_t Tk,
                                        int64_t q_start, int64_t nh, int64_t nkv, int64_t hd);
  virtual void attention_backward_offset(const float* dout, const float* q, const float* k,
                                         const float* v, const float* out, const float* lse,
                                         float* dq, float* dk, float* dv, int64_t B, int64_t Tq,
                                         int64_t Tk, int64_t q_start, int64_t nh, int64_t nkv,
                                         int64_t hd);

  // ---- SwiGLU on a fused [rows, 2F] input: gate = h[:, :F], up = h[:, F:] ------------------
  // out[rows, F] = silu(gate) * up; backward writes dh [rows, 2F].
  virtual void swiglu_forward(const float* h, float* out, int64_t rows, int64_t F) = 0;
  virtual void swiglu_backward(const float* dout, const float* h, float* dh, int64_t rows,
                               int64_t F) = 0;

  // ---- router: softmax scores, top-k, gate weights, log-sum-exp (fp32 always) --------------
  // logits [N,E] -> probs [N,E] = softmax, idx [N,k] (descending prob; ties -> lower index),
  // weights [N,k] = probs at idx, divided by their sum if renormalize; lse [N] = logsumexp.
  virtual void router_forward(const float* logits, float* probs, int32_t* idx, float* weights,
                              float* lse, int64_t N, int64_t E, int64_t k, bool renormalize) = 0;
  // dlogits [N,E] (overwritten) from: dweights [N,k] (combine), dprobs [N,E] (balance loss, may
  // be null), dlse [N] (z-loss, may be null). The top-k selection itself has no gradient.
  virtual void router_backward(const float* dweights, const float* dprobs, const float* dlse,
                               const float* probs, const int32_t* idx, const float* weights,
                               float* dlogits, int64_t N, int64_t E, int64_t k,
                               bool renormalize) = 0;

  // ---- generalised router (RouterGate). Default: router_host_fallback.cpp, a plain C++
  // reference on host copies (copy_to_host / copy_from_host), so every backend runs it as is.
  // logits [N,E] -> probs [N,E]: the balance-loss scores (softmax(z); sigmoid: s / sum s),
  // gate [N,E]: the dense-to-sparse gate (written only then; may be null otherwise),
  // idx [N,slots]: selected experts by descending selection score (scores + bias, or the gate;
  // ties -> lower index), -1 in unused slots; weights [N,slots] (0 in unused slots);
  // lse [N] = logsumexp(z). fp32 in and out, double inside.
  virtual void router_gate_forward(const float* logits, const RouterGate& g, float* probs,
                                   float* gate, int32_t* idx, float* weights, float* lse,
                                   int64_t N, int64_t E);
  // dlogits [N,E] (overwritten) from dweights [N,slots], dprobs [N,E] (may be null) and dlse [N]
  // (may be null), given the forward's logits, gate, idx and weights. Selection has no gradient.
  virtual void router_gate_backward(const float* dweights, const float* dprobs, const float* dlse,
                                    const float* logits, const float* gate, const int32_t* idx,
                                    const float* weights, const RouterGate& g, float* dlogits,
                                    int64_t N, int64_t E);

  // ---- router auxiliary losses (model/moe/balance_loss.h) --------------------------------------
  // Rows are grouped into B blocks (sequences for per-sequence balancing; B = 1 for the whole
  // micro-batch): block(t) = row_block[t] when row_block is non-null (int32 [N], values in
  // [0,B)), else t / (N / B) (B divides N). Values are summed in fp64 in a fixed order, so each
  // backend's result is run-to-run identical; the loss (one double in backend memory, so a
  // step's values can stay on the device until the metrics read them) is accumulated
  // (*loss += ...), the gradients overwritten. An expert outside [-1,E) or a row_block value
  // outside [0,B) is an Error on the CPU backend (the reference checks); a device backend does
  // not wait to read them back and skips such slots (rows: zero gradient, no loss term).
  //
  // Per-block expert counts: counts[b,e] (int64, overwritten, [B,E]) = number of slots s of rows t
  // with idx[t,s] == e and block(t) == b. idx [N,k], -1 = unused slot.
  virtual void expert_counts_per_block(const int32_t* idx, const int32_t* row_block, int64_t N,
                                       int64_t k, int64_t E, int64_t B, int64_t* counts) = 0;
  // Load-balancing loss over rows grouped into B blocks (same block(t) rule):
  //   f[b,i] = counts[b,i] / d_b,  d_b = routed_share ? max(1, sum_i counts[b,i]) : slots
  //   P[b,i] = sum over the rows t of block b of probs[t,i]
  //   *loss += scale * sum_b sum_i f[b,i] * P[b,i] / n                   (accumulated)
  //   dprobs[t,i] = grad_scale * scale * f[block(t), i] / n               (overwritten, [N,E])
  // n: the rows P is a mean over (the micro-batch's tokens, or a whole sequence's when a rank
  // holds part of it). probs [N,E] fp32, counts int64 [B,E]. f is a constant of the gradient
  // (counts come from the non-differentiable top-k). The CPU reference sums P in row order and
  // the terms in (b, i) order, the order BalanceLoss always used.
  virtual void balance_loss(const float* probs, const int64_t* counts, const int32_t* row_block,
                            int64_t N, int64_t E, int64_t B, bool routed_share, double slots,
                            double scale, double n, float grad_scale, double* loss,
                            float* dprobs) = 0;
  // Router z-loss (ST-MoE): *loss += sum_t lse[t]^2 / N (accumulated);
  // dlse[t] = grad_scale * 2 * lse[t] / N (overwritten).
  virtual void router_z_loss(const float* lse, int64_t N, float grad_scale, double* loss,
                             float* dlse) = 0;

  // ---- token permutation by expert (counting sort, stable in token order) -------------------
  // idx [N,k] expert of each (token, slot), -1 = not routed. Writes counts [E] (host-readable
  // int64 in backend memory) and row [N,k]: the row of (token, slot) in the expert-sorted buffer
  // (-1 for unrouted slots). Rows of expert e are contiguous, experts in order 0..E-1.
  virtual void moe_permute_indices(const int32_t* idx, int64_t N, int64_t k, int64_t E,
                                   int64_t* counts, int32_t* row) = 0;
  // out[row[t,s], :] = x[t, :]
  virtual void moe_permute(const float* x, const int32_t* row, float* out, int64_t N, int64_t k,
                           int64_t dim) = 0;
  // dx[t, :] = sum_s dout_perm[row[t,s], :]  (overwrites dx)
  virtual void moe_permute_backward(const float* dout_perm, const int32_t* row, float* dx,
                                    int64_t N, int64_t k, int64_t dim) = 0;
  // out[t, :] = sum_s weights[t,s] * y[row[t,s], :]  (overwrites out)
  virtual void moe_unpermute(const float* y, const int32_t* row, const float* weights, float* out,
                             int64_t N, int64_t k, int64_t dim) = 0;
  // dy[row[t,s], :] = weights[t,s] * dout[t, :]; dweights[t,s] = <dout[t,:], y[row[t,s],:]>
  // (both overwritten; dweights 0 for unrouted slots)
  virtual void moe_unpermute_backward(const float* dout, const float* y, const int32_t* row,
                                      const float* weights, float* dy, float* dweights, int64_t N,
                                      int64_t k, int64_t dim) = 0;

  // ---- softmax cross-entropy over the vocabulary ----------------------------------------------
  // logits [N,V], targets [N]: -1 = no loss; kTargetInOtherShard = the row has a loss but its
  // target lies in another rank's vocabulary shard (vocabulary parallelism). losses [N] = lse -
  // logit[target] (0 if ignored or elsewhere), lse [N] saved for backward.
  // Targets must be valid (kernel_math::valid_target: [0,V), -1 or kTargetInOtherShard): the
  // caller checks them where it builds them. The CPU reference checks again and throws; a device
  // backend does not wait for the device to check, and treats an invalid target as ignored
  // (zero loss and gradient, no out-of-bounds read): a wrong result, not a crash.
  static constexpr int32_t kTargetInOtherShard = -2;
  virtual void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses,
                                     float* lse, int64_t N, int64_t V) = 0;
  // dlogits = scale * (softmax(logits) - onehot(target)) (dlogits may be logits: in place), 0
  // rows for ignored targets (-1), no
  // one-hot for kTargetInOtherShard. lse may be the global one of a vocabulary-parallel softmax.
  virtual void cross_entropy_backward(const float* logits, const int32_t* targets,
                                      const float* lse, float scale, float* dlogits, int64_t N,
                                      int64_t V) = 0;

  // ---- AdamW (decoupled weight decay), bias-corrected with step t >= 1 -----------------------
  virtual void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay, int64_t t) = 0;
};

// "cpu" or "cuda"; an Error naming the allowed values otherwise (or if CUDA was not built).
// precision (training.precision): "fp32" stores and computes everything in fp32. "bf16": on the
// cpu, the bf16 reference (Bf16StorageBackend: bf16 buffers hold bf16 values, every op computes
// in fp32 and rounds on the store); on cuda, today, fp32 storage with GEMM and attention operands
// rounded to bf16 on the tensor cores (the device's bf16 storage is issue #19's open part).
std::unique_ptr<Backend> make_backend(const std::string& name, int local_rank = 0,
                                      const std::string& precision = "fp32");

}  // namespace origami
