// origami-train: loads a YAML config (or the embedded default), applies --set overrides,
// validates everything before allocating, then trains. Launch under mpirun (launch/train.sh).
// Exit codes: 0 done, 1 bad input (config / data / tokenizer), 2 bad command line, 75 a
// collective timed out (training.collective_timeout_s, comm/collective_watchdog.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "base/error.h"
#include "base/logging.h"
#include "checkpoint/checkpoint.h"
#include "comm/collective_watchdog.h"
#include "comm/communicator.h"
#include "comm/mpi_runtime.h"
#include "config/config.h"
#include "embedded_default_config.h"
#include "train/trainer.h"

using namespace origami;

namespace {

// The crash-safety test's fault (tests/checkpoint/crash_during_save.sh): rank 0 dies in the save
// of step ORIGAMI_TEST_CRASH_IN_SAVE_AT_STEP, every rank file written, nothing published.
int64_t g_crash_step = -1;
void crash_in_save(int64_t step, int rank) {
  if (step == g_crash_step && rank == 0) std::_Exit(86);
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  auto world = make_mpi_world();
  const bool root = world->rank() == 0;

  CLI::App app{"Origami: pretrain a Mixture-of-Experts language model"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  int check_ranks = 0;
  app.add_option("config", config_path, "YAML config (default: the embedded small MoE on Brown)");
  app.add_option("--set", overrides, "override a key: --set section.key=value (repeatable)");
  app.add_flag("--print-config", print_config, "print the effective config and exit");
  app.add_option("--ranks", check_ranks,
                 "with --print-config: validate for this many ranks (launch/train.sh's pre-check)")
      ->needs("--print-config")
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = root ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
    return code == 0 ? 0 : 2;
  }

  // Phase 1: config. Every rank parses the same text and reaches the same verdict without any
  // communication, so rank 0 alone reports and every rank exits non-zero.
  Config cfg;
  try {
    cfg = config_path.empty() ? parse_config(kEmbeddedDefaultConfig, "<embedded default config>")
                              : load_config(config_path);
    for (const auto& o : overrides) apply_override(cfg, o);
    validate(cfg, check_ranks > 0 ? check_ranks : world->size());
  } catch (const Error& e) {
    if (root) std::fprintf(stderr, "origami-train: config error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // a library's exception Origami did not explain: say so
    if (root)
      std::fprintf(stderr, "origami-train: internal error reading the config (%s): %s\n",
                   exception_type(e).c_str(), e.what());
    return 1;
  }
  if (print_config) {
    if (root) std::fputs(to_yaml(cfg).c_str(), stdout);
    return 0;
  }
  init_logging(world->rank(), cfg.logging.level);
  CollectiveWatchdog watchdog(cfg.training.collective_timeout_s, world->rank());
  if (const char* crash = std::getenv("ORIGAMI_TEST_CRASH_IN_SAVE_AT_STEP")) {
    g_crash_step = std::atoll(crash);
    set_save_fault_hook(crash_in_save);
  }

  // Phase 2: data, model, training. An error may now be seen by one rank while the others wait
  // in a collective: that rank reports it and ends the whole job.
  try {
    Trainer trainer(cfg, *world);
    trainer.train();
  } catch (const Error& e) {
    std::fprintf(stderr, "origami-train [rank %d]: error: %s\n", world->rank(), e.what());
    std::fflush(stderr);
    if (world->size() > 1) abort_all_ranks(1);
    return 1;
  } catch (const std::exception& e) {  // a library's exception Origami did not explain: say so
    std::fprintf(stderr, "origami-train [rank %d]: internal error (%s): %s\n", world->rank(),
                 exception_type(e).c_str(), e.what());
    std::fflush(stderr);
    if (world->size() > 1) abort_all_ranks(1);
    return 1;
  }
  if (root) spdlog::info("training finished; metrics in {}/metrics.jsonl", cfg.logging.dir);
  return 0;
}
