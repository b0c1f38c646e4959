// origami-plan: chooses the parallel layout of a config for a world size and a cluster.
//   origami-plan CONFIG --world N [--cluster FILE] [--set k=v] [--explain] [--overlay FILE]
//   mpirun -np N origami-plan --calibrate --out FILE      (measure this machine)
// Prints the ranked layouts and writes the best as `--set` lines for origami-train. Exit codes:
// 0 done, 1 bad input (config, cluster file, nothing fits: the message says what to change),
// 2 bad command line.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "base/error.h"
#include "comm/communicator.h"
#include "comm/mpi_runtime.h"
#include "config/config.h"
#include "embedded_default_config.h"
#include "plan/calibrate.h"
#include "plan/plan_report.h"
#include "plan/planner.h"

using namespace origami;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  check(out.good(), "cannot write '{}'", path);
  out << text;
  check(out.good(), "cannot write '{}'", path);
}

int calibrate(int* argc, char*** argv, const std::string& out, const std::string& backend) {
  MpiRuntime mpi(argc, argv);
  auto world = make_mpi_world();
  try {
    const ClusterSpec spec = calibrate_cluster(*world, backend, node_local_size());
    if (world->rank() == 0) {
      write_file(out, "# Written by origami-plan --calibrate (docs/planning.md).\n" +
                          cluster_spec_yaml(spec));
      std::printf("origami-plan: calibrated %s -> %s\n%s", spec.name.c_str(), out.c_str(),
                  cluster_spec_yaml(spec).c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "origami-plan [rank %d]: calibration failed: %s\n", world->rank(),
                 e.what());
    if (world->size() > 1) abort_all_ranks(1);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"origami-plan: choose the parallel layout from the model, the cluster and a "
               "measured cost model (docs/planning.md)"};
  std::string config_path, cluster_path = "configs/clusters/local.yaml", overlay_path;
  std::string config_out, csv_path, calibrate_out = "configs/clusters/local.yaml";
  std::string backend = "cpu";
  std::vector<std::string> overrides;
  int world = 0;
  size_t top = 15;
  bool explain = false, do_calibrate = false;
  CostOptions options;
  app.add_option("config", config_path, "YAML config (\"default\": the embedded default job)");
  app.add_option("--world", world, "ranks the job will run on")->check(CLI::PositiveNumber);
  app.add_option("--cluster", cluster_path, "cluster file (configs/clusters/)")->capture_default_str();
  app.add_option("--set", overrides, "override a config key: --set section.key=value");
  app.add_option("--top", top, "rows of the table")->capture_default_str();
  app.add_flag("--explain", explain, "the cost model's terms for the chosen layout");
  app.add_option("--overlay", overlay_path,
                 "write the best layout's --set lines here (default plan.overlay)");
  app.add_option("--config-out", config_out, "write the whole effective config with the layout");
  app.add_option("--csv", csv_path, "write every ranked layout as CSV");
  app.add_option("--imbalance", options.routing_imbalance,
                 "routed tokens of the busiest EP rank over the mean (1 = balanced)")->capture_default_str()
      ->check(CLI::Range(1.0, 64.0));
  app.add_flag("--calibrate", do_calibrate,
               "measure this machine (run under mpirun with the ranks training will use)");
  app.add_option("--out", calibrate_out, "with --calibrate: the cluster file to write")->capture_default_str();
  app.add_option("--backend", backend, "with --calibrate: cpu | cuda")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (do_calibrate) return calibrate(&argc, &argv, calibrate_out, backend);
  if (config_path.empty() || world <= 0) {
    std::fprintf(stderr, "origami-plan: need CONFIG and --world N (or --calibrate); see --help\n");
    return 2;
  }
  if (overlay_path.empty()) overlay_path = "plan.overlay";

  try {
    Config base = config_path == "default"
                      ? parse_config(kEmbeddedDefaultConfig, "<embedded default config>")
                      : load_config(config_path);
    for (const auto& o : overrides) apply_override(base, o);
    const ClusterSpec cluster = load_cluster_spec(cluster_path);
    const Plan plan = make_plan(base, world, cluster, options);
    std::printf("origami-plan: %s on %d ranks of %s (%d per node, %.1f GiB per rank)\n",
                base.source.c_str(), world, cluster.name.c_str(), cluster.ranks_per_node,
                cluster.device_memory_gib);
    std::printf("%lld combinations, %zu valid (validate()), %zu fit the memory, %zu do not\n",
                (long long)plan.space.candidates, plan.space.valid.size(), plan.ranked.size(),
                plan.too_large.size());
    std::fputs(plan_table(plan, top).c_str(), stdout);
    std::fputs(rejected_table(plan, 3).c_str(), stdout);
    const RankedLayout& best = plan.ranked.front();
    if (explain) std::fputs(explain_layout(base, plan, best, cluster).c_str(), stdout);
    const auto assignments = plan_assignments(base, best.layout, options);
    write_file(overlay_path, overlay_text(assignments));
    std::printf("best: %s -> %s\n  train it: launch/train.sh %s -n %d -- $(cat %s)\n",
                describe_layout(best.layout).c_str(), overlay_path.c_str(), config_path.c_str(),
                world, overlay_path.c_str());
    if (!config_out.empty()) {
      Config planned = base;
      for (const auto& a : assignments) apply_override(planned, a);
      write_file(config_out, to_yaml(planned));
    }
    if (!csv_path.empty()) write_file(csv_path, plan_csv(plan));
  } catch (const Error& e) {
    std::fprintf(stderr, "origami-plan: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "origami-plan: internal error (%s): %s\n", exception_type(e).c_str(),
                 e.what());
    return 1;
  }
  return 0;
}
