// defines: ShardSpec, ParamSpec, Param, ParamStore
// Every parameter has a global name, a global shape and a sharding spec; the optimizer, the
// gradient reduction, checkpoints and conversion tools all read the same spec. Values and
// gradients of all parameters live in two flat buffers, grouped by the process group their
// gradients reduce over ("dense": DP x CP; "expert": EDP), so each group's gradients are one
// contiguous range: one all-reduce per group, no packing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "tensor/tensor.h"

namespace origami {

enum class InitKind { normal, ones, zeros };
enum class GradGroup { dense, expert };  // dense: reduce over DP x CP; expert: over EDP

// One dimension of a parameter split over a process group: this rank holds global indices
// [offset, offset + local size) along `dim`.
struct ShardDim {
  int dim = 0;
  std::string group;         // e.g. "ep" (experts along dim 0), "etp" (expert FFN columns)
  int64_t offset = 0;
};

// How the global tensor is split across ranks; no dims: every rank holds all of it.
struct ShardSpec {
  std::vector<ShardDim> dims;
  int64_t offset_along(int dim) const {
    for (const auto& d : dims)
      if (d.dim == dim) return d.offset;
    return 0;
  }
};

struct ParamSpec {
  std::string name;                  // global name, e.g. "layers.0.moe.experts.fc1.weight"
  std::vector<int64_t> global_shape;
  std::vector<int64_t> local_shape;  // = global_shape when not split
  ShardSpec shard;
  GradGroup grad_group = GradGroup::dense;
  InitKind init = InitKind::normal;
  double init_std = 0.02;
  bool weight_decay = true;          // false for norms (Megatron's default)
  // Tensor parallelism: the TP ranks holding identical copies of this dense parameter while
  // computing different parts of its gradient, which is therefore summed over them: "" = none
  // (split over TP, or TP = 1), "tp" = the whole TP group (norms, router and shared expert under
  // sequence parallelism), "tp_kv" = the TP ranks sharing one key/value head (GQA with more TP
  // ranks than kv heads). Checkpoints store such a parameter from the group's first rank only.
  std::string tp_replicas;
  // Pipeline parallelism with tied embeddings: the last stage's copy of embedding.weight (its LM
  // head). Initialised equal to the first stage's, its gradient summed with it over the first +
  // last stage group; checkpoints store the first stage's, the gradient norm counts it once.
  bool pipeline_copy = false;
  // Held by every pipeline stage (the recurrent router's GRU cell, shared by all MoE layers):
  // the gradient is summed over the PP group; the copies of stages > 0 are pipeline_copy too.
  bool pipeline_shared = false;
  // Not trained (a frozen router): no gradient is accumulated and the optimizer leaves the value
  // as initialised (no weight decay either).
  bool frozen = false;
  // Rows (dim 0) from tile_from on repeat rows [0, tile_period) cyclically at initialisation
  // (AdaMoE's null router rows tile the true experts' rows); 0 = every row its own draw.
  int64_t tile_from = 0, tile_period = 0;

  // FSSDP's owned experts (split along dim 0 over group "ep_edp"): the one copy in the job, with
  // no replicas to reduce with or to store it instead.
  bool owned_once() const { return !shard.dims.empty() && shard.dims[0].group == "ep_edp"; }

  // Row-major flat index in the global tensor of local element i (0 <= i < numel(local_shape)):
  // what keys initialisation, checkpoint boxes and the layout-equivalence tests to the layout.
  int64_t global_index(int64_t i) const {
    const auto& ls = local_shape.empty() ? global_shape : local_shape;
    int64_t global = 0, stride = 1;
    for (size_t d = global_shape.size(); d-- > 0;) {
      global += (i % ls[d] + shard.offset_along(int(d))) * stride;
      i /= ls[d];
      stride *= global_shape[d];
    }
    return global;
  }
};

struct Param {
  ParamSpec spec;
  Tensor value;    // view into ParamStore's value buffer: the fp32 master
  Tensor grad;     // view into ParamStore's gradient buffer: fp32, accumulated over micro-batches
  Tensor compute;  // what forward and backward read: `value` itself, or its bf16 copy
};

class ParamStore {
 public:
  // Declare before finalize(); returns an index, stable for the store's lifetime.
  size_t declare(ParamSpec spec);
  // Allocates the flat buffers (dense params first, then expert) and initialises every value
  // from the counter-based RNG keyed by (seed, name, global index): layout independent.
  // compute_dtype bf16 (training.precision bf16) adds a third flat buffer, the bf16 copy of the
  // values the model computes with; values and gradients stay fp32 (docs/precision.md).
  void finalize(Backend& backend, uint64_t seed, DType compute_dtype = DType::f32);
  // compute = values rounded to the compute type (no-op in fp32): after anything wrote values
  // (initialisation, the optimizer step, a checkpoint load, an FSSDP re-shard).
  void refresh_compute(Backend& backend) const;
  DType compute_dtype() const { return compute_.dtype(); }

  Param& operator[](size_t i) { return params_.at(i); }
  const Param& operator[](size_t i) const { return params_.at(i); }
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  // The first box of `name` on this rank (FSSDP may hold several boxes of an expert tensor).
  const Param& find(const std::string& name) const;
  // The index of the first box of `name`, or npos when none is declared (a parameter several
  // modules share, declared by the first: the recurrent router's GRU cell).
  static constexpr size_t npos = size_t(-1);
  size_t index_of(const std::string& name) const;

  // Contiguous ranges of one gradient group (for reductions).
  Tensor values(GradGroup g) const;
  Tensor grads(GradGroup g) const;
  Tensor all_values() const { return values_; }
  Tensor all_grads() const { return grads_; }
  int64_t count() const { return values_.numel(); }
  int64_t count(GradGroup g) const;
  // The contiguous gradient / value range of the dense parameters with spec.tp_replicas ==
  // group (finalize() orders the dense range "tp", then "tp_kv", then the rest).
  Tensor replica_grads(const std::string& group) const;
  Tensor replica_values(const std::string& group) const;

 private:
  std::vector<Param> params_;
  Tensor values_, grads_, compute_;
  int64_t dense_count_ = 0, expert_count_ = 0;
  int64_t tp_count_ = 0, tp_kv_count_ = 0;  // leading replica ranges of the dense range
};

// Fills `local` (shaped spec.local_shape) with the values the global tensor has at the locally
// held indices. Exposed for tests and the checkpoint code.
void init_param_values(const ParamSpec& spec, uint64_t seed, std::vector<float>& local);

}  // namespace origami
