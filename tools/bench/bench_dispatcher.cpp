// origami-bench-dispatcher: throughput of one MoE layer (route -> dispatch -> experts -> combine,
// forward and backward) with expert parallelism over every rank of the job, on the CPU backend.
// Prints tokens/s through the layer and the share of time in the dispatcher's exchanges.
// A benchmark, not a test: it prints figures and never fails on them. tools/bench/dispatcher.sh
// runs it for 1, 2, 4 and 8 ranks.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <vector>

#include "backend/backend.h"
#include "base/rng.h"
#include "comm/mpi_runtime.h"
#include "comm/parallel_layout.h"
#include "model/moe/moe_layer.h"

using namespace origami;

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  auto world = make_mpi_world();
  CLI::App app{"MoE layer / token dispatcher throughput"};
  int64_t tokens = 2048, hidden = 256, experts = 16, top_k = 2, ffn = 512, iters = 10;
  int etp = 1;
  app.add_option("--tokens", tokens, "tokens per rank per micro-batch");
  app.add_option("--hidden", hidden);
  app.add_option("--experts", experts);
  app.add_option("--top-k", top_k);
  app.add_option("--ffn", ffn, "expert FFN hidden size");
  app.add_option("--etp", etp, "expert tensor parallel size (EP = ranks / etp)");
  app.add_option("--iters", iters);
  CLI11_PARSE(app, argc, argv);

  Config cfg;
  cfg.model.hidden_size = hidden;
  cfg.moe.num_experts = experts;
  cfg.moe.top_k = top_k;
  cfg.moe.expert_ffn_hidden_size = ffn;
  cfg.moe.router.load_balance = "micro_batch";
  cfg.parallel.expert_tensor = etp;
  cfg.parallel.expert = world->size() / etp;
  validate(cfg, world->size());
  auto layout = ParallelLayout::from_config(cfg.parallel, world->size());
  auto groups = ProcessGroups::create(*world, layout);
  auto be = make_backend("cpu");
  ModelContext ctx{*be, cfg, MicroBatchShape{1, tokens}, ModelGroups::from(groups)};
  ParamStore store;
  MoeLayer layer(ctx, store, "layers.0.moe", 1);
  store.finalize(*be, 1234);

  // Inputs differ per rank (as tokens do), drawn from the counter-based RNG.
  std::vector<float> x(size_t(tokens * hidden)), dy(x.size());
  Rng rng(7, uint64_t(world->rank()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(rng.normal(i)), dy[i] = float(rng.normal(i + x.size()));
  Tensor xt = Tensor::zeros(*be, {tokens, hidden}), out = Tensor::zeros(*be, {tokens, hidden});
  Tensor dyt = Tensor::zeros(*be, {tokens, hidden}), dx = Tensor::zeros(*be, {tokens, hidden});
  be->copy_from_host(xt.data(), x.data(), xt.bytes());
  be->copy_from_host(dyt.data(), dy.data(), dyt.bytes());

  using clock = std::chrono::steady_clock;
  double fwd = 0, bwd = 0;
  for (int64_t it = -2; it < iters; ++it) {  // two warm-up iterations
    world->barrier();
    auto t0 = clock::now();
    layer.begin_step();
    layer.forward(xt.data(), out.data(), {0.01f, 0.001f});
    world->barrier();
    auto t1 = clock::now();
    layer.backward(dyt.data(), xt.data(), dx.data());
    world->barrier();
    auto t2 = clock::now();
    if (it >= 0) {
      fwd += std::chrono::duration<double>(t1 - t0).count();
      bwd += std::chrono::duration<double>(t2 - t1).count();
    }
  }
  if (world->rank() == 0) {
    const double global_tokens = double(tokens) * world->size() * double(iters);
    std::printf("ranks %2d  EP %2d ETP %d  experts %3lld top-%lld  H %lld  F %lld  tokens/rank %lld | "
                "forward %9.0f tokens/s | forward+backward %9.0f tokens/s | %.1f ms/iter\n",
                world->size(), world->size() / etp, etp, (long long)experts, (long long)top_k,
                (long long)hidden, (long long)ffn, (long long)tokens, global_tokens / fwd,
                global_tokens / (fwd + bwd), 1e3 * (fwd + bwd) / double(iters));
  }
  return 0;
}
