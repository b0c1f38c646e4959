#include "model/moe/balance_loss.h"

#include <vector>

namespace origami {

// Host-side arithmetic on small [N,E] / [N] arrays: it is O(N E) next to the experts' O(N H F),
// and keeps the formula readable; a fused device kernel can replace it behind the same signature.
double micro_batch_balance_loss(Backend& be, const int64_t* counts, const float* probs, int64_t N,
                                int64_t E, int64_t k, float grad_scale, float* dprobs) {
  std::vector<float> p(static_cast<size_t>(N * E));
  be.copy_to_host(p.data(), probs, p.size() * sizeof(float));
  std::vector<int64_t> c(static_cast<size_t>(E));
  be.copy_to_host(c.data(), counts, c.size() * sizeof(int64_t));
  std::vector<double> mean_p(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t i = 0; i < E; ++i) mean_p[size_t(i)] += p[size_t(t * E + i)];
  double loss = 0.0;
  std::vector<float> row(static_cast<size_t>(E));
  for (int64_t i = 0; i < E; ++i) {
    const double f = double(c[size_t(i)]) / double(k * N);
    loss += f * mean_p[size_t(i)] / double(N);
    // d/dprobs[t,i] of grad_scale * E * sum_i f_i * (1/N) sum_t probs[t,i]
    row[size_t(i)] = float(grad_scale * double(E) * f / double(N));
  }
  for (int64_t t = 0; t < N; ++t) be.copy_from_host(dprobs + t * E, row.data(), size_t(E) * 4);
  return double(E) * loss;
}

double router_z_loss(Backend& be, const float* lse, int64_t N, float grad_scale, float* dlse) {
  std::vector<float> l(static_cast<size_t>(N)), g(static_cast<size_t>(N));
  be.copy_to_host(l.data(), lse, l.size() * sizeof(float));
  double z = 0.0;
  for (int64_t t = 0; t < N; ++t) {
    z += double(l[size_t(t)]) * l[size_t(t)];
    g[size_t(t)] = float(grad_scale * 2.0 * l[size_t(t)] / double(N));
  }
  be.copy_from_host(dlse, g.data(), g.size() * sizeof(float));
  return z / double(N);
}

}  // namespace origami
