// kmtl's dropout (kmtl/dropout.py) in one pass: the random words, the keep/drop decision and the
// scaled select, which TensorFlow runs as four ops (StatelessRandomUniformFullIntV2, GreaterEqual,
// Mul, SelectV2), each a pass over memory; and its gradient in one pass instead of two.
//
// KmtlDropout(x, seed, scale; threshold) -> (y, keep):
//   keep[j] = level(j) >= threshold,   y[j] = keep[j] ? x[j] * scale : 0
// where level(j) is the j-th 16-bit half (low half first) of the uint32 stream that
// `tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32)` draws on
// a CPU: Philox-4x32-10 (tsl/lib/random/philox_random.h), key and counter derived from the seed as
// TensorFlow's GenerateKey does (tensorflow/core/kernels/stateless_random_ops.cc; not exported by
// libtensorflow_framework, so written again below), 4 words per counter value. So the mask is
// TensorFlow's own, to the bit (tests/test_dropout.py compares them).
//
// The attribute `philox` picks the Philox loop: "auto" (AVX-512 where the CPU has it, else AVX2, else
// portable C++), or one of "avx512", "avx2", "portable" by name (an error on a CPU without it), so tests
// compare every loop the CPU can run with TensorFlow, not only the one "auto" takes.
//
// KmtlDropoutGrad(dy, keep, scale) -> dx:   dx[j] = keep[j] ? dy[j] * scale : 0
// (the gradient of the select-of-a-product above, as TensorFlow computes it).
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/random/philox_random.h"

namespace kmtl {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using Philox = tensorflow::random::PhiloxRandom;

REGISTER_OP("KmtlDropout")
    .Input("x: T")
    .Input("seed: Tseed")
    .Input("scale: T")
    .Output("y: T")
    .Output("keep: bool")
    .Attr("threshold: int")
    .Attr("philox: {'auto', 'avx512', 'avx2', 'portable'} = 'auto'")
    .Attr("T: {float, bfloat16, half}")
    .Attr("Tseed: {int32, int64}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    })
    .Doc("Dropout with TensorFlow's stateless Philox words, 16 bits per element (kmtl/kernels/dropout.cc).");

REGISTER_OP("KmtlDropoutGrad")
    .Input("dy: T")
    .Input("keep: bool")
    .Input("scale: T")
    .Output("dx: T")
    .Attr("T: {float, bfloat16, half}")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape)
    .Doc("KmtlDropout's gradient: dy * scale where kept, 0 elsewhere (kmtl/kernels/dropout.cc).");

// TensorFlow's GenerateKey: the seed's two values (int32 ones sign-extended) as the counter,
// scrambled by one Philox call into the key and the counter's high half.
static void key_and_counter(int64_t seed0, int64_t seed1, uint32_t key[2], uint32_t counter[4]) {
  const uint64_t s0 = static_cast<uint64_t>(seed0), s1 = static_cast<uint64_t>(seed1);
  Philox::ResultType seeds;
  seeds[0] = static_cast<uint32_t>(s0);
  seeds[1] = static_cast<uint32_t>(s0 >> 32);
  seeds[2] = static_cast<uint32_t>(s1);
  seeds[3] = static_cast<uint32_t>(s1 >> 32);
  Philox::Key scramble;
  scramble[0] = 0x3ec8f720u;
  scramble[1] = 0x02461e29u;
  const Philox::ResultType mix = Philox(seeds, scramble)();
  key[0] = mix[0];
  key[1] = mix[1];
  counter[0] = counter[1] = 0;
  counter[2] = mix[2];
  counter[3] = mix[3];
}

constexpr int64_t kPerBlock = 8;    // one Philox call: 4 words, 8 halves, 8 elements
constexpr int64_t kLanes = 256;      // Philox calls computed side by side (a chunk of 2,048 elements)
// Philox-4x32-10's multipliers and key increments (philox_random.h)
constexpr uint32_t kMulA = 0xD2511F53u, kMulB = 0xCD9E8D57u, kKeyStepA = 0x9E3779B9u, kKeyStepB = 0xBB67AE85u;

// c0..c3[i], i < n: the 128-bit counter plus first_block + i, as PhiloxRandom::Skip adds it.
static inline void counters_from(const uint32_t counter[4], uint64_t first_block, int64_t n, uint32_t* c0,
                                 uint32_t* c1, uint32_t* c2, uint32_t* c3) {
  const uint64_t base_lo = (static_cast<uint64_t>(counter[1]) << 32) | counter[0];
  const uint64_t base_hi = (static_cast<uint64_t>(counter[3]) << 32) | counter[2];
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t step = first_block + static_cast<uint64_t>(i);
    const uint64_t lo = base_lo + step;
    const uint64_t hi = base_hi + (lo < step ? 1 : 0);
    c0[i] = static_cast<uint32_t>(lo);
    c1[i] = static_cast<uint32_t>(lo >> 32);
    c2[i] = static_cast<uint32_t>(hi);
    c3[i] = static_cast<uint32_t>(hi >> 32);
  }
}

// words[4i .. 4i + 3] = c0..c3[i], i < n: the calls' words in stream order.
static inline void words_in_order(const uint32_t* c0, const uint32_t* c1, const uint32_t* c2, const uint32_t* c3,
                                  int64_t n, uint32_t* words) {
  for (int64_t i = 0; i < n; ++i) {
    words[4 * i] = c0[i];
    words[4 * i + 1] = c1[i];
    words[4 * i + 2] = c2[i];
    words[4 * i + 3] = c3[i];
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KMTL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KMTL_CLONES
#endif

// The words of Philox calls first_block .. first_block + blocks - 1 (blocks <= kLanes) into
// words[4 * blocks], in stream order: PhiloxRandom's operator() and Skip (philox_random.h),
// written over arrays of counters so that the compiler vectorizes the ten rounds across calls
// (TensorFlow's kernel runs one call at a time). Portable; philox_words_avx512 / _avx2 below are faster.
KMTL_CLONES static void philox_words_portable(const uint32_t key[2], const uint32_t counter[4], uint64_t first_block,
                                              int64_t blocks, uint32_t* __restrict words) {
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  counters_from(counter, first_block, blocks, c0, c1, c2, c3);
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    for (int64_t i = 0; i < blocks; ++i) {
      const uint64_t p0 = static_cast<uint64_t>(kMulA) * c0[i];
      const uint64_t p1 = static_cast<uint64_t>(kMulB) * c2[i];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[i] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[i] ^ k1;
      c1[i] = static_cast<uint32_t>(p1);
      c3[i] = static_cast<uint32_t>(p0);
      c0[i] = n0;
      c2[i] = n2;
    }
    k0 += kKeyStepA;
    k1 += kKeyStepB;
  }
  words_in_order(c0, c1, c2, c3, blocks, words);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KMTL_HAVE_SIMD_PHILOX 1

// The same words, 16 Philox calls at a time in AVX-512 registers (one 32-bit lane per call):
// the 32 x 32 -> 64-bit products as _mm512_mul_epu32 on the even lanes and on the odd lanes
// shifted down, their high and low halves put back in 32-bit lanes. GCC does not find this
// form itself (measured 2026-12-03, Intel(R) Xeon(R) Processor: 0.9-1.3 against 2.5-3.7 ms per
// 196,608 calls, one thread).
__attribute__((target("avx512f"))) static void philox_words_avx512(const uint32_t key[2], const uint32_t counter[4],
                                                                    uint64_t first_block, int64_t blocks,
                                                                    uint32_t* __restrict words) {
  const __m512i mul_a = _mm512_set1_epi64(kMulA), mul_b = _mm512_set1_epi64(kMulB);
  const __m512i low = _mm512_set1_epi64(0xffffffffu);
  for (int64_t g = 0; g < blocks; g += 16) {
    alignas(64) uint32_t a0[16], a1[16], a2[16], a3[16];
    counters_from(counter, first_block + static_cast<uint64_t>(g), 16, a0, a1, a2, a3);
    __m512i c0 = _mm512_load_si512(a0), c1 = _mm512_load_si512(a1);
    __m512i c2 = _mm512_load_si512(a2), c3 = _mm512_load_si512(a3);
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
      const __m512i p0_even = _mm512_mul_epu32(c0, mul_a), p0_odd = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), mul_a);
      const __m512i p1_even = _mm512_mul_epu32(c2, mul_b), p1_odd = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), mul_b);
      const __m512i hi0 = _mm512_or_si512(_mm512_srli_epi64(p0_even, 32), _mm512_andnot_si512(low, p0_odd));
      const __m512i lo0 = _mm512_or_si512(_mm512_and_si512(p0_even, low), _mm512_slli_epi64(p0_odd, 32));
      const __m512i hi1 = _mm512_or_si512(_mm512_srli_epi64(p1_even, 32), _mm512_andnot_si512(low, p1_odd));
      const __m512i lo1 = _mm512_or_si512(_mm512_and_si512(p1_even, low), _mm512_slli_epi64(p1_odd, 32));
      const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
      c0 = n0;
      c2 = n2;
      k0 += kKeyStepA;
      k1 += kKeyStepB;
    }
    _mm512_store_si512(a0, c0);
    _mm512_store_si512(a1, c1);
    _mm512_store_si512(a2, c2);
    _mm512_store_si512(a3, c3);
    words_in_order(a0, a1, a2, a3, std::min<int64_t>(blocks - g, 16), words + 4 * g);
  }
}

// The same as philox_words_avx512, 8 calls at a time in AVX2 registers, for CPUs without AVX-512
// (AMD EPYC before Zen 4): GCC's AVX2 clone of the portable loop does not find this form either.
// Written out rather than shared with the AVX-512 loop through a template: GCC inlines intrinsics
// only into functions compiled for their instruction set, and a body compiled for both could
// emit AVX-512 instructions on a CPU that has none.
__attribute__((target("avx2"))) static void philox_words_avx2(const uint32_t key[2], const uint32_t counter[4],
                                                               uint64_t first_block, int64_t blocks,
                                                               uint32_t* __restrict words) {
  const __m256i mul_a = _mm256_set1_epi64x(kMulA), mul_b = _mm256_set1_epi64x(kMulB);
  const __m256i low = _mm256_set1_epi64x(0xffffffffu);
  for (int64_t g = 0; g < blocks; g += 8) {
    alignas(32) uint32_t a0[8], a1[8], a2[8], a3[8];
    counters_from(counter, first_block + static_cast<uint64_t>(g), 8, a0, a1, a2, a3);
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a0));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a1));
    __m256i c2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a2));
    __m256i c3 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a3));
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
      const __m256i p0_even = _mm256_mul_epu32(c0, mul_a), p0_odd = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), mul_a);
      const __m256i p1_even = _mm256_mul_epu32(c2, mul_b), p1_odd = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), mul_b);
      const __m256i hi0 = _mm256_or_si256(_mm256_srli_epi64(p0_even, 32), _mm256_andnot_si256(low, p0_odd));
      const __m256i lo0 = _mm256_or_si256(_mm256_and_si256(p0_even, low), _mm256_slli_epi64(p0_odd, 32));
      const __m256i hi1 = _mm256_or_si256(_mm256_srli_epi64(p1_even, 32), _mm256_andnot_si256(low, p1_odd));
      const __m256i lo1 = _mm256_or_si256(_mm256_and_si256(p1_even, low), _mm256_slli_epi64(p1_odd, 32));
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
      c0 = n0;
      c2 = n2;
      k0 += kKeyStepA;
      k1 += kKeyStepB;
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(a0), c0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a1), c1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a2), c2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a3), c3);
    words_in_order(a0, a1, a2, a3, std::min<int64_t>(blocks - g, 8), words + 4 * g);
  }
}
#endif

enum class PhiloxLoop { kPortable, kAvx2, kAvx512 };

// The loop `philox` names, or the fastest this CPU runs for "auto"; false if it cannot run here.
static bool philox_loop(const std::string& name, PhiloxLoop* loop) {
#ifdef KMTL_HAVE_SIMD_PHILOX
  static const bool avx512 = __builtin_cpu_supports("avx512f"), avx2 = __builtin_cpu_supports("avx2");
#else
  static const bool avx512 = false, avx2 = false;
#endif
  if (name == "auto") {
    *loop = avx512 ? PhiloxLoop::kAvx512 : avx2 ? PhiloxLoop::kAvx2 : PhiloxLoop::kPortable;
    return true;
  }
  *loop = name == "avx512" ? PhiloxLoop::kAvx512 : name == "avx2" ? PhiloxLoop::kAvx2 : PhiloxLoop::kPortable;
  return *loop == PhiloxLoop::kPortable || (*loop == PhiloxLoop::kAvx2 ? avx2 : avx512);
}

static void philox_words(PhiloxLoop loop, const uint32_t key[2], const uint32_t counter[4], uint64_t first_block,
                         int64_t blocks, uint32_t* words) {
#ifdef KMTL_HAVE_SIMD_PHILOX
  if (loop == PhiloxLoop::kAvx512) return philox_words_avx512(key, counter, first_block, blocks, words);
  if (loop == PhiloxLoop::kAvx2) return philox_words_avx2(key, counter, first_block, blocks, words);
#endif
  philox_words_portable(key, counter, first_block, blocks, words);
}

// keep[j] = levels[j] >= threshold; y[j] = keep[j] ? x[j] * scale : 0 (the product computed for
// every element and selected, so that the loops vectorize; a dropped NaN or inf gives 0, as
// SelectV2 does). `keep` is written and read as bytes (bool's 0/1): GCC vectorizes no bool loads.
// The generic loops (float16) run Eigen's scalar arithmetic; float and bfloat16 have loops of
// their own, compiled for AVX-512, AVX2 and plain x86-64.
template <typename T>
struct Loops {
  static void drop(const T* x, const uint16_t* levels, int64_t n, uint16_t threshold, T scale, T* y, uint8_t* keep) {
    for (int64_t j = 0; j < n; ++j) {
      keep[j] = levels[j] >= threshold;
      y[j] = keep[j] ? static_cast<T>(x[j] * scale) : T(0.0f);
    }
  }
  static void grad(const T* dy, const uint8_t* keep, int64_t begin, int64_t end, T scale, T* dx) {
    for (int64_t j = begin; j < end; ++j) dx[j] = keep[j] ? static_cast<T>(dy[j] * scale) : T(0.0f);
  }
};

// `v` where kept, else +0: the product's bits under an all-ones or all-zeros mask (GCC does not
// vectorize a float select while floating-point traps are assumed: -ftrapping-math, its default)
static inline float kept_or_zero(float v, bool kept) {
  uint32_t u;
  __builtin_memcpy(&u, &v, 4);
  u &= 0u - static_cast<uint32_t>(kept);
  __builtin_memcpy(&v, &u, 4);
  return v;
}

KMTL_CLONES static void drop_float(const float* __restrict x, const uint16_t* __restrict levels, int64_t n,
                                   uint16_t threshold, float scale, float* __restrict y, uint8_t* __restrict keep) {
  for (int64_t j = 0; j < n; ++j) {
    const bool kept = levels[j] >= threshold;
    keep[j] = kept;
    y[j] = kept_or_zero(x[j] * scale, kept);
  }
}

// dy and dx may be one buffer (the gradient's input forwarded): no __restrict on them
KMTL_CLONES static void grad_float(const float* dy, const uint8_t* __restrict keep, int64_t begin, int64_t end,
                                   float scale, float* dx) {
  for (int64_t j = begin; j < end; ++j) dx[j] = kept_or_zero(dy[j] * scale, keep[j] != 0);
}

// bfloat16 as its bits: widened to float exactly, multiplied in float, rounded to nearest even
// (NaN to a quiet NaN of the same sign): Eigen::bfloat16's arithmetic, which TensorFlow's Mul runs.
static inline uint16_t bf16_scaled(uint16_t bits, float scale) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  f *= scale;
  __builtin_memcpy(&u, &f, 4);
  const uint16_t nan = (u >> 31) ? 0xFFC0u : 0x7FC0u;
  const uint16_t rounded = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return f != f ? nan : rounded;
}

KMTL_CLONES static void drop_bf16(const uint16_t* __restrict x, const uint16_t* __restrict levels, int64_t n,
                                  uint16_t threshold, float scale, uint16_t* __restrict y, uint8_t* __restrict keep) {
  for (int64_t j = 0; j < n; ++j) {
    const bool kept = levels[j] >= threshold;
    const uint16_t v = bf16_scaled(x[j], scale);
    keep[j] = kept;
    y[j] = kept ? v : static_cast<uint16_t>(0);
  }
}

KMTL_CLONES static void grad_bf16(const uint16_t* dy, const uint8_t* __restrict keep, int64_t begin, int64_t end,
                                  float scale, uint16_t* dx) {
  for (int64_t j = begin; j < end; ++j) {
    const uint16_t v = bf16_scaled(dy[j], scale);
    dx[j] = keep[j] ? v : static_cast<uint16_t>(0);
  }
}

template <>
struct Loops<float> {
  static void drop(const float* x, const uint16_t* levels, int64_t n, uint16_t threshold, float scale, float* y,
                   uint8_t* keep) {
    drop_float(x, levels, n, threshold, scale, y, keep);
  }
  static void grad(const float* dy, const uint8_t* keep, int64_t begin, int64_t end, float scale, float* dx) {
    grad_float(dy, keep, begin, end, scale, dx);
  }
};

template <>
struct Loops<Eigen::bfloat16> {
  using T = Eigen::bfloat16;
  static const uint16_t* bits(const T* p) { return reinterpret_cast<const uint16_t*>(p); }
  static uint16_t* bits(T* p) { return reinterpret_cast<uint16_t*>(p); }
  static void drop(const T* x, const uint16_t* levels, int64_t n, uint16_t threshold, T scale, T* y, uint8_t* keep) {
    drop_bf16(bits(x), levels, n, threshold, static_cast<float>(scale), bits(y), keep);
  }
  static void grad(const T* dy, const uint8_t* keep, int64_t begin, int64_t end, T scale, T* dx) {
    grad_bf16(bits(dy), keep, begin, end, static_cast<float>(scale), bits(dx));
  }
};

template <typename T>
class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("threshold", &threshold_));
    std::string philox;
    OP_REQUIRES_OK(context, context->GetAttr("philox", &philox));
    OP_REQUIRES(context, philox_loop(philox, &philox_),
                tensorflow::errors::InvalidArgument("KmtlDropout: philox='", philox,
                                                    "' needs instructions this CPU lacks; use 'auto'"));
    OP_REQUIRES(context, threshold_ >= 0 && threshold_ <= 65535,
                tensorflow::errors::InvalidArgument("KmtlDropout: threshold must be in [0, 65535], got ", threshold_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(1);
    const Tensor& scale_t = ctx->input(2);
    OP_REQUIRES(ctx, seed.dims() == 1 && seed.dim_size(0) == 2,
                tensorflow::errors::InvalidArgument("KmtlDropout: seed must have shape [2], got ",
                                                    seed.shape().DebugString()));
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(scale_t.shape()),
                tensorflow::errors::InvalidArgument("KmtlDropout: scale must be a scalar"));
    int64_t seed0, seed1;
    if (seed.dtype() == tensorflow::DT_INT32) {
      seed0 = seed.flat<int32_t>()(0);
      seed1 = seed.flat<int32_t>()(1);
    } else {
      seed0 = seed.flat<int64_t>()(0);
      seed1 = seed.flat<int64_t>()(1);
    }
    uint32_t key[2], counter[4];
    key_and_counter(seed0, seed1, key, counter);

    Tensor* y = nullptr;
    Tensor* keep = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &keep));
    const int64_t n = x.NumElements();
    const T* in = x.flat<T>().data();
    T* out = y->flat<T>().data();
    uint8_t* kept = reinterpret_cast<uint8_t*>(keep->flat<bool>().data());
    const T scale = scale_t.scalar<T>()();
    const uint16_t threshold = static_cast<uint16_t>(threshold_);
    const PhiloxLoop loop = philox_;
    auto work = [=](int64_t first_chunk, int64_t last_chunk) {
      uint32_t words[4 * kLanes];
      uint16_t levels[2 * 4 * kLanes];
      for (int64_t chunk = first_chunk; chunk < last_chunk; ++chunk) {
        const int64_t begin = chunk * kLanes * kPerBlock;
        const int64_t count = std::min<int64_t>(n - begin, kLanes * kPerBlock);
        const int64_t blocks = (count + kPerBlock - 1) / kPerBlock;
        philox_words(loop, key, counter, static_cast<uint64_t>(chunk * kLanes), blocks, words);
        // the words' 16-bit halves in memory order: what tf.bitcast(words, tf.uint16) gives
        std::memcpy(levels, words, sizeof(uint32_t) * 4 * blocks);
        Loops<T>::drop(in + begin, levels, count, threshold, scale, out + begin, kept + begin);
      }
    };
    const int64_t chunks = (n + kLanes * kPerBlock - 1) / (kLanes * kPerBlock);
    // cycles per chunk of 2,048 elements, roughly: 256 Philox calls vectorized, 2,048 selects
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(chunks, 6000, work);
  }

 private:
  int64_t threshold_;
  PhiloxLoop philox_;
};

template <typename T>
class DropoutGradOp : public OpKernel {
 public:
  explicit DropoutGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    const Tensor& scale_t = ctx->input(2);
    OP_REQUIRES(ctx, dy.shape().IsSameSize(keep.shape()),
                tensorflow::errors::InvalidArgument("KmtlDropoutGrad: dy and keep differ in shape: ",
                                                    dy.shape().DebugString(), " ", keep.shape().DebugString()));
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(scale_t.shape()),
                tensorflow::errors::InvalidArgument("KmtlDropoutGrad: scale must be a scalar"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    const T* in = dy.flat<T>().data();
    const uint8_t* kept = reinterpret_cast<const uint8_t*>(keep.flat<bool>().data());
    T* out = dx->flat<T>().data();
    const T scale = scale_t.scalar<T>()();
    auto work = [=](int64_t begin, int64_t end) { Loops<T>::grad(in, kept, begin, end, scale, out); };
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(dy.NumElements(), 2, work);
  }
};

#define KMTL_REGISTER(T)                                                                           \
  REGISTER_KERNEL_BUILDER(Name("KmtlDropout").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          DropoutOp<T>);                                                           \
  REGISTER_KERNEL_BUILDER(Name("KmtlDropoutGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          DropoutGradOp<T>);
KMTL_REGISTER(float)
KMTL_REGISTER(Eigen::bfloat16)
KMTL_REGISTER(Eigen::half)
#undef KMTL_REGISTER

}  // namespace kmtl
