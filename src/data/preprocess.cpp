// preprocess(): read documents in batches, encode a batch on `workers` OpenMP threads, append
// in input order (so the output is the same for any worker count), finish() renames into place.
// train_tokenizer(): gathers the text lines into a temp file and runs SentencePieceTrainer.
#include "data/preprocess.h"

#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/logging.h"
#include "data/tokenizer.h"

namespace origami {
namespace {

bool is_jsonl(const std::string& path) {
  auto ext = std::filesystem::path(path).extension().string();
  return ext == ".jsonl" || ext == ".json";
}

// One raw input record: a JSONL line (parsed later, on a worker) or a whole text file.
struct Record {
  std::string raw;
  std::string where;  // file:line for errors
  bool json = false;
};

// Calls `batch` with up to `batch_size` records at a time, in input order.
void read_records(const std::vector<std::string>& inputs, size_t batch_size,
                  const std::function<void(std::vector<Record>&, int64_t bytes)>& batch) {
  std::vector<Record> records;
  int64_t bytes = 0;
  auto flush = [&] {
    if (!records.empty()) batch(records, bytes);
    records.clear();
    bytes = 0;
  };
  for (const auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    check(in.good(), "cannot open input file {}", path);
    if (!is_jsonl(path)) {
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      bytes += int64_t(text.size());
      records.push_back({std::move(text), path, false});
      if (records.size() >= batch_size) flush();
      continue;
    }
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      bytes += int64_t(line.size()) + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      records.push_back({std::move(line), fmt::format("{}:{}", path, n), true});
      if (records.size() >= batch_size) flush();
    }
  }
  flush();
}

std::string record_text(const Record& r, const std::string& key) {
  if (!r.json) return r.raw;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.raw);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", r.where, e.what());
  }
  check(j.is_object() && j.contains(key), "{}: no \"{}\" key in this JSON line (set --json-key)",
        r.where, key);
  check(j[key].is_string(), "{}: \"{}\" is not a string", r.where, key);
  return j[key].get<std::string>();
}

int64_t total_input_bytes(const std::vector<std::string>& inputs) {
  int64_t total = 0;
  for (const auto& p : inputs) {
    check(std::filesystem::is_regular_file(p), "input file {} does not exist", p);
    total += int64_t(std::filesystem::file_size(p));
  }
  return total;
}

class ProgressBar {
 public:
  ProgressBar(int64_t total, bool enabled) : total_(total), enabled_(enabled), tty_(isatty(2)) {}
  void update(int64_t done, int64_t docs, int64_t tokens, double seconds) {
    if (!enabled_ || total_ <= 0) return;
    int pct = int(100.0 * double(done) / double(total_));
    if (!tty_ && pct < last_pct_ + 10 && done < total_) return;  // logs: every 10 %
    last_pct_ = pct;
    int filled = pct * 30 / 100;
    std::fprintf(stderr, "%s[%-30s] %3d%%  %lld docs  %lld tokens  %.0f tokens/s%s",
                 tty_ ? "\r" : "", std::string(size_t(filled), '#').c_str(), pct,
                 (long long)docs, (long long)tokens, seconds > 0 ? double(tokens) / seconds : 0.0,
                 tty_ ? "" : "\n");
    std::fflush(stderr);
  }
  void done() {
    if (enabled_ && tty_) std::fputc('\n', stderr);
  }

 private:
  int64_t total_;
  bool enabled_, tty_;
  int last_pct_ = -10;
};

}  // namespace

PreprocessSummary preprocess(const PreprocessOptions& opts) {
  check(!opts.inputs.empty(), "preprocess: no input files");
  check(!opts.output_prefix.empty(), "preprocess: no output prefix");
  check(opts.workers >= 1, "preprocess: --workers must be at least 1, got {}", opts.workers);
  const int64_t total_bytes = total_input_bytes(opts.inputs);
  auto tokenizer = make_tokenizer(opts.tokenizer);
  PreprocessSummary sum;
  sum.dtype = opts.dtype.value_or(dtype_for_vocab(tokenizer->vocab_size()));
  IndexedDatasetWriter writer(opts.output_prefix, sum.dtype);
  ProgressBar bar(total_bytes, opts.progress);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  int64_t read_bytes = 0;
  read_records(opts.inputs, size_t(256 * opts.workers), [&](std::vector<Record>& batch,
                                                            int64_t bytes) {
    const int64_t n = int64_t(batch.size());
    std::vector<std::vector<int32_t>> ids(static_cast<size_t>(n));
    std::vector<std::string> errors(static_cast<size_t>(n));
    std::vector<int64_t> text_bytes(size_t(n), 0);
#pragma omp parallel for num_threads(opts.workers) schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      try {  // exceptions must not leave an OpenMP region
        std::string text = record_text(batch[size_t(i)], opts.json_key);
        text_bytes[size_t(i)] = int64_t(text.size());
        ids[size_t(i)] = tokenizer->encode(text);
        if (opts.append_eod) ids[size_t(i)].push_back(tokenizer->eod_id());
      } catch (const std::exception& e) {
        errors[size_t(i)] = e.what();
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      if (!errors[size_t(i)].empty()) throw Error(errors[size_t(i)]);
      writer.add_document(ids[size_t(i)]);
      sum.documents++;
      sum.tokens += int64_t(ids[size_t(i)].size());
      sum.bytes += text_bytes[size_t(i)];
    }
    read_bytes += bytes;
    bar.update(read_bytes, sum.documents, sum.tokens, elapsed());
  });
  check(sum.documents > 0, "preprocess: the inputs hold no documents ({})", opts.inputs.front());
  writer.finish();
  bar.done();
  sum.seconds = elapsed();
  return sum;
}

void train_tokenizer(const TokenizerTrainingOptions& opts) {
  check(!opts.inputs.empty(), "train-tokenizer: no input files");
  check(!opts.model_prefix.empty(), "train-tokenizer: no model prefix");
  check(opts.vocab_size >= 260, "train-tokenizer: vocab size {} is too small (byte fallback "
        "alone takes 256 ids plus unk/bos/eos)", opts.vocab_size);
  total_input_bytes(opts.inputs);  // existence check with the file named
  auto parent = std::filesystem::path(opts.model_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  // SentencePiece trains on lines; a document's paragraphs become separate lines.
  const std::string lines_path = opts.model_prefix + ".train.txt.tmp." + std::to_string(getpid());
  // Trained under a temp prefix and renamed, so an interrupted run leaves no .model behind.
  const std::string tmp_prefix = opts.model_prefix + ".tmp." + std::to_string(getpid());
  struct Cleanup {
    std::string path;
    ~Cleanup() { std::error_code ec; std::filesystem::remove(path, ec); }
  } cleanup{lines_path}, cleanup_model{tmp_prefix + ".model"}, cleanup_vocab{tmp_prefix + ".vocab"};
  {
    std::ofstream out(lines_path, std::ios::binary);
    check(out.good(), "cannot create {}", lines_path);
    read_records(opts.inputs, 1024, [&](std::vector<Record>& batch, int64_t) {
      for (const auto& r : batch) {
        std::string text = record_text(r, opts.json_key);
        size_t at = 0;
        while (at <= text.size()) {
          size_t nl = text.find('\n', at);
          if (nl == std::string::npos) nl = text.size();
          if (nl > at) out.write(text.data() + at, std::streamsize(nl - at)) << '\n';
          at = nl + 1;
        }
      }
    });
    check(out.good(), "write to {} failed", lines_path);
  }
  std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --unk_id=0 --bos_id=1 "
      "--eos_id=2 --pad_id=-1 --byte_fallback=true --split_digits=true "
      "--normalization_rule_name=identity --remove_extra_whitespaces=false "
      "--character_coverage={} --num_threads={} --max_sentence_length=65536 "
      "--train_extremely_large_corpus=false --input_sentence_size={} --shuffle_input_sentence=true",
      lines_path, tmp_prefix, opts.vocab_size, opts.model_type, opts.character_coverage,
      opts.workers, opts.max_sentences);
  spdlog::info("training SentencePiece: {}", args);
  auto st = sentencepiece::SentencePieceTrainer::Train(args);
  check(st.ok(), "SentencePiece training of {} failed: {}", opts.model_prefix + ".model",
        st.ToString());
  std::filesystem::rename(tmp_prefix + ".vocab", opts.model_prefix + ".vocab");
  std::filesystem::rename(tmp_prefix + ".model", opts.model_prefix + ".model");
}

}  // namespace origami
