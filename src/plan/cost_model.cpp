// The terms of predict_step(), each written as the code it mirrors does it (file named in the
// comment). Per micro-batch, one rank of a stage: n = B T / (CP TP) sequence-parallel rows,
// Nc = B T / CP context rows; element sizes from the cluster (activations) and fp32 (gradients,
// optimizer state: Origami keeps fp32 master state in both precisions).
#include "plan/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "base/error.h"
#include "comm/parallel_layout.h"
#include "model/moe_transformer.h"
#include "pipeline/schedule.h"
#include "pipeline/schedule_sim.h"
#include "pipeline/stage_layers.h"
#include "train/memory_estimate.h"
#include "train/pipeline_executor.h"

namespace origami {

bool group_spans_nodes(const std::vector<int>& members, int ranks_per_node) {
  for (int r : members)
    if (r / ranks_per_node != members.front() / ranks_per_node) return true;
  return false;
}

namespace {

using Group = ParallelLayout::Group;
enum class Collective { all_gather, reduce_scatter, all_reduce, all_to_all, p2p };

// One rank's view of the groups it uses: size, node span, link.
struct GroupInfo {
  int size = 1;
  bool spans = false;
  int on_my_node = 1;  // members sharing rank 0's node (all-to-all: the intra-node share)
};

// The transfer itself: latency per ring step and bytes over the link.
double transfer_seconds(Collective c, double bytes, const GroupInfo& g, const ClusterSpec& cl,
                        double* sent) {
  const LinkSpec& link = g.spans ? cl.inter_node : cl.intra_node;
  const double bw = link.bandwidth_gbps * 1e9, lat = link.latency_us * 1e-6;
  const double steps = g.size - 1, share = steps / g.size;
  switch (c) {
    case Collective::all_gather:
    case Collective::reduce_scatter:
      *sent = share * bytes;
      return steps * lat + share * bytes / bw;
    case Collective::all_reduce:  // reduce-scatter + all-gather
      *sent = 2 * share * bytes;
      return 2 * (steps * lat + share * bytes / bw);
    case Collective::all_to_all: {
      // Blocks to ranks of this node ride the intra-node link, the rest the inter-node one, at
      // the same time.
      const double intra = double(g.on_my_node - 1) / g.size * bytes;
      const double inter = double(g.size - g.on_my_node) / g.size * bytes;
      *sent = intra + inter;
      return steps * lat + std::max(intra / (cl.intra_node.bandwidth_gbps * 1e9),
                                    inter / (cl.inter_node.bandwidth_gbps * 1e9));
    }
    default:
      return 0;
  }
}

// Seconds of one collective of `bytes` (all-gather / reduce-scatter: the whole gathered buffer;
// all-reduce: the buffer; all-to-all: what this rank sends, its own block included; p2p: the
// message) over a ring (or pairwise exchange) of g ranks. Returns the bytes this rank puts on
// the wire through `sent`.
double collective_seconds(Collective c, double bytes, const GroupInfo& g, const ClusterSpec& cl,
                          double* sent) {
  const LinkSpec& link = g.spans ? cl.inter_node : cl.intra_node;
  const double bw = link.bandwidth_gbps * 1e9, lat = link.latency_us * 1e-6;
  if (c == Collective::p2p) {
    *sent = bytes;
    return lat + bytes / bw + 1e-6 * collective_sync_us(cl.compute, 2);
  }
  if (g.size <= 1) {
    *sent = 0;
    return 0;
  }
  return 1e-6 * collective_sync_us(cl.compute, g.size) + transfer_seconds(c, bytes, g, cl, sent);
}

// Time and traffic of one pass (forward or backward of a stage, per micro-batch), with the
// communication kept per (group, what) for --explain.
struct Pass {
  double compute_s = 0;
  double comm_s = 0;
  std::map<std::string, double> work_s;  // compute_s by kind (kComputeKinds)
  std::map<std::pair<std::string, std::string>, CommTerm> terms;
  void work(const char* kind, double seconds) {
    compute_s += seconds;
    work_s[kind] += seconds;
  }
  void add(const Pass& o, double times) {
    compute_s += times * o.compute_s;
    comm_s += times * o.comm_s;
    for (const auto& [kind, seconds] : o.work_s) work_s[kind] += times * seconds;
    for (const auto& [key, t] : o.terms) {
      CommTerm& mine = terms[key];
      if (mine.group.empty()) {  // first time: the term's description, no traffic yet
        mine = t;
        mine.bytes = 0, mine.calls = 0, mine.ms = 0;
      }
      mine.bytes += times * t.bytes;
      mine.calls += times * t.calls;
      mine.ms += times * t.ms;
    }
  }
};

class StageModel {
 public:
  StageModel(const Config& cfg, const ParallelLayout& layout, const ClusterSpec& cl,
             const CostOptions& opt)
      : cfg_(cfg), layout_(layout), cl_(cl), opt_(opt) {
    const auto& m = cfg.model;
    const auto& t = cfg.training;
    TP = layout.tp(), CP = layout.cp(), EP = layout.ep(), ETP = layout.etp();
    H = double(m.hidden_size), V = double(m.vocab_size);
    hd = H / double(m.num_attention_heads);
    nh = double(m.num_attention_heads / TP);
    nkv = double(std::max<int64_t>(m.num_query_groups / TP, 1));
    T = double(t.seq_length);
    Nc = double(t.micro_batch_size) * T / CP;
    n = Nc / TP;
    E = double(cfg.moe.num_experts), k = double(cfg.moe.top_k);
    Fe = double(cfg.moe.expert_ffn_hidden_size) / ETP;
    F = double(m.ffn_hidden_size) / TP;
    S = double(cfg.moe.shared_expert_ffn_hidden_size);
    act_bytes = cl.bytes_per_element;
    share_ = ranks_per_core(cl, layout.world());
    for (Group g : {Group::tp, Group::cp, Group::ep, Group::etp, Group::dp_cp, Group::edp,
                    Group::pp, Group::embedding}) {
      const auto members = layout.group(g, 0);
      GroupInfo info{.size = int(members.size()),
                     .spans = group_spans_nodes(members, cl.ranks_per_node)};
      info.on_my_node = int(std::count_if(members.begin(), members.end(), [&](int r) {
        return r / cl.ranks_per_node == members.front() / cl.ranks_per_node;
      }));
      groups_[g] = info;
    }
  }

  // One collective into a pass.
  void comm(Pass& p, Group g, const std::string& name, const std::string& what, Collective c,
            double bytes, double count = 1) const {
    const GroupInfo& info = groups_.at(g);
    if (c != Collective::p2p && info.size <= 1) return;
    double sent = 0;
    const double s = collective_seconds(c, bytes, info, cl_, &sent) * count;
    CommTerm& term = p.terms[{name, what}];
    term.group = name, term.what = what, term.group_size = info.size;
    term.spans_nodes = info.spans;
    term.bandwidth_gbps = (info.spans ? cl_.inter_node : cl_.intra_node).bandwidth_gbps;
    term.bytes += sent * count;
    term.calls += count;
    term.ms += 1e3 * s;
    p.comm_s += s;
  }
  // Every compute term is a rank's own time (CPU time on shared cores) times share_: the wall
  // time it takes when ranks_per_node ranks share shared_cores cores (1 on a device per rank).
  double gemm(double m, double n, double kk, double calls = 1) const {
    return share_ * calls * gemm_seconds(cl_.compute, 2 * m * n * kk);
  }
  double memory(double elements) const {
    return share_ * 4 * elements / (cl_.compute.memory_gbps * 1e9);
  }
  double ops(double count) const { return share_ * count * cl_.compute.op_overhead_us * 1e-6; }
  double attention_core(double flops, bool backward) const {
    const auto& c = cl_.compute;
    const double fwd = c.attention_gflops > 0 ? flops / (c.attention_gflops * 1e9)
                                              : gemm_seconds(c, flops);
    if (!backward) return share_ * fwd;
    return share_ * (c.attention_backward_gflops > 0
                         ? flops / (c.attention_backward_gflops * 1e9)
                         : 2.5 * fwd);  // probabilities recomputed, 2 GEMMs more
  }
  // Per-element ops, forward and backward together (half each way): measured ns, or the bytes
  // they move (cross-entropy 4 floats per logit, SwiGLU 6 per output, AdamW 7 per parameter).
  double per_element(double ns, double elements, double floats) const {
    return ns > 0 ? share_ * ns * 1e-9 * elements : memory(floats * elements);
  }

  // Attention sub-block (attention.cpp): TP gather of the input, q k v, RoPE, the causal core
  // (CP: keys and values gathered), the output projection, reduce-scatter; plus both norms and
  // residual adds of the block (transformer_block.cpp). backward: the mirrored exchanges, the
  // input gathered again, two GEMMs per weight, the core at 2.5 x (probabilities recomputed).
  Pass attention(bool backward, bool core_recompute) const {
    Pass p;
    const double x_bytes = Nc * H * act_bytes, kv_bytes = CP * Nc * nkv * hd * act_bytes;
    const double core_flops = 2 * Nc * T * nh * hd;  // 4 Nc (T/2) nh hd: causal
    const double g = backward ? 2 : 1;
    p.work("gemm", gemm(Nc, (nh + 2 * nkv) * hd, H, g) + gemm(Nc, H, nh * hd, g));
    p.work("attention", attention_core(core_flops, backward));
    if (core_recompute) p.work("attention", attention_core(core_flops, false));
    p.work("elementwise", memory(g * (2 * Nc * (nh + nkv) * hd + 10 * n * H)));
    p.work("elementwise", ops(backward ? 16 : 10));
    const std::string tp_what = "attention input all-gather, output reduce-scatter";
    if (!backward) {
      comm(p, Group::tp, "tp", tp_what, Collective::all_gather, x_bytes);
      comm(p, Group::tp, "tp", tp_what, Collective::reduce_scatter, x_bytes);
      comm(p, Group::cp, "cp", "key/value all-gather (reduce-scatter of their gradients)",
           Collective::all_gather, kv_bytes, 2);
    } else {
      comm(p, Group::tp, "tp", tp_what, Collective::all_gather, x_bytes, 2);
      comm(p, Group::tp, "tp", tp_what, Collective::reduce_scatter, x_bytes);
      comm(p, Group::cp, "cp", "key/value all-gather (reduce-scatter of their gradients)",
           Collective::all_gather, kv_bytes, 2);
      comm(p, Group::cp, "cp", "key/value all-gather (reduce-scatter of their gradients)",
           Collective::reduce_scatter, kv_bytes, 2);
    }
    return p;
  }

  // MoE layer (moe_layer.cpp, token_dispatcher.cpp, experts.cpp): router on the rank's n rows,
  // counts then rows all-to-all over EP, all-gather over ETP, E/EP experts' GEMMs on n k ETP
  // rows (times the routing imbalance on the busiest rank), reduce-scatter, all-to-all back.
  Pass moe(bool backward) const {
    Pass p;
    const double imb = opt_.routing_imbalance, g = backward ? 2 : 1;
    const double rows = n * k * ETP * imb, local = std::max(E / EP, 1.0);
    p.work("gemm", gemm(n, E, H, g));
    p.work("experts",
           gemm(rows / local, 2 * Fe, H, g * local) + gemm(rows / local, H, Fe, g * local));
    if (S > 0) p.work("gemm", gemm(n, 2 * S, H, g) + gemm(n, H, S, g));
    p.work("elementwise", memory(g * (4 * n * E + 4 * n * k * H + rows * H)));
    p.work("swiglu", per_element(cl_.compute.swiglu_ns, rows * Fe, 6) / 2);
    p.work("elementwise", ops(backward ? 14 : 10));
    const double send = n * k * H * act_bytes * imb;
    const std::string a2a = "dispatcher all-to-all (tokens out and back; counts first)";
    comm(p, Group::ep, "ep", a2a, Collective::all_to_all, send, 2);
    comm(p, Group::ep, "ep", a2a, Collective::all_to_all, EP * 8.0 * local, 1);
    const std::string etp = "expert rows all-gather, outputs reduce-scatter";
    comm(p, Group::etp, "etp", etp, Collective::all_gather, ETP * send);
    comm(p, Group::etp, "etp", etp, Collective::reduce_scatter, ETP * send);
    return p;
  }

  // Dense SwiGLU layer (mlp.cpp): like attention's exchanges over TP, F/TP columns.
  Pass dense_mlp(bool backward) const {
    Pass p;
    const double g = backward ? 2 : 1;
    p.work("gemm", gemm(Nc, 2 * F, H, g) + gemm(Nc, H, F, g));
    p.work("swiglu", per_element(cl_.compute.swiglu_ns, Nc * F, 6) / 2);
    p.work("elementwise", ops(backward ? 6 : 4));
    const std::string what = "mlp input all-gather, output reduce-scatter";
    const double x_bytes = Nc * H * act_bytes;
    comm(p, Group::tp, "tp", what, Collective::all_gather, x_bytes, backward ? 2 : 1);
    comm(p, Group::tp, "tp", what, Collective::reduce_scatter, x_bytes);
    return p;
  }

  Pass layer(int l, bool backward) const {
    const bool full = cfg_.training.recompute == "full";
    const bool selective = cfg_.training.recompute == "selective";
    const bool is_moe = MoeTransformer::is_moe_layer(cfg_, l);
    Pass p = attention(backward, backward && selective);
    p.add(is_moe ? moe(backward) : dense_mlp(backward), 1);
    if (backward && full) p.add(layer(l, false), 1);  // transformer_block.cpp: forward again
    return p;
  }

  // Embedding (reduce-scatter of the vocabulary-parallel partial sums) and, on the last stage,
  // the LM head + loss in row chunks with the gradient formed in forward (lm_head_loss.cpp):
  // logits, dx and dW GEMMs all run in the forward.
  Pass ends(bool first, bool last, bool backward) const {
    Pass p;
    const double x_bytes = Nc * H * act_bytes;
    if (first) {
      p.work("elementwise", memory(2 * n * H) + ops(2));
      comm(p, Group::tp, "tp", "embedding reduce-scatter / LM head all-gather",
           backward ? Collective::all_gather : Collective::reduce_scatter, x_bytes);
    }
    if (last) {
      if (!backward) {
        const double chunk = cfg_.training.logits_chunk_tokens > 0
                                 ? std::min(double(cfg_.training.logits_chunk_tokens), Nc)
                                 : Nc;
        const double chunks = std::ceil(Nc / chunk);
        p.work("gemm", gemm(chunk, V / TP, H, 3 * chunks));
        p.work("cross_entropy", per_element(cl_.compute.cross_entropy_ns, Nc * V / TP, 4));
        p.work("elementwise", ops(6 * chunks));
      }
      p.work("elementwise", memory(4 * n * H) + ops(2));
      comm(p, Group::tp, "tp", "embedding reduce-scatter / LM head all-gather",
           backward ? Collective::reduce_scatter : Collective::all_gather, x_bytes);
    }
    return p;
  }

  // Forward and backward of one micro-batch through stage `s` (all its chunks).
  std::pair<Pass, Pass> stage(int s, const std::vector<std::pair<int, int>>& layers, int v) const {
    const int PP = layout_.pp();
    Pass f = ends(s == 0, s == PP - 1, false), b = ends(s == 0, s == PP - 1, true);
    for (int c = 0; c < v; ++c)
      for (int l = layers[size_t(c * PP + s)].first; l < layers[size_t(c * PP + s)].second; ++l) {
        f.add(layer(l, false), 1);
        b.add(layer(l, true), 1);
      }
    return {f, b};
  }

  // pipeline_executor.cpp: each chunk's boundary activations [n, H] go out in forward and their
  // gradients come back in backward (a replayed forward sends nothing).
  void boundaries(Pass& f, Pass& b, int v) const {
    if (layout_.pp() == 1) return;
    const double bytes = n * H * act_bytes;
    const std::string what = "boundary activations / gradients (send + recv)";
    comm(f, Group::pp, "pp", what, Collective::p2p, bytes, v);
    comm(b, Group::pp, "pp", what, Collective::p2p, bytes, v);
  }

  // Parameters of stage s on one rank: dense (reduced over DP x CP), expert (over EDP), and the
  // TP-replicated ones (norms, router, shared expert: summed over TP first).
  std::tuple<double, double, double> params(int s, const std::vector<std::pair<int, int>>& layers,
                                            int v) const {
    const int PP = layout_.pp();
    double dense = 0, expert = 0, replicated = 0;
    if (s == 0) dense += V / TP * H;
    if (s == PP - 1) dense += H + ((!cfg_.model.tie_embeddings || s != 0) ? V / TP * H : 0);
    for (int c = 0; c < v; ++c)
      for (int l = layers[size_t(c * PP + s)].first; l < layers[size_t(c * PP + s)].second; ++l) {
        dense += 2 * H + (nh + 2 * nkv) * hd * H + H * nh * hd;
        replicated += 2 * H;
        if (MoeTransformer::is_moe_layer(cfg_, l)) {
          dense += E * H + 3 * S * H;
          replicated += E * H + 3 * S * H;
          expert += std::max(E / EP, 1.0) * 3 * Fe * H;
        } else {
          dense += 3 * F * H;
        }
      }
    return {dense, expert, replicated};
  }

  // The step's reductions and the optimizer (optim/optimizer.cpp, distributed_optimizer.cpp):
  // fp32 gradients all-reduced (ZeRO-1: reduce-scatter, then the parameters all-gathered: the
  // same bytes), AdamW on the local copy or the shard, gradient zeroing and norm over all.
  Pass update(int s, const std::vector<std::pair<int, int>>& layers, int v, double* opt_s) const {
    Pass p;
    const auto [dense, expert, replicated] = params(s, layers, v);
    const bool zero = cfg_.optimizer.distributed;
    const auto bucketed = [](double bytes) { return std::max(1.0, std::ceil(bytes / 4194304.0)); };
    const std::string what = zero ? "gradient reduce-scatter + parameter all-gather (ZeRO-1)"
                                  : "gradient all-reduce";
    for (auto [g, name, count] : {std::tuple{Group::dp_cp, "dp_cp", dense},
                                  std::tuple{Group::edp, "edp", expert}}) {
      if (count <= 0) continue;
      const double bytes = 4 * count, calls = bucketed(bytes);
      if (zero) {
        comm(p, g, name, what, Collective::reduce_scatter, bytes / calls, calls);
        comm(p, g, name, what, Collective::all_gather, bytes / calls, calls);
      } else {
        comm(p, g, name, what, Collective::all_reduce, bytes / calls, calls);
      }
    }
    comm(p, Group::tp, "tp (replicas)", "replicated gradients all-reduce (norms, router)",
         Collective::all_reduce, 4 * replicated);
    if (cfg_.model.tie_embeddings && layout_.pp() > 1 && (s == 0 || s == layout_.pp() - 1))
      comm(p, Group::embedding, "embedding", "tied embedding gradient all-reduce",
           Collective::all_reduce, 4 * V / TP * H);
    const double shard = zero ? dense / groups_.at(Group::dp_cp).size +
                                    expert / groups_.at(Group::edp).size
                              : dense + expert;
    *opt_s = per_element(cl_.compute.adamw_ns, shard, 7) + memory(2 * (dense + expert)) + ops(8);
    p.work("optimizer", *opt_s);
    return p;
  }

 private:
  const Config& cfg_;
  const ParallelLayout& layout_;
  const ClusterSpec& cl_;
  const CostOptions& opt_;
  std::map<Group, GroupInfo> groups_;
  double TP, CP, EP, ETP, H, V, hd, nh, nkv, T, Nc, n, E, k, Fe, F, S, act_bytes;
  double share_ = 1;  // wall seconds per second of a rank's own compute (shared cores)
};

// PipelineExecutor::peak_buffers, once per (shape, stage).
int cached_peak_buffers(const ScheduleShape& shape, int stage) {
  static std::map<std::tuple<int, int, int, int, int>, int> cache;
  const auto key = std::tuple{shape.pp, shape.v, shape.m, int(shape.kind), stage};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  return cache[key] = PipelineExecutor::peak_buffers(shape, stage);
}

// Per pipeline rank, the share of its backward passes whose chunk's activations another
// micro-batch's forward overwrote since (moe_transformer.cpp backward_chunk replays the forward
// then). It differs by rank: under 1F1B the last stage runs each backward right after its
// forward and never replays, the earlier stages replay nearly all.
const std::vector<double>& replay_shares(const ScheduleShape& shape) {
  static std::map<std::tuple<int, int, int, int>, std::vector<double>> cache;
  const auto key = std::tuple{shape.pp, shape.v, shape.m, int(shape.kind)};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::vector<double> shares;
  for (int r = 0; r < shape.pp; ++r) {
    std::vector<int> live(size_t(shape.v), -1);
    int replays = 0, backwards = 0;
    for (const Action& a : compute_order(shape, r)) {
      if (a.op == Action::forward) live[size_t(a.chunk)] = a.micro_batch;
      if (a.op == Action::backward) {
        ++backwards;
        if (live[size_t(a.chunk)] != a.micro_batch) ++replays;
        live[size_t(a.chunk)] = -1;
      }
    }
    shares.push_back(double(replays) / std::max(backwards, 1));
  }
  return cache[key] = shares;
}

// The schedule's makespan in units of (forward + backward) of one chunk, from the dry run of
// every rank's table with these relative costs; cached, a search repeats shapes.
double makespan_units(const ScheduleShape& shape, int forward, int backward) {
  static std::map<std::tuple<int, int, int, int, int, int>, double> cache;
  const auto key = std::tuple{shape.pp, shape.v, shape.m, int(shape.kind), forward, backward};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const StepCosts costs{.forward = forward, .backward = backward};
  const Simulation sim = simulate(shape, SendModel::eager, costs);
  const double units = double(sim.makespan) / double(forward + backward);
  cache[key] = units;
  return units;
}

}  // namespace

std::pair<double, int> layout_memory(const Config& cfg, int world, double routing_imbalance) {
  const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, world);
  const int PP = layout.pp();
  std::pair<double, int> out{0.0, 0};
  if (PP == 1) return {estimate_memory(cfg, layout, 0, routing_imbalance).total(), 0};
  // estimate_memory's pipeline term is peak_buffers(shape, stage) x n x H fp32 values, with the
  // shape's m from the global batch: estimate at m = PP (a short table), then swap the term.
  const auto& t = cfg.training;
  const int v = int(cfg.parallel.virtual_pipeline);
  const int64_t m = t.global_batch_size / (t.micro_batch_size * layout.dp());
  Config short_cfg = cfg;
  short_cfg.training.global_batch_size = int64_t(PP) * t.micro_batch_size * layout.dp();
  const ScheduleShape real{.pp = PP, .v = v, .m = int(m), .kind = pipeline_schedule_kind(cfg)};
  ScheduleShape brief = real;
  brief.m = PP;
  const double row_bytes = 4.0 * double(t.micro_batch_size * t.seq_length) /
                           double(layout.cp() * layout.tp()) * double(cfg.model.hidden_size);
  // Middle stages (neither first nor last) hold the same layers when every layer is alike
  // (all MoE or all dense): they differ only in the pipeline term, so one stands for all.
  const bool alike = cfg.moe.num_experts == 0 || cfg.moe.layer_freq == 1;
  double middle = -1;  // stage 1's memory without its pipeline term
  for (int s = 0; s < PP; ++s) {
    double base;
    if (alike && s > 1 && s < PP - 1 && middle >= 0) {
      base = middle;
    } else {
      base = estimate_memory(short_cfg, layout, s, routing_imbalance).total() -
             row_bytes * cached_peak_buffers(brief, s);
      if (s == 1) middle = base;
    }
    const double bytes = base + row_bytes * cached_peak_buffers(real, s);
    if (bytes > out.first) out = {bytes, s};
  }
  return out;
}

StepPrediction predict_step(const Config& cfg, int world, const ClusterSpec& cluster,
                            const CostOptions& options) {
  const ParallelLayout layout = ParallelLayout::from_config(cfg.parallel, world);
  const int PP = layout.pp(), v = PP > 1 ? int(cfg.parallel.virtual_pipeline) : 1;
  const auto layers = stage_layers(int(cfg.model.num_layers), PP, v,
                                   PP > 1 ? int(cfg.parallel.pipeline_first_stage_layers) : 0,
                                   PP > 1 ? int(cfg.parallel.pipeline_last_stage_layers) : 0);
  const int64_t m = cfg.training.global_batch_size /
                    (cfg.training.micro_batch_size * layout.dp());
  const ScheduleShape shape{.pp = PP, .v = v, .m = int(m), .kind = pipeline_schedule_kind(cfg)};
  const StageModel model(cfg, layout, cluster, options);
  StepPrediction out;
  const std::vector<double> replays =
      PP > 1 ? replay_shares(shape) : std::vector<double>(1, 0.0);
  out.replay_share = *std::max_element(replays.begin(), replays.end());

  // On a device per rank the slowest stage sets every stage's pace (the dry run takes one cost
  // for all). On ranks that share cores (an oversubscribed CPU node) the cores go where the work
  // is: a light stage's idle ranks yield to a heavy stage's (logging.profile shows every core
  // busy), so the mean stage's work is what the step costs, within the bounds below.
  const double stretch = ranks_per_core(cluster, world);
  const bool shared = stretch > 1;
  // The schedule's dry run (schedule_sim.h) at forward and backward costs f and b per chunk.
  const auto makespan = [&](double f, double b) {
    const int fu = std::clamp(int(std::lround(64 * f / (f + b))), 1, 63);
    return makespan_units(shape, fu, 64 - fu) * (f + b) / v;
  };
  double worst = -1;
  Pass fwd, bwd, sum_f, sum_b;
  int worst_stage = 0;
  for (int s = 0; s < PP; ++s) {
    auto [f, b] = model.stage(s, layers, v);
    b.add(f, replays[size_t(s)]);
    model.boundaries(f, b, v);
    sum_f.add(f, 1.0 / PP);
    sum_b.add(b, 1.0 / PP);
    if (f.compute_s + f.comm_s + b.compute_s + b.comm_s > worst) {
      worst = f.compute_s + f.comm_s + b.compute_s + b.comm_s;
      fwd = f, bwd = b, worst_stage = s;
    }
  }
  std::tie(out.memory_bytes, out.memory_stage) =
      layout_memory(cfg, world, options.routing_imbalance);
  double pipeline_s = double(m) * worst;
  if (PP > 1)
    pipeline_s = makespan(fwd.compute_s + fwd.comm_s, bwd.compute_s + bwd.comm_s);
  if (shared) {
    // The cores do the mean stage's work. Two things can take longer: the slowest stage's own
    // work, which its ranks run at most `speedup` times faster than with every rank busy, and
    // the schedule's dependency chain at the mean stage's costs, equally sped up (with one
    // micro-batch the stages run one after another: PP x the mean, over PP when the ranks of one
    // stage can have all the cores).
    fwd = sum_f, bwd = sum_b;
    const double f = fwd.compute_s + fwd.comm_s, b = bwd.compute_s + bwd.comm_s;
    const double mean = double(m) * (f + b);
    const double speedup = std::min(double(PP), stretch);
    const double chain = PP > 1 ? makespan(f, b) : mean;
    pipeline_s = std::max({mean, chain / speedup, double(m) * worst / speedup});
  }
  const double busy = double(m) * (fwd.compute_s + fwd.comm_s + bwd.compute_s + bwd.comm_s);
  double opt_s = 0;
  const Pass upd = model.update(worst_stage, layers, v, &opt_s);

  Pass all;
  all.add(fwd, double(m));
  all.add(bwd, double(m));
  all.add(upd, 1);
  out.compute_ms = 1e3 * all.compute_s;
  for (const char* kind : kComputeKinds)
    out.compute_terms_ms.emplace_back(kind, all.work_s.count(kind) ? 1e3 * all.work_s.at(kind) : 0.0);
  out.comm_ms = 1e3 * all.comm_s;
  out.bubble_ms = 1e3 * std::max(0.0, pipeline_s - busy);
  out.optimizer_ms = 1e3 * opt_s;
  out.step_ms = out.compute_ms + out.comm_ms + out.bubble_ms;
  out.tokens_per_s = double(cfg.training.global_batch_size * cfg.training.seq_length) /
                     (out.step_ms / 1e3);
  for (const auto& [key, term] : all.terms) out.terms.push_back(term);
  std::sort(out.terms.begin(), out.terms.end(),
            [](const CommTerm& a, const CommTerm& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace origami
