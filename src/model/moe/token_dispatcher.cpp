#include "model/moe/token_dispatcher.h"

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
  E_local_ = E_ / ctx.ep_size();
  const int64_t N = ctx.local_tokens();
  counts_dev_ = TensorOf<int64_t>::zeros(ctx.backend, {E_});
  row_ = IndexTensor::zeros(ctx.backend, {N, k_});
  counts_.assign(size_t(E_), 0);
}

void TokenDispatcher::dispatch(const float* x, const int32_t* experts, int64_t pad_rows) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  // 1. Local counting sort by expert. The host needs the group sizes to shape the exchange and
  //    the experts' GEMMs (as Megatron's grouped GEMM does).
  be.moe_permute_indices(experts, N, k_, E_, counts_dev_.data(), row_.data());
  be.copy_to_host(counts_.data(), counts_dev_.data(), size_t(E_) * sizeof(int64_t));
  std::vector<int64_t> block = counts_;  // rows per expert in permuted_
  if (pad_rows > 0) {
    // Capacity padding: expert e's rows move to [e C, e C + count_e); the rest stay zero.
    std::vector<int32_t> row(size_t(N * k_));
    be.copy_to_host(row.data(), row_.data(), row.size() * sizeof(int32_t));
    const auto start = prefix(counts_);
    std::vector<int32_t> ids(size_t(N * k_));
    be.copy_to_host(ids.data(), experts, ids.size() * sizeof(int32_t));
    for (size_t i = 0; i < row.size(); ++i)
      if (row[i] >= 0) {
        check(counts_[size_t(ids[i])] <= pad_rows, "capacity padding: expert {} has {} rows > C = {}",
              ids[i], counts_[size_t(ids[i])], pad_rows);
        row[i] = int32_t(ids[i] * pad_rows + (row[i] - start[size_t(ids[i])]));
      }
    be.copy_from_host(row_.data(), row.data(), row.size() * sizeof(int32_t));
    block.assign(size_t(E_), pad_rows);
  }
  local_rows_ = total(block);
  grow_rows(be, permuted_, local_rows_, H_);
  if (pad_rows > 0) be.fill(permuted_.data(), 0.f, local_rows_ * H_);
  be.moe_permute(x, row_.data(), permuted_.data(), N, k_, H_);

  if (!exchanges()) {
    local_counts_ = block;
    sorted_rows_ = local_rows_;
    return;
  }
  // 2. Exchange per-expert counts over EP: block[e] for the experts each EP rank owns.
  const Communicator& ep = *ctx_.groups.ep;
  const Communicator& etp = *ctx_.groups.etp;
  const int EP = ep.size(), ETP = etp.size();
  std::vector<int64_t> recv_counts(size_t(EP * E_local_));  // [src][local expert]
  ep.alltoall(block.data(), recv_counts.data(), E_local_, CommDType::i64);
  send_rows_.assign(size_t(EP), 0);
  recv_rows_.assign(size_t(EP), 0);
  for (int r = 0; r < EP; ++r)
    for (int64_t e = 0; e < E_local_; ++e) {
      send_rows_[size_t(r)] += block[size_t(r * E_local_ + e)];
      recv_rows_[size_t(r)] += recv_counts[size_t(r * E_local_ + e)];
    }
  send_displs_ = prefix(send_rows_);
  recv_displs_ = prefix(recv_rows_);
  recv_total_ = total(recv_rows_);
  // 3. The ETP peers share their received counts: rows arrive grouped (peer, src, expert).
  std::vector<int64_t> all_counts(size_t(ETP * EP * E_local_));
  etp.allgather(recv_counts.data(), all_counts.data(), EP * E_local_, CommDType::i64);
  etp_rows_.assign(size_t(ETP), 0);
  local_counts_.assign(size_t(E_local_), 0);
  for (int p = 0; p < ETP; ++p)
    for (int64_t i = 0; i < EP * E_local_; ++i) {
      etp_rows_[size_t(p)] += all_counts[size_t(p * EP * E_local_ + i)];
      local_counts_[size_t(i % E_local_)] += all_counts[size_t(p * EP * E_local_ + i)];
    }
  etp_displs_ = prefix(etp_rows_);
  gathered_rows_ = sorted_rows_ = total(etp_rows_);
  // 4. Where each gathered row goes when grouped by local expert (peers, then sources, in order).
  std::vector<int32_t> dest(static_cast<size_t>(gathered_rows_));
  std::vector<int64_t> next = prefix(local_counts_);
  int64_t g = 0;
  for (int p = 0; p < ETP; ++p)
    for (int src = 0; src < EP; ++src)
      for (int64_t e = 0; e < E_local_; ++e)
        for (int64_t j = 0; j < all_counts[size_t((p * EP + src) * E_local_ + e)]; ++j)
          dest[size_t(g++)] = int32_t(next[size_t(e)]++);
  grow_rows(be, sort_row_, gathered_rows_, 1);
  be.copy_from_host(sort_row_.data(), dest.data(), dest.size() * sizeof(int32_t));
  exchange_forward(permuted_.data(), nullptr);
}

// local_perm rows -> all-to-all over EP -> all-gather over ETP -> sorted by local expert.
void TokenDispatcher::exchange_forward(const float* local_perm, float* sorted) {
  auto& be = ctx_.backend;
  grow_rows(be, recv_, recv_total_, H_);
  grow_rows(be, gathered_, gathered_rows_, H_);
  grow_rows(be, sorted_, sorted_rows_, H_);
  auto scaled = [&](const std::vector<int64_t>& v) {
    std::vector<int64_t> out(v);
    for (auto& x : out) x *= H_;
    return out;
  };
  ctx_.groups.ep->alltoallv(local_perm, scaled(send_rows_), scaled(send_displs_), recv_.data(),
                            scaled(recv_rows_), scaled(recv_displs_), CommDType::f32);
  ctx_.groups.etp->allgatherv(recv_.data(), recv_total_ * H_, gathered_.data(), scaled(etp_rows_),
                              scaled(etp_displs_), CommDType::f32);
  be.moe_permute(gathered_.data(), sort_row_.data(), sorted ? sorted : sorted_.data(),
                 gathered_rows_, 1, H_);
}

// The adjoint path: sorted -> gathered order -> reduce-scatter over ETP (the rows hold partial
// sums over the ETP slices) -> all-to-all back over EP -> this rank's permuted order.
void TokenDispatcher::exchange_backward(const float* sorted, float* local_perm) {
  auto& be = ctx_.backend;
  be.moe_permute_backward(sorted, sort_row_.data(), gathered_.data(), gathered_rows_, 1, H_);
  std::vector<int64_t> rows_h(etp_rows_);
  for (auto& x : rows_h) x *= H_;
  ctx_.groups.etp->reduce_scatterv(gathered_.data(), recv_.data(), rows_h, CommDType::f32,
                                   ReduceOp::sum);
  auto scaled = [&](const std::vector<int64_t>& v) {
    std::vector<int64_t> out(v);
    for (auto& x : out) x *= H_;
    return out;
  };
  ctx_.groups.ep->alltoallv(recv_.data(), scaled(recv_rows_), scaled(recv_displs_), local_perm,
                            scaled(send_rows_), scaled(send_displs_), CommDType::f32);
}

const float* TokenDispatcher::expert_input() const {
  return exchanges() ? sorted_.data() : permuted_.data();
}

void TokenDispatcher::combine(const float* y, const float* weights, float* out) {
  auto& be = ctx_.backend;
  y_saved_ = y;  // the caller keeps y alive until backward
  if (exchanges()) {
    // fc2 outputs are partial sums over ETP: reduce them while scattering back to each peer.
    grow_rows(be, y_local_, local_rows_, H_);
    exchange_backward(y, y_local_.data());
    y_saved_ = y_local_.data();
  }
  be.moe_unpermute(y_saved_, row_.data(), weights, out, ctx_.local_tokens(), k_, H_);
}

void TokenDispatcher::combine_backward(const float* dout, const float* weights, float* dy,
                                       float* dweights) {
  auto& be = ctx_.backend;
  grow_rows(be, scratch_, local_rows_, H_);
  float* dlocal = exchanges() ? scratch_.data() : dy;
  // Padding and dropped rows receive no gradient: clear them first.
  be.fill(dlocal, 0.f, local_rows_ * H_);
  be.moe_unpermute_backward(dout, y_saved_, row_.data(), weights, dlocal, dweights,
                            ctx_.local_tokens(), k_, H_);
  // Adjoint of (reduce-scatter over ETP, all-to-all back): all-to-all forward, all-gather.
  if (exchanges()) exchange_forward(dlocal, dy);
}

void TokenDispatcher::dispatch_backward(const float* dx_experts, float* dx) {
  auto& be = ctx_.backend;
  const float* dlocal = dx_experts;
  if (exchanges()) {
    // Each ETP rank's fc1 slice contributes a partial input gradient: sum them (adjoint of the
    // all-gather), then return rows to their owners (adjoint of the all-to-all).
    grow_rows(be, scratch_, local_rows_, H_);
    exchange_backward(dx_experts, scratch_.data());
    dlocal = scratch_.data();
  }
  be.moe_permute_backward(dlocal, row_.data(), dx, ctx_.local_tokens(), k_, H_);
}

}  // namespace origami
