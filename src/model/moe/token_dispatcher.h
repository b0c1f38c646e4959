// defines: TokenDispatcher
// Moves each (token, slot) to the rank and the expert that computes it, and the results back.
//   dispatch: counting sort by expert (local) -> exchange per-expert counts over EP -> all-to-all(v)
//             of rows over EP -> all-gather(v) over ETP -> sort rows by local expert
//   combine:  unsort -> reduce-scatter(v) over ETP (fc2 partial sums) -> all-to-all(v) back over EP
//             -> out[t] = sum_s w[t,s] y[t,s]
// Backward runs each step's adjoint in reverse (all-to-all <-> all-to-all, all-gather <->
// reduce-scatter). With EP = ETP = 1 no exchange happens and the sort is the identity.
// Dropped slots (capacity mode) carry expert -1 and produce 0; with pad_to_capacity every
// (rank, expert) block is padded to C rows (zeros) so expert GEMMs have static shapes.
#pragma once
#include <vector>

#include "model/model_context.h"
#include "tensor/tensor.h"

namespace origami {

class TokenDispatcher {
 public:
  explicit TokenDispatcher(ModelContext& ctx);
  // x [N,H], experts [N,k] (global expert ids, -1 = dropped). pad_rows > 0 pads each expert's
  // local group to exactly pad_rows rows (capacity padding).
  void dispatch(const float* x, const int32_t* experts, int64_t pad_rows = 0);
  // Rows for this rank's local experts, grouped by expert: [rows(), H] with expert_counts().
  const float* expert_input() const;
  const std::vector<int64_t>& expert_counts() const { return local_counts_; }
  int64_t rows() const { return sorted_rows_; }
  // This rank's (token, slot) assignments per global expert (before the exchange).
  const std::vector<int64_t>& routed_counts() const { return counts_; }

  // y [rows(), H] expert outputs (partial over ETP) -> out [N,H].
  void combine(const float* y, const float* weights, float* out);
  // dout [N,H] -> dy [rows(), H] (grad of the expert outputs) and dweights [N,k].
  void combine_backward(const float* dout, const float* weights, float* dy, float* dweights);
  // dx_experts [rows(), H] (grad of expert_input(), partial over ETP) -> dx [N,H] (overwritten).
  void dispatch_backward(const float* dx_experts, float* dx);

 private:
  bool exchanges() const { return ctx_.ep_size() > 1 || ctx_.etp_size() > 1; }
  // rows of this rank's tokens for EP rank r: send; rows from EP rank r: recv; per ETP peer.
  void exchange_forward(const float* local_perm, float* sorted);
  void exchange_backward(const float* sorted, float* local_perm);

  ModelContext& ctx_;
  int64_t H_, E_, k_, E_local_;
  Tensor permuted_;      // [N k (+pad), H] this rank's rows, expert-major
  Tensor y_local_;       // expert outputs back in this rank's permuted order (after exchange)
  const float* y_saved_ = nullptr;  // expert outputs in permuted order, for combine_backward
  Tensor recv_, gathered_, sorted_, scratch_;
  TensorOf<int64_t> counts_dev_;
  IndexTensor row_, sort_row_;
  std::vector<int64_t> counts_, local_counts_;
  std::vector<int64_t> send_rows_, send_displs_, recv_rows_, recv_displs_;
  std::vector<int64_t> etp_rows_, etp_displs_;
  int64_t local_rows_ = 0, recv_total_ = 0, gathered_rows_ = 0, sorted_rows_ = 0;
};

}  // namespace origami
