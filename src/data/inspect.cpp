// inspect(): header figures from the index, then decoded documents and samples. Samples come
// from the same GptDataset the trainer uses (one split holding every document, one epoch).
#include "data/inspect.h"

#include <algorithm>
#include <fmt/format.h>
#include <memory>

#include "base/error.h"
#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer.h"

namespace origami {
namespace {

void print_tokens(std::ostream& out, const std::vector<int32_t>& ids, const Tokenizer* tok,
                  const InspectOptions& opts) {
  if (opts.show_ids || !tok) {  // --ids prints every id (scripts compare them); else a preview
    const size_t shown = opts.show_ids ? ids.size() : std::min<size_t>(ids.size(), 64);
    out << "  ids:";
    for (size_t k = 0; k < shown; ++k) out << ' ' << ids[k];
    if (ids.size() > shown) out << " ...";
    out << '\n';
  }
  if (tok) {
    std::string text = tok->decode(ids);
    if (int64_t(text.size()) > opts.max_chars) text = text.substr(0, size_t(opts.max_chars)) + " [...]";
    out << "  text: " << text << '\n';
  }
}

}  // namespace

void inspect(const InspectOptions& opts, std::ostream& out) {
  IndexedDataset ds(opts.prefix);
  std::unique_ptr<Tokenizer> tok;
  if (opts.tokenizer.kind == "byte" || !opts.tokenizer.model.empty()) tok = make_tokenizer(opts.tokenizer);
  int64_t longest = 0;
  for (int64_t i = 0; i < ds.num_sequences(); ++i) longest = std::max<int64_t>(longest, ds.sequence_length(i));
  out << fmt::format("dataset    {}\n", opts.prefix);
  out << fmt::format("dtype      {} (code {})\n", dtype_name(ds.dtype()), int(ds.dtype()));
  out << fmt::format("documents  {}\nsequences  {}\ntokens     {}\n", ds.num_documents(),
                     ds.num_sequences(), ds.total_tokens());
  out << fmt::format("mean/max sequence length  {:.1f} / {}\n",
                     ds.num_sequences() ? double(ds.total_tokens()) / double(ds.num_sequences()) : 0.0,
                     longest);
  for (int64_t d = 0; d < std::min(opts.documents, ds.num_documents()); ++d) {
    out << fmt::format("document {} ({} sequences):\n", d, ds.document_index(d + 1) - ds.document_index(d));
    for (int64_t s = ds.document_index(d); s < ds.document_index(d + 1); ++s) {
      print_tokens(out, ds.sequence<int32_t>(s), tok.get(), opts);
    }
  }
  if (opts.samples > 0) {
    check(opts.seq_length > 0, "inspect --samples needs --seq-length");
    auto shared = std::make_shared<IndexedDataset>(opts.prefix);
    GptIndexParams params;
    params.seq_length = opts.seq_length;
    params.seed = opts.seed;
    params.num_samples = opts.samples;
    params.split_begin = 0;
    params.split_end = ds.num_sequences();
    GptDataset gpt(shared, params, "", /*build=*/true);
    out << fmt::format("GPT samples: {} of length {}+1 (seed {})\n", gpt.size(), opts.seq_length,
                       opts.seed);
    std::vector<int32_t> buf(static_cast<size_t>(opts.seq_length + 1));
    for (int64_t i = 0; i < std::min(opts.samples, gpt.size()); ++i) {
      gpt.get(i, buf);
      out << fmt::format("sample {}:\n", i);
      print_tokens(out, buf, tok.get(), opts);
    }
  }
}

}  // namespace origami
