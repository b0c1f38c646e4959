// defines: ModelContext, ModelGroups, MicroBatchShape, grow_rows()
// What every module is built from: the backend that runs its kernels, the config it was
// described by, the static micro-batch shape its activation buffers are sized for, and the
// process groups it exchanges tokens over.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "comm/parallel_layout.h"
#include "config/config.h"
#include "tensor/tensor.h"

namespace origami {

// Which forward pass a module runs over a micro-batch.
//   first: the pass of record (statistics, loss values, loss gradients);
//   recompute_activations: training.recompute: full re-running a layer inside its backward, which
//     keeps every statistic and loss gradient of the first pass;
//   replay: a pipeline stage re-running a micro-batch's forward in its backward (other
//     micro-batches' forwards ran in between): activations and loss gradients again, exactly as
//     the first pass made them, but no statistic and no loss value counted twice.
enum class ForwardPass { first, recompute_activations, replay };

struct MicroBatchShape {
  int64_t batch = 1;   // sequences per micro-batch
  int64_t seq = 1;     // tokens per sequence
  int64_t tokens() const { return batch * seq; }
};

// The process groups a module talks over; null = this rank alone (no exchange). Built from a
// ProcessGroups by from(); a default ModelGroups is the 1-rank model.
struct ModelGroups {
  const Communicator* ep = nullptr;   // expert parallel: ranks holding different experts
  const Communicator* etp = nullptr;  // expert tensor parallel: ranks splitting one expert's FFN
  // FSSDP's owner group: the stage's EP x EDP ranks at this ETP coordinate (moe.fssdp).
  const Communicator* fssdp = nullptr;
  // Ranks whose tokens are balanced together in global_batch mode (the stage's TP x DP x CP).
  const Communicator* balance = nullptr;
  const Communicator* tp = nullptr;     // tensor (and sequence) parallel
  const Communicator* cp = nullptr;     // context parallel
  const Communicator* tp_cp = nullptr;  // the ranks that share one micro-batch's tokens
  // GQA with more TP ranks than kv heads: the TP ranks sharing one kv head; null otherwise.
  const Communicator* tp_kv = nullptr;
  // Pipeline parallelism: the ranks at this in-stage position across stages (rank = stage).
  const Communicator* pp = nullptr;

  // The one way to build the groups of a layout; `pg` must outlive the model.
  static ModelGroups from(const ProcessGroups& pg) {
    return {.ep = pg.ep.get(), .etp = pg.etp.get(), .fssdp = pg.ep_edp.get(), .balance = pg.tp_dp_cp.get(),
            .tp = pg.tp.get(), .cp = pg.cp.get(), .tp_cp = pg.tp_cp.get(),
            .tp_kv = pg.tp_kv.get(), .pp = pg.pp.get()};
  }
};

// Token geometry under context and sequence parallelism (docs/parallelism.md):
//   - the micro-batch is `shape.batch` sequences of `shape.seq` tokens;
//   - CP rank c holds chunks c and 2CP-1-c of every sequence (C = seq / 2CP tokens each), in the
//     order [2 chunks][batch][C] (each chunk's queries one [batch, C] block for attention), or
//     [batch][seq] without CP: context_tokens() rows, what attention and the LM head see;
//   - under sequence parallelism TP rank t holds the t-th contiguous block of those rows:
//     local_tokens() rows, what norms, residuals and the MoE layer see.
struct ModelContext {
  Backend& backend;
  const Config& config;
  MicroBatchShape shape;
  ModelGroups groups;
  int ep_size() const { return groups.ep ? groups.ep->size() : 1; }
  int ep_rank() const { return groups.ep ? groups.ep->rank() : 0; }
  int etp_size() const { return groups.etp ? groups.etp->size() : 1; }
  int etp_rank() const { return groups.etp ? groups.etp->rank() : 0; }
  int tp_size() const { return groups.tp ? groups.tp->size() : 1; }
  int tp_rank() const { return groups.tp ? groups.tp->rank() : 0; }
  int cp_size() const { return groups.cp ? groups.cp->size() : 1; }
  int cp_rank() const { return groups.cp ? groups.cp->rank() : 0; }
  int pp_size() const { return groups.pp ? groups.pp->size() : 1; }
  int pp_rank() const { return groups.pp ? groups.pp->rank() : 0; }
  int64_t context_tokens() const { return shape.tokens() / cp_size(); }
  int64_t local_tokens() const { return context_tokens() / tp_size(); }
  int64_t chunk_len() const { return shape.seq / (2 * cp_size()); }
  // Global position within its sequence of CP-local row r (0 <= r < context_tokens()).
  int64_t position_of(int64_t r) const {
    if (cp_size() == 1) return r % shape.seq;  // [batch][seq]: the one order attention needs
    const int64_t C = chunk_len(), per_half = shape.batch * C, half = r / per_half;
    const int64_t chunk = half == 0 ? cp_rank() : 2 * cp_size() - 1 - cp_rank();
    return chunk * C + r % C;
  }
  // Sequence (within the micro-batch) of CP-local row r.
  int64_t sequence_of(int64_t r) const {
    if (cp_size() == 1) return r / shape.seq;
    return (r % (shape.batch * chunk_len())) / chunk_len();
  }

  // Index in the micro-batch ([batch][seq] order) of sequence-parallel row r (0 <= r <
  // local_tokens()): what keys per-token randomness and per-sequence statistics to the layout.
  int64_t micro_batch_index(int64_t r) const {
    const int64_t c = tp_rank() * local_tokens() + r;
    return sequence_of(c) * shape.seq + position_of(c);
  }

  // Scratch shared by every module of the model: valid only until the next scratch() call with
  // the same key, so for buffers that need not survive from forward to backward. Stored at the
  // activation type unless `fp32` (statistics, router values: fp32 in every precision).
  Tensor scratch(const std::string& key, std::vector<int64_t> shape_, bool fp32 = false) {
    Tensor& t = (*scratch_buffers)[key];
    const int64_t n = numel_of(shape_);
    const DType dt = fp32 ? DType::f32 : activation;
    if (t.numel() < n || t.dtype() != dt) t = Tensor::zeros(backend, {n}, dt);
    return t.view(0, std::move(shape_));
  }

  // An activation saved from forward for backward: this module's own buffer, or, when
  // `recomputed` (training.recompute re-runs the forward in backward), one buffer per key shared
  // by every layer, since only the layer being recomputed needs it. Typed as scratch() is.
  Tensor saved(const std::string& key, std::vector<int64_t> shape_, bool recomputed,
               bool fp32 = false) {
    return recomputed ? scratch("saved." + key, std::move(shape_), fp32)
                      : Tensor::zeros(backend, std::move(shape_), fp32 ? DType::f32 : activation);
  }
  // A module's own activation buffer (not shared), at the activation type.
  Tensor activation_buffer(std::vector<int64_t> shape_) const {
    return Tensor::zeros(backend, std::move(shape_), activation);
  }
  bool recompute_full() const { return recompute == RecomputeMode::full; }
  bool recompute_attention() const { return recompute != RecomputeMode::none; }

  // training.recompute, parsed once when the context is built.
  RecomputeMode recompute = parse_recompute_mode(config.training.recompute);

  // Shared with the copies with_config() makes, so every layer's scratch is one set of buffers.
  std::shared_ptr<std::map<std::string, Tensor>> scratch_buffers =
      std::make_shared<std::map<std::string, Tensor>>();  // public: ModelContext stays an aggregate

  // What activations, activation gradients and exchanged tokens are stored as
  // (training.precision, where the backend stores that type: cuda keeps fp32 today);
  // parameters' compute copies follow it, masters and gradients are fp32.
  DType activation = backend.storage_for(activation_dtype(config.training.precision));

  // The same context described by another config (pyramid MoE: a MoE layer's own expert count);
  // `c` must outlive the copy.
  ModelContext with_config(const Config& c) const {
    return ModelContext{backend, c, shape, groups, recompute, scratch_buffers, activation};
  }
};

// Buffers whose row count depends on routing (dropless expert inputs) grow to the largest count
// seen and are then reused: no allocation in the steady state, no fixed worst case up front.
template <typename T>
void grow_rows(Backend& be, TensorOf<T>& t, int64_t rows, int64_t cols, DType dt = DType::f32) {
  if (t.empty() || t.dim(0) < rows)
    t = TensorOf<T>::zeros(be, {std::max<int64_t>(rows, 1), cols}, dt);
}

}  // namespace origami
