// Every term mirrors a buffer of src/model (named in the comments), counted in elements: those
// stored at the activation type (2 bytes in bf16) apart from those fp32 / int32 in any precision.
#include "train/memory_estimate.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/logging.h"
#include "model/moe/expert_kinds.h"
#include "model/moe/expert_rows.h"
#include "model/moe_transformer.h"
#include "optim/distributed_optimizer.h"
#include "pipeline/schedule.h"
#include "train/pipeline_executor.h"
#include "pipeline/stage_layers.h"

namespace origami {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

MemoryEstimate estimate_memory(const Config& cfg, const ParallelLayout& layout, int stage,
                               double routing_imbalance) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  const auto& t = cfg.training;
  const int64_t TP = layout.tp(), CP = layout.cp(), EP = layout.ep(), ETP = layout.etp();
  // This stage's layers (all of them with one stage) and its chunks.
  const int PP = layout.pp(), v = PP > 1 ? int(cfg.parallel.virtual_pipeline) : 1;
  const auto stages = stage_layers(int(m.num_layers), PP, v,
                                   PP > 1 ? int(cfg.parallel.pipeline_first_stage_layers) : 0,
                                   PP > 1 ? int(cfg.parallel.pipeline_last_stage_layers) : 0);
  std::vector<int> layers;
  for (int c = 0; c < v; ++c)
    for (int l = stages[size_t(c * PP + stage)].first; l < stages[size_t(c * PP + stage)].second; ++l)
      layers.push_back(l);
  const bool embeds = stage == 0, has_head = stage == PP - 1;
  const int64_t H = m.hidden_size, V = m.vocab_size, L = int64_t(layers.size());
  const int64_t hd = H / m.num_attention_heads, nh = m.num_attention_heads / TP;
  const int64_t nkv = std::max<int64_t>(m.num_query_groups / TP, 1);
  const int64_t B = t.micro_batch_size, T = t.seq_length;
  const int64_t Nc = B * T / CP, n = Nc / TP;  // context rows, sequence-parallel rows
  const int64_t E = moe.num_experts, k = moe.top_k, Fe = moe.expert_ffn_hidden_size / ETP;
  const int64_t Er = ExpertKinds::of(moe).routed();  // router rows (MoE++ / AdaMoE add some)
  const int64_t Fr = moe.residual ? moe.expert_ffn_hidden_size : 0;  // PR-MoE's dense MLP
  const int64_t S = moe.shared_expert_ffn_hidden_size, F = m.ffn_hidden_size / TP;
  const bool full = t.recompute == "full", core = t.recompute != "none";
  int64_t moe_layers = 0;
  // Pyramid MoE: the stage's MoE layers' router rows and experts per EP rank, summed (each term
  // below that scales with a layer's expert count uses these sums), and its largest expert count.
  int64_t sum_Er = 0, sum_E = 0, max_E = 0;
  for (int l : layers) {
    if (!MoeTransformer::is_moe_layer(cfg, l)) continue;
    int moe_index = 0;
    for (int j = 0; j < l; ++j) moe_index += MoeTransformer::is_moe_layer(cfg, j);
    sum_Er += ExpertKinds::of(moe, moe_index).routed();
    sum_E += moe.experts_at(moe_index);
    max_E = std::max(max_E, moe.experts_at(moe_index));
    ++moe_layers;
  }
  const int64_t dense_layers = L - moe_layers;

  // ---- parameters (ParamStore): dense and expert element counts of this rank ----
  // embedding, head (a tied copy on the last of several stages), final norm
  int64_t dense = V / TP * H * (embeds ? 1 : 0) + (has_head ? H : 0);
  if (has_head && (!m.tie_embeddings || !embeds)) dense += V / TP * H;
  dense += L * (2 * H + (nh + 2 * nkv) * hd * H + H * nh * hd);        // norms, q k v, proj
  dense += dense_layers * 3 * F * H;                                    // mlp fc1 [2,F,H], fc2
  dense += sum_Er * H + moe_layers * 3 * S * H;                         // router, shared expert
  dense += moe_layers * (3 * Fr * H + (moe.residual ? 2 * H : 0));      // residual MLP, coefficient
  dense += moe_layers * moe.zero_compute_experts.constant * 3 * H;      // constant experts W_c, v
  if (moe.num_experts > 0 && moe.router.kind == "recurrent") {          // RMoE: W_in, W [E, D]
    const int64_t D = moe.router.recurrent_dim;
    dense += moe_layers * D * H + sum_Er * (D - H);
    dense += 6 * D * D + 6 * D;                                         // the shared GRU cell
  }
  if (moe.router.gating_residual)  // W_map on every MoE layer but the first (layer 0, stage 0)
    dense += (moe_layers - (stage == 0 && moe_layers > 0 ? 1 : 0)) * Er * Er;
  // FSSDP: the owned experts (the most any rank owns: even_owners), no replicas; the copies are
  // transient (scratch below, at the slot budget).
  // (FSSDP refuses pyramid counts, so its owned count is per layer of moe.num_experts.)
  const int64_t expert = moe.fssdp.enabled
                             ? moe_layers * ceil_div(E / EP, layout.edp()) * 3 * Fe * H
                             : sum_E / EP * 3 * Fe * H;                  // experts fc1, fc2
  // training.precision bf16: activations, activation gradients, exchanged tokens and the
  // parameters' compute copy are stored in 2 bytes; masters, gradients, optimizer state,
  // statistics, router values and losses stay fp32 (docs/precision.md). The cuda backend does
  // not store bf16 yet (it rounds GEMM and attention operands only): fp32 there.
  const bool bf16 = t.precision == "bf16" && t.backend != "cuda";
  const double a = bf16 ? 2.0 : 4.0;  // bytes of an activation-typed element
  MemoryEstimate r;
  r.parameters = dense + expert;
  r.parameter_bytes = r.gradient_bytes = 4.0 * double(dense + expert);
  if (bf16) r.parameter_bytes += 2.0 * double(dense + expert);  // ParamStore's compute copy
  if (cfg.optimizer.distributed) {
    // DistributedOptimizer: each group's moments over its padded shard; one pair of staging
    // buffers shared by the groups, sized for the widest (size x bucket) and the longest bucket
    // of those that communicate (a group of one rank needs none).
    const int64_t dense_ranks = layout.dp() * CP;
    const int64_t expert_ranks = moe.fssdp.enabled ? 1 : layout.edp();  // FSSDP: whole on the owner
    int64_t wide = 0, narrow = 0;
    for (auto [count, ranks] : {std::pair{dense, dense_ranks}, std::pair{expert, expert_ranks}}) {
      const int64_t cap = ceil_div(count, ranks);
      const int64_t bucket = std::min(DistributedOptimizer::kDefaultBucketElements, cap);
      r.optimizer_bytes += 4.0 * double(2 * cap);
      if (ranks > 1) wide = std::max(wide, bucket * ranks), narrow = std::max(narrow, bucket);
    }
    r.optimizer_bytes += 4.0 * double(wide + narrow);
  } else {
    r.optimizer_bytes = 8.0 * double(dense + expert);  // AdamW exp_avg, exp_avg_sq
  }

  // ---- activations kept per layer (shared by all layers when recomputed) ----
  // act: elements stored at the activation type; f32: elements fp32 (or int32) in any precision.
  auto per_layer = [&](double elems, bool shared) { return shared ? elems : elems * double(L); };
  double act = 0.0, f32 = 0.0;
  act += per_layer(3.0 * n * H, full);                                  // block: ln1, h, ln2
  f32 += per_layer(2.0 * n, full);                                      //   rstd x2
  act += per_layer(double(Nc) * (nh + 2 * nkv) * hd, full);             // attention q, k, v
  act += per_layer(double(Nc) * nh * hd, core);                         // attention out
  f32 += per_layer(double(Nc) * nh, core);                              //   lse
  const double dense_mlp = double(Nc) * 3 * F;                          // mlp h [.,2F], act [.,F]
  act += full ? (dense_layers > 0 ? dense_mlp : 0.0) : dense_mlp * double(dense_layers);
  // MoE layer (per layer, recomputation or not): router logits, probs, dlogits [n,E], weights,
  // idx [n,k], lse; the layer's dispatch idx, dweights [n,k], dprobs [n,E], dlse; shared expert
  // h, act (shared under full recompute); dispatcher and experts for a balanced load.
  // Expert rows on the busiest EP rank: what the MoE layer reserves at start-up or the stated
  // imbalance, whichever is more (expert_rows.h; the stage's largest expert count bounds it).
  const ExpertRows er = expert_rows(moe, n, max_E, int(EP), int(ETP), routing_imbalance);
  const double local_rows = double(er.local);                          // sent, padded or not
  const double recv_rows = double(er.received);                        // from EP, before ETP
  const double rows = double(er.computed);                             // after the ETP gather
  // Terms in a layer's router rows Er (logits, probs, dlogits, dprobs; the dense-to-sparse gate
  // and noise) are added for all layers at once below, from sum_Er.
  const double per_row = 4.0 * n + (moe.router.schedule.kind == "dense_to_sparse" ? 2.0 * n : 0.0);
  double moe_f32 = 2.0 * n * k + n + 2.0 * n * k + n;                   // weights, idx, lse x2
  double moe_act = 0.0;
  if (moe.residual) moe_act += 2.0 * n * H + n * H, moe_f32 += 2.0 * n;  // routed, dense, drouted; logits
  const int64_t D = moe.router.kind == "recurrent" ? moe.router.recurrent_dim : 0;
  const int64_t Sx = moe.num_experts == 0 ? 0 : D > 0 ? D : moe.router.gating_residual ? Er : 0;
  moe_f32 += double(n) * Sx + 8.0 * n * D;                              // dstate; u, g, gi, gh
  moe_f32 += 2.0 * n * k;                                               // dispatcher row
  moe_act += 3.0 * local_rows * H;                                    // permuted, y_local, scratch
  moe_act += recv_rows * H + 2.0 * rows * H;                            // recv, gathered, sorted
  moe_f32 += rows;                                                      //   sort_row
  moe_act += 3.0 * rows * H;                                            // expert_out, dexpert_out/in
  moe_act += 6.0 * rows * Fe;                                           // experts h, act, dact, dh
  act += moe_act * double(moe_layers);
  f32 += moe_f32 * double(moe_layers) + per_row * double(sum_Er) + double(sum_E);  // + counts
  if (S > 0) act += per_layer(double(n) * 3 * S, full) * (full ? 1.0 : double(moe_layers) / double(L));
  if (Fr > 0) act += per_layer(double(n) * 3 * Fr, full) * (full ? 1.0 : double(moe_layers) / double(L));
  // Model: residual stream (L+1) x [n,H], final norm out, two gradient buffers, rstd; one
  // chunk's logits [chunk, V/TP] (their gradient overwrites them), per-token loss and lse; token
  // ids, targets, positions.
  const int64_t chunk = t.logits_chunk_tokens > 0 ? std::min(t.logits_chunk_tokens, Nc) : Nc;
  act += double(L + v) * n * H + 2.0 * n * H;  // residuals per chunk, dres x2
  f32 += 3.0 * Nc;                             // ids, targets, positions
  if (has_head) act += double(n) * H + double(chunk) * (V / TP), f32 += n + 2.0 * Nc;
  if (PP > 1) {
    // The executor's boundary buffers [n,H] (fp32: they carry the router state too): inputs and
    // output gradients of the micro-batches in flight and what is in transit (1F1B: about
    // min(PP - stage, m); interleaved, GPipe more).
    const int64_t m_steps = t.global_batch_size / (t.micro_batch_size * layout.dp());
    const ScheduleShape shape{.pp = PP, .v = v, .m = int(m_steps),
                              .kind = pipeline_schedule_kind(cfg)};
    const int64_t S = moe.num_experts == 0                 ? 0
                      : moe.router.kind == "recurrent"     ? moe.router.recurrent_dim
                      : moe.router.gating_residual         ? ExpertKinds::of(moe).routed()
                                                           : 0;
    f32 += double(PipelineExecutor::peak_buffers(shape, stage)) * n * (H + S);
    f32 += 2.0 * n * S * v;  // each chunk's incoming state and its gradient
  }
  r.activation_bytes = a * act + 4.0 * f32;

  // ---- scratch shared across layers (ModelContext::scratch), at its largest use ----
  double scr = 4.0 * n * H, scr32 = 0.0;                                 // block branch, dln, dh, dtmp
  if (full) scr += double(n) * H;                                        // block recomputed output
  scr += double(Nc) * nh * hd * 2 + double(Nc) * nkv * hd * 2;          // attention datt, dq, dk, dv
  if (TP > 1) {
    scr += 5.0 * Nc * H;          // attention x, partial, dout, dx; lm_head.x
    scr += 2.0 * Nc * H;          // embedding partial, dout
    if (dense_layers > 0) scr += 4.0 * Nc * H;  // mlp x, partial, dout, dx
  }
  if (CP > 1) scr += 2.0 * B * T * nkv * hd + 4.0 * B * T * nkv * hd + double(CP) * Nc * nkv * hd;
  scr += std::max(dense_layers > 0 ? 3.0 * Nc * F : 0.0, S > 0 ? 3.0 * n * S : 0.0);  // mlp dact, dh
  if (has_head) scr += double(Nc) * H + double(n) * H;                   // head dx (owned), final_norm.dy
  if (moe.fssdp.enabled) {  // copies' weights (compute type) and gradients (fp32)
    const int64_t slots = moe.fssdp.placement == "ep" ? E / EP - (E / EP) / std::max<int64_t>(layout.edp(), 1)
                                                      : moe.fssdp.max_replicas_per_rank;
    const double w = double((moe.fssdp.rematerialize ? 1 : moe_layers) * slots * 3 * Fe * H);
    scr += w, scr32 += w;
  }
  if (moe.residual && moe_layers > 0) scr += double(n) * H, scr32 += 2.0 * n;  // dmlp; dlogits
  r.scratch_bytes = a * scr + 4.0 * scr32;
  return r;
}

std::string describe_memory(const MemoryEstimate& m) {
  return fmt::format("parameters {} ({:.2f} M) + gradients {} + optimizer {} + activations {} + "
                     "scratch {} = {}",
                     format_bytes(m.parameter_bytes), double(m.parameters) / 1e6,
                     format_bytes(m.gradient_bytes), format_bytes(m.optimizer_bytes),
                     format_bytes(m.activation_bytes), format_bytes(m.scratch_bytes),
                     format_bytes(m.total()));
}

}  // namespace origami
