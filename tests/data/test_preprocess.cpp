// Tokenizers and preprocessing: ids identical to SentencePiece's own CLI encoder (spm_encode),
// EOD appended, output independent of the worker count, and clear errors for bad inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "data/indexed_dataset.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "local_comm.h"

namespace origami {
namespace {

using testing::TempDir;

const std::string kShippedModel = std::string(ORIGAMI_SOURCE_DIR) + "/data/brown/tokenizer.model";

const std::vector<std::string> kTexts = {
    "The Fulton County Grand Jury said Friday an investigation took place.",
    "Numbers 12345 and 3.14159, punctuation!? \"quotes\" (parens) -- dashes.",
    "Unicode: café naïve Zürich 東京 😀 — em dash.",
    "  leading and   repeated   spaces  ",
    "x",
};

std::string write_jsonl(const std::string& path, const std::string& key = "text") {
  std::ofstream out(path);
  for (const auto& t : kTexts) out << nlohmann::json{{key, t}, {"id", 1}}.dump() << "\n";
  return path;
}

std::vector<std::vector<int32_t>> read_documents(const std::string& prefix) {
  IndexedDataset ds(prefix);
  std::vector<std::vector<int32_t>> docs;
  for (int64_t i = 0; i < ds.num_sequences(); ++i) docs.push_back(ds.sequence<int32_t>(i));
  return docs;
}

TEST(Preprocess, SentencePieceIdsMatchSpmEncode) {
  TempDir dir("pre-spm");
  {
    std::ofstream plain(dir / "lines.txt");
    for (const auto& t : kTexts) plain << t << "\n";
  }
  const std::string cmd = "spm_encode --model=" + kShippedModel + " --output_format=id < " +
                          (dir / "lines.txt") + " > " + (dir / "spm_ids.txt");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream ids_in(dir / "spm_ids.txt");
  std::vector<std::vector<int32_t>> expected;
  for (std::string line; std::getline(ids_in, line);) {
    std::istringstream ss(line);
    expected.emplace_back(std::istream_iterator<int32_t>(ss), std::istream_iterator<int32_t>());
  }
  ASSERT_EQ(expected.size(), kTexts.size());

  PreprocessOptions opts;
  opts.inputs = {write_jsonl(dir / "in.jsonl")};
  opts.output_prefix = dir / "out";
  opts.tokenizer = {"sentencepiece", kShippedModel};
  opts.workers = 2;
  opts.progress = false;
  auto sum = preprocess(opts);
  auto docs = read_documents(dir / "out");
  auto tok = make_tokenizer(opts.tokenizer);
  ASSERT_EQ(docs.size(), kTexts.size());
  EXPECT_EQ(sum.documents, int64_t(kTexts.size()));
  EXPECT_EQ(sum.dtype, TokenDType::u16);
  int64_t tokens = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    ASSERT_FALSE(docs[i].empty());
    EXPECT_EQ(docs[i].back(), tok->eod_id());
    EXPECT_EQ(tok->eod_id(), 2);  // Llama's layout: unk 0, bos 1, eos 2
    std::vector<int32_t> body(docs[i].begin(), docs[i].end() - 1);
    EXPECT_EQ(body, expected[i]) << kTexts[i];
    EXPECT_EQ(tok->decode(body), kTexts[i]);  // identity normalisation + byte fallback
    tokens += int64_t(docs[i].size());
  }
  EXPECT_EQ(sum.tokens, tokens);
}

TEST(Preprocess, OutputDoesNotDependOnWorkersAndHonoursJsonKey) {
  TempDir dir("pre-workers");
  PreprocessOptions opts;
  opts.inputs = {write_jsonl(dir / "a.jsonl", "content"), write_jsonl(dir / "b.jsonl", "content")};
  opts.json_key = "content";
  opts.tokenizer = {"byte", ""};
  opts.progress = false;
  opts.output_prefix = dir / "one";
  opts.workers = 1;
  preprocess(opts);
  opts.output_prefix = dir / "three";
  opts.workers = 3;
  preprocess(opts);
  auto one = read_documents(dir / "one");
  EXPECT_EQ(one, read_documents(dir / "three"));
  ASSERT_EQ(one.size(), 2 * kTexts.size());
  auto tok = make_tokenizer({"byte", ""});
  EXPECT_EQ(one[0].back(), 256);
  EXPECT_EQ(tok->decode(one[1]), kTexts[1]);
}

TEST(Preprocess, PlainTextFileIsOneDocument) {
  TempDir dir("pre-text");
  std::ofstream(dir / "doc.txt") << "line one\nline two\n";
  PreprocessOptions opts;
  opts.inputs = {dir / "doc.txt"};
  opts.output_prefix = dir / "out";
  opts.tokenizer = {"byte", ""};
  opts.progress = false;
  opts.append_eod = false;
  preprocess(opts);
  auto docs = read_documents(dir / "out");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(make_tokenizer({"byte", ""})->decode(docs[0]), "line one\nline two\n");
}

void expect_error(const std::function<void()>& fn, const std::string& what) {
  try {
    fn();
    ADD_FAILURE() << "expected an Error mentioning " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Preprocess, BadInputsNameTheFileAndLeaveNoOutput) {
  TempDir dir("pre-bad");
  std::ofstream(dir / "bad.jsonl") << "{\"text\": \"fine\"}\n{\"text\": broken\n";
  std::ofstream(dir / "nokey.jsonl") << "{\"body\": \"x\"}\n";
  PreprocessOptions opts;
  opts.output_prefix = dir / "out";
  opts.tokenizer = {"byte", ""};
  opts.progress = false;
  opts.inputs = {dir / "bad.jsonl"};
  expect_error([&] { preprocess(opts); }, (dir / "bad.jsonl") + ":2: invalid JSON");
  opts.inputs = {dir / "nokey.jsonl"};
  expect_error([&] { preprocess(opts); }, "no \"text\" key");
  EXPECT_FALSE(std::filesystem::exists(dir / "out.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out.idx"));
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  }
}

TEST(Tokenizer, ModelsThatDoNotLoadNameTheirPath) {
  TempDir dir("tok-bad");
  std::ofstream(dir / "garbage.model") << "not a sentencepiece model";
  expect_error([&] { make_tokenizer({"sentencepiece", dir / "garbage.model"}); },
               (dir / "garbage.model") + " does not load");
  expect_error([&] { make_tokenizer({"sentencepiece", dir / "missing.model"}); },
               (dir / "missing.model") + " does not exist");
  expect_error([&] { make_tokenizer({"wordpiece", ""}); }, "allowed: sentencepiece, byte");
}

TEST(Tokenizer, TrainedModelHasEosAndRoundTrips) {
  TempDir dir("tok-train");
  {
    std::ofstream out(dir / "corpus.jsonl");
    for (int i = 0; i < 200; ++i) {
      out << nlohmann::json{{"text", kTexts[size_t(i) % kTexts.size()] + " sample " +
                                         std::to_string(i)}}.dump() << "\n";
    }
  }
  TokenizerTrainingOptions opts;
  opts.inputs = {dir / "corpus.jsonl"};
  opts.model_prefix = dir / "tiny";
  opts.vocab_size = 400;
  train_tokenizer(opts);
  auto tok = make_tokenizer({"sentencepiece", dir / "tiny.model"});
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->eod_id(), 2);
  for (const auto& t : kTexts) EXPECT_EQ(tok->decode(tok->encode(t)), t);
}

}  // namespace
}  // namespace origami
