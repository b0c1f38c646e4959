# Sourced by the checkpoint CLI tests: sets `common`, the --set arguments of a tiny MoE job on
# one Brown genre (H 32, 2 layers, 4 experts, seq 32, batch 8), with caches under $work.
# Needs $src (source dir) and $work (the test's scratch dir, emptied here).
rm -rf "$work"; mkdir -p "$work"
data=$src/data/brown
common=(--set "model.hidden_size=32" --set "model.num_layers=2" --set "model.ffn_hidden_size=64"
        --set "moe.num_experts=4" --set "moe.expert_ffn_hidden_size=48"
        --set "training.micro_batch_size=2" --set "training.global_batch_size=8"
        --set "training.seq_length=32" --set "model.max_seq_length=32" --set "training.eval_interval=0"
        --set "data.blend=[{path: $data/brown_a_text_document, weight: 1}]"
        --set "data.tokenizer.model=$data/tokenizer.model" --set "data.cache_dir=$work/cache")
