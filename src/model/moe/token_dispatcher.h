// defines: DispatchPlan, TokenDispatcher
// Moves each (token, slot) to the rank and the expert that computes it, and the results back.
//   dispatch: counting sort by expert (local) -> exchange per-expert counts over EP -> all-to-all(v)
//             of rows over EP -> all-gather(v) over ETP -> sort rows by local expert
//   combine:  unsort -> reduce-scatter(v) over ETP (fc2 partial sums) -> all-to-all(v) back over EP
//             -> out[t] = sum_s w[t,s] y[t,s]
// Backward runs each step's adjoint in reverse (all-to-all <-> all-to-all, all-gather <->
// reduce-scatter). With EP = ETP = 1 no exchange happens and the sort is the identity.
// Dropped slots (capacity mode) carry expert -1 and produce 0; with pad_to_capacity every
// (rank, expert) block is padded to C rows (zeros) so expert GEMMs have static shapes.
// Everything dispatch() decides lives in a DispatchPlan that the caller keeps and hands to
// combine and the backward passes; the dispatcher itself holds only reusable row buffers.
#pragma once
#include <utility>
#include <vector>

#include "model/model_context.h"
#include "model/moe/expert_rows.h"
#include "tensor/tensor.h"

namespace origami {

// Where the rows of each expert are computed. Expert parallelism: over the EP group, expert e on
// EP rank e / (E / EP) for every source. FSSDP: over its owner group, per source rank and expert
// from the iteration's placement (fssdp_placement.h), each (source, expert) block whole.
struct ExpertRoute {
  const Communicator* group = nullptr;  // the ranks rows travel between; null: this rank alone
  std::vector<int> dest;                // [group size * E]: rank computing source s's rows of e
  std::vector<int64_t> resident;        // the experts this rank computes, ascending
  int dest_of(int source, int64_t e, int64_t E) const { return dest[size_t(source * E + e)]; }
};

// One micro-batch's routing as the exchange sees it. Host vectors are row counts (not elements);
// the index tensors are backend memory. dispatch() overwrites a plan and reuses its buffers.
struct DispatchPlan {
  std::vector<int64_t> routed_counts;  // [E] this rank's (token, slot)s per global expert
  TensorOf<int64_t> routed_counts_dev;  // the same [E], in backend memory (the balance loss's)
  std::vector<int64_t> expert_counts;  // [resident] rows per computed expert in expert_input()
  int64_t local_rows = 0;   // rows of this rank's permuted buffer (capacity padding included)
  int64_t rows = 0;         // rows of expert_input(): what this rank's experts compute
  bool exchanges = false;   // EP or ETP > 1: rows travel between ranks
  const ExpertRoute* route = nullptr;  // the route dispatch() used (outlives the plan's use)
  // The all-to-all over the route's group, per rank: rows this rank sends / receives, and their
  // offsets (sends grouped by destination, then expert).
  std::vector<int64_t> send_rows, send_displs, recv_rows, recv_displs;
  int64_t recv_total = 0;
  // The ETP all-gather, per ETP peer: rows each peer received, and their offsets.
  std::vector<int64_t> etp_rows, etp_displs;
  IndexTensor row;       // [N,k]: (token, slot) -> row of the permuted buffer, -1 = unrouted
  IndexTensor sort_row;  // [rows]: gathered row -> row grouped by local expert (exchanges only)
};

class TokenDispatcher {
 public:
  explicit TokenDispatcher(ModelContext& ctx);
  // x [N,H], experts [N,k] (global expert ids, -1 = dropped). pad_rows > 0 pads each expert's
  // local group to exactly pad_rows rows (capacity padding). Fills `plan`. route: where each
  // expert is computed (null: expert parallelism, ep_route()). The one host sync of the MoE
  // layer happens here: the expert counts shape the exchange and the expert GEMMs.
  void dispatch(const float* x, const int32_t* experts, int64_t pad_rows, DispatchPlan& plan,
                const ExpertRoute* route = nullptr);
  // Expert parallelism's route: this EP rank computes its E / EP experts for every source.
  const ExpertRoute& ep_route() const { return ep_route_; }
  // Bytes this rank sent to other ranks in the all-to-alls since the last call (dispatch and
  // combine, forward and backward): the exchange volume the FSSDP metrics compare.
  int64_t take_bytes_sent() { return std::exchange(bytes_sent_, 0); }
  // Rows for this rank's local experts, grouped by expert: [plan.rows, H] with
  // plan.expert_counts. Valid until the next dispatch().
  const float* expert_input(const DispatchPlan& plan) const;

  // y [plan.rows, H] expert outputs (partial over ETP) -> out [N,H]. With an exchange the
  // outputs are returned to their ranks into a buffer of the dispatcher's, kept for
  // combine_backward.
  void combine(const DispatchPlan& plan, const float* y, const float* weights, float* out);
  // dout [N,H] -> dy [plan.rows, H] (grad of the expert outputs) and dweights [N,k]. y: the
  // expert outputs given to combine() for this plan.
  void combine_backward(const DispatchPlan& plan, const float* dout, const float* y,
                        const float* weights, float* dy, float* dweights);
  // dx_experts [plan.rows, H] (grad of expert_input(), partial over ETP) -> dx [N,H]
  // (overwritten).
  void dispatch_backward(const DispatchPlan& plan, const float* dx_experts, float* dx);
  // Allocates the row buffers now for `rows` (moe.dropless_reserve); they still grow if a
  // micro-batch needs more. `exchanges`: rows will travel (the exchange's buffers too).
  void reserve(const ExpertRows& rows, bool exchanges);

 private:
  // local_perm rows -> all-to-all over EP -> all-gather over ETP -> sorted by local expert.
  void exchange_forward(const DispatchPlan& plan, const float* local_perm, float* sorted);
  void exchange_backward(const DispatchPlan& plan, const float* sorted, float* local_perm);
  // rows [plan.rows, H] (partial over ETP) in this rank's permuted order: rows itself without
  // an exchange, else reduced and returned over ETP / EP into buf.
  const float* to_local(const DispatchPlan& plan, const float* rows, Tensor& buf);
  // Row counts -> element counts of H-wide rows, for the v-collectives.
  std::vector<int64_t> elements(const std::vector<int64_t>& rows) const;

  // Rows of `rows` sent to other ranks of the route's group (this rank's own block excluded).
  int64_t remote_rows(const DispatchPlan& plan, const std::vector<int64_t>& rows) const;

  ModelContext& ctx_;
  int64_t H_, E_, k_;
  ExpertRoute ep_route_;
  int64_t bytes_sent_ = 0;
  Tensor permuted_;  // [local_rows, H] this rank's rows, expert-major
  Tensor y_local_;   // expert outputs back in this rank's permuted order (exchanges only)
  Tensor recv_, gathered_, sorted_, scratch_;
};

}  // namespace origami
