// The TP replica reduction and the layout-independent gradient norm (grad_norm.h), one
// implementation for AdamW and ZeRO-1.
#include "optim/grad_norm.h"

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
}

double dense_norm_squared(const ParamStore& store, const GradientGroups& groups,
                          const std::function<double(int64_t, int64_t)>& sumsq) {
  const int64_t n_tp = store.replica_grads("tp").numel();
  const int64_t n_kv = store.replica_grads("tp_kv").numel();
  const int tp = size_of(groups.tp), kv = size_of(groups.tp_kv);
  double d = sumsq(n_tp + n_kv, store.count(GradGroup::dense));
  if (tp == 1) return d + sumsq(0, n_tp + n_kv);
  d += sumsq(0, n_tp) / tp + sumsq(n_tp, n_tp + n_kv) / kv;
  return groups.tp->allreduce_scalar(d);
}

double expert_norm_squared(double local, const GradientGroups& groups) {
  return size_of(groups.expert_shards) > 1 ? groups.expert_shards->allreduce_scalar(local) : local;
}

}  // namespace origami
