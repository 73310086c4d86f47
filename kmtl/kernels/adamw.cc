// kmtl's AdamW step for one variable: the global-norm clip's scaling of the gradient, AdamW's
// decoupled weight decay and TensorFlow's ResourceApplyAdam in one pass over the gradient, the
// variable and its two slots.
//
// Per element, the float operations of kmtl.optimizer's TensorFlow path (the decay
// `var -= var * rate` and the global-norm clip's `grad * scale`, each a Mul of its own, then
// `ResourceApplyAdam`, tensorflow/core/kernels/training_ops.cc), in this order:
//   g    = grad * grad_scale     (grad_scale: clip_norm / max(norm, clip_norm), or 1 without the clip)
//   var -= var * decay
//   m   += (g - m) * (1 - beta1)
//   v   += (g * g - v) * (1 - beta2)
//   var -= m * alpha / (sqrt(v) + epsilon),  alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
// Variables are locked and copied on write as TensorFlow's own training ops do them
// (training_op_helpers.h): a value read before the update keeps its figures.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/training_op_helpers.h"

namespace kmtl {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

// The inputs both ops share, in this order (read by read_slots and read_settings below).
#define KMTL_ADAMW_INPUTS            \
  Input("var: resource")             \
      .Input("m: resource")          \
      .Input("v: resource")          \
      .Input("beta1_power: float")   \
      .Input("beta2_power: float")   \
      .Input("lr: float")            \
      .Input("beta1: float")         \
      .Input("beta2: float")         \
      .Input("epsilon: float")       \
      .Input("decay: float")

REGISTER_OP("KmtlApplyAdamW")
    .KMTL_ADAMW_INPUTS
    .Input("grad: float")
    .Input("grad_scale: float")
    .SetShapeFn(tensorflow::shape_inference::NoOutputs)
    .Doc("`grad * grad_scale`, AdamW's decoupled decay and Adam's update of `var` in one pass (kmtl/kernels/adamw.cc).");

// The loop over [begin, end), compiled for AVX-512, AVX2 and plain x86-64 and picked when the
// library loads (GCC's function multi-versioning), the float operations in the order above
// (the build passes -ffp-contract=off: no fused multiply-add, TensorFlow's rounding).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void adamw_range(float* w, float* mp, float* vp, const float* g, int64_t begin, int64_t end, float grad_scale,
                        float decay, float one_minus_beta1, float one_minus_beta2, float alpha, float epsilon) {
  const bool decays = decay != 0.0f;  // no decay: var untouched by it (as without the Mul), inf included
  for (int64_t i = begin; i < end; ++i) {
    float x = w[i];
    if (decays) x -= x * decay;
    const float gi = g[i] * grad_scale;  // the clip's Mul, rounded to float as it is (x * 1 is x)
    const float mi = mp[i] + (gi - mp[i]) * one_minus_beta1;
    const float vi = vp[i] + (gi * gi - vp[i]) * one_minus_beta2;
    mp[i] = mi;
    vp[i] = vi;
    w[i] = x - (mi * alpha) / (std::sqrt(vi) + epsilon);
  }
}

using Device = Eigen::ThreadPoolDevice;

// The variable and its two slots (inputs 0-2), read as TensorFlow's training ops read them; the
// caller holds their locks (MaybeLockVariableInputMutexesInOrder).
static absl::Status read_slots(OpKernelContext* ctx, const char* op, Tensor* var, Tensor* m, Tensor* v) {
  TF_RETURN_IF_ERROR(tensorflow::GetInputTensorFromVariable<Device, float>(ctx, 0, false, false, var));
  TF_RETURN_IF_ERROR(tensorflow::GetInputTensorFromVariable<Device, float>(ctx, 1, false, false, m));
  TF_RETURN_IF_ERROR(tensorflow::GetInputTensorFromVariable<Device, float>(ctx, 2, false, false, v));
  if (!var->IsInitialized() || !m->IsInitialized() || !v->IsInitialized()) {
    return tensorflow::errors::FailedPrecondition(op, ": uninitialized variable or slot");
  }
  return absl::OkStatus();
}

// The scalars of both ops: inputs 3-9 (beta1_power ... decay) and the gradient's scale.
struct Settings {
  float alpha, decay, one_minus_beta1, one_minus_beta2, epsilon, grad_scale;
};

static absl::Status read_settings(OpKernelContext* ctx, const char* op, int grad_scale_input, Settings* out) {
  for (int i : {3, 4, 5, 6, 7, 8, 9, grad_scale_input}) {
    if (!tensorflow::TensorShapeUtils::IsScalar(ctx->input(i).shape())) {
      return tensorflow::errors::InvalidArgument(op, ": input ", i, " must be a scalar");
    }
  }
  auto scalar = [ctx](int i) { return ctx->input(i).scalar<float>()(); };
  const float beta1_power = scalar(3), beta2_power = scalar(4), lr = scalar(5), beta1 = scalar(6), beta2 = scalar(7);
  out->alpha = lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
  out->one_minus_beta1 = 1.0f - beta1;
  out->one_minus_beta2 = 1.0f - beta2;
  out->epsilon = scalar(8);
  out->decay = scalar(9);
  out->grad_scale = scalar(grad_scale_input);
  return absl::OkStatus();
}

class ApplyAdamWOp : public OpKernel {
 public:
  explicit ApplyAdamWOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    auto locks = tensorflow::MaybeLockVariableInputMutexesInOrder<Device, float>(ctx, false, false, {0, 1, 2});
    Tensor var, m, v;
    OP_REQUIRES_OK(ctx, read_slots(ctx, "KmtlApplyAdamW", &var, &m, &v));
    const Tensor& grad = ctx->input(10);
    OP_REQUIRES(ctx, var.shape().IsSameSize(m.shape()) && var.shape().IsSameSize(v.shape()) &&
                         var.shape().IsSameSize(grad.shape()),
                tensorflow::errors::InvalidArgument("KmtlApplyAdamW: var, m, v and grad differ in shape: ",
                                                    var.shape().DebugString(), " ", grad.shape().DebugString()));
    Settings k;
    OP_REQUIRES_OK(ctx, read_settings(ctx, "KmtlApplyAdamW", 11, &k));

    float* w = var.flat<float>().data();
    float* mp = m.flat<float>().data();
    float* vp = v.flat<float>().data();
    const float* g = grad.flat<float>().data();
    auto work = [=](int64_t begin, int64_t end) {
      adamw_range(w, mp, vp, g, begin, end, k.grad_scale, k.decay, k.one_minus_beta1, k.one_minus_beta2, k.alpha,
                  k.epsilon);
    };
    // cost per element in cycles, roughly: 4 loads, 3 stores, a square root and a division
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(var.NumElements(), 40, work);
  }
};

REGISTER_KERNEL_BUILDER(Name("KmtlApplyAdamW").Device(tensorflow::DEVICE_CPU), ApplyAdamWOp);

// KmtlApplyAdamWRows: the same update of a table whose gradient is given as rows (an embedding's
// gradient, its rows merged: each index once), as if those rows were scattered into a dense
// gradient of zeros: rows[k] * grad_scale where indices[k] = r, exactly 0 in the table's other
// rows (which still decay, and move with their moments, as Adam's dense update moves them). The
// same figures to the bit as the clip's multiply of the rows, their scatter and KmtlApplyAdamW
// with a scale of 1 (a row the batch did not touch gets g = 0 whatever the scale: the clip
// scales the rows before the scatter), without the dense gradient in memory.
REGISTER_OP("KmtlApplyAdamWRows")
    .KMTL_ADAMW_INPUTS
    .Input("rows: float")
    .Input("indices: Tindices")
    .Input("grad_scale: float")
    .Attr("Tindices: {int32, int64}")
    .SetShapeFn(tensorflow::shape_inference::NoOutputs)
    .Doc("KmtlApplyAdamW of a table given its gradient's rows, each index once (kmtl/kernels/adamw.cc).");

template <typename Index>
class ApplyAdamWRowsOp : public OpKernel {
 public:
  explicit ApplyAdamWRowsOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    auto locks = tensorflow::MaybeLockVariableInputMutexesInOrder<Device, float>(ctx, false, false, {0, 1, 2});
    Tensor var, m, v;
    OP_REQUIRES_OK(ctx, read_slots(ctx, "KmtlApplyAdamWRows", &var, &m, &v));
    OP_REQUIRES(ctx, var.dims() >= 1 && var.shape().IsSameSize(m.shape()) && var.shape().IsSameSize(v.shape()),
                tensorflow::errors::InvalidArgument("KmtlApplyAdamWRows: var, m and v must be one table shape, got ",
                                                    var.shape().DebugString()));
    const Tensor& rows = ctx->input(10);
    const Tensor& indices = ctx->input(11);
    tensorflow::TensorShape row_shape = var.shape();
    row_shape.RemoveDim(0);
    tensorflow::TensorShape want({indices.NumElements()});
    want.AppendShape(row_shape);
    OP_REQUIRES(ctx, indices.dims() == 1 && rows.shape().IsSameSize(want),
                tensorflow::errors::InvalidArgument("KmtlApplyAdamWRows: rows must be [len(indices)] + var.shape[1:] = ",
                                                    want.DebugString(), ", got ", rows.shape().DebugString(),
                                                    " for indices ", indices.shape().DebugString()));
    Settings k;
    OP_REQUIRES_OK(ctx, read_settings(ctx, "KmtlApplyAdamWRows", 12, &k));
    const int64_t table_rows = var.dim_size(0);
    const int64_t d = row_shape.num_elements();
    // where each table row's gradient is: its position in `rows`, or -1 (a zero gradient)
    std::vector<int64_t> position(table_rows, -1);
    const auto index = indices.flat<Index>();
    for (int64_t k = 0; k < index.size(); ++k) {
      const int64_t r = static_cast<int64_t>(index(k));
      OP_REQUIRES(ctx, r >= 0 && r < table_rows,
                  tensorflow::errors::InvalidArgument("KmtlApplyAdamWRows: index ", r, " outside the table's ",
                                                      table_rows, " rows"));
      OP_REQUIRES(ctx, position[r] < 0,
                  tensorflow::errors::InvalidArgument("KmtlApplyAdamWRows: index ", r,
                                                      " given twice; merge the rows first (each index once)"));
      position[r] = k;
    }
    float* w = var.flat<float>().data();
    float* mp = m.flat<float>().data();
    float* vp = v.flat<float>().data();
    const float* g = rows.flat<float>().data();
    const int64_t* where = position.data();
    auto work = [=](int64_t begin, int64_t end) {
      const std::vector<float> zeros(d, 0.0f);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t at = where[r];
        // a touched row: its gradient times the clip's scale; another: exactly 0 (0 * 1)
        const float* gradient = at < 0 ? zeros.data() : g + at * d;
        adamw_range(w + r * d, mp + r * d, vp + r * d, gradient, 0, d, at < 0 ? 1.0f : k.grad_scale, k.decay,
                    k.one_minus_beta1, k.one_minus_beta2, k.alpha, k.epsilon);
      }
    };
    // cost per row in cycles, roughly: as KmtlApplyAdamW's per element, d elements
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(table_rows, 40 * std::max<int64_t>(d, 1),
                                                                         work);
  }
};

REGISTER_KERNEL_BUILDER(Name("KmtlApplyAdamWRows").Device(tensorflow::DEVICE_CPU).TypeConstraint<int32_t>("Tindices"),
                        ApplyAdamWRowsOp<int32_t>);
REGISTER_KERNEL_BUILDER(Name("KmtlApplyAdamWRows").Device(tensorflow::DEVICE_CPU).TypeConstraint<int64_t>("Tindices"),
                        ApplyAdamWRowsOp<int64_t>);

}  // namespace kmtl
