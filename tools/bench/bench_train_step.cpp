// origami-bench-train: times full training steps (forward, backward, AdamW) of one model on one
// device and prints tokens/s, model TFLOP/s and MFU (Megatron's FLOPs accounting, src/train/
// flops.h). No data loading or communication: this measures the backend, which is what the
// comparison with PyTorch on the same GPU (tools/bench/torch_mixtral_bench.py) is about.
//   origami-bench-train --backend cuda --hidden 2048 --layers 16 --experts 8 --top-k 2 \
//       --ffn 5632 --seq 2048 --mbs 4 --steps 10 --peak-tflops 989
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/profiling_backend.h"
#include "model/moe_transformer.h"
#include "optim/adamw.h"
#include "train/flops.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

using namespace origami;

int main(int argc, char** argv) {
  CLI::App app{"Origami training-step benchmark (one device, no communication)"};
  std::string backend = "cuda", precision = "bf16";
  int64_t hidden = 2048, layers = 16, experts = 8, top_k = 2, ffn = 5632, heads = 16, kv = 8;
  int64_t seq = 2048, mbs = 4, vocab = 32000, steps = 10, warmup = 3;
  double peak = 989.0;  // H100 SXM dense bf16 TFLOP/s
  app.add_option("--backend", backend);
  app.add_option("--precision", precision, "fp32 | bf16 (training.precision)");
  app.add_option("--hidden", hidden);
  app.add_option("--layers", layers);
  app.add_option("--experts", experts);
  app.add_option("--top-k", top_k);
  app.add_option("--ffn", ffn, "expert FFN hidden size");
  app.add_option("--heads", heads);
  app.add_option("--kv-heads", kv);
  app.add_option("--seq", seq);
  app.add_option("--mbs", mbs);
  app.add_option("--vocab", vocab);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--peak-tflops", peak, "device peak for MFU");
  int64_t logits_chunk = Config{}.training.logits_chunk_tokens;
  app.add_option("--logits-chunk", logits_chunk,
                 "training.logits_chunk_tokens: LM head + loss rows at a time (0 = all)");
  bool profile = false;
  app.add_flag("--profile", profile, "after timing, one more step with per-op times (synchronising)");
  CLI11_PARSE(app, argc, argv);

  Config c;
  c.model = {.vocab_size = vocab, .hidden_size = hidden, .num_layers = layers,
             .num_attention_heads = heads, .num_query_groups = kv, .ffn_hidden_size = ffn,
             .max_seq_length = seq};
  c.moe.num_experts = experts;
  c.moe.top_k = top_k;
  c.moe.expert_ffn_hidden_size = ffn;
  c.moe.layer_freq = 1;
  c.moe.router.aux_loss_coeff = 0.01;
  c.moe.router.z_loss_coeff = 0.001;  // as configs/default.yaml
  c.training.seq_length = seq;
  c.training.micro_batch_size = mbs;
  c.training.backend = backend;
  c.training.precision = precision;
  c.training.logits_chunk_tokens = logits_chunk;

  auto device = make_backend(backend, 0, precision);
  // With --profile every op goes through the timing decorator (off until the timed steps end).
  ProfilingBackend profiler(*device);
  Backend* be = device.get();
  if (profile) be = &profiler;
  MoeTransformer model(*be, c, MicroBatchShape{mbs, seq}, 1234);
  AdamW opt(*be, model.params(), c.optimizer);
  const int64_t N = mbs * seq;
  std::mt19937 gen(1);
  std::vector<int32_t> tokens(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) tokens[i] = int32_t(gen() % vocab), targets[i] = int32_t(gen() % vocab);
  const RouterLossScales scales{float(c.moe.router.aux_loss_coeff), float(c.moe.router.z_loss_coeff)};
  auto step = [&] {
    Tensor g = model.params().all_grads();
    be->fill(g.data(), 0.f, g.numel());
    model.begin_step();
    model.forward(tokens.data(), targets.data(), scales, 1.f / float(N));
    model.backward();
    model.router_losses();  // the trainer's one read of the router-loss values per step
    opt.step(1e-4, opt.grad_norm());
    be->synchronize();
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double tok_s = double(N) / (med / 1e3);
  const double tflops = training_flops_per_token(c) * tok_s / 1e12;
  fmt::print("origami {} | hidden {} layers {} experts {} top-{} ffn {} heads {}/{} seq {} mbs {}\n",
             backend, hidden, layers, experts, top_k, ffn, heads, kv, seq, mbs);
  fmt::print("params {:.3f} B | step median {:.1f} ms (min {:.1f}) | {:.0f} tokens/s | {:.1f} TFLOP/s | "
             "MFU {:.1f}% of {:.0f} | peak memory {:.2f} GiB\n",
             double(model.params().count()) / 1e9, med, ms.front(), tok_s, tflops,
             100.0 * tflops / peak, peak, double(be->peak_bytes()) / (1 << 30));
#ifdef ORIGAMI_WITH_CUDA
  if (auto* cb = dynamic_cast<cuda::CudaBackend*>(device.get()))
    fmt::print("GEMMs: {} shapes, {} heuristic queries, {} weight conversions, experts' GEMMs: {} | "
               "attention: {}\n",
               cb->gemm_plans(), cb->gemm_heuristics(), cb->weight_conversions(), cb->grouped_gemm_path(),
               cb->gemm_precision() == cuda::GemmPrecision::fp32 ? "fp32 SIMT" : "tensor cores");
#endif
  if (profile) {
    profiler.reset();
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double total = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("per-op time of one synchronised step ({:.1f} ms):\n", total);
    for (const OpTime& t : profiler.report())
      fmt::print("  {:<26} {:>5} calls {:>9.2f} ms {:>5.1f}%\n", t.op, t.calls, t.ms, 100 * t.ms / total);
  }
  return 0;
}
