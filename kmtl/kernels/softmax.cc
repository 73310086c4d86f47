// The gradient of a softmax over the last axis in one pass (kmtl/attention.py's attention
// probabilities), in place of TensorFlow's registered gradient of Softmax: Mul, Sum, Sub, Mul,
// four passes over a [batch, heads, queries, keys] tensor.
//
// KmtlSoftmaxGrad(y, dy) -> dx, per row (the last axis), y the softmax's output:
//   dx = (dy - Σ dy · y) · y
// in float32 whatever the dtype (rounded once to it), the row's sum in kLanes interleaved partial
// sums (rows.h): TensorFlow's figures within float rounding (its ops round each step to the
// dtype and sum in another order), not to the bit.
#define EIGEN_USE_THREADS

#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "rows.h"

namespace kmtl {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

REGISTER_OP("KmtlSoftmaxGrad")
    .Input("y: T")
    .Input("dy: T")
    .Output("dx: T")
    .Attr("T: {float, bfloat16, half}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    })
    .Doc("The gradient of a softmax over the last axis, (dy - sum(dy * y)) * y, in one pass (kmtl/kernels/softmax.cc).");

// One row, float32.
KMTL_CLONES static void softmax_grad_row(const float* y, const float* dy, int64_t d, float* dx) {
  float lanes[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += dy[i + j] * y[i + j];
  }
  for (int j = 0; i < d; ++i, ++j) lanes[j] += dy[i] * y[i];
  const float dot = lanes_total(lanes);
  for (i = 0; i < d; ++i) dx[i] = (dy[i] - dot) * y[i];
}

template <typename T>
class SoftmaxGradOp : public OpKernel {
 public:
  explicit SoftmaxGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& y = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES(ctx, y.dims() >= 1,
                tensorflow::errors::InvalidArgument("KmtlSoftmaxGrad: y must have at least one axis, got a scalar"));
    OP_REQUIRES(ctx, y.shape().IsSameSize(dy.shape()),
                tensorflow::errors::InvalidArgument("KmtlSoftmaxGrad: y and dy differ in shape: ",
                                                    y.shape().DebugString(), " ", dy.shape().DebugString()));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({1}, 0, dy.shape(), &dx));
    const int64_t d = y.dim_size(y.dims() - 1);
    const int64_t rows = d == 0 ? 0 : y.NumElements() / d;
    if (rows == 0) return;
    const T* ys = y.flat<T>().data();
    const T* dys = dy.flat<T>().data();
    T* dxs = dx->flat<T>().data();
    auto work = [=](int64_t begin, int64_t end) {
      Rows<T> io(d);
      for (int64_t r = begin; r < end; ++r) {
        const float* y_row = io.load(ys + r * d, d, io.in);
        const float* dy_row = io.load(dys + r * d, d, io.other);
        float* target = io.target(dxs + r * d, d);  // (dx may be dy's buffer: each row is read first)
        softmax_grad_row(y_row, dy_row, d, target);
        io.store(target, dxs + r * d, d);
      }
    };
    // cycles per row, roughly: two passes over d elements
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(rows, 4 * d, work);
  }
};

#define KMTL_REGISTER(T) \
  REGISTER_KERNEL_BUILDER(Name("KmtlSoftmaxGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), SoftmaxGradOp<T>);
KMTL_REGISTER(float)
KMTL_REGISTER(Eigen::bfloat16)
KMTL_REGISTER(Eigen::half)
#undef KMTL_REGISTER

}  // namespace kmtl
