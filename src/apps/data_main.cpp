// origami-data: dataset tooling. Subcommands:
//   preprocess       JSONL / text -> Megatron indexed dataset (<prefix>.bin/.idx)
//   train-tokenizer  SentencePiece BPE model from the same inputs
//   inspect          counts, dtype, and the first documents / GPT samples decoded
// Thin: the work lives in src/data (preprocess.cpp, indexed_dataset.cpp, gpt_dataset.cpp).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>
#include <iostream>

#include "base/error.h"
#include "base/logging.h"
#include "data/inspect.h"
#include "data/preprocess.h"

int main(int argc, char** argv) {
  using namespace origami;
  CLI::App app{"origami-data: preprocess corpora into Megatron indexed datasets, train "
               "tokenizers, inspect datasets"};
  app.require_subcommand(1);

  PreprocessOptions pre;
  std::string pre_dtype;
  bool no_progress = false, no_eod = false;
  auto* p = app.add_subcommand("preprocess", "Tokenize JSONL or text files into <prefix>.bin/.idx");
  p->add_option("-i,--input", pre.inputs, "Input files: .jsonl/.json (one object per line) or "
                "plain text (one document per file)")->required()->check(CLI::ExistingFile);
  p->add_option("-o,--output-prefix", pre.output_prefix, "Output prefix (writes PREFIX.bin and "
                "PREFIX.idx)")->required();
  p->add_option("--json-key", pre.json_key, "JSON key holding the text")->capture_default_str();
  p->add_option("--tokenizer-kind", pre.tokenizer.kind, "sentencepiece | byte")
      ->capture_default_str();
  p->add_option("-t,--tokenizer-model", pre.tokenizer.model, "SentencePiece .model file");
  p->add_option("-w,--workers", pre.workers, "Encoding threads")->capture_default_str();
  p->add_option("--dtype", pre_dtype, "Token dtype (default uint16 if vocab < 65500 else int32)");
  p->add_flag("--no-append-eod", no_eod, "Do not append the EOD (eos) id to each document");
  p->add_flag("--no-progress", no_progress, "No progress bar");

  TokenizerTrainingOptions tt;
  auto* t = app.add_subcommand("train-tokenizer", "Train a SentencePiece BPE tokenizer");
  t->add_option("-i,--input", tt.inputs, "Input files (.jsonl/.json or plain text)")
      ->required()->check(CLI::ExistingFile);
  t->add_option("-o,--model-prefix", tt.model_prefix, "Writes PREFIX.model and PREFIX.vocab")
      ->required();
  t->add_option("--json-key", tt.json_key, "JSON key holding the text")->capture_default_str();
  t->add_option("-v,--vocab-size", tt.vocab_size, "Vocabulary size")->capture_default_str();
  t->add_option("--model-type", tt.model_type, "bpe | unigram | char | word")
      ->capture_default_str();
  t->add_option("--character-coverage", tt.character_coverage, "SentencePiece character "
                "coverage")->capture_default_str();
  t->add_option("--max-sentences", tt.max_sentences, "Train on at most this many lines (0 = all)")
      ->capture_default_str();
  t->add_option("-w,--workers", tt.workers, "Training threads")->capture_default_str();

  InspectOptions ins;
  auto* s = app.add_subcommand("inspect", "Print counts and decode documents or GPT samples");
  s->add_option("prefix", ins.prefix, "Dataset prefix (without .bin/.idx)")->required();
  s->add_option("--tokenizer-kind", ins.tokenizer.kind, "sentencepiece | byte")
      ->capture_default_str();
  s->add_option("-t,--tokenizer-model", ins.tokenizer.model, "SentencePiece .model to decode with");
  s->add_option("-n,--documents", ins.documents, "Decode the first N documents")
      ->capture_default_str();
  s->add_option("--samples", ins.samples, "Decode the first N GPT samples (needs --seq-length)")
      ->capture_default_str();
  s->add_option("--seq-length", ins.seq_length, "Sample length for --samples");
  s->add_option("--seed", ins.seed, "Shuffle seed for --samples")->capture_default_str();
  s->add_option("--max-chars", ins.max_chars, "Truncate each decoded text to this many characters")
      ->capture_default_str();
  s->add_flag("--ids", ins.show_ids, "Print token ids as well as text");

  CLI11_PARSE(app, argc, argv);
  init_logging(0, "info");
  try {
    if (*p) {
      if (!pre_dtype.empty()) pre.dtype = parse_dtype(pre_dtype);
      pre.append_eod = !no_eod;
      pre.progress = !no_progress;
      auto sum = preprocess(pre);
      std::cout << fmt::format(
          "wrote {0}.bin / {0}.idx: {1} documents, {2} tokens ({3}), {4:.1f} s, {5:.0f} tokens/s\n",
          pre.output_prefix, sum.documents, sum.tokens, dtype_name(sum.dtype), sum.seconds,
          sum.seconds > 0 ? double(sum.tokens) / sum.seconds : 0.0);
    } else if (*t) {
      train_tokenizer(tt);
      std::cout << fmt::format("wrote {0}.model / {0}.vocab (vocab {1})\n", tt.model_prefix,
                               tt.vocab_size);
    } else if (*s) {
      inspect(ins, std::cout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "origami-data: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // a library's exception Origami did not explain: say so
    std::fprintf(stderr, "origami-data: internal error (%s): %s\n", exception_type(e).c_str(), e.what());
    return 1;
  }
  return 0;
}
