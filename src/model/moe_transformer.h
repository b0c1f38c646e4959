// defines: MoeTransformer, ForwardStats
// The whole decoder: embedding -> L blocks (MoE every moe.layer_freq-th layer, dense otherwise)
// -> final RMSNorm -> LM head (tied to the embedding or not) -> softmax cross-entropy.
// forward() runs one micro-batch and keeps its activations; backward() consumes them. Loss
// normalisation is the caller's: forward returns the SUM of token losses and, on a training
// pass, takes the gradient scale (1 / loss tokens of the global batch) so any split into ranks
// and micro-batches agrees. The LM head and loss run in row chunks (model/lm_head_loss.h) and
// form their gradient in forward; backward() continues from it.
#pragma once
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/lm_head_loss.h"
#include "model/transformer_block.h"

namespace origami {

struct RouterLosses {
  double balance = 0.0;  // sum over MoE layers of E sum_i f_i P_i
  double z = 0.0;        // sum over MoE layers of mean logsumexp^2 (0 when z_loss_coeff is 0)
};

struct ForwardStats {
  double lm_loss_sum = 0.0;    // sum of token losses (targets >= 0)
  int64_t loss_tokens = 0;
  std::vector<std::vector<int64_t>> expert_counts;  // [moe layer][expert]
  int64_t dropped_slots = 0;   // capacity mode, summed over MoE layers
};

class MoeTransformer {
 public:
  // groups: this rank's process groups ({} = alone); under pipeline parallelism (groups.pp)
  // the rank builds only its chunks of layers (pipeline/stage_layers.h: virtual stage
  // chunk * PP + rank), the embedding on virtual stage 0, the final norm and LM head on the last
  // (with tied embeddings the last holds a copy of the embedding, spec.pipeline_copy).
  // allocate_parameters = false declares the parameter specs only (offline tools: no values).
  MoeTransformer(Backend& backend, const Config& config, MicroBatchShape shape, uint64_t seed,
                 ModelGroups groups = {}, bool allocate_parameters = true);

  // The whole model on one pipeline stage (PP = 1): forward_chunk / backward_chunk of chunk 0.
  // tokens / targets: host arrays [B*T], the whole micro-batch (every rank of the TP x CP group
  // passes the same; each takes its context-parallel chunks); target -1 = no loss there.
  // lm_loss_sum and loss_tokens cover this rank's CP chunks (the same on every TP rank).
  // lm_grad_scale given: a training pass, which also accumulates the LM head's weight gradient
  // and must be followed by backward(); absent: evaluation, losses only.
  ForwardStats forward(const int32_t* tokens, const int32_t* targets, const RouterLossScales& s,
                       std::optional<float> lm_grad_scale = std::nullopt);
  void backward();

  // One chunk (a run of consecutive layers) of this rank for one micro-batch, as a pipeline
  // schedule calls it. input / output [local_tokens, H]: the previous virtual stage's output
  // (null on virtual stage 0, which embeds the tokens) and this chunk's output for the next
  // (null on the last virtual stage, which computes the LM loss: lm_loss_sum, loss_tokens).
  // lm_grad_scale given: the chunk's backward follows before any other forward of it, so the
  // pass keeps its activations and forms its gradients now; absent: statistics and losses only
  // (evaluation, or a pipeline forward whose backward comes later and replays it).
  // expert_counts has one entry per MoE layer of the whole model, empty for layers elsewhere.
  ForwardStats forward_chunk(int chunk, const int32_t* tokens, const int32_t* targets,
                             const float* input, float* output, const RouterLossScales& s,
                             std::optional<float> lm_grad_scale, int micro_batch);
  // The chunk's backward for that micro-batch: output_grad (null on the last virtual stage) ->
  // input_grad (null on virtual stage 0, which accumulates the embedding gradient). When its
  // activations are another micro-batch's, the forward is replayed first (ForwardPass::replay)
  // from input, tokens and targets, which must be those forward_chunk had.
  void backward_chunk(int chunk, const int32_t* tokens, const int32_t* targets,
                      const float* input, const float* output_grad, float* input_grad,
                      const RouterLossScales& s, float lm_grad_scale, int micro_batch);
  int num_chunks() const { return int(chunks_.size()); }
  // Elements of what crosses a pipeline boundary per micro-batch: the hidden state [n, H], then
  // the cross-layer router state [n, S] (MoE++'s gating residual, RMoE's g; S = 0 otherwise).
  int64_t boundary_elements() const;
  // Global [begin, end) layers of each chunk of this rank.
  std::vector<std::pair<int, int>> chunk_layers() const;

  // Start of an optimizer step (or of an evaluation batch): refreshes the parameters' compute
  // copy (bf16) and resets per-step router statistics.
  void begin_step();
  // End of a training step's backward, before the gradient reduction: FSSDP's copies return
  // their gradients to the owners (spRS) and are freed; the step's loads join the plan's
  // window. Collective over the owner groups; a no-op without FSSDP.
  void end_step();
  // FSSDP: bytes this rank's copies occupy now (0 between training steps).
  int64_t fssdp_copy_bytes() const;
  // Dispatch / FSSDP bytes and rows computed by this rank's MoE layers since the last call.
  MoeExchangeStats take_exchange_stats();
  // FSSDP re-sharding when step is a multiple of moe.fssdp.reshard_interval: every MoE layer
  // may move experts (weights and both moments, through `moments`) to new owners. Collective.
  // Returns the experts moved.
  int64_t reshard_experts(int64_t step, const FssdpExperts::MomentsOf& moments);
  // The unscaled router-loss values (balance, z) summed over this rank's MoE layers and over the
  // forward passes since begin_step(): one read of the backend's accumulators, so call it once
  // per step.
  RouterLosses router_losses() const;

  // Gating schedule (model/moe/gating_schedule.h): the step and global-batch position of the
  // next forward passes. Until set: step 0 without noise.
  void set_router_clock(const RouterClock& clock);
  // EvoMoE expert-diversify: at the first step after the diversify phase, every MoE layer spawns
  // its experts from expert 0 (a collective over EP). Returns whether this step did.
  bool spawn_experts_at(int64_t step);
  // Auxiliary-loss-free balancing: updates each MoE layer's expert bias from the global batch's
  // counts [moe layer of the whole model][expert] (no-op unless moe.router.expert_bias).
  void update_expert_bias(const std::vector<std::vector<int64_t>>& counts);
  // Persistent state that is not a parameter (checkpoints carry it): each of this rank's MoE
  // layers' expert bias, "layers.L.moe.router.expert_bias" -> [E], when moe.router.expert_bias.
  std::map<std::string, std::vector<float>> buffers() const;
  // Restores buffers() from a checkpoint; a missing entry starts from zeros (warned), e.g. when
  // expert_bias is switched on for a run resumed from one without it.
  void load_buffers(const std::map<std::string, std::vector<float>>& saved);

  // Logits of the last evaluation forward (tools and golden tests read them): [context_tokens,
  // V/TP], this rank's context-parallel rows and vocabulary shard ([B*T, V] on one rank). Only
  // when one chunk holds every row (training.logits_chunk_tokens 0 or >= context_tokens).
  const float* logits() const;
  // The group of TP ranks sharing one kv head (GQA with TP > kv heads), else null.
  const Communicator* kv_group() const { return ctx_.groups.tp_kv; }
  const ModelContext& context() const { return ctx_; }
  ParamStore& params() { return store_; }
  const ParamStore& params() const { return store_; }
  // MoE layers of the whole model (every stage); those of this rank are a subset.
  int num_moe_layers() const { return num_moe_layers_; }
  static bool is_moe_layer(const Config& cfg, int layer);
  const MicroBatchShape& shape() const { return ctx_.shape; }

 private:
  struct Block {
    int layer;       // global layer index
    int moe_index;   // index among the whole model's MoE layers, -1 for a dense layer
    std::unique_ptr<TransformerBlock> block;
  };
  struct Chunk {
    int begin = 0, end = 0;  // global layers [begin, end)
    bool embeds = false;     // virtual stage 0: the embedding
    bool has_head = false;   // the last virtual stage: final norm, LM head, loss
    std::vector<Block> blocks;
    std::vector<Tensor> residual;  // block inputs, then the last block's output ([n,H] each)
    int live_micro_batch = -1;     // whose activations the chunk holds for backward (-1: none)
    // Cross-layer routers (Router::state_width): the state that arrives with the input from the
    // previous virtual stage, its gradient (sent back with the input gradient), and what the
    // chunk passes on with its output (its last MoE router's state, else the one that arrived)
    // with the buffer the next stage's gradient of it is added to.
    Tensor state_in, dstate_in;
    const float* state_out = nullptr;
    float* dstate_out = nullptr;
  };
  // Links each MoE router to the previous MoE layer's state (within a chunk, or the chunk's
  // incoming state), so the cross-layer routers see layer l-1 from layer l.
  void link_router_states();
  // Token ids and targets of this rank's rows, checked, relative to its vocabulary shard, and
  // uploaded; returns the loss tokens.
  int64_t prepare_inputs(const int32_t* tokens, const int32_t* targets, bool need_targets);
  void run_chunk(Chunk& ch, const float* input, const RouterLossScales& s, ForwardPass pass,
                 std::optional<float> lm_grad_scale, ForwardStats* st);

  ModelContext ctx_;
  // Pyramid MoE: each MoE layer's config (moe.num_experts = its count) and context; deques, so
  // the blocks' references stay valid.
  std::deque<Config> layer_configs_;
  std::deque<ModelContext> layer_contexts_;
  ParamStore store_;
  int64_t vocab_ = 0, vocab_start_ = 0;  // this TP rank's vocabulary rows
  size_t embedding_ = 0, final_norm_ = 0, lm_head_ = 0;
  std::vector<Chunk> chunks_;
  int num_moe_layers_ = 0;           // whole model
  int local_moe_layers_ = 0;         // this rank's
  int64_t state_width_ = 0;          // Router::state_width of the config
  std::unique_ptr<RouterGru> gru_declared_;  // PP: the shared cell on a stage without MoE layers
  TensorOf<double> router_losses_;  // [local moe layer][balance, z], backend memory
  IndexTensor tokens_, targets_, positions_;  // CP-local rows, ids relative to the shard
  std::vector<int32_t> local_ids_, local_targets_;
  Tensor normed_, rstd_, dres_a_, dres_b_;
  std::unique_ptr<LmHeadLoss> head_;
  // The LM head's input gradient [context_tokens, H]: formed by a training forward, consumed by
  // backward(), so an owned buffer (no scratch key may reuse it in between).
  Tensor head_dx_;
  bool head_grad_ready_ = false;  // a training forward left head_dx_ for backward()
};

}  // namespace origami
