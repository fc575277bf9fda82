// Fused CPU kernels rotating node features into per-edge frames and back
// (molsym/o3/edge_rotation.py compiles and calls them).
//
//   into:    y[e] = R[e] x[idx[e]]                  gather fused with the rotation, per edge;
//   out of:  z[n] = sum_{e: idx[e] = n} R[e]^T f[e]  rotation fused with the sum onto nodes;
//   outer:   G[e] = A[e] B[idx[e]]^T                 the rotations' gradient of either, per edge.
//
// R (D, K, P) holds one matrix per edge (K frame rows, P node rows), x and z (N, P, C) node
// features at (node, row) strides with contiguous channels, y and f (D, K, C) contiguous. The two
// are each other's adjoint in the features. No edge-sized temporary is written: "into" reads the
// node rows in place, "out of" streams the edges in storage order and adds into the nodes' rows.
// Channels run in vectors of W (16 float, 8 double), the remainder one at a time.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

// Adds edge e's rows p0..p0+R-1 of R_e^T f_e to out: out[(p0 + r) * os] += sum_k R_e[k, p0 + r] f_e[k].
template <typename T, int W, int R>
inline void add_tile(const T* __restrict r_e, const T* __restrict f_e, int K, int P, int C, int p0, T* __restrict out,
                     int64_t os) {
  typedef typename Vec<T, W>::type V;
  V acc[R];
  for (int r = 0; r < R; ++r) acc[r] = load<T, W>(out + (int64_t)(p0 + r) * os);
  for (int k = 0; k < K; ++k) {
    const V x = load<T, W>(f_e + (int64_t)k * C);
    for (int r = 0; r < R; ++r) acc[r] += r_e[(int64_t)k * P + p0 + r] * x;
  }
  for (int r = 0; r < R; ++r) store<T, W>(out + (int64_t)(p0 + r) * os, acc[r]);
}

template <typename T, int W>
void into(const T* rot, const T* x, int64_t xn, int64_t xr, const int64_t* idx, T* y, int64_t D, int K, int P, int C,
          int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t item = 0; item < channel_items(D, C, W); ++item) {
    const ChannelBlock blk = channel_block(item, C, W);
    const int64_t e = blk.row;
    const T* in = x + idx[e] * xn + blk.c0;
    T* out = y + e * K * C + blk.c0;
    if (blk.full) contract<T, W>(K, P, in, xr, rot + e * K * P, P, 1, out, C);
    else contract<T, 1>(K, P, in, xr, rot + e * K * P, P, 1, out, C);
  }
}

// Adds R_e^T f_e of edge e, channels c0.. (one vector of W, or one channel for W = 1), to out.
template <typename T, int W>
inline void add_edge(const T* r_e, const T* f_e, int K, int P, int C, T* out, int64_t os) {
  int p = 0;
  for (; p + 8 <= P; p += 8) add_tile<T, W, 8>(r_e, f_e, K, P, C, p, out, os);
  if (P - p >= 4) { add_tile<T, W, 4>(r_e, f_e, K, P, C, p, out, os); p += 4; }
  if (P - p >= 2) { add_tile<T, W, 2>(r_e, f_e, K, P, C, p, out, os); p += 2; }
  if (p < P) add_tile<T, W, 1>(r_e, f_e, K, P, C, p, out, os);
}

// Adds R_e^T f_e of the edges e0..e1-1, in order, to their nodes' rows of z.
template <typename T, int W>
void add_edges(const T* rot, const T* f, const int64_t* idx, T* z, int64_t zn, int64_t zr, int64_t e0, int64_t e1,
               int K, int P, int C) {
  const int blocks = C / W;
  for (int64_t e = e0; e < e1; ++e) {
    const T* r_e = rot + e * K * P;
    T* out = z + idx[e] * zn;
    for (int b = 0; b < blocks; ++b) add_edge<T, W>(r_e, f + e * K * C + b * W, K, P, C, out + b * W, zr);
    for (int c = blocks * W; c < C; ++c) add_edge<T, 1>(r_e, f + e * K * C + c, K, P, C, out + c, zr);
  }
}

// The edges are streamed in storage order (their nodes' rows, a small array, stay in cache); runs
// of EDGE_CHUNK edges go to separate sums, added in chunk order: the chunks depend on D only, so
// the result does not depend on the number of threads.
constexpr int64_t EDGE_CHUNK = 16384, MAX_CHUNKS = 16;

template <typename T, int W>
void out_of(const T* rot, const T* f, const int64_t* idx, T* z, int64_t zn, int64_t zr, int64_t D, int64_t N, int K,
            int P, int C, int threads) {
  const int64_t chunks = D <= EDGE_CHUNK ? 1 : std::min<int64_t>((D + EDGE_CHUNK - 1) / EDGE_CHUNK, MAX_CHUNKS);
  const int64_t per_chunk = (D + chunks - 1) / chunks, size = (int64_t)P * C;
  std::vector<T> partial((chunks - 1) * N * size, T(0));  // chunks 1.. sum into partial, chunk 0 into z
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; ++n)
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < C; ++c) z[n * zn + p * zr + c] = T(0);
#pragma omp parallel for schedule(static, 1) num_threads(threads)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t e0 = k * per_chunk, e1 = std::min(D, e0 + per_chunk);
    if (k == 0) add_edges<T, W>(rot, f, idx, z, zn, zr, e0, e1, K, P, C);
    else add_edges<T, W>(rot, f, idx, partial.data() + (k - 1) * N * size, size, C, e0, e1, K, P, C);
  }
  if (chunks == 1) return;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 1; k < chunks; ++k) {
      const T* q = partial.data() + ((k - 1) * N + n) * size;
      for (int p = 0; p < P; ++p)
        for (int c = 0; c < C; ++c) z[n * zn + p * zr + c] += q[p * C + c];
    }
}

// G_e (K x P) = A_e (K x C) B_{idx[e]}^T from the nodes' transposed rows Bt (N, C, P): vectors run along
// p, in blocks of W and then of narrower powers of two down to one.
template <typename T, int V>
void outer_columns(const T* a_e, const T* bt, int K, int P, int C, int p0, T* g_e) {
  contract<T, V>(K, C, bt + p0, P, a_e, C, 1, g_e + p0, P);
}

template <typename T, int W>
void outer(const T* A, const T* Bt, const int64_t* idx, T* G, int64_t D, int K, int P, int C, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t e = 0; e < D; ++e) {
    const T* a_e = A + e * K * C;
    const T* bt = Bt + idx[e] * C * P;
    T* g_e = G + e * K * P;
    int p = 0;
    for (; p + W <= P; p += W) outer_columns<T, W>(a_e, bt, K, P, C, p, g_e);
    if (W > 8 && P - p >= 8) { outer_columns<T, 8>(a_e, bt, K, P, C, p, g_e); p += 8; }
    if (P - p >= 4) { outer_columns<T, 4>(a_e, bt, K, P, C, p, g_e); p += 4; }
    if (P - p >= 2) { outer_columns<T, 2>(a_e, bt, K, P, C, p, g_e); p += 2; }
    if (p < P) outer_columns<T, 1>(a_e, bt, K, P, C, p, g_e);
  }
}

bool in_range(const int64_t* idx, int64_t D, int64_t N) {
  for (int64_t e = 0; e < D; ++e)
    if (idx[e] < 0 || idx[e] >= N) return false;
  return true;
}

}  // namespace

extern "C" {
// Returns 0, or 1 when an index lies outside 0..N-1 (nothing written then).
// x_strides = (node, row) in elements; channels contiguous.
int molsym_rotate_into(int float64, const void* rot, const void* x, const int64_t* x_strides, const int64_t* idx,
                       void* y, int64_t D, int64_t N, int K, int P, int C, int threads) {
  if (!in_range(idx, D, N)) return 1;
  if (float64)
    into<double, 8>((const double*)rot, (const double*)x, x_strides[0], x_strides[1], idx, (double*)y, D, K, P, C,
                    threads);
  else
    into<float, 16>((const float*)rot, (const float*)x, x_strides[0], x_strides[1], idx, (float*)y, D, K, P, C,
                    threads);
  return 0;
}

// z_strides = (node, row) in elements; every row of z is written (nodes without edges get zeros).
int molsym_rotate_out_of(int float64, const void* rot, const void* f, const int64_t* idx, void* z,
                         const int64_t* z_strides, int64_t D, int64_t N, int K, int P, int C, int threads) {
  if (!in_range(idx, D, N)) return 1;
  if (float64)
    out_of<double, 8>((const double*)rot, (const double*)f, idx, (double*)z, z_strides[0], z_strides[1], D, N, K, P,
                      C, threads);
  else
    out_of<float, 16>((const float*)rot, (const float*)f, idx, (float*)z, z_strides[0], z_strides[1], D, N, K, P,
                      C, threads);
  return 0;
}

// G (D, K, P) = A_e B_{idx[e]}^T per edge, from A (D, K, C) and the transposed node rows Bt (N, C, P),
// all contiguous.
int molsym_edge_outer(int float64, const void* A, const void* Bt, const int64_t* idx, void* G, int64_t D, int64_t N,
                      int K, int P, int C, int threads) {
  if (!in_range(idx, D, N)) return 1;
  if (float64) outer<double, 8>((const double*)A, (const double*)Bt, idx, (double*)G, D, K, P, C, threads);
  else outer<float, 16>((const float*)A, (const float*)Bt, idx, (float*)G, D, K, P, C, threads);
  return 0;
}
}
