// origami-bench-fssdp: a skewed MoE workload trained with expert parallelism and with FSSDP on
// the same ranks; prints, per mode, the MoE exchange per step (all-to-all bytes, FSSDP's spAG +
// spRS bytes, materialised copies), the straggler ratio (max / mean rows the experts computed
// per rank) and the step time. The skew is a fixed router selection bias (moe.router.
// expert_bias with bias_update_rate 0) that sends every token to the `--hot` first experts.
//   mpirun -np 8 origami-bench-fssdp --config configs/default.yaml --hot 2 --steps 6
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "comm/mpi_runtime.h"
#include "config/config.h"
#include "train/trainer.h"

using namespace origami;

namespace {

struct Figures {
  double dispatch = 0, fssdp = 0, copies = 0, straggler = 0, ms = 0;
};

Figures run(Config c, const Communicator& world, int hot, int steps, int warmup) {
  Trainer t(c, world);
  std::vector<float> bias(size_t(c.moe.num_experts), 0.f);
  for (int e = 0; e < hot; ++e) bias[size_t(e)] = 10.f;
  std::map<std::string, std::vector<float>> b;
  for (int l = 0; l < c.model.num_layers; ++l)
    b[fmt::format("layers.{}.moe.router.expert_bias", l)] = bias;
  t.model().load_buffers(b);
  Figures f;
  for (int s = 0; s < warmup + steps; ++s) {
    world.barrier();
    const auto start = std::chrono::steady_clock::now();
    const StepResult r = t.train_step();
    const double ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s < warmup) continue;  // FSSDP's plan needs loads from earlier iterations
    f.dispatch += r.dispatch_bytes / steps;
    f.fssdp += r.fssdp_bytes / steps;
    f.copies += r.fssdp_copies / steps;
    f.straggler += (r.rows_mean > 0 ? r.rows_max / r.rows_mean : 1.0) / steps;
    f.ms += world.allreduce_scalar(ms, ReduceOp::max) / steps;
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  CLI::App app{"FSSDP against expert parallelism on a skewed workload"};
  std::string config = "configs/default.yaml";
  int hot = 2, steps = 6, warmup = 2;
  int64_t global_batch = 64, ep = 0, replicas = 2;
  app.add_option("--config", config);
  app.add_option("--hot", hot, "experts every token is routed to");
  app.add_option("--steps", steps, "timed steps per mode");
  app.add_option("--warmup", warmup, "untimed steps first (the FSSDP plan's load window fills)");
  app.add_option("--global-batch", global_batch);
  app.add_option("--ep", ep, "parallel.expert (0 = the world size)");
  app.add_option("--max-replicas", replicas, "moe.fssdp.max_replicas_per_rank");
  CLI11_PARSE(app, argc, argv);
  auto world = make_mpi_world();
  spdlog::set_level(world->rank() == 0 ? spdlog::level::warn : spdlog::level::off);
  Config c = load_config(config);
  c.training.global_batch_size = global_batch;
  c.training.eval_interval = 0;
  c.parallel.expert = ep > 0 ? ep : world->size();
  c.moe.router.expert_bias = true;
  c.moe.router.bias_update_rate = 0.0;
  c.optimizer.distributed = true;
  c.logging.dir = "runs/bench-fssdp";
  c.logging.interval = 1000000;
  c.moe.fssdp.max_replicas_per_rank = replicas;
  validate(c, world->size());
  const Figures a = run(c, *world, hot, steps, warmup);
  c.moe.fssdp.enabled = true;
  validate(c, world->size());
  const Figures f = run(c, *world, hot, steps, warmup);
  if (world->rank() == 0) {
    std::printf("skewed workload: %d of %lld experts take every token, %d ranks, EP %lld, global "
                "batch %lld x %lld tokens, H %lld, expert F %lld\n",
                hot, (long long)c.moe.num_experts, world->size(), (long long)c.parallel.expert,
                (long long)global_batch, (long long)c.training.seq_length,
                (long long)c.model.hidden_size, (long long)c.moe.expert_ffn_hidden_size);
    std::printf("%-6s %16s %14s %16s %8s %10s %10s\n", "mode", "dispatch MiB", "fssdp MiB",
                "dispatch+fssdp", "copies", "straggler", "ms/step");
    for (const auto& [name, x] : {std::pair{"EP", a}, std::pair{"FSSDP", f}})
      std::printf("%-6s %16.2f %14.2f %16.2f %8.1f %10.3f %10.1f\n", name, x.dispatch / 1048576.0,
                  x.fssdp / 1048576.0, (x.dispatch + x.fssdp) / 1048576.0, x.copies, x.straggler,
                  x.ms);
  }
  return 0;
}
