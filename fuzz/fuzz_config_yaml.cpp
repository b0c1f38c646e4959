// Fuzz target: the YAML config loader (src/config: parse_config(yaml_text, source)), fed the
// input as text in memory. An accepted config must survive the round trip a run directory's
// config.yaml makes (to_yaml, parsed back, equal), and validate() may refuse it only with an
// Error. Seeds: configs/*.yaml and tests/config/data/*.yaml (tools/fuzz.sh) and to_yaml() of the
// built-in defaults.
#include "config/config.h"
#include "fuzz_common.h"

using namespace origami;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::seed_dir()) {
    const std::string text = to_yaml(Config{});
    const auto path = fuzz::scratch_dir() / "defaults.yaml";
    fuzz::write_file(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
    fuzz::copy_seed(path, "defaults.yaml");
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::set_input(data, size);
  const std::string text(reinterpret_cast<const char*>(data), size);
  Config cfg;
  if (!fuzz::expect_clean("parse_config", [&] { cfg = parse_config(text, "fuzz.yaml"); }))
    return 0;
  // Accepted: what to_yaml writes must load back to the same settings (no Error allowed).
  std::string again;
  Config back;
  try {
    again = to_yaml(cfg);
    back = parse_config(again, "fuzz.yaml (to_yaml)");
  } catch (const std::exception& e) {
    fuzz::finding("to_yaml round trip", std::string("refused: ") + e.what() + "\n" + again);
  }
  if (!(back == cfg)) fuzz::finding("to_yaml round trip", "settings differ after\n" + again);
  for (int world : {1, 2, 8}) fuzz::expect_clean("validate", [&] { validate(cfg, world); });
  return 0;
}
