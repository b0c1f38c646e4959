// origami-ckpt: the user's tools around checkpoints (docs/checkpoints.md).
//   inspect CKPT             metadata, tensors, shapes, pieces, sizes; checksums verified
//   diff A B [--tol X]       compare two checkpoints' weights (exit 1 when they differ)
//   export-hf CKPT OUT [--format mixtral|qwen2_moe]   Hugging Face directory (safetensors +
//                            config.json); qwen2_moe for shared experts or dense layers
//   import-hf HF_DIR OUT     a step-0 Origami checkpoint from such a directory
//   reshard CKPT OUT --world W --set parallel.K=V ...   files laid out for another layout
//   upcycle DENSE OUT --experts E --top-k K   dense -> MoE (sparse upcycling)
//   eval CKPT --data PREFIX [--top-k K]   mean LM loss and perplexity on an indexed dataset
//   logits CKPT --tokens ... the model's logits for one sequence (raw fp32 file; golden tests)
// CKPT is a save directory (its `latest` is followed) or one iter_* directory.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/json_field.h"

#include "backend/backend.h"
#include "base/error.h"
#include "base/rng.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_mixtral.h"
#include "checkpoint/hf_qwen2_moe.h"
#include "comm/mpi_runtime.h"
#include "data/sample_source.h"
#include "config/config.h"
#include "model/moe_transformer.h"

using namespace origami;

namespace {

int inspect(const std::string& path) {
  const CheckpointInfo info = read_checkpoint_info(path);
  std::printf("checkpoint      %s\nformat version  %lld\nstep            %lld\nconsumed        %lld "
              "samples\nskipped         %lld iterations\nsaved by        %lld ranks\n",
              info.path.c_str(), (long long)info.format_version, (long long)info.state.step,
              (long long)info.state.consumed_samples, (long long)info.state.skipped,
              (long long)info.world_size);
  const auto tensors = read_checkpoint_tensors(path);  // verifies every checksum
  int64_t params = 0;
  std::printf("\n%-52s %-22s %s\n", "tensor", "global shape", "elements");
  for (const auto& [name, t] : tensors) {
    std::printf("%-52s %-22s %zu\n", name.c_str(), shape_str(t.first).c_str(), t.second.size());
    params += int64_t(t.second.size());
  }
  const CheckpointBuffers buffers = read_checkpoint_buffers(path);
  for (const auto& [name, values] : buffers)
    std::printf("%-52s %-22s %zu (buffer)\n", name.c_str(), shape_str({int64_t(values.size())}).c_str(),
                values.size());
  std::printf("\n%zu tensors, %lld parameters (fp32 weights + 2 Adam moments: %.1f MiB), %zu "
              "buffers; all checksums verified\n\nconfig:\n%s", tensors.size(), (long long)params,
              3.0 * 4.0 * double(params) / (1 << 20), buffers.size(), info.config_yaml.c_str());
  return 0;
}

int diff(const std::string& a, const std::string& b, double tol) {
  auto ta = read_checkpoint_tensors(a), tb = read_checkpoint_tensors(b);
  // Buffers (the routers' expert bias) are compared like tensors.
  for (auto& [name, values] : read_checkpoint_buffers(a)) ta[name] = {{int64_t(values.size())}, values};
  for (auto& [name, values] : read_checkpoint_buffers(b)) tb[name] = {{int64_t(values.size())}, values};
  int differing = 0;
  for (const auto& [name, t] : ta) {
    auto it = tb.find(name);
    if (it == tb.end()) {
      std::printf("%s: only in %s\n", name.c_str(), a.c_str());
      ++differing;
      continue;
    }
    if (it->second.first != t.first) {
      std::printf("%s: shape %s vs %s\n", name.c_str(), shape_str(t.first).c_str(),
                  shape_str(it->second.first).c_str());
      ++differing;
      continue;
    }
    double max_diff = 0;
    for (size_t i = 0; i < t.second.size(); ++i)
      max_diff = std::max(max_diff, double(std::abs(t.second[i] - it->second.second[i])));
    if (max_diff > tol) {
      std::printf("%s: max |difference| %.3g\n", name.c_str(), max_diff);
      ++differing;
    }
  }
  for (const auto& [name, t] : tb)
    if (!ta.contains(name)) std::printf("%s: only in %s\n", name.c_str(), b.c_str()), ++differing;
  std::printf("%d of %zu tensors differ (tolerance %g)\n", differing, ta.size(), tol);
  return differing ? 1 : 0;
}

Config checkpoint_config(const CheckpointInfo& info) {
  return parse_config(info.config_yaml, info.path + "/index.json (config)");
}

int export_hf(const std::string& path, const std::string& out, const std::string& dtype,
              const std::string& format) {
  const CheckpointInfo info = read_checkpoint_info(path);
  const Config cfg = checkpoint_config(info);
  HostTensorMap tensors;
  for (auto& [name, t] : read_checkpoint_tensors(path)) tensors[name] = {t.first, std::move(t.second)};
  if (format == "qwen2_moe")
    save_qwen2_moe(out, tensors, cfg, dtype);
  else
    save_mixtral(out, tensors, cfg, dtype);
  std::printf("exported %s (step %lld) to %s: %zu Origami tensors, %s naming, %s\n",
              info.path.c_str(), (long long)info.state.step, out.c_str(), tensors.size(),
              format.c_str(), dtype.c_str());
  return 0;
}

// A step-0 checkpoint (zero Adam moments, fresh optimizer) of a 1-rank model of `cfg` whose
// parameters `fill` sets (given each parameter and its host buffer, pre-filled with the init).
template <typename Fill>
std::string save_fresh_checkpoint(const std::string& out, const Config& cfg, Fill fill) {
  auto world = make_mpi_world();
  check(world->size() == 1, "origami-ckpt writes new checkpoints as a single process");
  auto be = make_backend("cpu");
  MoeTransformer model(*be, cfg, MicroBatchShape{1, 1}, cfg.training.seed);
  ParamStore& store = model.params();
  std::vector<float> host;
  for (const Param& p : store.all()) {
    host.resize(size_t(p.value.numel()));
    be->copy_to_host(host.data(), p.value.data(), p.value.bytes());
    fill(p.spec, host);
    be->copy_from_host(p.value.data(), host.data(), p.value.bytes());
  }
  const auto groups = ProcessGroups::create(*world, ParallelLayout::from_config(ParallelConfig{}, 1));
  Config saved_cfg = cfg;
  saved_cfg.parallel = ParallelConfig{};
  saved_cfg.checkpoint.load.clear();
  std::vector<float> zeros(size_t(store.count()), 0.f);
  return save_checkpoint(*be, out, 0, TrainingState{}, to_yaml(saved_cfg), store, zeros, zeros, groups,
                         *world);
}

int import_hf(const std::string& hf_dir, const std::string& out) {
  // The naming follows config.json's model_type (both loaders refuse the other's files).
  std::string model_type;
  {
    const std::string path = hf_dir + "/config.json";
    const nlohmann::json doc = read_json_file(path, "import-hf: Hugging Face config");
    const JsonField root(doc, path);
    check(root.is_object(), "{}: expected an object at the top, found {}", path, root.type());
    if (auto t = root.find("model_type")) model_type = t->str();
  }
  struct {
    Config config;
    HostTensorMap params;
  } hf;
  if (model_type == "qwen2_moe") {
    auto m = load_qwen2_moe(hf_dir);
    hf = {std::move(m.config), std::move(m.params)};
  } else {
    check(model_type == "mixtral", "import-hf {}: model_type '{}' is not supported (allowed: "
          "mixtral, qwen2_moe)", hf_dir, model_type);
    auto m = load_mixtral(hf_dir);
    hf = {std::move(m.config), std::move(m.params)};
  }
  const std::string saved = save_fresh_checkpoint(out, hf.config, [&](const ParamSpec& s, auto& v) {
    auto it = hf.params.find(s.name);
    check(it != hf.params.end(), "import-hf {}: no tensor for '{}'", hf_dir, s.name);
    check(it->second.shape == s.global_shape, "import-hf {}: '{}' has shape {}, expected {}",
          hf_dir, s.name, shape_str(it->second.shape), shape_str(s.global_shape));
    v = it->second.data;
  });
  std::printf("imported %s into %s; resume from it with checkpoint.load: %s\n", hf_dir.c_str(),
              saved.c_str(), out.c_str());
  return 0;
}

// Loading reshards on the fly; this writes the files a target layout would have written, for
// users who stage checkpoints ahead of a job. Only parallel.* may change (the model stays).
int reshard(const std::string& path, const std::string& out, int world_size,
            const std::vector<std::string>& overrides) {
  const CheckpointInfo info = read_checkpoint_info(path);
  Config cfg = checkpoint_config(info);
  for (const auto& o : overrides) {
    check(o.starts_with("parallel."), "reshard: --set {}: only parallel.* keys change the layout",
          o);
    apply_override(cfg, o);
  }
  validate(cfg, world_size);
  const auto layout = ParallelLayout::from_config(cfg.parallel, world_size);
  auto be = make_backend("cpu");
  std::vector<std::vector<ParamSpec>> rank_specs(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) {
    const auto c = layout.coord(r);
    const ProcessGroups shape = ProcessGroups::describe(layout, r, cfg.model.num_query_groups);
    MoeTransformer specs(*be, cfg, MicroBatchShape{1, 1}, cfg.training.seed,
                         ModelGroups::from(shape), /*allocate_parameters=*/false);
    for (const Param& p : specs.params().all()) {
      // The first replica writes (as save_checkpoint): dense from DP x CP rank 0 and the first
      // TP holder, experts from EDP rank 0 (FSSDP's owned experts: their owner).
      const bool first = p.spec.grad_group == GradGroup::dense
                             ? c.dp == 0 && c.cp == 0 && first_tp_holder(p.spec, c.tp, layout.tp())
                             : c.edp == 0 || p.spec.owned_once();
      if (first && !p.spec.pipeline_copy) rank_specs[size_t(r)].push_back(p.spec);
    }
  }
  const std::string saved = write_checkpoint_for_layout(
      out, info.state, to_yaml(cfg), rank_specs, read_checkpoint_tensors(path, "model"),
      read_checkpoint_tensors(path, "exp_avg"), read_checkpoint_tensors(path, "exp_avg_sq"),
      read_checkpoint_buffers(path));
  std::printf("resharded %s (saved by %lld ranks) into %s for %d ranks: %s\n", info.path.c_str(),
              (long long)info.world_size, saved.c_str(), world_size, layout.describe().c_str());
  return 0;
}

// Sparse upcycling (Komatsuzaki et al.): every expert of MoE layer l starts as a copy of the
// dense layer's MLP (gate/up rows [2F, H] -> [2, F, H] per expert, down [H, F]), optionally with
// Gaussian noise of std `noise` (counter-based RNG: reproducible); the router starts from the
// model's init (random) or zeros; everything else is copied. With noise 0 and renormalised top-k
// the upcycled model computes the dense model's function at step 0.
int upcycle(const std::string& dense_path, const std::string& out, int64_t experts,
            int64_t top_k, double noise, const std::string& router_init) {
  const CheckpointInfo info = read_checkpoint_info(dense_path);
  const Config dense = checkpoint_config(info);
  check(dense.moe.num_experts == 0, "upcycle: '{}' is already a MoE model ({} experts); it needs "
        "a dense checkpoint (moe.num_experts: 0)", info.path, dense.moe.num_experts);
  Config moe = dense;
  moe.moe.num_experts = experts;
  moe.moe.top_k = top_k;
  moe.moe.expert_ffn_hidden_size = dense.model.ffn_hidden_size;
  moe.moe.shared_expert_ffn_hidden_size = 0;
  moe.moe.layer_freq = 1;
  moe.moe.router.renormalize = true;
  validate(moe, 1);
  const auto tensors = read_checkpoint_tensors(info.path);
  const std::string saved = save_fresh_checkpoint(out, moe, [&](const ParamSpec& s, auto& v) {
    if (auto it = tensors.find(s.name); it != tensors.end()) {
      v = it->second.second;  // embeddings, attention, norms, head: unchanged
      return;
    }
    const std::string layer = s.name.substr(0, s.name.find(".moe."));
    if (s.name.ends_with(".moe.router.weight")) {
      if (router_init == "zeros") std::fill(v.begin(), v.end(), 0.f);
      return;
    }
    const bool fc1 = s.name.ends_with(".experts.fc1.weight");
    const auto& mlp = tensors.at(layer + (fc1 ? ".mlp.fc1.weight" : ".mlp.fc2.weight")).second;
    const size_t per_expert = mlp.size();
    Rng rng(moe.training.seed, hash_name("upcycle." + s.name));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = mlp[i % per_expert] + (noise > 0 ? float(noise * rng.normal(i)) : 0.f);
  });
  std::printf("upcycled %s into %s: %lld experts (top-%lld) per layer from the dense MLP, noise "
              "%g, router %s\n", info.path.c_str(), saved.c_str(), (long long)experts,
              (long long)top_k, noise, router_init.c_str());
  return 0;
}

// A 1-rank model of the checkpoint's config, loaded from the checkpoint (any saved layout).
struct LoadedModel {
  Config cfg;
  std::unique_ptr<Backend> be = make_backend("cpu");
  std::unique_ptr<MoeTransformer> model;
};

// whole_logits: the LM head runs over all rows at once, so that logits() holds them all.
// top_k > 0: route every token to that many experts (a static top-k gate in place of the run's
// k and gating schedule), e.g. SMoE-Dropout's evaluation at any k.
LoadedModel load_model(const std::string& path, int64_t batch, int64_t seq,
                       bool whole_logits = false, int64_t top_k = 0) {
  LoadedModel lm;
  const CheckpointInfo info = read_checkpoint_info(path);
  lm.cfg = checkpoint_config(info);
  lm.cfg.parallel = ParallelConfig{};
  if (whole_logits) lm.cfg.training.logits_chunk_tokens = 0;
  if (top_k > 0) {
    lm.cfg.moe.top_k = top_k;
    lm.cfg.moe.router.schedule = RouterScheduleConfig{};
    try {
      validate(lm.cfg, 1);
    } catch (const Error& e) {
      fail("--top-k {}: the checkpoint's model cannot route that many experts per token: {}",
           top_k, e.what());
    }
  }
  lm.model = std::make_unique<MoeTransformer>(*lm.be, lm.cfg, MicroBatchShape{batch, seq},
                                              lm.cfg.training.seed);
  std::vector<float> m, v;
  CheckpointBuffers buffers;
  load_checkpoint(*lm.be, info.path, lm.model->params(), m, v, &buffers);
  lm.model->load_buffers(buffers);
  // The gate of the step the checkpoint was saved at, without noise (as evaluation in training).
  lm.model->set_router_clock({.step = info.state.step, .noise = false});
  return lm;
}

int eval(const std::string& path, const std::string& data, int64_t samples, int64_t top_k) {
  auto world = make_mpi_world();
  check(world->size() == 1, "origami-ckpt eval runs as a single process");
  const CheckpointInfo info = read_checkpoint_info(path);
  Config cfg = checkpoint_config(info);
  const int64_t mbs = cfg.training.micro_batch_size, seq = cfg.training.seq_length;
  LoadedModel lm = load_model(path, mbs, seq, /*whole_logits=*/false, top_k);
  DataConfig dc = cfg.data;
  dc.blend = {{data, 1.0}};
  dc.split = {1.0, 0.0, 0.0};  // the whole dataset
  auto source = open_dataset(dc, {.seq_length = seq, .seed = cfg.training.seed,
                                  .num_samples = samples, .split = 0}, *world);
  std::vector<int32_t> tokens(size_t(mbs * seq)), targets(tokens.size()), x(size_t(seq + 1));
  double loss = 0;
  int64_t counted = 0;
  for (int64_t first = 0; first + mbs <= samples; first += mbs) {
    for (int64_t b = 0; b < mbs; ++b) {
      source->get(first + b, x);
      std::copy(x.begin(), x.end() - 1, tokens.begin() + b * seq);
      std::copy(x.begin() + 1, x.end(), targets.begin() + b * seq);
    }
    const ForwardStats st = lm.model->forward(tokens.data(), targets.data(), {});
    loss += st.lm_loss_sum;
    counted += st.loss_tokens;
  }
  check(counted > 0, "eval: --samples {} is smaller than one micro-batch ({})", samples, mbs);
  std::printf("checkpoint %s (step %lld, top-%lld) on %s: %lld tokens, mean loss %.6f, "
              "perplexity %.3f\n",
              info.path.c_str(), (long long)info.state.step, (long long)lm.cfg.moe.top_k,
              data.c_str(), (long long)counted, loss / double(counted),
              std::exp(loss / double(counted)));
  return 0;
}

int logits(const std::string& path, const std::vector<int32_t>& tokens, const std::string& out) {
  const int64_t T = int64_t(tokens.size());
  LoadedModel lm = load_model(path, 1, T, /*whole_logits=*/true);
  std::vector<int32_t> targets(tokens.size(), -1);
  lm.model->forward(tokens.data(), targets.data(), {});
  const int64_t V = lm.cfg.model.vocab_size;
  std::vector<float> host(size_t(T * V));
  lm.be->copy_to_host(host.data(), lm.model->logits(), host.size() * sizeof(float));
  std::FILE* f = std::fopen(out.c_str(), "wb");
  check(f != nullptr, "logits: cannot write '{}'", out);
  std::fwrite(host.data(), sizeof(float), host.size(), f);
  std::fclose(f);
  std::printf("wrote %lld x %lld fp32 logits to %s\n", (long long)T, (long long)V, out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  CLI::App app{"origami-ckpt: inspect, compare and convert Origami checkpoints"};
  app.require_subcommand(1);
  std::string a, b, out, dtype = "BF16";
  double tol = 0.0;
  auto* ins = app.add_subcommand("inspect", "print metadata and tensors, verify checksums");
  ins->add_option("checkpoint", a)->required();
  auto* dif = app.add_subcommand("diff", "compare the weights of two checkpoints");
  dif->add_option("a", a)->required();
  dif->add_option("b", b)->required();
  dif->add_option("--tol", tol, "largest |difference| still equal (default 0: bitwise)");
  std::string format = "mixtral";
  auto* exp = app.add_subcommand("export-hf", "write a Hugging Face directory");
  exp->add_option("checkpoint", a)->required();
  exp->add_option("out", out)->required();
  exp->add_option("--dtype", dtype, "F32 or BF16")->check(CLI::IsMember({"F32", "BF16"}));
  exp->add_option("--format", format, "mixtral, or qwen2_moe (shared experts, dense layers)")
      ->check(CLI::IsMember({"mixtral", "qwen2_moe"}));
  auto* imp = app.add_subcommand(
      "import-hf", "make a step-0 checkpoint from a Mixtral or Qwen2-MoE directory (by model_type)");
  imp->add_option("hf_dir", a)->required();
  imp->add_option("out", out, "save directory for the new checkpoint")->required();
  std::string data, router_init = "random";
  int64_t samples = 64, experts = 8, top_k = 2;
  double noise = 0.0;
  int world_size = 1;
  std::vector<std::string> sets;
  auto* rs = app.add_subcommand("reshard", "write a checkpoint laid out for another layout");
  rs->add_option("checkpoint", a)->required();
  rs->add_option("out", out, "save directory for the resharded checkpoint")->required();
  rs->add_option("--world", world_size, "ranks of the target job")->required();
  rs->add_option("--set", sets, "target layout, e.g. --set parallel.expert=4");
  auto* up = app.add_subcommand("upcycle", "dense checkpoint -> MoE checkpoint (sparse upcycling)");
  up->add_option("dense", a)->required();
  up->add_option("out", out, "save directory for the MoE checkpoint")->required();
  up->add_option("--experts", experts, "experts per layer")->check(CLI::PositiveNumber);
  up->add_option("--top-k", top_k)->check(CLI::PositiveNumber);
  up->add_option("--noise", noise, "std of Gaussian noise added to each expert copy");
  up->add_option("--router-init", router_init)->check(CLI::IsMember({"random", "zeros"}));
  std::vector<int32_t> tokens;
  auto* ev = app.add_subcommand("eval", "mean loss and perplexity on an indexed dataset");
  ev->add_option("checkpoint", a)->required();
  ev->add_option("--data", data, "dataset prefix (.bin/.idx)")->required();
  ev->add_option("--samples", samples, "samples of seq_length+1 tokens to evaluate");
  int64_t eval_top_k = 0;
  ev->add_option("--top-k", eval_top_k,
                 "route every token to K experts (static top-K in place of the run's k and gating "
                 "schedule; default: as trained)");
  auto* lg = app.add_subcommand("logits", "write the logits of one token sequence (fp32, [T, V])");
  lg->add_option("checkpoint", a)->required();
  lg->add_option("--tokens", tokens, "token ids")->required()->delimiter(',');
  lg->add_option("--out", out, "output file")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*ins) return inspect(a);
    if (*dif) return diff(a, b, tol);
    if (*exp) return export_hf(a, out, dtype, format);
    if (*imp) return import_hf(a, out);
    if (*ev) return eval(a, data, samples, eval_top_k);
    if (*rs) return reshard(a, out, world_size, sets);
    if (*up) return upcycle(a, out, experts, top_k, noise, router_init);
    if (*lg) return logits(a, tokens, out);
  } catch (const Error& e) {
    std::fprintf(stderr, "origami-ckpt: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // a library's exception Origami did not explain: say so
    std::fprintf(stderr, "origami-ckpt: internal error (%s): %s\n", exception_type(e).c_str(), e.what());
    return 1;
  }
  return 0;
}
