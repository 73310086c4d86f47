// kmtl's layer normalization over the last axis (kmtl/layer_norm.py) as one pass forward and one
// pass backward, in place of the dozen full-size TensorFlow ops (casts, reductions, products)
// that layer_norm.py's TensorFlow path runs each way.
//
// KmtlLayerNorm(x, gamma, beta; epsilon) -> (y, mean, rstd), per row of x (its last axis, d long),
// in float32 whatever x's dtype (as the TensorFlow path: x cast to float32 first):
//   mean = Σ x / d,   rstd = 1 / sqrt(Σ (x - mean)² / d + epsilon),   x̂ = (x - mean) · rstd,
//   y = x̂ · gamma + beta   (rounded to x's dtype)
// mean and rstd (float32, x's shape without its last axis) are kept for the gradient, which
// recomputes x̂ from x: nothing full-size is kept in float32.
//
// KmtlLayerNormGrad(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta), the closed form, g = dy · gamma:
//   dx = rstd · (g - Σ g / d - x̂ · Σ (g · x̂) / d),   dgamma = Σ_rows dy · x̂,   dbeta = Σ_rows dy
// The sums over rows are made in kBlocks blocks of consecutive rows, then the blocks' partial
// sums added in block order: the same figures on any number of threads, run after run.
//
// Sums along a row run in kLanes interleaved partial sums, added pairwise at the end: a fixed
// order that GCC vectorizes without -ffast-math. So the figures are the TensorFlow path's within
// float rounding (tests/test_layer_norm.py), not to the bit: its reductions add in another order.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "rows.h"

namespace kmtl {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("KmtlLayerNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("epsilon: float")
    .Attr("T: {float, bfloat16, half}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, rows;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &rows));
      c->set_output(0, x);
      c->set_output(1, rows);
      c->set_output(2, rows);
      return absl::OkStatus();
    })
    .Doc("Layer normalization over the last axis in one pass, float32 inside (kmtl/kernels/layer_norm.cc).");

REGISTER_OP("KmtlLayerNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16, half}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    })
    .Doc("The gradient of KmtlLayerNorm in one pass over dy and x (kmtl/kernels/layer_norm.cc).");

constexpr int64_t kBlocks = 64;  // blocks of rows whose dgamma / dbeta partial sums are kept apart

// One row forward, float32: y, and the row's mean and rstd.
KMTL_CLONES static void forward_row(const float* x, const float* gamma, const float* beta, int64_t d, float epsilon,
                                    float* y, float* mean_out, float* rstd_out) {
  float lanes[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  }
  for (int j = 0; i < d; ++i, ++j) lanes[j] += x[i];
  const float mean = lanes_total(lanes) / static_cast<float>(d);
  float squares[kLanes] = {0};
  for (i = 0; i + kLanes <= d; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float c = x[i + j] - mean;
      squares[j] += c * c;
    }
  }
  for (int j = 0; i < d; ++i, ++j) {
    const float c = x[i] - mean;
    squares[j] += c * c;
  }
  const float rstd = 1.0f / std::sqrt(lanes_total(squares) / static_cast<float>(d) + epsilon);
  for (i = 0; i < d; ++i) y[i] = ((x[i] - mean) * rstd) * gamma[i] + beta[i];
  *mean_out = mean;
  *rstd_out = rstd;
}

// One row backward, float32: dx, and the row's dy · x̂ and dy added into dgamma / dbeta.
KMTL_CLONES static void backward_row(const float* dy, const float* x, const float* gamma, float mean, float rstd,
                                     int64_t d, float* dx, float* dgamma, float* dbeta) {
  float sum_g[kLanes] = {0}, sum_gx[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float xhat = (x[i + j] - mean) * rstd;
      const float g = dy[i + j] * gamma[i + j];
      sum_g[j] += g;
      sum_gx[j] += g * xhat;
      dgamma[i + j] += dy[i + j] * xhat;
      dbeta[i + j] += dy[i + j];
    }
  }
  for (int j = 0; i < d; ++i, ++j) {
    const float xhat = (x[i] - mean) * rstd;
    const float g = dy[i] * gamma[i];
    sum_g[j] += g;
    sum_gx[j] += g * xhat;
    dgamma[i] += dy[i] * xhat;
    dbeta[i] += dy[i];
  }
  const float mean_g = lanes_total(sum_g) / static_cast<float>(d);
  const float mean_gx = lanes_total(sum_gx) / static_cast<float>(d);
  for (i = 0; i < d; ++i) {
    const float xhat = (x[i] - mean) * rstd;
    dx[i] = rstd * (dy[i] * gamma[i] - mean_g - xhat * mean_gx);
  }
}

// gamma (and beta) must be [d], d the last axis of x.
static absl::Status check_gamma(const char* op, const Tensor& x, const Tensor& gamma) {
  if (x.dims() < 1) return tensorflow::errors::InvalidArgument(op, ": x must have at least one axis, got a scalar");
  if (gamma.dims() != 1 || gamma.dim_size(0) != x.dim_size(x.dims() - 1)) {
    return tensorflow::errors::InvalidArgument(op, ": gamma must be [", x.dim_size(x.dims() - 1),
                                               "] (x's last axis), got ", gamma.shape().DebugString());
  }
  return absl::OkStatus();
}

template <typename T>
class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    OP_REQUIRES_OK(ctx, check_gamma("KmtlLayerNorm", x, gamma));
    OP_REQUIRES(ctx, beta.shape().IsSameSize(gamma.shape()),
                tensorflow::errors::InvalidArgument("KmtlLayerNorm: beta must be shaped as gamma ",
                                                    gamma.shape().DebugString(), ", got ", beta.shape().DebugString()));
    tensorflow::TensorShape rows_shape = x.shape();
    rows_shape.RemoveLastDims(1);
    Tensor *y = nullptr, *mean = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, rows_shape, &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, rows_shape, &rstd));
    const int64_t d = x.dim_size(x.dims() - 1);
    const int64_t rows = rows_shape.num_elements();
    if (d == 0 || rows == 0) {
      mean->flat<float>().setZero();
      rstd->flat<float>().setConstant(1.0f / std::sqrt(epsilon_));  // an empty row: variance 0
      return;
    }
    const T* in = x.flat<T>().data();
    T* out = y->flat<T>().data();
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    float* means = mean->flat<float>().data();
    float* rstds = rstd->flat<float>().data();
    const float epsilon = epsilon_;
    auto work = [=](int64_t begin, int64_t end) {
      Rows<T> io(d);
      for (int64_t r = begin; r < end; ++r) {
        float* target = io.target(out + r * d, d);
        forward_row(io.load(in + r * d, d, io.in), g, b, d, epsilon, target, means + r, rstds + r);
        io.store(target, out + r * d, d);
      }
    };
    // cycles per row, roughly: three passes over d elements
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(rows, 4 * d, work);
  }

 private:
  float epsilon_;
};

template <typename T>
class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& mean = ctx->input(3);
    const Tensor& rstd = ctx->input(4);
    OP_REQUIRES_OK(ctx, check_gamma("KmtlLayerNormGrad", x, gamma));
    OP_REQUIRES(ctx, dy.shape().IsSameSize(x.shape()),
                tensorflow::errors::InvalidArgument("KmtlLayerNormGrad: dy and x differ in shape: ",
                                                    dy.shape().DebugString(), " ", x.shape().DebugString()));
    const int64_t d = x.dim_size(x.dims() - 1);
    const int64_t rows = d == 0 ? 0 : x.NumElements() / d;
    OP_REQUIRES(ctx, mean.NumElements() == rows && rstd.NumElements() == rows,
                tensorflow::errors::InvalidArgument("KmtlLayerNormGrad: mean and rstd must have one value per row (",
                                                    rows, "), got ", mean.NumElements(), " and ", rstd.NumElements()));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    float* dgammas = dgamma->flat<float>().data();
    float* dbetas = dbeta->flat<float>().data();
    std::fill(dgammas, dgammas + d, 0.0f);
    std::fill(dbetas, dbetas + d, 0.0f);
    if (rows == 0) return;

    const int64_t blocks = std::min(rows, kBlocks);
    const int64_t per_block = (rows + blocks - 1) / blocks;
    Tensor partial;  // [blocks, 2, d]: each block's dgamma and dbeta
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape({blocks, 2, d}), &partial));
    float* sums = partial.flat<float>().data();
    std::fill(sums, sums + blocks * 2 * d, 0.0f);
    const T* dys = dy.flat<T>().data();
    const T* xs = x.flat<T>().data();
    T* dxs = dx->flat<T>().data();
    const float* g = gamma.flat<float>().data();
    const float* means = mean.flat<float>().data();
    const float* rstds = rstd.flat<float>().data();
    auto work = [=](int64_t first_block, int64_t last_block) {
      Rows<T> io(d);
      for (int64_t block = first_block; block < last_block; ++block) {
        float* block_dgamma = sums + block * 2 * d;
        for (int64_t r = block * per_block; r < std::min(rows, (block + 1) * per_block); ++r) {
          const float* dy_row = io.load(dys + r * d, d, io.other);
          const float* x_row = io.load(xs + r * d, d, io.in);
          float* target = io.target(dxs + r * d, d);
          backward_row(dy_row, x_row, g, means[r], rstds[r], d, target, block_dgamma, block_dgamma + d);
          io.store(target, dxs + r * d, d);
        }
      }
    };
    // cycles per block, roughly: two passes over its rows
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, 6 * per_block * d, work);
    for (int64_t block = 0; block < blocks; ++block) {  // the blocks' sums in block order
      const float* block_dgamma = sums + block * 2 * d;
      for (int64_t i = 0; i < d; ++i) dgammas[i] += block_dgamma[i];
      for (int64_t i = 0; i < d; ++i) dbetas[i] += block_dgamma[d + i];
    }
  }
};

#define KMTL_REGISTER(T)                                                                               \
  REGISTER_KERNEL_BUILDER(Name("KmtlLayerNorm").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),     \
                          LayerNormOp<T>);                                                             \
  REGISTER_KERNEL_BUILDER(Name("KmtlLayerNormGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          LayerNormGradOp<T>);
KMTL_REGISTER(float)
KMTL_REGISTER(Eigen::bfloat16)
KMTL_REGISTER(Eigen::half)
#undef KMTL_REGISTER

}  // namespace kmtl
