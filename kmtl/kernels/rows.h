// Helpers shared by kmtl's row-wise kernels (layer_norm.cc, softmax.cc): rows of float32,
// bfloat16 or float16 read into float32 buffers and written back, and row sums in a fixed order.
// (kmtl/kernels/__init__.py hashes this header with each source: a change rebuilds them.)
#ifndef KMTL_KERNELS_ROWS_H_
#define KMTL_KERNELS_ROWS_H_

#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/types.h"

namespace kmtl {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KMTL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KMTL_CLONES
#endif

constexpr int kLanes = 16;  // interleaved partial sums along a row: one AVX-512 register

// The kLanes partial sums added pairwise (a fixed tree).
static inline float lanes_total(float* lanes) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

// bfloat16 rows as their bits, in loops GCC vectorizes: widened exactly (the bits shifted up),
// rounded to nearest even, NaN to a quiet NaN of the same sign: Eigen::bfloat16's conversions,
// which TensorFlow's Cast runs (dropout.cc has the same rounding, fused with its multiply).
KMTL_CLONES static void widen_bf16(const uint16_t* __restrict bits, int64_t d, float* __restrict out) {
  for (int64_t i = 0; i < d; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    __builtin_memcpy(out + i, &u, 4);
  }
}

KMTL_CLONES static void narrow_bf16(const float* __restrict values, int64_t d, uint16_t* __restrict bits) {
  for (int64_t i = 0; i < d; ++i) {
    uint32_t u;
    __builtin_memcpy(&u, values + i, 4);
    const uint16_t nan = (u >> 31) ? 0xFFC0u : 0x7FC0u;
    const uint16_t rounded = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    bits[i] = values[i] != values[i] ? nan : rounded;
  }
}

// Rows of T as float32: float rows are read and written in place, others go through buffers
// (Eigen's conversions for float16: exact widening, round to nearest even, as TensorFlow's Cast).
template <typename T>
struct Rows {
  explicit Rows(int64_t d) : in(d), out(d), other(d) {}
  const float* load(const T* row, int64_t d, std::vector<float>& buffer) {
    for (int64_t i = 0; i < d; ++i) buffer[i] = static_cast<float>(row[i]);
    return buffer.data();
  }
  float* target(T*, int64_t) { return out.data(); }
  void store(const float* values, T* row, int64_t d) {
    for (int64_t i = 0; i < d; ++i) row[i] = static_cast<T>(values[i]);
  }
  std::vector<float> in, out, other;
};

template <>
struct Rows<Eigen::bfloat16> {
  using T = Eigen::bfloat16;
  explicit Rows(int64_t d) : in(d), out(d), other(d) {}
  const float* load(const T* row, int64_t d, std::vector<float>& buffer) {
    widen_bf16(reinterpret_cast<const uint16_t*>(row), d, buffer.data());
    return buffer.data();
  }
  float* target(T*, int64_t) { return out.data(); }
  void store(const float* values, T* row, int64_t d) { narrow_bf16(values, d, reinterpret_cast<uint16_t*>(row)); }
  std::vector<float> in, out, other;
};

template <>
struct Rows<float> {
  explicit Rows(int64_t) {}
  const float* load(const float* row, int64_t, std::vector<float>&) { return row; }
  float* target(float* row, int64_t) { return row; }
  void store(const float*, float*, int64_t) {}
  std::vector<float> in, out, other;
};

}  // namespace kmtl

#endif  // KMTL_KERNELS_ROWS_H_
