// defines: BalanceMode, parse_balance_mode(), balance_mode_name(), BalanceLoss, router_z_loss()
// Auxiliary router losses of one MoE layer (../shared/reference/algorithms.md §1, §4). Balance:
// L = E * sum_i f_i P_i with f detached and P_i the mean full-softmax probability, 1 at perfect
// balance; the modes differ only in which tokens f and P are taken over (see BalanceMode). z-loss
// (ST-MoE): Z = mean_t logsumexp(z_t)^2. Each adds the unscaled value to a backend accumulator
// and overwrites the gradient of grad_scale * value into the backend buffer given (dprobs
// [N,E] / dlse [N]); the arithmetic runs on the backend (Backend::balance_loss, router_z_loss).
// global_batch keeps a per-step running sum of counts: activation recomputation (checkpointing)
// must NOT call forward() a second time for the same micro-batch, or its counts enter f twice.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "tensor/tensor.h"

namespace origami {

enum class BalanceMode {
  none,          // no balance loss
  micro_batch,   // f, P over this rank's micro-batch (Switch/GShard, Megatron aux_loss)
  sequence,      // f, P per sequence, averaged over sequences (DeepSeek-V2/V3)
  global_batch,  // f over the sync group and all micro-batches so far this step (Qwen); P local
};

// The config spelling (moe.router.load_balance); throws Error naming the allowed values.
BalanceMode parse_balance_mode(const std::string& name);
const char* balance_mode_name(BalanceMode mode);

// A pipeline stage re-running micro-batch `micro_batch` of this step in its backward:
// global_batch mode then takes f as it was after that micro-batch (no collective, nothing added
// to the running sums); the other modes recompute f from the micro-batch itself.
struct BalanceReplay {
  bool replay = false;
  int micro_batch = 0;
};

class BalanceLoss {
 public:
  // E experts, k slots per token (the columns of idx). sync: the ranks whose tokens are balanced
  // together in global_batch mode (the pipeline stage's data x context x tensor group); required
  // there, unused otherwise. share_of_routed: f_i = c_i / sum_j c_j, each expert's share of the
  // routed slots (gating schedules, where the experts per token vary), instead of c_i / (k N);
  // the two agree when every token uses all k slots.
  // split: the ranks holding parts of the same micro-batch (tensor/sequence and context
  // parallel); in micro_batch mode f is taken over the whole micro-batch (counts summed over
  // them) and P over this rank's part, so the mean of the parts' losses is the whole
  // micro-batch's loss. Null = this rank holds whole micro-batches.
  BalanceLoss(BalanceMode mode, int64_t E, int64_t k, const Communicator* sync,
              bool share_of_routed = false, const Communicator* split = nullptr);

  // Sequence mode when this rank holds parts of sequences (split over tensor/context-parallel
  // ranks): row_sequence[r] is the sequence (0..B-1) of row r, S the full sequence length. f per
  // sequence is taken over the whole sequence (counts summed over `split`), P over this rank's
  // rows of it, and the value is scaled so that the mean over the split's ranks is the loss of
  // the whole micro-batch.
  void set_row_sequences(std::vector<int32_t> row_sequence, int64_t B, int64_t S);

  // Starts a new optimizer step: empties the global_batch running sum. Call before the first
  // micro-batch of every step (and of every evaluation pass).
  void begin_step();

  // One micro-batch of N = B*S tokens (B sequences of S) on this rank.
  //   counts [E] host: (token, slot) assignments per expert, i.e. the slots of idx >= 0;
  //   counts_dev [E] backend: the same counts on the device (the dispatcher's), or null (they
  //     are then copied there: capacity mode, where the router's choice is counted on the host);
  //   idx [N,k] backend: expert of each slot, -1 = dropped (read in sequence mode only, where
  //     it must add up to counts);
  //   probs [N,E] backend: full softmax scores.
  // Adds this rank's unscaled loss to *loss (one double in backend memory) and overwrites
  // dprobs [N,E] (backend) with d(grad_scale * value)/dprobs; f is treated as a constant. The
  // arithmetic is the backend's balance_loss op: nothing is copied to the host, except where a
  // collective needs the counts (global_batch mode, split micro-batches: host communicators).
  // In global_batch mode this is a collective over `sync`: every member must call it once per
  // micro-batch, in the same order.
  // replay: see BalanceReplay.
  void forward(Backend& be, const int64_t* counts, const int64_t* counts_dev, const int32_t* idx,
               const float* probs, int64_t B, int64_t S, float grad_scale, double* loss,
               float* dprobs, BalanceReplay replay = {});

  BalanceMode mode() const { return mode_; }
  // f used by the last forward(): [E], or [B,E] (one row per sequence) in sequence mode; empty
  // in none mode. Sums to 1 per row when no slot was dropped. For tests and tools: in sequence
  // mode it reads the per-sequence counts back from the backend.
  std::vector<double> last_f() const;
  // global_batch running state: summed counts over sync and micro-batches, and their number.
  const std::vector<int64_t>& step_counts() const { return step_counts_; }
  int64_t step_micro_batches() const { return step_micro_batches_; }

 private:
  // Uploads host counts [n] into counts_buf_ (the collective paths); returns the device pointer.
  const int64_t* upload(Backend& be, const std::vector<int64_t>& counts);
  // Per-sequence counts [B,E] of idx into seq_counts_ (backend); summed over `split` when rows
  // are parts of sequences (through the host, the collective's cost).
  const int64_t* sequence_counts(Backend& be, const int32_t* idx, int64_t N, int64_t B);

  BalanceMode mode_;
  int64_t E_, k_;
  const Communicator* sync_;
  bool share_of_routed_;
  const Communicator* split_;
  std::vector<int64_t> step_counts_;  // [E] sum over sync ranks and this step's micro-batches
  int64_t step_tokens_ = 0;           // tokens of the sync group summed likewise
  int64_t step_micro_batches_ = 0;
  // global_batch: the running sums after each micro-batch of this step, [micro-batch] ->
  // (counts [E], tokens), for replays.
  std::vector<std::pair<std::vector<int64_t>, int64_t>> step_history_;
  // What last_f() is computed from: host counts [B,E] and their denominator rule.
  std::vector<int64_t> f_counts_;
  int64_t f_blocks_ = 0;
  double f_slots_ = 0.0;
  Backend* f_backend_ = nullptr;      // sequence mode: f_counts_ are read back from seq_counts_
  TensorOf<int64_t> counts_buf_, seq_counts_;
  std::vector<int32_t> row_sequence_;  // set_row_sequences()
  IndexTensor row_sequence_dev_;       // its backend copy, made at the first forward
  int64_t rows_B_ = 0, rows_S_ = 0;
};

// Router z-loss of one micro-batch: adds mean_t lse^2 to *loss (backend double) and overwrites
// dlse [N] with d(grad_scale * value)/dlse.
void router_z_loss(Backend& be, const float* lse, int64_t N, float grad_scale, double* loss,
                   float* dlse);

}  // namespace origami
