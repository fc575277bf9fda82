// Fused CPU kernels of the channel-wise SO(2) mixing: one small matrix per (edge row, channel)
// (molsym/nn/interactions/channelwise_mixing.py compiles and calls them).
//
//   mix:        y[e, h, o, c] = sum_i W[r, o, i, c] x[e, h, i, c]   (transposed: W[r, i, o, c])
//   outer:      G[r, o, i, c] = sum_{e = q R + r, h} a[e, h, o, c] b[e, h, i, c]
//
// with e = q R + r: the directed edges' rows (D = copies x R) share the weight row r. Channels are
// the vector lanes (16 float, 8 double; the remainder one at a time), so the matrices are read
// in the layout the radial network emits them and the frames in theirs: no copy of either.
// W at strides (row, out, in) with contiguous channels; x, y, a, b, G contiguous.
#include <algorithm>
#include <cstdint>

#include "../../o3/simd.h"

namespace {

// out rows o0..o0+R-1 of one (edge, half): out[o] = sum_i w[o * wo + i * wi] in[i] (vectors).
template <typename T, int W, int R>
inline void mix_tile(const T* __restrict w, int64_t wo, int64_t wi, const T* __restrict in, int n_in, int C,
                     T* __restrict out, int o0) {
  typedef typename Vec<T, W>::type V;
  V acc[R];
  for (int t = 0; t < R; ++t) acc[t] = V{};
  for (int i = 0; i < n_in; ++i) {
    const V x = load<T, W>(in + (int64_t)i * C);
    for (int t = 0; t < R; ++t) acc[t] += load<T, W>(w + (int64_t)(o0 + t) * wo + i * wi) * x;
  }
  for (int t = 0; t < R; ++t) store<T, W>(out + (int64_t)(o0 + t) * C, acc[t]);
}

template <typename T, int W>
inline void mix_rows(const T* w, int64_t wo, int64_t wi, const T* in, int n_in, int n_out, int C, T* out) {
  int o = 0;
  for (; o + 4 <= n_out; o += 4) mix_tile<T, W, 4>(w, wo, wi, in, n_in, C, out, o);
  if (n_out - o >= 2) { mix_tile<T, W, 2>(w, wo, wi, in, n_in, C, out, o); o += 2; }
  if (o < n_out) mix_tile<T, W, 1>(w, wo, wi, in, n_in, C, out, o);
}

template <typename T, int W>
void mix(const T* w, int64_t wr, int64_t wo, int64_t wi, const T* x, T* y, int64_t D, int64_t R, int H, int n_out,
         int n_in, int C, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t item = 0; item < channel_items(D, C, W); ++item) {
    const ChannelBlock blk = channel_block(item, C, W);
    const int64_t e = blk.row;
    const T* w_r = w + (e % R) * wr + blk.c0;
    for (int h = 0; h < H; ++h) {
      const T* in = x + (e * H + h) * (int64_t)n_in * C + blk.c0;
      T* out = y + (e * H + h) * (int64_t)n_out * C + blk.c0;
      if (blk.full) mix_rows<T, W>(w_r, wo, wi, in, n_in, n_out, C, out);
      else mix_rows<T, 1>(w_r, wo, wi, in, n_in, n_out, C, out);
    }
  }
}

// G[r, o, i0..i0+R-1] for one row and channel block: sum over its edges and halves of a[o] b[i].
template <typename T, int W, int R>
inline void outer_tile(const T* __restrict a, const T* __restrict b, int64_t row, int64_t copies, int64_t stride_q,
                       int H, int n_a, int n_b, int C, int o, int i0, T* __restrict g) {
  typedef typename Vec<T, W>::type V;
  V acc[R];
  for (int t = 0; t < R; ++t) acc[t] = V{};
  for (int64_t q = 0; q < copies; ++q)
    for (int h = 0; h < H; ++h) {
      const int64_t eh = (q * stride_q + row) * H + h;
      const V x = load<T, W>(a + (eh * n_a + o) * C);
      for (int t = 0; t < R; ++t) acc[t] += x * load<T, W>(b + (eh * n_b + i0 + t) * C);
    }
  for (int t = 0; t < R; ++t) store<T, W>(g + ((row * n_a + o) * (int64_t)n_b + i0 + t) * C, acc[t]);
}

template <typename T, int W>
inline void outer_row(const T* a, const T* b, int64_t row, int64_t copies, int64_t R, int H, int n_a, int n_b, int C,
                      T* g) {
  for (int o = 0; o < n_a; ++o) {
    int i = 0;
    for (; i + 4 <= n_b; i += 4) outer_tile<T, W, 4>(a, b, row, copies, R, H, n_a, n_b, C, o, i, g);
    if (n_b - i >= 2) { outer_tile<T, W, 2>(a, b, row, copies, R, H, n_a, n_b, C, o, i, g); i += 2; }
    if (i < n_b) outer_tile<T, W, 1>(a, b, row, copies, R, H, n_a, n_b, C, o, i, g);
  }
}

template <typename T, int W>
void outer(const T* a, const T* b, T* g, int64_t D, int64_t R, int H, int n_a, int n_b, int C, int threads) {
  const int64_t copies = D / R;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t item = 0; item < channel_items(R, C, W); ++item) {
    const ChannelBlock blk = channel_block(item, C, W);
    const int c0 = blk.c0;
    if (blk.full) outer_row<T, W>(a + c0, b + c0, blk.row, copies, R, H, n_a, n_b, C, g + c0);
    else outer_row<T, 1>(a + c0, b + c0, blk.row, copies, R, H, n_a, n_b, C, g + c0);
  }
}

}  // namespace

extern "C" {
// y (D, H, n_out, C) = per (edge, half) W[r] x, x (D, H, n_in, C); W's element (r, o, i, c) at
// r * w_strides[0] + o * w_strides[1] + i * w_strides[2] + c (pass the in / out strides swapped
// for the transposed matrix). Returns 0.
int molsym_channelwise_mix(int float64, const void* w, const int64_t* w_strides, const void* x, void* y, int64_t D,
                           int64_t R, int H, int n_out, int n_in, int C, int threads) {
  if (R <= 0) return 0;  // no rows, no edges
  if (float64)
    mix<double, 8>((const double*)w, w_strides[0], w_strides[1], w_strides[2], (const double*)x, (double*)y, D, R, H,
                   n_out, n_in, C, threads);
  else
    mix<float, 16>((const float*)w, w_strides[0], w_strides[1], w_strides[2], (const float*)x, (float*)y, D, R, H,
                   n_out, n_in, C, threads);
  return 0;
}

// G (R, n_a, n_b, C) = sum over the edges q R + r and halves h of a[., h, o] b[., h, i];
// a (D, H, n_a, C), b (D, H, n_b, C). Returns 0.
int molsym_channelwise_outer(int float64, const void* a, const void* b, void* g, int64_t D, int64_t R, int H, int n_a,
                             int n_b, int C, int threads) {
  if (R <= 0) return 0;
  if (float64)
    outer<double, 8>((const double*)a, (const double*)b, (double*)g, D, R, H, n_a, n_b, C, threads);
  else
    outer<float, 16>((const float*)a, (const float*)b, (float*)g, D, R, H, n_a, n_b, C, threads);
  return 0;
}
}
