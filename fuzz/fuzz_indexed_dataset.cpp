// Fuzz target: the indexed-dataset reader (src/data/indexed_dataset.cpp). The input is a
// <prefix>.idx (Megatron MMIDIDX); <prefix>.bin is fixed, 512 KiB written at start-up (larger
// than every data/brown/*.bin, so their real .idx files validate): 4 KiB of zeros, then a byte
// pattern holding NaN, infinite and out-of-range values for every dtype. An accepted dataset is read in full, the way
// training (read<int32_t>) and the inspector (sequence<int32_t>) do. Seeds: data/brown/*.idx
// (tools/fuzz.sh) and small datasets of every dtype written by IndexedDatasetWriter.
#include <vector>

#include "data/indexed_dataset.h"
#include "fuzz_common.h"

namespace fs = std::filesystem;
using namespace origami;

namespace {

constexpr size_t kBinBytes = 512 * 1024;

const std::string& prefix() {
  static const std::string p = (fuzz::scratch_dir() / "input").string();
  return p;
}

void write_seeds() {
  const fs::path dir = fuzz::scratch_dir() / "seeds";
  fs::create_directories(dir);
  for (uint8_t code = 1; code <= 8; ++code) {
    const auto dtype = TokenDType(code);
    const std::string name = "writer_" + std::string(dtype_name(dtype));
    IndexedDatasetWriter w((dir / name).string(), dtype);
    w.add_document(std::vector<int32_t>{1, 2, 3, 4, 5});
    w.add_sequence(std::vector<int32_t>{7});
    w.add_sequence(std::vector<int32_t>{});
    w.end_document();
    w.add_document(std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    w.finish();
    fuzz::copy_seed(dir / (name + ".idx"), name + ".idx");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::seed_dir()) {
    write_seeds();
    std::exit(0);
  }
  std::vector<uint8_t> bin(kBinBytes);
  // Zeros first (a valid token 0 in every dtype, so the writer seeds' small datasets are read
  // in full), then the pattern.
  for (size_t i = 4096; i < bin.size(); ++i) bin[i] = uint8_t(i * 131 + (i >> 9) * 7 + 1);
  fuzz::write_file(prefix() + ".bin", bin.data(), bin.size());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::set_input(data, size);
  fuzz::write_file(prefix() + ".idx", data, size);
  fuzz::expect_clean("IndexedDataset", [&] {
    const IndexedDataset ds(prefix());
    int64_t tokens = 0;
    std::vector<int32_t> buf;
    for (int64_t i = 0; i < ds.num_sequences(); ++i) {
      buf.resize(size_t(ds.sequence_length(i)));
      ds.read<int32_t>(i, 0, std::span<int32_t>(buf));
      tokens += int64_t(buf.size());
    }
    if (tokens != ds.total_tokens()) fuzz::finding("IndexedDataset", "total_tokens disagrees");
    for (int64_t k = 0; k + 1 <= ds.num_documents(); ++k)
      if (ds.document_index(k) > ds.document_index(k + 1))
        fuzz::finding("IndexedDataset", "accepted a decreasing document index");
  });
  return 0;
}
