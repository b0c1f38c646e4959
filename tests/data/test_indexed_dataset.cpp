// Indexed dataset: write -> read round trips for every dtype, byte compatibility with a dataset
// written by a script that follows Megatron's writer (megatron_writer.py), and the errors that
// bad files must raise before training (each naming the file).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "data/indexed_dataset.h"
#include "local_comm.h"

namespace origami {
namespace {

using testing::TempDir;

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// A message check: the error names `needle` (the file) and says `what`.
void expect_error(const std::function<void()>& fn, const std::string& needle, const std::string& what) {
  try {
    fn();
    ADD_FAILURE() << "expected an Error mentioning " << needle;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

// Values that exercise each dtype's range (negative values only where the dtype has them).
std::vector<std::vector<int64_t>> sample_documents(TokenDType t) {
  const bool is_signed = t != TokenDType::u8 && t != TokenDType::u16;
  const int64_t hi = t == TokenDType::u8 ? 255 : t == TokenDType::i8 ? 127
                   : t == TokenDType::i16 ? 32767 : t == TokenDType::u16 ? 65535
                   : t == TokenDType::i32 ? 2147483647 : t == TokenDType::i64 ? (int64_t(1) << 40)
                   : (int64_t(1) << 24);
  return {{0, 1, hi, 7}, {}, {is_signed ? -hi : 3, 5, 6, 2, hi - 1}, {42}};
}

class RoundTrip : public ::testing::TestWithParam<TokenDType> {};

TEST_P(RoundTrip, WriteThenReadGivesTheSameDocuments) {
  TempDir dir("roundtrip");
  const TokenDType t = GetParam();
  const auto docs = sample_documents(t);
  const std::string prefix = dir / "ds";
  {
    IndexedDatasetWriter w(prefix, t);
    for (const auto& d : docs) {
      w.add_sequence(std::span<const int64_t>(d));
      w.end_document();
    }
    // A two-sequence document, as --split-sentences writes.
    std::vector<int64_t> a{9, 8}, b{7};
    w.add_sequence(std::span<const int64_t>(a));
    w.add_sequence(std::span<const int64_t>(b));
    w.end_document();
    w.finish();
  }
  IndexedDataset ds(prefix);
  EXPECT_EQ(ds.dtype(), t);
  ASSERT_EQ(ds.num_documents(), int64_t(docs.size()) + 1);
  ASSERT_EQ(ds.num_sequences(), int64_t(docs.size()) + 2);
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(ds.document_index(int64_t(i)), int64_t(i));
    EXPECT_EQ(ds.sequence<int64_t>(int64_t(i)), docs[i]) << "document " << i;
  }
  EXPECT_EQ(ds.document_index(int64_t(docs.size()) + 1) - ds.document_index(int64_t(docs.size())), 2);
  EXPECT_EQ(ds.sequence<int64_t>(int64_t(docs.size()) + 1), (std::vector<int64_t>{7}));
  // Partial reads at an offset.
  std::vector<int64_t> part(2);
  ds.read<int64_t>(2, 1, std::span<int64_t>(part));
  EXPECT_EQ(part, (std::vector<int64_t>{docs[2][1], docs[2][2]}));
  EXPECT_THROW(ds.read<int64_t>(2, 4, std::span<int64_t>(part)), Error);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, RoundTrip,
                         ::testing::Values(TokenDType::u8, TokenDType::i8, TokenDType::i16,
                                           TokenDType::i32, TokenDType::i64, TokenDType::f64,
                                           TokenDType::f32, TokenDType::u16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(IndexedDatasetWriter, RejectsValuesOutsideTheDtype) {
  TempDir dir("range");
  IndexedDatasetWriter w(dir / "ds", TokenDType::u16);
  std::vector<int32_t> bad{1, 70000};
  EXPECT_THROW(w.add_sequence(std::span<const int32_t>(bad)), Error);
  std::vector<int32_t> negative{-1};
  EXPECT_THROW(w.add_sequence(std::span<const int32_t>(negative)), Error);
}

// Found by fuzz/fuzz_indexed_dataset.cpp: reading a float32 dataset's NaN or 3e9 as an int32
// token was undefined behaviour, an int64 one past 2^31 wrapped silently. Now an Error names
// the .bin, the sequence and the value; read as double, every value still comes back.
TEST(IndexedDataset, RefusesTokensTheReadTypeCannotHold) {
  TempDir dir("unrepresentable");
  const std::string f32 = dir / "f32", i64 = dir / "i64";
  {
    IndexedDatasetWriter w(f32, TokenDType::f32);
    for (const std::vector<double>& doc : std::vector<std::vector<double>>{
             {1.0, 2.0}, {1.0, 2.5}, {3e9}, {4.0, 5.0}}) {
      w.add_sequence(std::span<const double>(doc));
      w.end_document();
    }
    w.finish();
  }
  auto bin = file_bytes(f32 + ".bin");  // the writer refuses NaN: put one in the last token
  const float nan = std::nanf("");
  std::memcpy(bin.data() + 24, &nan, 4);
  write_bytes(f32 + ".bin", bin);
  IndexedDataset ds(f32);
  EXPECT_EQ(ds.sequence<int32_t>(0), (std::vector<int32_t>{1, 2}));
  expect_error([&] { ds.sequence<int32_t>(1); }, f32 + ".bin", "token 1 of sequence 1 is 2.5");
  expect_error([&] { ds.sequence<int32_t>(2); }, f32 + ".bin", "is 3000000000, which is not an "
               "integer int32 can hold");
  EXPECT_EQ(ds.sequence<int64_t>(2), (std::vector<int64_t>{3000000000}));
  expect_error([&] { ds.sequence<int64_t>(3); }, f32 + ".bin", "token 1 of sequence 3 is nan");
  EXPECT_TRUE(std::isnan(ds.sequence<double>(3)[1]));
  {
    IndexedDatasetWriter w(i64, TokenDType::i64);
    const std::vector<int64_t> doc{5, int64_t(1) << 40};
    w.add_sequence(std::span<const int64_t>(doc));
    w.end_document();
    w.finish();
  }
  IndexedDataset wide(i64);
  expect_error([&] { wide.sequence<int32_t>(0); }, i64 + ".bin", "is 1099511627776");
  EXPECT_EQ(wide.sequence<int64_t>(0), (std::vector<int64_t>{5, int64_t(1) << 40}));
}

TEST(IndexedDatasetWriter, AnUnfinishedWriterLeavesNothingBehind) {
  TempDir dir("unfinished");
  {
    IndexedDatasetWriter w(dir / "ds", TokenDType::u16);
    w.add_document(std::vector<int32_t>{1, 2, 3});
  }  // destroyed without finish(), as when preprocessing throws
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(IndexedDatasetWriter, DtypeForVocabFollowsMegatron) {
  EXPECT_EQ(dtype_for_vocab(8192), TokenDType::u16);
  EXPECT_EQ(dtype_for_vocab(65499), TokenDType::u16);
  EXPECT_EQ(dtype_for_vocab(65500), TokenDType::i32);
  EXPECT_EQ(dtype_for_vocab(128256), TokenDType::i32);
}

// The Python writer follows Megatron's IndexedDatasetBuilder; our reader must load its files and
// our writer must produce the identical bytes from the same documents.
class MegatronCompat : public ::testing::TestWithParam<std::string> {};

TEST_P(MegatronCompat, ReadsAndReproducesMegatronFilesByteForByte) {
  TempDir dir("megatron");
  const std::string dtype = GetParam(), prefix = dir / ("py_" + dtype);
  const std::string cmd = std::string("python3 ") + ORIGAMI_SOURCE_DIR +
                          "/tests/data/megatron_writer.py " + prefix + " " + dtype + " 7";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto expected = nlohmann::json::parse(std::ifstream(prefix + ".expected.json"));
  const auto docs = expected["documents"];

  IndexedDataset ds(prefix);
  EXPECT_EQ(int(ds.dtype()), expected["dtype_code"].get<int>());
  ASSERT_EQ(ds.num_documents(), int64_t(docs.size()));
  const std::string ours = dir / ("cpp_" + dtype);
  IndexedDatasetWriter w(ours, ds.dtype());
  for (int64_t d = 0; d < ds.num_documents(); ++d) {
    const auto& seqs = docs[size_t(d)];
    ASSERT_EQ(ds.document_index(d + 1) - ds.document_index(d), int64_t(seqs.size()));
    for (size_t k = 0; k < seqs.size(); ++k) {
      auto got = ds.sequence<double>(ds.document_index(d) + int64_t(k));
      EXPECT_EQ(got, seqs[k].get<std::vector<double>>()) << "document " << d << " sequence " << k;
      w.add_sequence(std::span<const double>(got));
    }
    w.end_document();
  }
  w.finish();
  EXPECT_EQ(file_bytes(ours + ".idx"), file_bytes(prefix + ".idx"));
  EXPECT_EQ(file_bytes(ours + ".bin"), file_bytes(prefix + ".bin"));
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, MegatronCompat,
                         ::testing::Values("uint8", "int8", "int16", "int32", "int64", "float64",
                                           "float32", "uint16"));

class BadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = dir_ / "ds";
    IndexedDatasetWriter w(prefix_, TokenDType::u16);
    w.add_document(std::vector<int32_t>{1, 2, 3, 4});
    w.add_document(std::vector<int32_t>{5, 6});
    w.finish();
    idx_ = file_bytes(prefix_ + ".idx");
    bin_ = file_bytes(prefix_ + ".bin");
  }
  TempDir dir_{"bad"};
  std::string prefix_;
  std::vector<char> idx_, bin_;
};

TEST_F(BadFiles, MissingFiles) {
  std::filesystem::remove(prefix_ + ".bin");
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".bin", "does not exist");
  std::filesystem::remove(prefix_ + ".idx");
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "does not exist");
}

TEST_F(BadFiles, TruncatedIndex) {
  write_bytes(prefix_ + ".idx", std::vector<char>(idx_.begin(), idx_.begin() + 20));
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "truncated");
  write_bytes(prefix_ + ".idx", std::vector<char>(idx_.begin(), idx_.end() - 8));
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "truncated");
}

TEST_F(BadFiles, TruncatedData) {
  write_bytes(prefix_ + ".bin", std::vector<char>(bin_.begin(), bin_.end() - 2));
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "runs past the end");
}

TEST_F(BadFiles, WrongMagicVersionDtype) {
  auto bad = idx_;
  bad[0] = 'X';
  write_bytes(prefix_ + ".idx", bad);
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "magic");
  bad = idx_;
  bad[9] = 2;
  write_bytes(prefix_ + ".idx", bad);
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "version 2");
  bad = idx_;
  bad[17] = 9;
  write_bytes(prefix_ + ".idx", bad);
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "dtype code 9");
}

TEST_F(BadFiles, PointerPastTheData) {
  auto bad = idx_;
  int64_t pointer = 1000;  // second sequence's pointer: header 34 + lengths 8 + first pointer 8
  std::memcpy(bad.data() + 34 + 8 + 8, &pointer, 8);
  write_bytes(prefix_ + ".idx", bad);
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "sequence 1");
}

TEST_F(BadFiles, DocumentIndexNotEndingAtTheSequenceCount) {
  auto bad = idx_;
  int64_t last = 5;
  std::memcpy(bad.data() + bad.size() - 8, &last, 8);
  write_bytes(prefix_ + ".idx", bad);
  expect_error([&] { IndexedDataset ds(prefix_); }, prefix_ + ".idx", "document index ends");
}

}  // namespace
}  // namespace origami
