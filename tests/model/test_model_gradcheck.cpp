// Whole-model gradient check: the analytic gradient of the total loss (LM cross-entropy + load
// balance + router z-loss) for every parameter tensor matches central finite differences.
// Tiny fp32 model: one MoE layer with a shared expert and one dense layer (layer_freq 2), GQA;
// once per router option (docs/moe.md): softmax / sigmoid scores, top-k before softmax, with and
// without renormalisation, scaling, group-limited top-k, the expert bias, the gating schedules,
// and the MoE variants (MoE++'s zero-computation experts and gating residual, AdaMoE's null
// experts, RMoE's recurrent router with its hand-written GRU backward, residual MoE).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <vector>

#include "base/error.h"
#include "model/moe_transformer.h"

namespace origami {
namespace {

Config tiny_config(bool tied) {
  Config c;
  c.model.vocab_size = 37;
  c.model.hidden_size = 16;
  c.model.num_layers = 2;
  c.model.num_attention_heads = 4;
  c.model.num_query_groups = 2;
  c.model.ffn_hidden_size = 24;
  c.model.max_seq_length = 16;
  c.training.seq_length = 7;
  c.model.tie_embeddings = tied;
  c.model.init_std = 0.3;  // large enough that every path carries a gradient well above fp32 noise
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 12;
  c.moe.shared_expert_ffn_hidden_size = 8;
  c.moe.layer_freq = 2;
  c.moe.router.aux_loss_coeff = 0.1;
  c.moe.router.z_loss_coeff = 0.01;
  return c;
}

// One router configuration: config changes, the schedule position, and an expert bias to load.
struct RouterVariant {
  const char* name;
  std::function<void(Config&)> apply = [](Config&) {};
  RouterClock clock{};
  std::vector<float> bias{};
};

void PrintTo(const RouterVariant& v, std::ostream* os) { *os << v.name; }

struct Harness {
  Config cfg;
  std::unique_ptr<Backend> be = make_backend("cpu");
  MoeTransformer model;
  std::vector<int32_t> tokens, targets;
  RouterLossScales scales;
  float lm_scale;

  explicit Harness(const Config& c) : cfg(c), model(*be, cfg, MicroBatchShape{2, 7}, 42) {
    for (int i = 0; i < 14; ++i) {
      tokens.push_back((i * 7 + 3) % 37);
      targets.push_back(i == 5 ? -1 : (i * 11 + 1) % 37);  // one ignored target
    }
    scales = {float(cfg.moe.router.aux_loss_coeff), float(cfg.moe.router.z_loss_coeff)};
    lm_scale = 1.f / 13.f;
  }

  // train: the pass that forms the LM head's gradient (backward() follows); else evaluation.
  double loss(bool train = false) {
    model.begin_step();  // the router-loss values accumulate from here
    ForwardStats st = model.forward(tokens.data(), targets.data(), scales,
                                    train ? std::optional<float>(lm_scale) : std::nullopt);
    const RouterLosses rl = model.router_losses();
    return st.lm_loss_sum * lm_scale + scales.balance * rl.balance + scales.z * rl.z;
  }
};

void gradcheck(bool tied, const RouterVariant& variant = {"softmax_default"}) {
  Config cfg = tiny_config(tied);
  variant.apply(cfg);
  validate(cfg, 1);
  Harness h(cfg);
  h.model.set_router_clock(variant.clock);
  if (!variant.bias.empty()) h.model.load_buffers({{"layers.0.moe.router.expert_bias", variant.bias}});
  auto& ps = h.model.params();
  Tensor g = ps.all_grads();
  h.be->fill(g.data(), 0.f, g.numel());
  h.loss(/*train=*/true);
  h.model.backward();
  std::vector<float> analytic(size_t(g.numel()));
  h.be->copy_to_host(analytic.data(), g.data(), g.bytes());
  const float* base = ps.all_values().data();

  int checked = 0, skipped_discontinuous = 0;
  for (auto& p : ps.all()) {
    const int64_t n = p.value.numel();
    if (p.spec.frozen) {  // a frozen router: no gradient at all, whatever the loss does
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(analytic[size_t(p.value.data() - base + i)], 0.f) << p.spec.name << "[" << i << "]";
      continue;
    }
    double max_err = 0.0;
    // A handful of elements spread over each tensor (all of them for small tensors).
    const int64_t stride = std::max<int64_t>(1, n / 6);
    for (int64_t i = 0; i < n; i += stride) {
      float* x = p.value.data() + i;
      const float x0 = *x;
      auto at = [&](double d) { *x = float(x0 + d); return h.loss(); };
      // Central differences at two step sizes: agreement means no routing decision (top-k) flipped
      // inside the interval; a flip makes the loss discontinuous and the point is skipped.
      const double step = 3e-3;
      const double fd = (at(step) - at(-step)) / (2 * step);
      const double fd_half = (at(step / 2) - at(-step / 2)) / step;
      *x = x0;
      if (std::abs(fd - fd_half) > 1e-2 * std::abs(fd) + 2e-4) {
        ++skipped_discontinuous;
        continue;
      }
      const double an = analytic[size_t(p.value.data() - base + i)];
      // fp32 forward: loss ~3.6 carries ~2e-7 absolute rounding, so the difference quotient has
      // ~1e-4 noise at step 3e-3; 1% relative covers the O(step^2) truncation.
      const double err = std::abs(an - fd);
      max_err = std::max(max_err, err);
      EXPECT_LE(err, 1e-2 * std::abs(fd) + 1e-4)
          << p.spec.name << "[" << i << "]: analytic " << an << " vs finite difference " << fd;
      ++checked;
    }
    (void)max_err;
  }
  EXPECT_GT(checked, 100);
  // Routing flips under a 3e-3 nudge should be rare; many would mean the check is not checking.
  EXPECT_LE(skipped_discontinuous, checked / 10);
  // The router takes part (a gradient well above noise) exactly when the gate routes.
  const Param& router = ps.find("layers.0.moe.router.weight");
  double router_grad = 0;
  for (int64_t i = 0; i < router.grad.numel(); ++i)
    router_grad = std::max(router_grad, double(std::abs(router.grad.data()[i])));
  if (gate_at(cfg.moe, variant.clock.step).kind == GateKind::single_expert)
    EXPECT_EQ(router_grad, 0.0) << "the diversify phase routes without the router";
  else if (cfg.moe.router.freeze)
    EXPECT_EQ(router_grad, 0.0) << "a frozen router has no gradient";
  else
    EXPECT_GT(router_grad, 1e-3) << variant.name;
}

TEST(ModelGradcheck, UntiedEmbeddings) { gradcheck(false); }
TEST(ModelGradcheck, TiedEmbeddings) { gradcheck(true); }
// The LM head and loss in row chunks (14 rows: 4+4+4+2, and 5+5+4 with the tied head).
TEST(ModelGradcheck, UntiedEmbeddingsChunkedLogits) {
  gradcheck(false, {"chunk4", [](Config& c) { c.training.logits_chunk_tokens = 4; }});
}
TEST(ModelGradcheck, TiedEmbeddingsChunkedLogits) {
  gradcheck(true, {"chunk5", [](Config& c) { c.training.logits_chunk_tokens = 5; }});
}

// Chunking the LM head changes where the loss gradient is formed, not what it is: every chunk
// size gives the whole micro-batch's loss and gradients (up to fp32 summation order), and an
// evaluation forward the same loss without touching the gradients.
TEST(LmHeadChunks, EveryChunkSizeMatchesTheWholeMicroBatch) {
  auto run = [](int64_t chunk, bool tied, double* eval_loss) {
    Config cfg = tiny_config(tied);
    cfg.training.logits_chunk_tokens = chunk;
    validate(cfg, 1);
    Harness h(cfg);
    Tensor g = h.model.params().all_grads();
    h.be->fill(g.data(), 0.f, g.numel());
    *eval_loss = h.loss();
    EXPECT_EQ(h.be->sum_squares(g.data(), g.numel()), 0.0) << "evaluation wrote gradients";
    EXPECT_THROW(h.model.backward(), Error) << "backward after an evaluation forward";
    std::vector<float> grads(size_t(g.numel()) + 1);
    grads.back() = float(h.loss(/*train=*/true));
    h.model.backward();
    h.be->copy_to_host(grads.data(), g.data(), g.bytes());
    return grads;
  };
  for (bool tied : {false, true}) {
    double whole_eval = 0.0;
    const std::vector<float> whole = run(0, tied, &whole_eval);
    EXPECT_FLOAT_EQ(float(whole_eval), whole.back());
    for (int64_t chunk : {1, 3, 13, 14, 100}) {
      double eval = 0.0;
      const std::vector<float> got = run(chunk, tied, &eval);
      EXPECT_NEAR(eval, whole_eval, 1e-6 * std::abs(whole_eval)) << "chunk " << chunk;
      ASSERT_EQ(got.size(), whole.size());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], whole[i], 1e-6 + 1e-5 * std::abs(whole[i]))
            << "element " << i << ", chunk " << chunk << ", tied " << tied;
    }
  }
}

TEST(LmHeadChunks, WholeLogitsOnlyWhenOneChunkHoldsThem) {
  for (int64_t chunk : {0, 14, 3}) {
    Config cfg = tiny_config(false);
    cfg.training.logits_chunk_tokens = chunk;
    Harness h(cfg);
    h.loss();
    if (chunk == 3)
      EXPECT_THROW(h.model.logits(), Error);
    else
      EXPECT_NO_THROW(h.model.logits());
  }
}

class RouterGradcheck : public ::testing::TestWithParam<RouterVariant> {};
TEST_P(RouterGradcheck, MatchesFiniteDifferences) { gradcheck(false, GetParam()); }

void dense_to_sparse(Config& c) {
  c.moe.router.schedule.kind = "dense_to_sparse";
  c.moe.router.schedule.tau_start = 2.0;
  c.moe.router.schedule.tau_end = 0.3;
  c.moe.router.schedule.end_step = 10;
}

INSTANTIATE_TEST_SUITE_P(
    Options, RouterGradcheck,
    ::testing::Values(
        RouterVariant{"softmax_no_renormalize", [](Config& c) { c.moe.router.renormalize = false; }},
        // SMoE-Dropout: the router frozen at its random init; the input still gets the gate's
        // gradient (checked against finite differences like every other tensor).
        RouterVariant{"frozen", [](Config& c) {
                        c.moe.router.freeze = true;
                        c.moe.router.aux_loss_coeff = 0.0;
                      }},
        RouterVariant{"topk_before_softmax", [](Config& c) { c.moe.router.pre_softmax = false; }},
        RouterVariant{"softmax_scaled", [](Config& c) { c.moe.router.scaling_factor = 2.5; }},
        RouterVariant{"sigmoid", [](Config& c) { c.moe.router.score = "sigmoid"; }},
        RouterVariant{"sigmoid_plain_scaled",
                      [](Config& c) {
                        c.moe.router.score = "sigmoid";
                        c.moe.router.renormalize = false;
                        c.moe.router.scaling_factor = 2.5;
                      }},
        RouterVariant{"group_limited",
                      [](Config& c) {
                        c.moe.router.num_groups = 2;
                        c.moe.router.group_topk = 1;
                      }},
        RouterVariant{"expert_bias", [](Config& c) { c.moe.router.expert_bias = true; }, {},
                      {0.3f, 0.f, -0.2f, 0.1f}},
        RouterVariant{"deepseek_v3_sequence_balance",
                      [](Config& c) {
                        c.moe.router.score = "sigmoid";
                        c.moe.router.scaling_factor = 2.5;
                        c.moe.router.num_groups = 2;
                        c.moe.router.group_topk = 1;
                        c.moe.router.expert_bias = true;
                        c.moe.router.load_balance = "sequence";
                      },
                      {}, {0.05f, -0.05f, 0.1f, 0.f}},
        RouterVariant{"dense_to_sparse", dense_to_sparse, {.step = 3, .noise = true}},
        RouterVariant{"dense_to_sparse_gumbel_weights",
                      [](Config& c) {
                        dense_to_sparse(c);
                        c.moe.router.schedule.gumbel_weights = true;
                        c.moe.router.renormalize = false;
                      },
                      {.step = 6, .first_sequence = 4, .noise = true}},
        RouterVariant{"dense_to_sparse_sigmoid",
                      [](Config& c) {
                        dense_to_sparse(c);
                        c.moe.router.score = "sigmoid";
                      },
                      {.step = 5, .noise = true}},
        RouterVariant{"dense_to_sparse_after_switch", dense_to_sparse, {.step = 10, .noise = true}},
        RouterVariant{"topk_anneal",
                      [](Config& c) {
                        c.moe.router.schedule.kind = "topk_anneal";
                        c.moe.router.schedule.k_start = 4;
                        c.moe.router.schedule.end_step = 10;
                      },
                      {.step = 5}},
        // MoE++ (docs/moe.md "Variants"): a copy, a constant and a zero expert beside the four
        // FFN experts, their balance weight tau = 0.5, under both softmax orders.
        RouterVariant{"moepp_zero_compute",
                      [](Config& c) {
                        c.moe.zero_compute_experts = {.zero = 1, .copy = 1, .constant = 1,
                                                      .balance_weight = 0.5};
                      }},
        RouterVariant{"moepp_topk_before_softmax",
                      [](Config& c) {
                        c.moe.zero_compute_experts = {.zero = 1, .copy = 1, .constant = 2};
                        c.moe.router.pre_softmax = false;
                        c.moe.top_k = 3;
                      }},
        // Cross-layer routers need two MoE layers (layer_freq 1): the gradient of layer 1's
        // loss reaches layer 0's router through the state (logits, or the GRU's g).
        RouterVariant{"moepp_gating_residual",
                      [](Config& c) {
                        c.moe.layer_freq = 1;
                        c.moe.router.gating_residual = true;
                        c.moe.zero_compute_experts = {.zero = 1, .copy = 1, .constant = 1};
                      }},
        RouterVariant{"rmoe_recurrent_router",
                      [](Config& c) {
                        c.moe.layer_freq = 1;
                        c.moe.router.kind = "recurrent";
                        c.moe.router.recurrent_dim = 6;
                      }},
        RouterVariant{"rmoe_recurrent_sigmoid_no_renormalize",
                      [](Config& c) {
                        c.moe.layer_freq = 1;
                        c.moe.router.kind = "recurrent";
                        c.moe.router.recurrent_dim = 5;
                        c.moe.router.score = "sigmoid";
                        c.moe.router.renormalize = false;
                      }},
        // AdaMoE: four null rows (tiled from the true rows), k raised to 3.
        RouterVariant{"adamoe_null_experts",
                      [](Config& c) {
                        c.moe.null_experts = 4;
                        c.moe.top_k = 3;
                      }},
        // PR-MoE's residual MoE: a dense MLP beside top-1 routing, mixed by a learned softmax.
        RouterVariant{"residual_moe",
                      [](Config& c) {
                        c.moe.residual = true;
                        c.moe.top_k = 1;
                      }},
        // Pyramid MoE: two experts in the first MoE layer, four in the second (with AdaMoE's
        // null rows and the expert bias, whose size follows each layer's rows).
        RouterVariant{"pyramid_moe",
                      [](Config& c) {
                        c.moe.layer_freq = 1;
                        c.moe.num_experts_per_layer = {2, 4};
                        c.moe.top_k = 2;
                      }},
        RouterVariant{"pyramid_null_experts_bias",
                      [](Config& c) {
                        c.moe.layer_freq = 1;
                        c.moe.num_experts_per_layer = {2, 4};
                        c.moe.null_experts = 2;
                        c.moe.router.expert_bias = true;
                      },
                      {}, {0.1f, -0.1f, 0.05f, 0.f}},
        RouterVariant{"diversify_phase",
                      [](Config& c) { c.moe.router.schedule.diversify.steps = 5; }, {.step = 2}}),
    [](const auto& info) { return std::string(info.param.name); });

// AdaMoE initialises the null experts' router rows by tiling the true experts' rows (E = 4,
// three null rows after a copy expert: rows 5..7 repeat rows 0..2; the copy row is its own draw).
TEST(ParamInit, NullExpertRowsTileTheTrueRows) {
  Config c = tiny_config(false);
  c.moe.zero_compute_experts.copy = 1;
  c.moe.null_experts = 3;
  std::unique_ptr<Backend> be = make_backend("cpu");
  MoeTransformer model(*be, c, MicroBatchShape{2, 7}, 42);
  const Param& w = model.params().find("layers.0.moe.router.weight");
  ASSERT_EQ(w.spec.global_shape, (std::vector<int64_t>{8, 16}));
  const float* v = w.value.data();
  const auto row = [&](int r) { return std::vector<float>(v + r * 16, v + (r + 1) * 16); };
  for (int j = 0; j < 3; ++j) EXPECT_EQ(row(5 + j), row(j)) << "null row " << j;
  for (int j = 0; j < 4; ++j) EXPECT_NE(row(4), row(j)) << "the copy expert's row is its own";
  EXPECT_NE(row(0), row(1));
}

TEST(ParamInit, ShardsConcatenateToTheUnshardedTensor) {
  // Layout independence of initialisation: two halves along dim 0 (as expert parallelism holds
  // them) draw exactly the values the whole tensor has at those global indices.
  ParamSpec whole{.name = "layers.0.moe.experts.fc2.weight", .global_shape = {4, 6, 5}};
  std::vector<float> full, lo, hi;
  init_param_values(whole, 99, full);
  ParamSpec a = whole, b = whole;
  a.local_shape = b.local_shape = {2, 6, 5};
  a.shard.dims = {{.dim = 0, .group = "ep", .offset = 0}};
  b.shard.dims = {{.dim = 0, .group = "ep", .offset = 2}};
  init_param_values(a, 99, lo);
  init_param_values(b, 99, hi);
  lo.insert(lo.end(), hi.begin(), hi.end());
  EXPECT_EQ(lo, full);
  // Two split dims (EP on experts, ETP on the FFN dimension): element (e, h, f) of any shard.
  ParamSpec c = whole;
  c.local_shape = {2, 6, 2};
  c.shard.dims = {{.dim = 0, .group = "ep", .offset = 2}, {.dim = 2, .group = "etp", .offset = 3}};
  std::vector<float> corner;
  init_param_values(c, 99, corner);
  for (int e = 0; e < 2; ++e)
    for (int h = 0; h < 6; ++h)
      for (int f = 0; f < 2; ++f)
        EXPECT_EQ(corner[size_t((e * 6 + h) * 2 + f)], full[size_t(((e + 2) * 6 + h) * 5 + f + 3)]);
  std::vector<float> other;
  init_param_values(whole, 100, other);
  EXPECT_NE(other, full);
  double sum2 = 0;
  for (float v : full) sum2 += double(v) * v;
  EXPECT_NEAR(std::sqrt(sum2 / full.size()), 0.02, 0.006);  // init_std of the spec
}

}  // namespace
}  // namespace origami
