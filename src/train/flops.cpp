// training_flops_per_token() and active_params(): Megatron's FLOPs accounting from the config
// alone, for TFLOP/s and MFU in the log line.
#include "train/flops.h"

#include <algorithm>

#include "model/moe/expert_kinds.h"
#include "model/moe_transformer.h"

namespace origami {

double training_flops_per_token(const Config& cfg) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  const double H = double(m.hidden_size), hd = H / double(m.num_attention_heads);
  const double nh = double(m.num_attention_heads), nkv = double(m.num_query_groups);
  const double T = double(cfg.training.seq_length);
  double fwd = 0.0;
  int moe_index = 0;
  for (int l = 0; l < int(m.num_layers); ++l) {
    fwd += 2.0 * H * (nh + 2.0 * nkv) * hd + 2.0 * nh * hd * H;  // QKV and output projection
    fwd += 4.0 * T * nh * hd;                                      // scores and weighted values
    if (MoeTransformer::is_moe_layer(cfg, l)) {
      fwd += 2.0 * H * double(ExpertKinds::of(moe, moe_index++).routed());        // router
      fwd += double(moe.top_k) * 6.0 * H * double(moe.expert_ffn_hidden_size);     // SwiGLU experts
      fwd += 6.0 * H * double(moe.shared_expert_ffn_hidden_size);
      if (moe.residual) fwd += 6.0 * H * double(moe.expert_ffn_hidden_size);       // PR-MoE MLP
    } else {
      fwd += 6.0 * H * double(m.ffn_hidden_size);
    }
  }
  fwd += 2.0 * H * double(m.vocab_size);  // LM head
  return 3.0 * fwd;
}

double ffn_flops_per_token(const Config& cfg, const std::vector<std::vector<int64_t>>& counts,
                           int64_t tokens) {
  const auto& moe = cfg.moe;
  const double H = double(cfg.model.hidden_size), F = double(moe.expert_ffn_hidden_size);
  double out = 0;
  for (size_t l = 0; l < counts.size(); ++l) {
    const auto& layer = counts[l];
    const int64_t ffn = moe.experts_at(int(l));
    int64_t slots = 0;
    for (int64_t e = 0; e < std::min<int64_t>(ffn, int64_t(layer.size())); ++e) slots += layer[size_t(e)];
    out += double(slots) / double(std::max<int64_t>(tokens, 1)) * 6.0 * H * F;
    out += 6.0 * H * double(moe.shared_expert_ffn_hidden_size);
    if (moe.residual) out += 6.0 * H * F;
  }
  return out;
}

}  // namespace origami
