// defines: stage_layers()
// Which decoder layers each virtual stage builds. Stages take consecutive layers in virtual
// stage order (s = chunk * PP + rank, Megatron's placement), every chunk of a rank the same
// count; the first and last rank may hold a different count (embedding, LM head). The counts must
// add up to model.num_layers exactly (Megatron once built 28 of 30 layers without a word).
#pragma once
#include <utility>
#include <vector>

namespace origami {

// [begin, end) layer range of every virtual stage, indexed by chunk * pp + rank. first / last:
// layers on the first / last pipeline rank (all its chunks together); 0 = an even share. Throws
// an Error naming model.num_layers, parallel.pipeline, parallel.virtual_pipeline and
// parallel.pipeline_first_stage_layers / parallel.pipeline_last_stage_layers when the counts do
// not add up or do not divide.
std::vector<std::pair<int, int>> stage_layers(int num_layers, int pp, int v,
                                              int first_stage_layers = 0,
                                              int last_stage_layers = 0);

}  // namespace origami
