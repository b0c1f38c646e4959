// defines: Backend::router_gate_forward / router_gate_backward (default implementation)
// The generalised router as a plain C++ reference on host copies: inputs come over with
// copy_to_host, results go back with copy_from_host, so any backend (the CUDA one included) runs
// it unchanged and a device kernel can replace it later behind the same signature. Per token, in
// double, rows independent (parallel over tokens, deterministic for any thread count).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/backend.h"
#include "base/error.h"

namespace origami {
namespace {

// Descending by score, ties to the lower index (the order router_forward uses).
void sort_desc(std::vector<int32_t>& order, const double* score, size_t first_n) {
  std::partial_sort(order.begin(), order.begin() + long(first_n), order.end(),
                    [score](int32_t a, int32_t b) {
                      return score[a] > score[b] || (score[a] == score[b] && a < b);
                    });
}

void check_gate(const RouterGate& g, int64_t E) {
  check(E > 0 && g.k >= 1 && g.k <= g.slots && g.slots <= E,
        "router_gate: need 1 <= k <= slots <= E (k={}, slots={}, E={})", g.k, g.slots, E);
  if (g.num_groups > 0)
    check(g.group_topk >= 1 && g.group_topk <= g.num_groups && E % g.num_groups == 0 &&
              g.k >= g.group_topk && g.k <= g.group_topk * (E / g.num_groups),
          "router_gate: group-limited top-k {} over {} groups (keep {}) of {} experts is not "
          "possible", g.k, g.num_groups, g.group_topk, E);
  check(g.silent_from >= 0 && g.silent_from <= E, "router_gate: silent_from {} outside [0, {}]",
        g.silent_from, E);
  check(!g.dense_to_sparse || (g.temperature > 0.f && g.num_groups == 0 && g.bias == nullptr),
        "router_gate: dense_to_sparse needs temperature > 0 (got {}) and no groups or bias",
        g.temperature);
}

// Per-token quantities both passes need: softmax p, scores s, and the balance scores.
struct Row {
  std::vector<double> p, s, gate, base;
  double lse = 0, s_sum = 0;
  explicit Row(int64_t E)
      : p(static_cast<size_t>(E)), s(static_cast<size_t>(E)), gate(static_cast<size_t>(E)),
        base(static_cast<size_t>(E)) {}
  void scores(const float* z, const RouterGate& g, int64_t E) {
    double mx = z[0];
    for (int64_t e = 1; e < E; ++e) mx = std::max(mx, double(z[e]));
    double den = 0;
    for (int64_t e = 0; e < E; ++e) den += std::exp(double(z[e]) - mx);
    for (int64_t e = 0; e < E; ++e) p[size_t(e)] = std::exp(double(z[e]) - mx) / den;
    lse = mx + std::log(den);
    s_sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      s[size_t(e)] = g.sigmoid ? 1.0 / (1.0 + std::exp(-double(z[e]))) : p[size_t(e)];
      s_sum += s[size_t(e)];
    }
  }
  // The value each selected expert's weight is made from: the gate or the scores.
  void weight_base(const RouterGate& g) { base = g.dense_to_sparse && g.gate_weights ? gate : s; }
};

// Softmax over the selected logits (top-k before softmax) applies to softmax scores only.
bool softmax_of_selected(const RouterGate& g) {
  return g.topk_on_logits && !g.sigmoid && !(g.dense_to_sparse && g.gate_weights);
}
// Whether the weights are divided by their sum over the selected experts.
bool normalised(const RouterGate& g) { return g.renormalize || softmax_of_selected(g); }
// Whether expert e outputs nothing (its weight is 0, outside the renormalising sum).
bool silent(const RouterGate& g, int32_t e) { return g.silent_from > 0 && e >= g.silent_from; }

}  // namespace

void Backend::router_gate_forward(const float* logits, const RouterGate& g, float* probs,
                                  float* gate, int32_t* idx, float* weights, float* lse,
                                  int64_t N, int64_t E) {
  check_gate(g, E);
  const int64_t S = g.slots;
  const size_t NE = size_t(N * E), NS = size_t(N * S);
  std::vector<float> z(NE), noise, bias, probs_h(NE), gate_h(g.dense_to_sparse ? NE : 0),
      w_h(NS), lse_h(static_cast<size_t>(N));
  std::vector<int32_t> idx_h(NS);
  copy_to_host(z.data(), logits, NE * sizeof(float));
  if (g.noise) {
    noise.resize(NE);
    copy_to_host(noise.data(), g.noise, NE * sizeof(float));
  }
  if (g.bias) {
    bias.resize(size_t(E));
    copy_to_host(bias.data(), g.bias, size_t(E) * sizeof(float));
  }
  std::vector<float> sw;
  if (g.score_weight) {
    sw.resize(size_t(E));
    copy_to_host(sw.data(), g.score_weight, size_t(E) * sizeof(float));
  }
#pragma omp parallel
  {
    Row row(E);
    std::vector<double> sel_score(static_cast<size_t>(E)), group_score;
    std::vector<int32_t> order(static_cast<size_t>(E)), gorder;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < N; ++t) {
      const float* zt = z.data() + t * E;
      row.scores(zt, g, E);
      lse_h[size_t(t)] = float(row.lse);
      for (int64_t e = 0; e < E; ++e)
        probs_h[size_t(t * E + e)] =
            float((g.sigmoid ? row.s[size_t(e)] / row.s_sum : row.p[size_t(e)]) *
                  (sw.empty() ? 1.0 : double(sw[size_t(e)])));
      std::iota(order.begin(), order.end(), 0);
      int64_t n = g.k;
      if (g.dense_to_sparse) {
        double mx = -INFINITY;
        for (int64_t e = 0; e < E; ++e) {
          sel_score[size_t(e)] = (double(zt[e]) + (g.noise ? noise[size_t(t * E + e)] : 0.0)) /
                                 double(g.temperature);
          mx = std::max(mx, sel_score[size_t(e)]);
        }
        double den = 0;
        for (int64_t e = 0; e < E; ++e) den += std::exp(sel_score[size_t(e)] - mx);
        int64_t above = 0;
        for (int64_t e = 0; e < E; ++e) {
          // Selection and weights use the fp32 gate the backward pass will read.
          gate_h[size_t(t * E + e)] = float(std::exp(sel_score[size_t(e)] - mx) / den);
          row.gate[size_t(e)] = gate_h[size_t(t * E + e)];
          above += gate_h[size_t(t * E + e)] > g.threshold;
        }
        n = std::clamp(above, g.k, S);
        // Ranked by the tempered logits (the gate's order, without its underflow to 0 when cold).
        sort_desc(order, sel_score.data(), size_t(n));
      } else {
        for (int64_t e = 0; e < E; ++e)
          sel_score[size_t(e)] = row.s[size_t(e)] + (g.bias ? double(bias[size_t(e)]) : 0.0);
        if (g.num_groups > 0) {
          // Group score: the sum of its top (k / group_topk) selection scores; experts outside
          // the best group_topk groups cannot be selected.
          const int64_t per = E / g.num_groups, m = g.k / g.group_topk;
          group_score.assign(size_t(g.num_groups), 0.0);
          std::vector<double> in(static_cast<size_t>(per));
          for (int64_t grp = 0; grp < g.num_groups; ++grp) {
            std::copy(sel_score.begin() + grp * per, sel_score.begin() + (grp + 1) * per, in.begin());
            std::partial_sort(in.begin(), in.begin() + m, in.end(), std::greater<double>());
            group_score[size_t(grp)] = std::accumulate(in.begin(), in.begin() + m, 0.0);
          }
          gorder.resize(size_t(g.num_groups));
          std::iota(gorder.begin(), gorder.end(), 0);
          sort_desc(gorder, group_score.data(), size_t(g.group_topk));
          std::vector<bool> kept(static_cast<size_t>(g.num_groups), false);
          for (int64_t j = 0; j < g.group_topk; ++j) kept[size_t(gorder[size_t(j)])] = true;
          // Excluded experts go behind every kept one (the order among them is irrelevant).
          for (int64_t e = 0; e < E; ++e)
            if (!kept[size_t(e / per)]) sel_score[size_t(e)] = -INFINITY;
        }
        sort_desc(order, sel_score.data(), size_t(n));
      }
      row.weight_base(g);
      double sum = 0, mx_sel = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        if (silent(g, order[size_t(j)])) continue;
        sum += row.base[size_t(order[size_t(j)])];
        mx_sel = std::max(mx_sel, double(zt[order[size_t(j)]]));
      }
      double den_sel = 0;
      if (softmax_of_selected(g))
        for (int64_t j = 0; j < n; ++j)
          if (!silent(g, order[size_t(j)])) den_sel += std::exp(double(zt[order[size_t(j)]]) - mx_sel);
      for (int64_t j = 0; j < S; ++j) {
        if (j >= n) {
          idx_h[size_t(t * S + j)] = -1;
          w_h[size_t(t * S + j)] = 0.f;
          continue;
        }
        const int32_t e = order[size_t(j)];
        double w = row.base[size_t(e)];
        if (silent(g, e))
          w = 0;  // selected (and counted by the balance loss), but nothing to combine
        else if (den_sel > 0)
          w = std::exp(double(zt[e]) - mx_sel) / den_sel;  // softmax over the selected logits
        else if (g.renormalize)
          w /= sum;
        idx_h[size_t(t * S + j)] = e;
        w_h[size_t(t * S + j)] = float(w * double(g.scaling_factor));
      }
    }
  }
  copy_from_host(probs, probs_h.data(), NE * sizeof(float));
  if (g.dense_to_sparse) {
    check(gate != nullptr, "router_gate_forward: dense_to_sparse needs a gate buffer");
    copy_from_host(gate, gate_h.data(), NE * sizeof(float));
  }
  copy_from_host(idx, idx_h.data(), NS * sizeof(int32_t));
  copy_from_host(weights, w_h.data(), NS * sizeof(float));
  copy_from_host(lse, lse_h.data(), size_t(N) * sizeof(float));
}

void Backend::router_gate_backward(const float* dweights, const float* dprobs, const float* dlse,
                                   const float* logits, const float* gate, const int32_t* idx,
                                   const float* weights, const RouterGate& g, float* dlogits,
                                   int64_t N, int64_t E) {
  check_gate(g, E);
  const int64_t S = g.slots;
  const size_t NE = size_t(N * E), NS = size_t(N * S);
  std::vector<float> z(NE), dw(NS), dp, dl, gate_h, dz(NE);
  std::vector<int32_t> idx_h(NS);
  copy_to_host(z.data(), logits, NE * sizeof(float));
  copy_to_host(dw.data(), dweights, NS * sizeof(float));
  copy_to_host(idx_h.data(), idx, NS * sizeof(int32_t));
  if (dprobs) {
    dp.resize(NE);
    copy_to_host(dp.data(), dprobs, NE * sizeof(float));
  }
  if (dlse) {
    dl.resize(size_t(N));
    copy_to_host(dl.data(), dlse, size_t(N) * sizeof(float));
  }
  if (g.dense_to_sparse) {
    check(gate != nullptr, "router_gate_backward: dense_to_sparse needs the forward's gate");
    gate_h.resize(NE);
    copy_to_host(gate_h.data(), gate, NE * sizeof(float));
  }
  std::vector<float> sw;
  if (g.score_weight) {
    sw.resize(size_t(E));
    copy_to_host(sw.data(), g.score_weight, size_t(E) * sizeof(float));
  }
  const bool from_gate = g.dense_to_sparse && g.gate_weights;
  const double c = g.scaling_factor;
#pragma omp parallel
  {
    Row row(E);
    std::vector<double> gp(static_cast<size_t>(E)), gs(static_cast<size_t>(E)),
        gg(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < N; ++t) {
      row.scores(z.data() + t * E, g, E);
      if (g.dense_to_sparse)
        for (int64_t e = 0; e < E; ++e) row.gate[size_t(e)] = gate_h[size_t(t * E + e)];
      row.weight_base(g);
      std::fill(gp.begin(), gp.end(), 0.0);
      std::fill(gs.begin(), gs.end(), 0.0);
      std::fill(gg.begin(), gg.end(), 0.0);
      // 1. Combine weights: w_j = c b_j / sum_sel b (or c b_j), b = the base values.
      const int32_t* it = idx_h.data() + t * S;
      const float* dwt = dw.data() + t * S;
      double sum = 0, dw_dot_w = 0;
      // Silent experts' weights are the constant 0: no gradient, and not in the sum.
      for (int64_t j = 0; j < S; ++j)
        if (it[j] >= 0 && !silent(g, it[j])) sum += row.base[size_t(it[j])];
      const bool norm = normalised(g) && sum > 0;
      if (norm)
        for (int64_t j = 0; j < S; ++j)
          if (it[j] >= 0 && !silent(g, it[j]))
            dw_dot_w += double(dwt[j]) * c * row.base[size_t(it[j])] / sum;
      std::vector<double>& into = from_gate ? gg : (g.sigmoid ? gs : gp);
      for (int64_t j = 0; j < S; ++j) {
        if (it[j] < 0 || silent(g, it[j])) continue;
        into[size_t(it[j])] += norm ? (c * dwt[j] - dw_dot_w) / sum : c * dwt[j];
      }
      // 2. Balance-loss scores: softmax p, or s / sum s for sigmoid.
      if (dprobs) {
        const float* dt = dp.data() + t * E;
        auto d = [&](int64_t e) { return double(dt[e]) * (sw.empty() ? 1.0 : double(sw[size_t(e)])); };
        if (g.sigmoid) {
          double dot = 0;
          for (int64_t e = 0; e < E; ++e) dot += d(e) * row.s[size_t(e)] / row.s_sum;
          for (int64_t e = 0; e < E; ++e) gs[size_t(e)] += (d(e) - dot) / row.s_sum;
        } else {
          for (int64_t e = 0; e < E; ++e) gp[size_t(e)] += d(e);
        }
      }
      // 3. Through softmax, logsumexp, sigmoid and the tempered gate softmax to the logits.
      double pg = 0, ggg = 0;
      for (int64_t e = 0; e < E; ++e) {
        pg += row.p[size_t(e)] * gp[size_t(e)];
        if (from_gate) ggg += row.gate[size_t(e)] * gg[size_t(e)];
      }
      const double l = dlse ? double(dl[size_t(t)]) : 0.0;
      for (int64_t e = 0; e < E; ++e) {
        const size_t i = size_t(e);
        double d = row.p[i] * (gp[i] - pg + l);
        if (g.sigmoid) d += row.s[i] * (1.0 - row.s[i]) * gs[i];
        if (from_gate) d += row.gate[i] * (gg[i] - ggg) / double(g.temperature);
        dz[size_t(t * E + e)] = float(d);
      }
    }
  }
  (void)weights;
  copy_from_host(dlogits, dz.data(), NE * sizeof(float));
}

}  // namespace origami
