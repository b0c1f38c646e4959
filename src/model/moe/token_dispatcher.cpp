// TokenDispatcher: the local counting sort, the EP / ETP exchange of rows, and their adjoints.
// All routing decisions of a micro-batch are written into the caller's DispatchPlan.
#include "model/moe/token_dispatcher.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "model/moe/gating_schedule.h"

namespace origami {

namespace {

std::vector<int64_t> prefix(const std::vector<int64_t>& counts) {
  std::vector<int64_t> displs(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) displs[i] = displs[i - 1] + counts[i - 1];
  return displs;
}

int64_t total(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

}  // namespace

TokenDispatcher::TokenDispatcher(ModelContext& ctx) : ctx_(ctx) {
  H_ = ctx.config.model.hidden_size;
  E_ = ctx.config.moe.num_experts;
  k_ = router_slots(ctx.config.moe);  // the router's columns; unused slots hold -1
  const int EP = ctx.ep_size();
  const int64_t per_rank = E_ / EP;
  ep_route_.group = ctx.groups.ep;
  ep_route_.dest.resize(size_t(EP * E_));
  for (int s = 0; s < EP; ++s)
    for (int64_t e = 0; e < E_; ++e) ep_route_.dest[size_t(s * E_ + e)] = int(e / per_rank);
  for (int64_t e = 0; e < per_rank; ++e) ep_route_.resident.push_back(ctx.ep_rank() * per_rank + e);
}

void TokenDispatcher::reserve(const ExpertRows& rows, bool exchanges) {
  auto& be = ctx_.backend;
  grow_rows(be, permuted_, rows.local, H_, ctx_.activation);
  if (!exchanges) return;
  grow_rows(be, y_local_, rows.local, H_, ctx_.activation);
  grow_rows(be, scratch_, rows.local, H_, ctx_.activation);
  grow_rows(be, recv_, rows.received, H_, ctx_.activation);
  grow_rows(be, gathered_, rows.computed, H_, ctx_.activation);
  grow_rows(be, sorted_, rows.computed, H_, ctx_.activation);
}

std::vector<int64_t> TokenDispatcher::elements(const std::vector<int64_t>& rows) const {
  std::vector<int64_t> out(rows);
  for (auto& x : out) x *= H_;
  return out;
}

int64_t TokenDispatcher::remote_rows(const DispatchPlan& plan,
                                     const std::vector<int64_t>& rows) const {
  const int me = plan.route->group ? plan.route->group->rank() : 0;
  return total(rows) - (rows.empty() ? 0 : rows[size_t(me)]);
}

void TokenDispatcher::dispatch(const float* x, const int32_t* experts, int64_t pad_rows,
                               DispatchPlan& plan, const ExpertRoute* route) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  plan.route = route ? route : &ep_route_;
  const Communicator* group = plan.route->group;
  const int G = group ? group->size() : 1, me = group ? group->rank() : 0;
  const std::vector<int64_t>& resident = plan.route->resident;
  const int64_t R = int64_t(resident.size());
  grow_rows(be, plan.row, N, k_);
  if (plan.routed_counts_dev.empty()) plan.routed_counts_dev = TensorOf<int64_t>::zeros(be, {E_});
  plan.exchanges = G > 1 || ctx_.etp_size() > 1;
  // 1. Local counting sort by expert. THE host sync of the MoE layer: the group sizes shape the
  //    exchange and the experts' GEMMs (as Megatron's grouped GEMM and its cuda_dtoh_point).
  be.moe_permute_indices(experts, N, k_, E_, plan.routed_counts_dev.data(), plan.row.data());
  plan.routed_counts.resize(size_t(E_));
  be.copy_to_host(plan.routed_counts.data(), plan.routed_counts_dev.data(),
                  size_t(E_) * sizeof(int64_t));
  std::vector<int64_t> block = plan.routed_counts;  // rows per expert in permuted_
  if (pad_rows > 0) block.assign(size_t(E_), pad_rows);
  // The send order: experts grouped by the rank computing them, ascending within (expert
  // parallelism: already expert order; FSSDP may route a later expert to an earlier rank).
  std::vector<int64_t> order(static_cast<size_t>(E_));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return plan.route->dest_of(me, a, E_) < plan.route->dest_of(me, b, E_);
  });
  const bool reordered = !std::is_sorted(order.begin(), order.end());
  if (pad_rows > 0 || reordered) {
    // Capacity padding (expert e's rows at the start of a C-row block) and FSSDP's send order
    // move each (token, slot)'s row on the host; off the default path.
    std::vector<int64_t> start_of(static_cast<size_t>(E_));
    int64_t at = 0;
    for (int64_t e : order) start_of[size_t(e)] = at, at += block[size_t(e)];
    std::vector<int32_t> row(size_t(N * k_)), ids(size_t(N * k_));
    be.copy_to_host(row.data(), plan.row.data(), row.size() * sizeof(int32_t));
    be.copy_to_host(ids.data(), experts, ids.size() * sizeof(int32_t));
    const auto sorted_start = prefix(plan.routed_counts);
    for (size_t i = 0; i < row.size(); ++i)
      if (row[i] >= 0) {
        const size_t e = size_t(ids[i]);
        check(pad_rows == 0 || plan.routed_counts[e] <= pad_rows,
              "capacity padding: expert {} has {} rows > C = {}", e, plan.routed_counts[e], pad_rows);
        row[i] = int32_t(start_of[e] + (row[i] - sorted_start[e]));
      }
    be.copy_from_host(plan.row.data(), row.data(), row.size() * sizeof(int32_t));
  }
  plan.local_rows = total(block);
  grow_rows(be, permuted_, plan.local_rows, H_, ctx_.activation);
  if (pad_rows > 0) be.fill(permuted_.data(), 0.f, plan.local_rows * H_);
  be.moe_permute(x, plan.row.data(), permuted_.data(), N, k_, H_);

  if (!plan.exchanges) {
    check(R == E_, "dispatch: this rank alone computes {} of the {} experts", R, E_);
    plan.expert_counts = block;
    plan.rows = plan.local_rows;
    return;
  }
  // 2. Every source's per-expert rows, known to all ranks of the group (G x E counts).
  const Communicator& etp = *ctx_.groups.etp;
  const int ETP = etp.size();
  std::vector<int64_t> all_block(size_t(G * E_));
  if (G > 1)
    group->allgather(block.data(), all_block.data(), E_, CommDType::i64);
  else
    all_block = block;
  std::vector<int64_t> recv_counts(size_t(G * R), 0);  // [src][resident expert]
  plan.send_rows.assign(size_t(G), 0);
  plan.recv_rows.assign(size_t(G), 0);
  for (int64_t e = 0; e < E_; ++e) plan.send_rows[size_t(plan.route->dest_of(me, e, E_))] += block[size_t(e)];
  for (int src = 0; src < G; ++src)
    for (int64_t j = 0; j < R; ++j) {
      const int64_t e = resident[size_t(j)];
      if (plan.route->dest_of(src, e, E_) != me) continue;
      recv_counts[size_t(src * R + j)] = all_block[size_t(src * E_ + e)];
      plan.recv_rows[size_t(src)] += recv_counts[size_t(src * R + j)];
    }
  plan.send_displs = prefix(plan.send_rows);
  plan.recv_displs = prefix(plan.recv_rows);
  plan.recv_total = total(plan.recv_rows);
  // 3. The ETP peers (the same resident experts) share their received counts: rows arrive
  //    grouped (peer, src, expert).
  std::vector<int64_t> all_counts(size_t(ETP * G * R));
  etp.allgather(recv_counts.data(), all_counts.data(), G * R, CommDType::i64);
  plan.etp_rows.assign(size_t(ETP), 0);
  plan.expert_counts.assign(size_t(R), 0);
  for (int p = 0; p < ETP; ++p)
    for (int64_t i = 0; i < G * R; ++i) {
      plan.etp_rows[size_t(p)] += all_counts[size_t(p * G * R + i)];
      plan.expert_counts[size_t(i % R)] += all_counts[size_t(p * G * R + i)];
    }
  plan.etp_displs = prefix(plan.etp_rows);
  plan.rows = total(plan.etp_rows);
  // 4. Where each gathered row goes when grouped by computed expert (peers, then sources, in
  //    order), so each expert's rows meet in a fixed source order whatever the placement.
  std::vector<int32_t> dest(static_cast<size_t>(plan.rows));
  std::vector<int64_t> next = prefix(plan.expert_counts);
  int64_t g = 0;
  for (int p = 0; p < ETP; ++p)
    for (int src = 0; src < G; ++src)
      for (int64_t j = 0; j < R; ++j)
        for (int64_t i = 0; i < all_counts[size_t((p * G + src) * R + j)]; ++i)
          dest[size_t(g++)] = int32_t(next[size_t(j)]++);
  grow_rows(be, plan.sort_row, plan.rows, 1);
  be.copy_from_host(plan.sort_row.data(), dest.data(), dest.size() * sizeof(int32_t));
  exchange_forward(plan, permuted_.data(), nullptr);
}

void TokenDispatcher::exchange_forward(const DispatchPlan& plan, const float* local_perm,
                                       float* sorted) {
  auto& be = ctx_.backend;
  grow_rows(be, recv_, plan.recv_total, H_, ctx_.activation);
  grow_rows(be, gathered_, plan.rows, H_, ctx_.activation);
  grow_rows(be, sorted_, plan.rows, H_, ctx_.activation);
  const Communicator& group = plan.route->group ? *plan.route->group : *ctx_.groups.ep;
  group.alltoallv(local_perm, elements(plan.send_rows), elements(plan.send_displs), recv_.data(),
                  elements(plan.recv_rows), elements(plan.recv_displs), CommDType::f32);
  bytes_sent_ += remote_rows(plan, plan.send_rows) * H_ * int64_t(sizeof(float));
  ctx_.groups.etp->allgatherv(recv_.data(), plan.recv_total * H_, gathered_.data(),
                              elements(plan.etp_rows), elements(plan.etp_displs), CommDType::f32);
  be.moe_permute(gathered_.data(), plan.sort_row.data(), sorted ? sorted : sorted_.data(),
                 plan.rows, 1, H_);
}

// The adjoint path: sorted -> gathered order -> reduce-scatter over ETP (the rows hold partial
// sums over the ETP slices) -> all-to-all back over EP -> this rank's permuted order.
void TokenDispatcher::exchange_backward(const DispatchPlan& plan, const float* sorted,
                                        float* local_perm) {
  auto& be = ctx_.backend;
  be.moe_permute_backward(sorted, plan.sort_row.data(), gathered_.data(), plan.rows, 1, H_);
  ctx_.groups.etp->reduce_scatterv(gathered_.data(), recv_.data(), elements(plan.etp_rows),
                                   CommDType::f32, ReduceOp::sum);
  be.round_stored(recv_.data(), plan.etp_rows[size_t(ctx_.etp_rank())] * H_);  // the ETP sum
  const Communicator& group = plan.route->group ? *plan.route->group : *ctx_.groups.ep;
  group.alltoallv(recv_.data(), elements(plan.recv_rows), elements(plan.recv_displs), local_perm,
                  elements(plan.send_rows), elements(plan.send_displs), CommDType::f32);
  bytes_sent_ += remote_rows(plan, plan.recv_rows) * H_ * int64_t(sizeof(float));
}

const float* TokenDispatcher::expert_input(const DispatchPlan& plan) const {
  return plan.exchanges ? sorted_.data() : permuted_.data();
}

const float* TokenDispatcher::to_local(const DispatchPlan& plan, const float* rows, Tensor& buf) {
  if (!plan.exchanges) return rows;
  grow_rows(ctx_.backend, buf, plan.local_rows, H_, ctx_.activation);
  exchange_backward(plan, rows, buf.data());
  return buf.data();
}

void TokenDispatcher::combine(const DispatchPlan& plan, const float* y, const float* weights,
                              float* out) {
  // fc2 outputs are partial sums over ETP: reduce them while scattering back to each peer.
  const float* y_perm = to_local(plan, y, y_local_);
  ctx_.backend.moe_unpermute(y_perm, plan.row.data(), weights, out, ctx_.local_tokens(), k_, H_);
}

void TokenDispatcher::combine_backward(const DispatchPlan& plan, const float* dout,
                                       const float* y, const float* weights, float* dy,
                                       float* dweights) {
  auto& be = ctx_.backend;
  // The expert outputs in this rank's permuted order: y itself, or combine()'s exchanged copy.
  const float* y_perm = plan.exchanges ? y_local_.data() : y;
  grow_rows(be, scratch_, plan.local_rows, H_, ctx_.activation);
  float* dlocal = plan.exchanges ? scratch_.data() : dy;
  // Padding and dropped rows receive no gradient: clear them first.
  be.fill(dlocal, 0.f, plan.local_rows * H_);
  be.moe_unpermute_backward(dout, y_perm, plan.row.data(), weights, dlocal, dweights,
                            ctx_.local_tokens(), k_, H_);
  // Adjoint of (reduce-scatter over ETP, all-to-all back): all-to-all forward, all-gather.
  if (plan.exchanges) exchange_forward(plan, dlocal, dy);
}

void TokenDispatcher::dispatch_backward(const DispatchPlan& plan, const float* dx_experts,
                                        float* dx) {
  // Each ETP rank's fc1 slice contributes a partial input gradient: sum them (adjoint of the
  // all-gather), then return rows to their owners (adjoint of the all-to-all).
  const float* dlocal = to_local(plan, dx_experts, scratch_);
  ctx_.backend.moe_permute_backward(dlocal, plan.row.data(), dx, ctx_.local_tokens(), k_, H_);
}

}  // namespace origami
