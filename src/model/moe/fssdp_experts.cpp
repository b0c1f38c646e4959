// FssdpExperts: owned experts as parameters, copies as per-step workspace, and the three
// exchanges (spAG, spRS, re-sharding) as all-to-alls over the owner group.
#include "model/moe/fssdp_experts.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"
#include "comm/node_map.h"

namespace origami {

FssdpExperts::FssdpExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                           int num_layers)
    : ctx_(ctx), store_(store), group_(ctx.groups.fssdp) {
  check(group_ != nullptr, "FSSDP: the model was built without its owner group (ep_edp)");
  D_ = group_->size();
  me_ = group_->rank();
  EP_ = ctx.ep_size();
  EDP_ = D_ / EP_;
  E_ = ctx.config.moe.num_experts;
  H_ = ctx.config.model.hidden_size;
  const int64_t F = ctx.config.moe.expert_ffn_hidden_size;
  F_ = F / ctx.etp_size();
  owner_ = even_owners(E_, EP_, EDP_);
  const double std = ctx.config.model.init_std;
  for (int64_t e = 0; e < E_; ++e) {
    if (owner_[size_t(e)] != me_) continue;
    const ShardSpec shard{.dims = {{.dim = 0, .group = "ep_edp", .offset = e},
                                   {.dim = 2, .group = "etp", .offset = ctx.etp_rank() * F_}}};
    fc1_.push_back(store.declare({.name = prefix + ".fc1.weight", .global_shape = {E_, 2, F, H_},
                                  .local_shape = {1, 2, F_, H_}, .shard = shard,
                                  .grad_group = GradGroup::expert, .init_std = std}));
    fc2_.push_back(store.declare({.name = prefix + ".fc2.weight", .global_shape = {E_, H_, F},
                                  .local_shape = {1, H_, F_}, .shard = shard,
                                  .grad_group = GradGroup::expert,
                                  .init_std = std / std::sqrt(2.0 * num_layers)}));
    slot_expert_.push_back(e);
  }
  step_load_.assign(size_t(E_), 0);
  placement_ = owner_placement(D_, E_, owner_);
  set_route();
}

size_t FssdpExperts::slot_of(int64_t e) const {
  const auto it = std::find(slot_expert_.begin(), slot_expert_.end(), e);
  check(it != slot_expert_.end(), "FSSDP: expert {} is not owned by rank {}", e, me_);
  return size_t(it - slot_expert_.begin());
}

void FssdpExperts::set_route() {
  route_.group = group_;
  route_.dest = placement_.route;
  route_.resident = placement_.resident(me_);
  copy_of_.clear();
  for (int64_t e : route_.resident)
    if (owner_[size_t(e)] != me_) copy_of_.emplace(e, int64_t(copy_of_.size()));
}

std::vector<double> FssdpExperts::window_mean() const {
  std::vector<double> mean(size_t(D_) * size_t(E_), 0.0);
  for (const auto& w : window_)
    for (size_t i = 0; i < mean.size(); ++i) mean[i] += w[i];
  for (auto& x : mean) x /= double(std::max<size_t>(window_.size(), 1));
  return mean;
}

void FssdpExperts::begin_step() {
  release();
  copy_grads_ = Tensor();
  std::fill(step_load_.begin(), step_load_.end(), 0);
  const auto& f = ctx_.config.moe.fssdp;
  if (f.placement == "ep") {
    placement_ = ep_placement(E_, EP_, EDP_, owner_);
  } else if (window_.empty()) {
    placement_ = owner_placement(D_, E_, owner_);
  } else {
    if (node_of_.empty()) node_of_ = NodeMap::gather(*group_).node_of;  // collective, once
    placement_ = plan_placement({.ranks = D_, .experts = E_, .load = window_mean(),
                                 .owner = owner_, .node_of = node_of_,
                                 .max_replicas_per_rank = f.max_replicas_per_rank,
                                 .expert_bytes = double(per_expert()) * sizeof(float),
                                 .token_bytes = double(H_) * sizeof(float),
                                 .rematerialize = f.rematerialize});
  }
  set_route();
}

void FssdpExperts::exchange(const std::vector<std::vector<int64_t>>& sends,
                            const std::vector<std::vector<int64_t>>& recvs, int64_t width,
                            const std::function<void(int64_t, float*)>& pack,
                            const std::function<void(int64_t, const float*)>& unpack) {
  auto& be = ctx_.backend;
  std::vector<int64_t> sc(static_cast<size_t>(D_)), sd(static_cast<size_t>(D_)), rc(static_cast<size_t>(D_)), rd(static_cast<size_t>(D_));
  int64_t st = 0, rt = 0;
  for (int p = 0; p < D_; ++p) {
    sd[size_t(p)] = st, sc[size_t(p)] = int64_t(sends[size_t(p)].size()) * width, st += sc[size_t(p)];
    rd[size_t(p)] = rt, rc[size_t(p)] = int64_t(recvs[size_t(p)].size()) * width, rt += rc[size_t(p)];
  }
  grow_rows(be, send_, std::max<int64_t>(st, 1), 1);
  grow_rows(be, recv_, std::max<int64_t>(rt, 1), 1);
  for (int p = 0; p < D_; ++p)
    for (size_t i = 0; i < sends[size_t(p)].size(); ++i)
      pack(sends[size_t(p)][i], send_.data() + sd[size_t(p)] + int64_t(i) * width);
  // Every rank enters, with or without anything to move: no one waits on a rank with no copies.
  group_->alltoallv(send_.data(), sc, sd, recv_.data(), rc, rd, CommDType::f32);
  bytes_sent_ += st * int64_t(sizeof(float));
  for (int p = 0; p < D_; ++p)
    for (size_t i = 0; i < recvs[size_t(p)].size(); ++i)
      unpack(recvs[size_t(p)][i], recv_.data() + rd[size_t(p)] + int64_t(i) * width);
}

void FssdpExperts::materialize() {
  if (materialized_) return;
  auto& be = ctx_.backend;
  const int64_t n = int64_t(copy_of_.size()), per = per_expert();
  if (n > 0) {
    copies_ = Tensor::zeros(be, {n, per}, ctx_.activation);  // compute copies
    if (copy_grads_.empty()) copy_grads_ = Tensor::zeros(be, {n, per});
  }
  std::vector<std::vector<int64_t>> sends(static_cast<size_t>(D_)), recvs(static_cast<size_t>(D_));
  for (size_t j = 0; j < slot_expert_.size(); ++j)
    for (int p : placement_.holders[size_t(slot_expert_[j])])
      if (p != me_) sends[size_t(p)].push_back(slot_expert_[j]);
  for (auto& s : sends) std::sort(s.begin(), s.end());
  for (const auto& [e, row] : copy_of_) recvs[size_t(owner_[size_t(e)])].push_back(e);  // ascending
  const int64_t w1 = 2 * F_ * H_, w2 = H_ * F_;
  exchange(sends, recvs, per,
           [&](int64_t e, float* dst) {
             const size_t j = slot_of(e);
             be.copy(dst, store_[fc1_[j]].compute.data(), size_t(w1) * sizeof(float));
             be.copy(dst + w1, store_[fc2_[j]].compute.data(), size_t(w2) * sizeof(float));
           },
           [&](int64_t e, const float* src) {
             be.copy(copies_.data() + copy_of_.at(e) * per, src, size_t(per) * sizeof(float));
           });
  materialized_ = true;
}

void FssdpExperts::release() {
  copies_ = Tensor();
  // Rematerialising: the backward's gradients were just reduced (the forward's are still zero).
  if (ctx_.config.moe.fssdp.rematerialize) copy_grads_ = Tensor();
  materialized_ = false;
}

void FssdpExperts::reduce_copies() {
  auto& be = ctx_.backend;
  const int64_t per = per_expert(), w1 = 2 * F_ * H_;
  std::vector<std::vector<int64_t>> sends(static_cast<size_t>(D_)), recvs(static_cast<size_t>(D_));
  for (const auto& [e, row] : copy_of_) sends[size_t(owner_[size_t(e)])].push_back(e);
  for (size_t j = 0; j < slot_expert_.size(); ++j)
    for (int q : placement_.holders[size_t(slot_expert_[j])])
      if (q != me_) recvs[size_t(q)].push_back(slot_expert_[j]);
  for (auto& r : recvs) std::sort(r.begin(), r.end());
  // SUM (never average) into the owner's gradient, sources in rank order: with the EP
  // placement and two replicas this is bit for bit the EDP all-reduce's a + b.
  exchange(sends, recvs, per,
           [&](int64_t e, float* dst) {
             be.copy(dst, copy_grads_.data() + copy_of_.at(e) * per, size_t(per) * sizeof(float));
           },
           [&](int64_t e, const float* src) {
             const size_t j = slot_of(e);
             float* g1 = store_[fc1_[j]].grad.data();
             float* g2 = store_[fc2_[j]].grad.data();
             be.add(g1, src, g1, w1);
             be.add(g2, src + w1, g2, per - w1);
           });
  if (!copy_grads_.empty()) be.fill(copy_grads_.data(), 0.f, copy_grads_.numel());
}

void FssdpExperts::end_step() {
  if (!ctx_.config.moe.fssdp.rematerialize) reduce_copies();
  release();
  copy_grads_ = Tensor();
  record_loads();
}

void FssdpExperts::add_load(const std::vector<int64_t>& routed_counts) {
  for (size_t e = 0; e < step_load_.size(); ++e) step_load_[e] += routed_counts[e];
}

void FssdpExperts::record_loads() {
  std::vector<double> mat(size_t(D_) * size_t(E_), 0.0);
  for (int64_t e = 0; e < E_; ++e) mat[size_t(me_) * size_t(E_) + size_t(e)] = double(step_load_[size_t(e)]);
  // The whole stage: ETP peers at one group position add their (different) sources' rows.
  if (ctx_.groups.balance) ctx_.groups.balance->allreduce(std::span<double>(mat));
  window_.push_back(std::move(mat));
  while (int64_t(window_.size()) > ctx_.config.moe.fssdp.load_window) window_.pop_front();
}

ExpertWeights FssdpExperts::weights() {
  check(materialized_ || copy_of_.empty(), "FSSDP: expert weights read before materialize()");
  ExpertWeights w;
  const int64_t per = per_expert(), w1 = 2 * F_ * H_;
  for (int64_t e : route_.resident) {
    auto it = copy_of_.find(e);
    if (it == copy_of_.end()) {
      const size_t j = slot_of(e);
      Param& p1 = store_[fc1_[j]];
      Param& p2 = store_[fc2_[j]];
      w.fc1.push_back(p1.compute.data());
      w.fc2.push_back(p2.compute.data());
      w.dfc1.push_back(p1.grad.data());
      w.dfc2.push_back(p2.grad.data());
    } else {
      const int64_t at = it->second * per;
      w.fc1.push_back(copies_.data() + at);
      w.fc2.push_back(copies_.data() + at + w1);
      w.dfc1.push_back(copy_grads_.data() + at);
      w.dfc2.push_back(copy_grads_.data() + at + w1);
    }
  }
  return w;
}

int64_t FssdpExperts::reshard(const MomentsOf& moments) {
  if (ctx_.config.moe.fssdp.placement == "ep" || window_.empty()) return 0;
  if (node_of_.empty()) node_of_ = NodeMap::gather(*group_).node_of;
  const std::vector<int> next =
      reshard_owners(window_mean(), owner_, node_of_, placement_.replicated());
  if (next == owner_) return 0;
  auto& be = ctx_.backend;
  const int64_t per = per_expert(), w1 = 2 * F_ * H_;
  std::vector<std::vector<int64_t>> sends(static_cast<size_t>(D_)), recvs(static_cast<size_t>(D_));
  std::vector<int64_t> arriving;
  std::vector<size_t> leaving;  // owned slots whose expert moves away, ascending
  int64_t moved = 0;
  for (int64_t e = 0; e < E_; ++e) {
    const int from = owner_[size_t(e)], to = next[size_t(e)];
    if (from == to) continue;
    ++moved;
    if (from == me_) sends[size_t(to)].push_back(e);
    if (to == me_) recvs[size_t(from)].push_back(e), arriving.push_back(e);
  }
  for (size_t j = 0; j < slot_expert_.size(); ++j)
    if (next[size_t(slot_expert_[j])] != me_) leaving.push_back(j);
  check(leaving.size() == arriving.size(), "FSSDP re-shard: {} experts leave rank {} but {} arrive",
        leaving.size(), me_, arriving.size());
  auto parts = [&](size_t j) {  // value, m, v of fc1 and fc2 of slot j
    Param& p1 = store_[fc1_[j]];
    Param& p2 = store_[fc2_[j]];
    const auto [m1, v1] = moments(p1);
    const auto [m2, v2] = moments(p2);
    check(m1 && v1 && m2 && v2, "FSSDP re-shard: the optimizer holds no moments of '{}' on "
          "this rank", p1.spec.name);
    return std::array<std::pair<float*, int64_t>, 6>{{{p1.value.data(), w1}, {p2.value.data(), per - w1},
                                                       {m1, w1}, {m2, per - w1}, {v1, w1}, {v2, per - w1}}};
  };
  exchange(sends, recvs, 3 * per,
           [&](int64_t e, float* dst) {
             for (const auto& [ptr, n] : parts(slot_of(e))) {
               be.copy(dst, ptr, size_t(n) * sizeof(float));
               dst += n;
             }
           },
           [&](int64_t e, const float* src) {
             const size_t j = leaving[size_t(std::find(arriving.begin(), arriving.end(), e) - arriving.begin())];
             for (const auto& [ptr, n] : parts(j)) {
               be.copy(ptr, src, size_t(n) * sizeof(float));
               src += n;
             }
           });
  for (size_t i = 0; i < leaving.size(); ++i) {
    const size_t j = leaving[i];
    slot_expert_[j] = arriving[i];
    store_[fc1_[j]].spec.shard.dims[0].offset = arriving[i];
    store_[fc2_[j]].spec.shard.dims[0].offset = arriving[i];
  }
  owner_ = next;
  return moved;
}

std::map<std::string, std::vector<float>> FssdpExperts::buffers(const std::string& prefix) const {
  std::map<std::string, std::vector<float>> out;
  out[prefix + ".owner"] = std::vector<float>(owner_.begin(), owner_.end());
  std::vector<float> w = {float(D_), float(window_.size())};
  for (const auto& m : window_) w.insert(w.end(), m.begin(), m.end());
  out[prefix + ".load_window"] = std::move(w);
  return out;
}

void FssdpExperts::load_buffers(const std::string& prefix,
                                const std::map<std::string, std::vector<float>>& saved) {
  auto own = saved.find(prefix + ".owner");
  auto win = saved.find(prefix + ".load_window");
  if (own == saved.end() || win == saved.end() || win->second.size() < 2 ||
      int(win->second[0]) != D_ || int64_t(own->second.size()) != E_) {
    spdlog::info("{}: the checkpoint has no FSSDP plan for {} owner ranks; owners start even "
                 "and the load window empty", prefix, D_);
    return;
  }
  std::vector<int> saved_owner(own->second.begin(), own->second.end());
  std::vector<int> mine(size_t(D_), 0), theirs(size_t(D_), 0);
  for (int o : owner_) ++mine[size_t(o)];
  for (int o : saved_owner) {
    check(o >= 0 && o < D_, "checkpoint buffer '{}.owner': owner {} outside 0..{}", prefix, o, D_ - 1);
    ++theirs[size_t(o)];
  }
  if (mine != theirs) {
    spdlog::info("{}: the checkpoint's owners give other ranks other expert counts; owners start "
                 "even", prefix);
    return;
  }
  // Relabel this rank's slots before any value is loaded (load_checkpoint fills the boxes).
  size_t j = 0;
  for (int64_t e = 0; e < E_; ++e)
    if (saved_owner[size_t(e)] == me_) {
      slot_expert_[j] = e;
      store_[fc1_[j]].spec.shard.dims[0].offset = e;
      store_[fc2_[j]].spec.shard.dims[0].offset = e;
      ++j;
    }
  owner_ = saved_owner;
  const int64_t n = int64_t(win->second[1]), DE = int64_t(D_) * E_;
  check(int64_t(win->second.size()) == 2 + n * DE, "checkpoint buffer '{}.load_window' has {} "
        "values, expected 2 + {} x {}", prefix, win->second.size(), n, DE);
  window_.clear();
  for (int64_t i = 0; i < n; ++i)
    window_.emplace_back(win->second.begin() + 2 + i * DE, win->second.begin() + 2 + (i + 1) * DE);
  placement_ = owner_placement(D_, E_, owner_);
  set_route();
}

}  // namespace origami
