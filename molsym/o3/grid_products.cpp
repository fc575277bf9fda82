// Fused CPU kernel of the Gaunt product basis on a Gauss-Legendre x uniform-phi grid
// (molsym/o3/grid_products.py builds its tables, compiles and calls it).
//
// Per node and per block of W channels, everything stays in the core's cache:
//   forward:  u_k = values of factor k on the grid (synthesis), u_{K-1} += shift,
//             w = u_0 (1 + u_1 (1 + ... u_{K-1})) (Horner form), out = projection of w;
//   backward: the adjoint of each step, the factors' values recomputed (cheaper than storing them).
// A synthesis is a Legendre sum per order (theta step) then a sum over orders per angle (phi
// step); the phi step pairs the angles phi_j and 2 pi - phi_j, where cos(m phi) is even and
// sin(m phi) odd, so it costs half the multiply-adds of the dense (n_phi x (2L+1)) product.
// The (vector_size) accumulators are held in registers, several independent ones per loop.
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

struct Shape {
  int L, M, L1, D;  // degrees 0..L; M = 2L + 1 orders (index mi = m + L); L1 = L + 1; D = L1^2
  int nt, nf, J;    // theta nodes, phi angles, J = nf / 2 (angles j = 0..J in the half tables)
  int P;            // points nt * nf, point j * nt + i
};

// A transform's tables: theta, and the phi table split by the parity of the orders
// (c: m >= 0, cos-like; s: m < 0, sin-like) over the angles j = 0..J.
template <typename T> struct Transform { const T *theta, *phi_c, *phi_s; };

// Scratch of one block: per-order rows xo (M, L1, W), theta sums p (M, nt, W).
template <typename T> struct Scratch { T *xo, *p; };

// The phi step of a synthesis on one theta ring: p (orders at stride nt W, ring offset applied) ->
// v (angles at stride nt W): for angles j = j0..j0+R-1, c = sum_{m>=0} phi_c[j][m] p[L+m],
// s = sum_{m<0} phi_s[j][m+L] p[m+L]; v[j] = c + s and, for a paired angle, v[nf-j] = c - s.
template <typename T, int W, int R>
inline void angles_tile(const Shape& s, const Transform<T>& t, const T* __restrict p, T* __restrict v, int j0) {
  typedef typename Vec<T, W>::type V;
  const int64_t stride = (int64_t)s.nt * W;
  V c[R], sn[R];
  for (int r = 0; r < R; ++r) c[r] = sn[r] = V{};
  for (int k = 0; k < s.L1; ++k) {
    const V x = load<T, W>(p + (int64_t)(s.L + k) * stride);
    for (int r = 0; r < R; ++r) c[r] += t.phi_c[(int64_t)(j0 + r) * s.L1 + k] * x;
  }
  for (int k = 0; k < s.L; ++k) {
    const V x = load<T, W>(p + (int64_t)k * stride);
    for (int r = 0; r < R; ++r) sn[r] += t.phi_s[(int64_t)(j0 + r) * s.L + k] * x;
  }
  for (int r = 0; r < R; ++r) {
    const int j = j0 + r;
    store<T, W>(v + (int64_t)j * stride, c[r] + sn[r]);
    if (j > 0 && 2 * j != s.nf) store<T, W>(v + (int64_t)(s.nf - j) * stride, c[r] - sn[r]);
  }
}

template <typename T, int W>
void angles_from_orders(const Shape& s, const Transform<T>& t, const T* p, T* v) {
  int j = 0;
  for (; j + 4 <= s.J + 1; j += 4) angles_tile<T, W, 4>(s, t, p, v, j);
  if (s.J + 1 - j >= 2) { angles_tile<T, W, 2>(s, t, p, v, j); j += 2; }
  if (j < s.J + 1) angles_tile<T, W, 1>(s, t, p, v, j);
}

// The phi step of a projection on one theta ring: v (angles at stride nt W) -> p (orders at stride
// nt W): q[L+m] = sum_j phi_c[m][j] (v[j] + v[nf-j]) for m >= 0, q[m+L] = sum_j phi_s[m+L][j]
// (v[j] - v[nf-j]) for m < 0 (an unpaired angle enters alone), orders o0..o0+R-1 of one parity.
template <typename T, int W, int R, bool EVEN>
inline void orders_tile(const Shape& s, const T* __restrict table, const T* __restrict v, T* __restrict p, int o0) {
  typedef typename Vec<T, W>::type V;
  const int64_t stride = (int64_t)s.nt * W;
  V acc[R];
  for (int r = 0; r < R; ++r) acc[r] = V{};
  for (int j = 0; j <= s.J; ++j) {
    V x = load<T, W>(v + (int64_t)j * stride);
    if (j > 0 && 2 * j != s.nf) {
      const V y = load<T, W>(v + (int64_t)(s.nf - j) * stride);
      x = EVEN ? x + y : x - y;
    }
    for (int r = 0; r < R; ++r) acc[r] += table[(int64_t)(o0 + r) * (s.J + 1) + j] * x;
  }
  for (int r = 0; r < R; ++r) store<T, W>(p + (int64_t)((EVEN ? s.L : 0) + o0 + r) * stride, acc[r]);
}

template <typename T, int W, bool EVEN>
void orders_of_parity(const Shape& s, const T* table, int count, const T* v, T* p) {
  int o = 0;
  for (; o + 8 <= count; o += 8) orders_tile<T, W, 8, EVEN>(s, table, v, p, o);
  if (count - o >= 4) { orders_tile<T, W, 4, EVEN>(s, table, v, p, o); o += 4; }
  if (count - o >= 2) { orders_tile<T, W, 2, EVEN>(s, table, v, p, o); o += 2; }
  if (o < count) orders_tile<T, W, 1, EVEN>(s, table, v, p, o);
}

// Coefficients x (rows l^2 + l + m at stride ld) -> values v (P, W).
// theta (M, nt, L1): Theta_l^|m|(theta_i); phi_c (J+1, L1): Phi_m(phi_j), m = 0..L; phi_s (J+1, L): m = -L..-1.
template <typename T, int W>
void to_grid(const T* __restrict x, int64_t ld, const Shape& s, const Transform<T>& t, const Scratch<T>& w,
             T* __restrict v) {
  for (int mi = 0; mi < s.M; ++mi) {
    const int m = mi - s.L, am = m < 0 ? -m : m;
    T* xo = w.xo + (int64_t)mi * s.L1 * W;
    for (int l = am; l <= s.L; ++l) store<T, W>(xo + (int64_t)(l - am) * W, load<T, W>(x + (int64_t)(l * l + l + m) * ld));
    contract<T, W>(s.nt, s.L1 - am, xo, W, t.theta + (int64_t)mi * s.nt * s.L1 + am, s.L1, 1,
                   w.p + (int64_t)mi * s.nt * W, W);
  }
  for (int i = 0; i < s.nt; ++i) angles_from_orders<T, W>(s, t, w.p + (int64_t)i * W, v + (int64_t)i * W);
}

// Values v (P, W) -> coefficients x (rows l^2 + l + m at stride ld).
// theta (M, L1, nt); phi_c (L1, J+1): m = 0..L over the angles j (the pair j, nf - j summed);
// phi_s (L, J+1): m = -L..-1 (the pair's difference).
template <typename T, int W>
void from_grid(const T* __restrict v, const Shape& s, const Transform<T>& t, const Scratch<T>& w, T* __restrict x,
               int64_t ld) {
  for (int i = 0; i < s.nt; ++i) {
    orders_of_parity<T, W, true>(s, t.phi_c, s.L1, v + (int64_t)i * W, w.p + (int64_t)i * W);
    orders_of_parity<T, W, false>(s, t.phi_s, s.L, v + (int64_t)i * W, w.p + (int64_t)i * W);
  }
  for (int mi = 0; mi < s.M; ++mi) {
    const int m = mi - s.L, am = m < 0 ? -m : m;
    T* xo = w.xo + (int64_t)mi * s.L1 * W;
    contract<T, W>(s.L1 - am, s.nt, w.p + (int64_t)mi * s.nt * W, W, t.theta + ((int64_t)mi * s.L1 + am) * s.nt, s.nt, 1,
                   xo, W);
    for (int l = am; l <= s.L; ++l) store<T, W>(x + (int64_t)(l * l + l + m) * ld, load<T, W>(xo + (int64_t)(l - am) * W));
  }
}

template <typename T> struct Problem {
  Shape s;
  int K;
  T shift;
  const T* A; int64_t a_node, a_factor, a_comp;   // factors' coefficients and their strides
  const T* G; int64_t g_node, g_comp;             // gradient of the output (backward)
  T* out; int64_t o_node, o_comp;                 // output (forward), or the factors' gradient (strides of A)
  Transform<T> synthesis, projection, synthesis_adjoint, projection_adjoint;
};

template <typename T, int W>
void forward_block(const Problem<T>& q, int64_t n, int c0, T* buf) {
  const Shape& s = q.s;
  const int64_t PW = (int64_t)s.P * W;
  const Scratch<T> w{buf, buf + (int64_t)s.M * s.L1 * W};
  T* u = w.p + (int64_t)s.M * s.nt * W;  // (K, P, W) values, then t (P, W)
  T* t = u + q.K * PW;
  const T* a = q.A + n * q.a_node + c0;
  for (int k = 0; k < q.K; ++k) to_grid<T, W>(a + k * q.a_factor, q.a_comp, s, q.synthesis, w, u + k * PW);
  const T* last = u + (q.K - 1) * PW;
  const T* h = last;  // the running Horner factor
  if (q.K > 1) {
    for (int64_t e = 0; e < PW; ++e) t[e] = last[e] + q.shift;
    for (int k = q.K - 2; k >= 1; --k) {
      const T* uk = u + k * PW;
      for (int64_t e = 0; e < PW; ++e) t[e] = uk[e] * t[e] + T(1);
    }
    for (int64_t e = 0; e < PW; ++e) t[e] *= u[e];
    h = t;
  }
  from_grid<T, W>(h, s, q.projection, w, q.out + n * q.o_node + c0, q.o_comp);
}

template <typename T, int W>
void backward_block(const Problem<T>& q, int64_t n, int c0, T* buf) {
  const Shape& s = q.s;
  const int64_t PW = (int64_t)s.P * W;
  const Scratch<T> w{buf, buf + (int64_t)s.M * s.L1 * W};
  T* u = w.p + (int64_t)s.M * s.nt * W;  // (K, P, W) values; then t (K, P, W), gw, g (P, W)
  T* t = u + q.K * PW;
  T* gw = t + q.K * PW;
  T* g = gw + PW;
  const T* a = q.A + n * q.a_node + c0;
  T* ga = q.out + n * q.a_node + c0;
  to_grid<T, W>(q.G + n * q.g_node + c0, q.g_comp, s, q.projection_adjoint, w, gw);
  if (q.K == 1) {
    from_grid<T, W>(gw, s, q.synthesis_adjoint, w, ga, q.a_comp);
    return;
  }
  for (int k = 0; k < q.K; ++k) to_grid<T, W>(a + k * q.a_factor, q.a_comp, s, q.synthesis, w, u + k * PW);
  T* ulast = u + (q.K - 1) * PW;
  for (int64_t e = 0; e < PW; ++e) ulast[e] += q.shift;
  // t_{K-1} = u_{K-1}; t_k = 1 + u_k t_{k+1} (k = 1..K-2)
  const T* next = ulast;
  for (int k = q.K - 2; k >= 1; --k) {
    const T* uk = u + k * PW;
    T* tk = t + k * PW;
    for (int64_t e = 0; e < PW; ++e) tk[e] = uk[e] * next[e] + T(1);
    next = tk;
  }
  // g_k = gt t_{k+1}, gt <- gt u_k (gt starts as gw); g_{K-1} = gt
  for (int k = 0; k < q.K - 1; ++k) {
    const T* tn = (k + 1 == q.K - 1) ? ulast : t + (k + 1) * PW;
    const T* uk = u + k * PW;
    for (int64_t e = 0; e < PW; ++e) {
      g[e] = gw[e] * tn[e];
      gw[e] *= uk[e];
    }
    from_grid<T, W>(g, s, q.synthesis_adjoint, w, ga + k * q.a_factor, q.a_comp);
  }
  from_grid<T, W>(gw, s, q.synthesis_adjoint, w, ga + (q.K - 1) * q.a_factor, q.a_comp);
}

template <typename T, int W>
void run(const Problem<T>& q, int64_t nodes, int channels, int backward, int threads) {
  const Shape& s = q.s;
  const int64_t scratch = (int64_t)W * ((int64_t)s.M * (s.L1 + s.nt) + (int64_t)(2 * q.K + 2) * s.P);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> buf(scratch);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < channel_items(nodes, channels, W); ++item) {
      const ChannelBlock blk = channel_block(item, channels, W);  // the tail one channel at a time
      if (backward) {
        if (blk.full) backward_block<T, W>(q, blk.row, blk.c0, buf.data());
        else backward_block<T, 1>(q, blk.row, blk.c0, buf.data());
      } else {
        if (blk.full) forward_block<T, W>(q, blk.row, blk.c0, buf.data());
        else forward_block<T, 1>(q, blk.row, blk.c0, buf.data());
      }
    }
  }
}

template <typename T>
void solve(int backward, const void* A, const int64_t* a_strides, const void* G, const int64_t* g_strides, void* out,
           const int64_t* o_strides, int64_t nodes, int K, int L, int nt, int nf, int channels, double shift,
           const void* const* tables, int threads) {
  Problem<T> q;
  q.s = Shape{L, 2 * L + 1, L + 1, (L + 1) * (L + 1), nt, nf, nf / 2, nt * nf};
  q.K = K;
  q.shift = (T)shift;
  q.A = (const T*)A; q.a_node = a_strides[0]; q.a_factor = a_strides[1]; q.a_comp = a_strides[2];
  q.G = (const T*)G; q.g_node = g_strides[0]; q.g_comp = g_strides[1];
  q.out = (T*)out; q.o_node = o_strides[0]; q.o_comp = o_strides[1];
  Transform<T>* ts[4] = {&q.synthesis, &q.projection, &q.synthesis_adjoint, &q.projection_adjoint};
  for (int k = 0; k < 4; ++k) *ts[k] = Transform<T>{(const T*)tables[3 * k], (const T*)tables[3 * k + 1], (const T*)tables[3 * k + 2]};
  if (sizeof(T) == 4) run<T, 16>(q, nodes, channels, backward, threads);
  else run<T, 8>(q, nodes, channels, backward, threads);
}

}  // namespace

extern "C" {
// Returns 0. A: (K factors x D components x channels) per node at strides a_strides = (node, factor,
// component) in elements, channels contiguous; G, out of the forward: (D x channels) per node at
// (node, component); the backward writes the factors' gradient at A's strides (o_strides unused).
// tables: 12 pointers, (theta, phi_c, phi_s) of synthesis, projection, their adjoints.
int molsym_grid_products(int float64, int backward, const void* A, const int64_t* a_strides, const void* G,
                         const int64_t* g_strides, void* out, const int64_t* o_strides, int64_t nodes, int K, int L,
                         int nt, int nf, int channels, double shift, const void* const* tables, int threads) {
  if (float64)
    solve<double>(backward, A, a_strides, G, g_strides, out, o_strides, nodes, K, L, nt, nf, channels, shift, tables, threads);
  else
    solve<float>(backward, A, a_strides, G, g_strides, out, o_strides, nodes, K, L, nt, nf, channels, shift, tables, threads);
  return 0;
}
}
