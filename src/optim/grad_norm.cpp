// The TP replica reduction and the layout-independent gradient norm (grad_norm.h), one
// implementation for AdamW and ZeRO-1.
#include "optim/grad_norm.h"

#include <cmath>

namespace origami {

namespace {

int size_of(const Communicator* c) { return c ? c->size() : 1; }

}  // namespace

void reduce_replica_gradients(ParamStore& store, const GradientGroups& groups) {
  Tensor tp = store.replica_grads("tp"), kv = store.replica_grads("tp_kv");
  if (size_of(groups.tp) > 1 && tp.numel() > 0)
    groups.tp->allreduce(tp.data(), tp.data(), tp.numel(), CommDType::f32, ReduceOp::sum);
  if (size_of(groups.tp_kv) > 1 && kv.numel() > 0)
    groups.tp_kv->allreduce(kv.data(), kv.data(), kv.numel(), CommDType::f32, ReduceOp::sum);
  if (size_of(groups.tied_embedding) > 1) {
    Tensor g = store.find("embedding.weight").grad;
    groups.tied_embedding->allreduce(g.data(), g.data(), g.numel(), CommDType::f32, ReduceOp::sum);
  }
  if (size_of(groups.pipeline_shared) > 1)
    for (Param& p : store.all())  // every stage declares them in the same order
      if (p.spec.pipeline_shared)
        groups.pipeline_shared->allreduce(p.grad.data(), p.grad.data(), p.grad.numel(),
                                          CommDType::f32, ReduceOp::sum);
}

double dense_norm_squared(const ParamStore& store, const GradientGroups& groups,
                          const std::function<double(int64_t, int64_t)>& sumsq) {
  const int64_t n_tp = store.replica_grads("tp").numel();
  const int64_t n_kv = store.replica_grads("tp_kv").numel();
  const int tp = size_of(groups.tp), kv = size_of(groups.tp_kv);
  // The plain dense range, without the last stage's copy of a tied embedding (the first
  // stage's counts for both).
  const int64_t plain = n_tp + n_kv, end = store.count(GradGroup::dense);
  double d = 0.0, copies_tp = 0.0, copies_kv = 0.0;
  int64_t from = plain;
  const float* base = store.grads(GradGroup::dense).data();
  for (const Param& p : store.all())
    if (p.spec.pipeline_copy) {
      const int64_t b = p.grad.data() - base;
      if (b < n_tp) {  // a TP-replicated copy (the recurrent router's cell under TP)
        copies_tp += sumsq(b, b + p.grad.numel());
        continue;
      }
      if (b < plain) {
        copies_kv += sumsq(b, b + p.grad.numel());
        continue;
      }
      d += sumsq(from, b);
      from = b + p.grad.numel();
    }
  d += sumsq(from, end);
  if (tp == 1) return d + sumsq(0, n_tp + n_kv) - copies_tp - copies_kv;
  d += (sumsq(0, n_tp) - copies_tp) / tp + (sumsq(n_tp, n_tp + n_kv) - copies_kv) / kv;
  return groups.tp->allreduce_scalar(d);
}

double global_norm(double dense_squared, double expert_squared, const GradientGroups& groups) {
  double total = dense_squared + expert_squared;
  if (size_of(groups.pp) > 1) total = groups.pp->allreduce_scalar(total);
  return std::sqrt(total);
}

double expert_norm_squared(double local, const GradientGroups& groups) {
  return size_of(groups.expert_shards) > 1 ? groups.expert_shards->allreduce_scalar(local) : local;
}

}  // namespace origami
