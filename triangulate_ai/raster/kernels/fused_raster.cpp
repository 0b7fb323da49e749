// Fused soft rasterizer on CPU: tile binning, forward compositing and an analytic backward.
//
// Same model as render/reference.py: coverage = sigmoid(sd / sigma), sd the exact signed distance
// (pixels, positive inside) from the pixel centre to the triangle, alpha = opacity * coverage,
// composited "over" in painter's order (triangle T-1 on top) over the background.
//
// Layout: every triangle is binned to the tiles its bounding box, grown by `grow` pixels, touches
// (one list per tile and scene, in painter's order, built by a counting sort). Within a tile the
// pixels run in blocks of kLanes (one SIMD vector); a (tile, triangle) pair covers only the blocks
// within `grow` of the triangle (its "live" blocks, a cheaper cut than the pixels' own: the others
// get coverage below the cutoff), and a tile's work is a flat list of (pair, live block) items.
// The forward computes every item's coverage (independent work), then composites the items in
// list order; it keeps the coverage and the live blocks for the backward (unless they would pass
// kKeptBytes; the backward then works them out again). The backward, per tile: a top-down pass
// gives the transmittance above each triangle, a bottom-up pass rebuilds the colour behind each
// triangle, B_{k+1} = a_k c_k + (1 - a_k) B_k, and dC/da_k = T_k (c_k - B_k) (no division by
// 1 - a, so fully opaque triangles are exact), and a last independent pass takes the distance's
// gradients. Each (tile, triangle) pair writes its gradient to its own slot; slots are summed per
// triangle in a fixed order, so results do not depend on the number of threads or their schedule.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <vector>

namespace {

constexpr int kGrads = 10;  // per pair: 3 vertices x (x, y), 3 colour channels, opacity
constexpr int kLanes = 16;  // pixel loops run in blocks of this many: a tile's pixels are padded to a multiple
constexpr int64_t kKeptBytes = int64_t(1) << 30;  // largest coverage the forward keeps for the backward

// exp(x) for x <= 0, vectorisable (no libm call, no branch): Cody-Waite range reduction, Taylor
// polynomial, 2^-n from the exponent bits. Arguments are clamped at kLow, where n reaches the bias
// and the exponent bits 0 make the result exactly 0 (so from about -87.7 down in float, -708.7 in
// double, the result is 0 instead of a subnormal).
template <typename T> struct ExpTraits;
template <> struct ExpTraits<float> {
  using Int = int32_t;
  static constexpr float kLow = -88.0f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  static constexpr int kDegree = 7, kMantissa = 23, kBias = 127;
  static constexpr float kInvFactorial[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720,
                                             1.0f / 5040};
};
template <> struct ExpTraits<double> {
  using Int = int64_t;
  static constexpr double kLow = -709.0, kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  static constexpr int kDegree = 13, kMantissa = 52, kBias = 1023;
  static constexpr double kInvFactorial[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                               1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
                                               1.0 / 479001600, 1.0 / 6227020800.0};
};

template <typename T>
inline T exp_nonpositive(T x) {
  using Tr = ExpTraits<T>;
  const T xc = x < Tr::kLow ? Tr::kLow : x;
  const typename Tr::Int n = static_cast<typename Tr::Int>(-xc * T(1.4426950408889634) + T(0.5));  // round(-x/ln2)
  const T nf = static_cast<T>(n);
  const T r = xc + nf * Tr::kLn2Hi + nf * Tr::kLn2Lo;  // x - (-n) ln2, |r| <= ln2 / 2
  // Horner form of sum r^k / k! with fused multiply-adds (explicit, so allowed under
  // -ffp-contract=off, which is kept for the distance's parity with the reference)
  T p = Tr::kInvFactorial[Tr::kDegree];
#pragma GCC unroll 16
  for (int k = Tr::kDegree - 1; k >= 0; --k) p = std::fma(p, r, Tr::kInvFactorial[k]);
  const typename Tr::Int bits = (static_cast<typename Tr::Int>(Tr::kBias) - n) << Tr::kMantissa;
  return p * __builtin_bit_cast(T, bits);
}

template <typename T>
inline T sigmoid(T x) {
  const T e = exp_nonpositive(x < 0 ? x : -x);
  const T inv = T(1) / (T(1) + e);
  return x >= 0 ? inv : e * inv;
}

// One triangle in pixel units, with what the distance needs precomputed.
template <typename T>
struct Tri {
  T ax[3], ay[3], ex[3], ey[3];  // edge k runs from vertex k to vertex k+1
  T len2[3], il[3];               // max(|e|^2, 1e-12) and its inverse
  T area;  // twice the signed area; NaN for a zero-area triangle, which has no inside (NaN fails >= 0)
  T c[3], op;
  // 0 and 1, the bounds of an edge's closest-point parameter, as values the compiler cannot see:
  // with literal bounds it folds the clamp into the products t ex and t ey and clamps those with
  // compares and blends, about 12 instructions per edge and block where max and min are 2
  T lo, hi;
};

// Distance terms of a pixel, computed with the operations of render/sdf.py in the same order
// (the build turns off fused multiply-add), so the nearest edge is chosen exactly as the reference
// chooses it, which decides where the gradient of a degenerate triangle goes.
template <typename T>
struct Edges {
  T d2[3], t[3], dx[3], dy[3];  // squared distance to edge k, its closest point's parameter, offset
  T sign;                       // +1 inside, -1 outside
};

template <typename T>
inline void edges(const Tri<T>& tri, T px, T py, Edges<T>& e) {
  T lowest = T(0);  // smallest of cross product x area over the edges: >= 0 inside (NaN stays NaN)
#pragma GCC unroll 3
  for (int k = 0; k < 3; ++k) {
    const T wx = px - tri.ax[k], wy = py - tri.ay[k];
    T t = (wx * tri.ex[k] + wy * tri.ey[k]) / tri.len2[k];
    t = tri.lo > t ? tri.lo : t;  // max then min, NaN stays NaN (see Tri::lo)
    t = tri.hi < t ? tri.hi : t;
    e.t[k] = t;
    e.dx[k] = wx - t * tri.ex[k];
    e.dy[k] = wy - t * tri.ey[k];
    e.d2[k] = e.dx[k] * e.dx[k] + e.dy[k] * e.dy[k];
    const T side = (tri.ex[k] * wy - tri.ey[k] * wx) * tri.area;
    lowest = k == 0 || side < lowest ? side : lowest;
  }
  e.sign = lowest >= T(0) ? T(1) : T(-1);
}

template <typename T>
inline T nearest(const Edges<T>& e) {
  const T m = e.d2[1] < e.d2[0] ? e.d2[1] : e.d2[0];
  return e.d2[2] < m ? e.d2[2] : m;
}

// Signed distance from (px, py) to the triangle, positive inside, as render/sdf.py computes it.
template <typename T>
inline T signed_distance(const Tri<T>& tri, T px, T py) {
  Edges<T> e;
  edges(tri, px, py, e);
  const T d2 = nearest(e), tiny = T(1e-12);
  return e.sign * std::sqrt(d2 > tiny ? d2 : tiny);
}

// d(sd)/d(vertices). Follows autograd through sdf.py: the minimum
// over edges splits its gradient evenly on exact ties, as torch.minimum does. Where t is not
// clamped, its own gradient (through the vertices) cancels the component of the offset along the
// edge, which is zero in exact arithmetic but rounding noise in float; dropping t's gradient and
// that component together keeps the result exact for pixels on an edge's line (needles).
template <typename T>
struct VertexGrad {
  T x0, y0, x1, y1, x2, y2;
};

template <typename T>
inline VertexGrad<T> signed_distance_grad(const Tri<T>& tri, T px, T py) {
  Edges<T> e;
  edges(tri, px, py, e);
  const T m01 = e.d2[1] < e.d2[0] ? e.d2[1] : e.d2[0];
  const T w0 = e.d2[0] < e.d2[1] ? T(1) : (e.d2[0] == e.d2[1] ? T(0.5) : T(0));
  const T wm = m01 < e.d2[2] ? T(1) : (m01 == e.d2[2] ? T(0.5) : T(0));
  const T w[3] = {w0 * wm, (T(1) - w0) * wm, T(1) - wm};
  const T d2 = e.d2[2] < m01 ? e.d2[2] : m01, tiny = T(1e-12);
  const T dist = std::sqrt(d2 > tiny ? d2 : tiny);
  const T scale = d2 >= tiny ? -e.sign / dist : T(0);  // d(sd)/d(d2) = sign / (2 dist); d(d2)/d(dx) = 2 dx
  T nx[3], ny[3];  // the offsets, without their component along the edge where t is not clamped
#pragma GCC unroll 3
  for (int k = 0; k < 3; ++k) {
    const T projected = (e.dx[k] * tri.ex[k] + e.dy[k] * tri.ey[k]) * tri.il[k];
    const T along = e.t[k] * (T(1) - e.t[k]) > T(0) ? projected : T(0);  // 0 < t < 1, as one test
    nx[k] = scale * (e.dx[k] - along * tri.ex[k]);
    ny[k] = scale * (e.dy[k] - along * tri.ey[k]);
  }
  // vertex k starts edge k (weight 1 - t) and ends edge k - 1 (weight t)
  const T s0 = w[0] * (T(1) - e.t[0]), s1 = w[1] * (T(1) - e.t[1]), s2 = w[2] * (T(1) - e.t[2]);
  const T f0 = w[0] * e.t[0], f1 = w[1] * e.t[1], f2 = w[2] * e.t[2];
  return {s0 * nx[0] + f2 * nx[2], s0 * ny[0] + f2 * ny[2], s1 * nx[1] + f0 * nx[0],
          s1 * ny[1] + f0 * ny[0], s2 * nx[2] + f1 * nx[1], s2 * ny[2] + f1 * ny[1]};
}

// What decides which pixel blocks of a tile a triangle can reach: its bounding box grown by the
// support radius, and per edge the line through it as n . p + off, the distance from the line,
// positive on the triangle's side. An edge without length, or a triangle without area, gives
// n = 0 and off = +inf: a line no block lies beyond.
template <typename T>
struct Reach {
  T lo_x, hi_x, lo_y, hi_y;
  T nx[3], ny[3], off[3];
};

template <typename T>
std::vector<Reach<T>> reaches(const at::Tensor& verts, T grow) {
  const int64_t n = verts.numel() / 6;
  const T* v = verts.data_ptr<T>();
  std::vector<Reach<T>> out(n);
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t f = lo; f < hi; ++f) {
      const T* p = v + f * 6;
      Reach<T>& r = out[f];
      r.lo_x = std::min({p[0], p[2], p[4]}) - grow;
      r.hi_x = std::max({p[0], p[2], p[4]}) + grow;
      r.lo_y = std::min({p[1], p[3], p[5]}) - grow;
      r.hi_y = std::max({p[1], p[3], p[5]}) + grow;
      const T area = (p[2] - p[0]) * (p[5] - p[1]) - (p[3] - p[1]) * (p[4] - p[0]);
      for (int k = 0; k < 3; ++k) {
        const int j = (k + 1) % 3;
        const T ex = p[2 * j] - p[2 * k], ey = p[2 * j + 1] - p[2 * k + 1];
        const T len = std::sqrt(ex * ex + ey * ey);
        // inside, (ex * wy - ey * wx) * area >= 0 for w = point - vertex k
        const T scale = area > T(0) ? T(1) / len : T(-1) / len;
        const bool line = area != T(0) && std::isfinite(area) && len > T(1e-6) && std::isfinite(scale);
        r.nx[k] = line ? -ey * scale : T(0);
        r.ny[k] = line ? ex * scale : T(0);
        r.off[k] = line ? -(r.nx[k] * p[2 * k] + r.ny[k] * p[2 * k + 1]) : std::numeric_limits<T>::infinity();
      }
    }
  });
  return out;
}

// The rectangles of pixel centres of a tile's blocks, relative to the tile's corner.
template <typename T>
struct Blocks {
  std::vector<T> x0, x1, y0, y1;
  Blocks(int64_t tile, int64_t count) : x0(count), x1(count), y0(count), y1(count) {
    for (int64_t b = 0; b < count; ++b) {
      const int64_t first = b * kLanes, last = first + kLanes - 1;
      const int64_t r0 = first / tile, r1 = last / tile;
      x0[b] = static_cast<T>(r0 == r1 ? first % tile : 0) + T(0.5);
      x1[b] = static_cast<T>(r0 == r1 ? last % tile : tile - 1) + T(0.5);
      y0[b] = static_cast<T>(r0) + T(0.5);
      y1[b] = static_cast<T>(r1) + T(0.5);
    }
  }
  int64_t size() const { return static_cast<int64_t>(x0.size()); }
};

// The blocks of the tile with corner (x0, y0) that hold a pixel within `grow` of the triangle,
// appended as items (entry j, block) at entry/block; returns how many. A block is left out only
// when it lies wholly outside the grown box or wholly beyond `grow` from one edge's line, where
// every pixel's coverage is below the cutoff (as outside the bins). No test of the whole tile first:
// that branch went either way, unpredictably, and cost more than it saved (3% of a step at B = 8).
// NaN fails every test, so a triangle with NaN corners reaches every block and its NaN shows.
template <typename T>
int64_t live_blocks(const Reach<T>& r, T x0, T y0, T grow, const Blocks<T>& bl, int32_t j, int32_t* __restrict entry,
                    int32_t* __restrict block) {
  const T limit = -grow - T(1e-3);  // a rounding margin: never drop a pixel at the bin margin
  const int64_t nb = bl.size();
  // per edge, the line's value at the tile corner; a block's farthest corner along n adds
  // max(nx x0, nx x1) + max(ny y0, ny y1) of its corners' offsets (the product with the larger
  // coordinate where n > 0, as choosing the corner by n's sign gives, but without a branch on it)
  T base[3];
  for (int k = 0; k < 3; ++k) base[k] = r.nx[k] * x0 + r.ny[k] * y0 + r.off[k];
  int64_t count = 0;
  for (int64_t b = 0; b < nb; ++b) {  // bitwise, not short-circuit: no data-dependent branch
    bool out = (x0 + bl.x1[b] < r.lo_x) | (x0 + bl.x0[b] > r.hi_x) | (y0 + bl.y1[b] < r.lo_y) |
               (y0 + bl.y0[b] > r.hi_y);
#pragma GCC unroll 3
    for (int k = 0; k < 3; ++k) {
      const T ax = r.nx[k] * bl.x0[b], bx = r.nx[k] * bl.x1[b], ay = r.ny[k] * bl.y0[b], by = r.ny[k] * bl.y1[b];
      out |= base[k] + (bx > ax ? bx : ax) + (by > ay ? by : ay) < limit;
    }
    entry[count] = j;  // written always, kept only when live
    block[count] = static_cast<int32_t>(b);
    count += !out;
  }
  return count;
}

template <typename T>
std::vector<Tri<T>> prepare(const at::Tensor& verts, const at::Tensor& colors, const at::Tensor& opacity) {
  const int64_t n = opacity.numel();
  const T* v = verts.data_ptr<T>();
  const T* c = colors.data_ptr<T>();
  const T* o = opacity.data_ptr<T>();
  std::vector<Tri<T>> tris(n);
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t f = lo; f < hi; ++f) {
      Tri<T>& tri = tris[f];
      const T* p = v + f * 6;
      for (int k = 0; k < 3; ++k) {
        const int j = (k + 1) % 3;
        tri.ax[k] = p[2 * k];
        tri.ay[k] = p[2 * k + 1];
        tri.ex[k] = p[2 * j] - p[2 * k];
        tri.ey[k] = p[2 * j + 1] - p[2 * k + 1];
        const T len2 = tri.ex[k] * tri.ex[k] + tri.ey[k] * tri.ey[k];
        tri.len2[k] = len2 > T(1e-12) ? len2 : T(1e-12);
        tri.il[k] = T(1) / tri.len2[k];
        tri.c[k] = c[f * 3 + k];
      }
      const T area = (p[2] - p[0]) * (p[5] - p[1]) - (p[3] - p[1]) * (p[4] - p[0]);
      tri.area = area != T(0) ? area : std::numeric_limits<T>::quiet_NaN();
      tri.op = o[f];
      tri.lo = T(0);
      tri.hi = T(1);
    }
  });
  return tris;
}

// Tile geometry shared by forward and backward.
struct Grid {
  int64_t batch, count, height, width, tile, n_tx, n_ty;
  int64_t per_image() const { return n_tx * n_ty; }
  int64_t tiles() const { return batch * per_image(); }
  int64_t pixels() const { return (tile * tile + kLanes - 1) / kLanes * kLanes; }  // padded, see kLanes
  // Tiles per scheduling chunk: enough neighbours in a row that a chunk's rows of pixels fill whole
  // 64-byte cache lines, so two threads do not write halves of one line of the image (a tile row of
  // 8 floats is half a line; with one tile per chunk the threads' stores would keep stealing it).
  int64_t chunk(int64_t bytes_per_value) const {
    const int64_t line = 64;
    return std::min(line / std::gcd(tile * bytes_per_value, line), n_tx);
  }
};

// Clamp floor(value / tile) to [lo, hi] without overflow (values may be huge or NaN).
inline int64_t tile_index(double value, int64_t tile, int64_t lo, int64_t hi) {
  const double q = std::floor(value / static_cast<double>(tile));
  if (!(q > static_cast<double>(lo))) return lo;
  if (!(q < static_cast<double>(hi))) return hi;
  return static_cast<int64_t>(q);
}

// Counting sort of (tile, triangle) pairs by tile, painter's order kept within a tile.
// offsets: (tiles + 1) start of each tile's list; ids: flat triangle index per pair (tile-major);
// first: (B*T + 1) start of each triangle's pairs in triangle-major order; slot: tile-major
// position of each triangle-major pair. Scenes own disjoint ranges of tiles and of triangles, so
// the counting and the placing run one scene per task; only the two prefix sums are serial.
template <typename T>
std::vector<at::Tensor> bin(const at::Tensor& verts, const Grid& g, double grow) {
  const int64_t n = g.batch * g.count, per = g.per_image();
  const T* v = verts.data_ptr<T>();
  std::vector<int64_t> rect(n * 4);  // tx0, tx1, ty0, ty1 (empty when tx0 > tx1 or ty0 > ty1)
  auto first = at::empty({n + 1}, at::kLong);
  int64_t* fp = first.data_ptr<int64_t>();
  fp[0] = 0;
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t f = lo; f < hi; ++f) {
      const T* p = v + f * 6;
      const double lo_x = std::min({p[0], p[2], p[4]}) - grow - 0.5, hi_x = std::max({p[0], p[2], p[4]}) + grow - 0.5;
      const double lo_y = std::min({p[1], p[3], p[5]}) - grow - 0.5, hi_y = std::max({p[1], p[3], p[5]}) + grow - 0.5;
      int64_t* r = &rect[f * 4];
      r[0] = tile_index(lo_x, g.tile, 0, g.n_tx);
      r[1] = tile_index(hi_x, g.tile, -1, g.n_tx - 1);
      r[2] = tile_index(lo_y, g.tile, 0, g.n_ty);
      r[3] = tile_index(hi_y, g.tile, -1, g.n_ty - 1);
      fp[f + 1] = std::max<int64_t>(r[1] - r[0] + 1, 0) * std::max<int64_t>(r[3] - r[2] + 1, 0);  // its span
    }
  });
  for (int64_t f = 0; f < n; ++f) fp[f + 1] += fp[f];
  const int64_t pairs = fp[n];
  auto offsets = at::zeros({g.tiles() + 1}, at::kLong);
  int64_t* op = offsets.data_ptr<int64_t>();
  at::parallel_for(0, g.batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t f = b0 * g.count; f < b1 * g.count; ++f) {
      const int64_t* r = &rect[f * 4];
      int64_t* count = op + (f / g.count) * per + 1;
      for (int64_t ty = r[2]; ty <= r[3]; ++ty)
        for (int64_t tx = r[0]; tx <= r[1]; ++tx) ++count[ty * g.n_tx + tx];
    }
  });
  for (int64_t i = 0; i < g.tiles(); ++i) op[i + 1] += op[i];
  auto ids = at::empty({pairs}, at::kInt);
  auto slot = at::empty({pairs}, at::kLong);
  int32_t* ip = ids.data_ptr<int32_t>();
  int64_t* sp = slot.data_ptr<int64_t>();
  at::parallel_for(0, g.batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::vector<int64_t> cursor(op + b * per, op + (b + 1) * per);
      int64_t q = fp[b * g.count];
      for (int64_t f = b * g.count; f < (b + 1) * g.count; ++f) {
        const int64_t* r = &rect[f * 4];
        for (int64_t ty = r[2]; ty <= r[3]; ++ty)
          for (int64_t tx = r[0]; tx <= r[1]; ++tx) {
            const int64_t k = cursor[ty * g.n_tx + tx]++;
            ip[k] = static_cast<int32_t>(f);
            sp[q++] = k;
          }
      }
    }
  });
  return {offsets, ids, first, slot};
}

// Pixel centres of every tile of an image and their flat index in it, -1 for pixels outside it
// (border tiles are cut) and for the padding (padding pixels fall below the tile). The same for
// every scene, so worked out once per call and read by each tile, where working them out per
// tile (scalar integer code) took 2% of a step at B = 8.
template <typename T>
struct TilePixels {
  std::vector<T> x, y;
  std::vector<int64_t> index;
  int64_t P;
  explicit TilePixels(const Grid& g)
      : x(g.per_image() * g.pixels()), y(x.size()), index(x.size()), P(g.pixels()) {
    for (int64_t t = 0; t < g.per_image(); ++t) {
      const int64_t x0 = (t % g.n_tx) * g.tile, y0 = (t / g.n_tx) * g.tile;
      const int64_t rows = std::min(g.tile, g.height - y0);  // real rows: padding starts below them
      for (int64_t p = 0; p < P; ++p) {
        const int64_t col = p % g.tile, row = p / g.tile, px = x0 + col, py = y0 + row;
        x[t * P + p] = static_cast<T>(px) + T(0.5);
        y[t * P + p] = static_cast<T>(py) + T(0.5);
        index[t * P + p] = (px < g.width && row < rows) ? py * g.width + px : -1;
      }
    }
  }
  const T* px(int64_t tile_in_image) const { return x.data() + tile_in_image * P; }
  const T* py(int64_t tile_in_image) const { return y.data() + tile_in_image * P; }
  const int64_t* at(int64_t tile_in_image) const { return index.data() + tile_in_image * P; }
};

// A tile's work as a flat list of items, one per (list entry, live block), in list order (bottom
// to top) and block order within an entry. The sweeps below run over items, not over entries and
// then blocks: one loop with a predictable branch, whose iterations are independent where the
// maths allows, so the long dependency chains of distance, exp and division overlap instead of
// stalling on a mispredicted loop exit at every entry.
struct Items {
  std::vector<int32_t> entry, block;  // entry: position in the tile's list; block: pixel block of the tile
  int64_t count = 0;
  int64_t size() const { return count; }
};

// Coverage of each item's pixels, independent per item. Per-item values (coverage here, dL/da and
// the colour weight in the backward) are stored item after item, kLanes each: only live blocks
// take room, and every sweep reads them in the order they lie in memory.
template <typename T>
__attribute__((noinline)) void cover(const Tri<T>* __restrict tris, const int32_t* __restrict ids,
                                     const Items& it, T inv_sigma, const T* __restrict px,
                                     const T* __restrict py, T* __restrict cov) {
  const int32_t* __restrict entry = it.entry.data();
  const int32_t* __restrict block = it.block.data();
  for (int64_t i = 0; i < it.size(); ++i) {
    const Tri<T> tri = tris[ids[entry[i]]];
    const T* __restrict x = px + int64_t(block[i]) * kLanes;
    const T* __restrict y = py + int64_t(block[i]) * kLanes;
    T* __restrict c = cov + i * kLanes;
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) c[l] = sigmoid(signed_distance(tri, x[l], y[l]) * inv_sigma);
  }
}

// Forward compositing in item order: colour over what lies below, transmittance times (1 - a).
template <typename T>
__attribute__((noinline)) void composite(const Tri<T>* __restrict tris, const int32_t* __restrict ids,
                                         const Items& it, const T* __restrict cov, T* __restrict c0,
                                         T* __restrict c1, T* __restrict c2, T* __restrict tr) {
  for (int64_t i = 0; i < it.size(); ++i) {
    const Tri<T>& tri = tris[ids[it.entry[i]]];
    const T op = tri.op, r = tri.c[0], g = tri.c[1], b = tri.c[2];
    const int64_t p0 = int64_t(it.block[i]) * kLanes, row = i * kLanes - p0;
#pragma omp simd
    for (int64_t p = p0; p < p0 + kLanes; ++p) {
      const T a = op * cov[row + p];
      c0[p] = a * r + (T(1) - a) * c0[p];
      c1[p] = a * g + (T(1) - a) * c1[p];
      c2[p] = a * b + (T(1) - a) * c2[p];
      tr[p] *= T(1) - a;
    }
  }
}

// Backward, top-down (items in reverse): the transmittance above each triangle, then below it.
template <typename T>
__attribute__((noinline)) void shade(const Tri<T>* __restrict tris, const int32_t* __restrict ids, const Items& it,
                                     const T* __restrict cov, T* __restrict above, T* __restrict tr) {
  for (int64_t i = it.size() - 1; i >= 0; --i) {
    const T op = tris[ids[it.entry[i]]].op;
    const int64_t p0 = int64_t(it.block[i]) * kLanes, row = i * kLanes - p0;
#pragma omp simd
    for (int64_t p = p0; p < p0 + kLanes; ++p) {
      above[row + p] = tr[p];
      tr[p] *= T(1) - op * cov[row + p];
    }
  }
}

// Per-pixel state of the bottom-up backward pass over a tile.
template <typename T>
struct Behind {
  const T *g0, *g1, *g2, *ga;  // dL/d(colour), dL/d(alpha)
  T *b0, *b1, *b2, *below;     // colour behind the current triangle, transmittance below it
};

// Backward, bottom-up (items in order), the sequential part: per item pixel dL/da (in place of the
// transmittance above, which it no longer needs) and the weight T_above a of the triangle's colour,
// then the colour behind and the transmittance below advanced past the triangle.
// dL/da = T_above (g . (c - B) + g_alpha T_below): the image is T_above (a c + (1 - a) B) + ... and
// the alpha 1 - T_above (1 - a) T_below.
template <typename T>
__attribute__((noinline)) void settle(const Tri<T>* __restrict tris, const int32_t* __restrict ids, const Items& it,
                                      const T* __restrict cov, T* __restrict above_to_da,
                                      T* __restrict weight, Behind<T> st) {
  const T* __restrict g0 = st.g0;
  const T* __restrict g1 = st.g1;
  const T* __restrict g2 = st.g2;
  const T* __restrict ga = st.ga;
  T* __restrict b0 = st.b0;
  T* __restrict b1 = st.b1;
  T* __restrict b2 = st.b2;
  T* __restrict below = st.below;
  for (int64_t i = 0; i < it.size(); ++i) {
    const Tri<T>& tri = tris[ids[it.entry[i]]];
    const T op = tri.op, r = tri.c[0], g = tri.c[1], b = tri.c[2];
    const int64_t p0 = int64_t(it.block[i]) * kLanes, row = i * kLanes - p0;
#pragma omp simd
    for (int64_t p = p0; p < p0 + kLanes; ++p) {
      const T a = op * cov[row + p], t_above = above_to_da[row + p];
      weight[row + p] = t_above * a;
      const T d_a = t_above * (g0[p] * (r - b0[p]) + g1[p] * (g - b1[p]) + g2[p] * (b - b2[p]) +
                                            ga[p] * below[p]);
      above_to_da[row + p] = d_a;
      b0[p] = a * r + (T(1) - a) * b0[p];
      b1[p] = a * g + (T(1) - a) * b1[p];
      b2[p] = a * b + (T(1) - a) * b2[p];
      below[p] *= T(1) - a;
    }
  }
}

// Each row of kLanes values summed into one, as a tree of halves: a fixed order (results do not
// depend on threads or schedule) whose adds are independent, where a running sum over the lanes
// is a chain of kLanes dependent adds per row.
template <typename T>
inline void lane_sums(const T* __restrict rows, int64_t count, T* __restrict out) {
  for (int64_t r = 0; r < count; ++r) {
    const T* __restrict x = rows + r * kLanes;
    T h[kLanes / 2];
#pragma omp simd
    for (int l = 0; l < kLanes / 2; ++l) h[l] = x[l] + x[l + kLanes / 2];
#pragma GCC unroll 8
    for (int w = kLanes / 4; w >= 1; w /= 2)
#pragma GCC unroll 8
      for (int l = 0; l < w; ++l) h[l] += h[l + w];
    out[r] = h[0];
  }
}

// Backward, the independent part: each item's gradients as per-lane partial sums, added into its
// entry's (kGrads, kLanes) accumulator, which is summed over its lanes into the entry's row of
// `sums` (len, kGrads) once the entry's items (consecutive, in block order: a fixed order) are
// done. One accumulator, hot in L1, where one per entry (the tile's whole list) took a memset
// and a pass through L2 per tile. Entries without items get zeros.
template <typename T>
__attribute__((noinline)) void gradients(const Tri<T>* __restrict tris, const int32_t* __restrict ids,
                                         const Items& it, T inv_sigma, const T* __restrict px,
                                         const T* __restrict py, const T* __restrict g0, const T* __restrict g1,
                                         const T* __restrict g2, const T* __restrict cov, const T* __restrict weight,
                                         const T* __restrict d_alpha, int64_t len, T* __restrict sums) {
  std::fill(sums, sums + len * kGrads, T(0));
  alignas(64) T acc[kGrads * kLanes];
  for (int64_t i = 0; i < it.size();) {
    const int32_t j = it.entry[i];
    const Tri<T>& tri = tris[ids[j]];
    std::fill(acc, acc + kGrads * kLanes, T(0));
    for (; i < it.size() && it.entry[i] == j; ++i) {
      const int64_t p0 = int64_t(it.block[i]) * kLanes, row = i * kLanes - p0;
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const int64_t p = p0 + l;
        const T s = cov[row + p], d_a = d_alpha[row + p], w = weight[row + p];
        const VertexGrad<T> vg = signed_distance_grad(tri, px[p], py[p]);
        const T d_sd = d_a * tri.op * s * (T(1) - s) * inv_sigma;
        acc[0 * kLanes + l] += d_sd * vg.x0;
        acc[1 * kLanes + l] += d_sd * vg.y0;
        acc[2 * kLanes + l] += d_sd * vg.x1;
        acc[3 * kLanes + l] += d_sd * vg.y1;
        acc[4 * kLanes + l] += d_sd * vg.x2;
        acc[5 * kLanes + l] += d_sd * vg.y2;
        acc[6 * kLanes + l] += w * g0[p];
        acc[7 * kLanes + l] += w * g1[p];
        acc[8 * kLanes + l] += w * g2[p];
        acc[9 * kLanes + l] += d_a * s;
      }
    }
    lane_sums(acc, kGrads, sums + int64_t(j) * kGrads);
  }
}

// Per-thread buffers, sized for one tile: pixel state as named rows of one block.
template <typename T>
struct Scratch {
  std::vector<T> rows;
  int64_t P;
  Scratch(int64_t rows_count, int64_t pixels) : rows(rows_count * pixels), P(pixels) {}
  T* row(int i) { return rows.data() + i * P; }
};

// What both directions need to walk a tile's list: the triangles, the tile bins and which blocks
// of a tile each triangle reaches.
template <typename T>
struct Walk {
  const Grid& g;
  const std::vector<Tri<T>>& tris;
  const std::vector<Reach<T>>& reach;
  Blocks<T> rects;
  const int64_t* offsets;
  const int32_t* ids;
  T grow;

  // The items of tile `tile`: every live block of every entry of its list, in list order. Read from
  // `kept` (one byte per list entry and block, as the forward wrote them) when given, else worked
  // out and, when `keep` is given, written there.
  void items(int64_t tile, Items& it, const uint8_t* kept, uint8_t* keep) const {
    const int64_t in_image = tile % g.per_image(), start = offsets[tile], len = offsets[tile + 1] - start;
    const int64_t nb = rects.size();
    it.entry.resize(len * nb);
    it.block.resize(len * nb);
    int32_t* entry = it.entry.data();
    int32_t* block = it.block.data();
    int64_t n = 0;
    if (kept) {
      const uint8_t* f = kept + start * nb;
      for (int64_t j = 0; j < len; ++j)
        for (int64_t b = 0; b < nb; ++b) {
          entry[n] = static_cast<int32_t>(j);
          block[n] = static_cast<int32_t>(b);
          n += f[j * nb + b];
        }
    } else {
      const T x0 = static_cast<T>((in_image % g.n_tx) * g.tile), y0 = static_cast<T>((in_image / g.n_tx) * g.tile);
      for (int64_t j = 0; j < len; ++j)
        n += live_blocks(reach[ids[start + j]], x0, y0, grow, rects, static_cast<int32_t>(j), entry + n, block + n);
      if (keep) {
        uint8_t* f = keep + start * nb;
        std::fill(f, f + len * nb, uint8_t(0));
        for (int64_t i = 0; i < n; ++i) f[entry[i] * nb + block[i]] = 1;
      }
    }
    it.count = n;
  }
};

// cov: (pairs, P), room for every block of every list entry, of which a tile's items fill the start
// of its rows, and live: (pairs, blocks) the live blocks; both kept for the backward, or both null.
template <typename T>
void forward_kernel(const Walk<T>& w, const T* background, T sigma, T* image, T* alpha, T* cov, uint8_t* live) {
  const Grid& g = w.g;
  const int64_t P = g.pixels(), HW = g.height * g.width;
  const T inv_sigma = T(1) / sigma;
  const TilePixels<T> pixels(g);
  const int64_t chunk = g.chunk(sizeof(T));
#pragma omp parallel num_threads(at::get_num_threads())
  {
    Scratch<T> sc(4, P);
    T *c0 = sc.row(0), *c1 = sc.row(1), *c2 = sc.row(2), *tr = sc.row(3);
    Items it;
    std::vector<T> cov_buf;  // this tile's coverage when it is not kept
#pragma omp for schedule(dynamic, chunk)
    for (int64_t tile = 0; tile < g.tiles(); ++tile) {
      const int64_t b = tile / g.per_image(), start = w.offsets[tile], len = w.offsets[tile + 1] - start;
      const int64_t in_image = tile % g.per_image();
      const T *px = pixels.px(in_image), *py = pixels.py(in_image);
      const int64_t* index = pixels.at(in_image);
      w.items(tile, it, nullptr, live);
      if (!cov) cov_buf.resize(it.size() * kLanes);
      T* tile_cov = cov ? cov + start * P : cov_buf.data();  // its items from the start of its rows
      const int32_t* ids = w.ids + start;
      cover(w.tris.data(), ids, it, inv_sigma, px, py, tile_cov);
      const T* bg = background + b * 3;
      std::fill(c0, c0 + P, bg[0]);
      std::fill(c1, c1 + P, bg[1]);
      std::fill(c2, c2 + P, bg[2]);
      std::fill(tr, tr + P, T(1));
      composite(w.tris.data(), ids, it, tile_cov, c0, c1, c2, tr);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = index[p];
        if (i < 0) continue;
        T* out = image + b * 3 * HW + i;
        out[0] = c0[p];
        out[HW] = c1[p];
        out[2 * HW] = c2[p];
        alpha[b * HW + i] = T(1) - tr[p];
      }
    }
  }
}

// saved, live: the forward's coverage and live blocks per list entry, or null to work them out again.
template <typename T>
void backward_kernel(const Walk<T>& w, const T* background, T sigma, const T* saved, const uint8_t* live,
                     const T* grad_image, const T* grad_alpha, T* pair_grads, T* tile_bg) {
  const Grid& g = w.g;
  const int64_t P = g.pixels(), HW = g.height * g.width;
  const T inv_sigma = T(1) / sigma;
  const TilePixels<T> pixels(g);
  const int64_t chunk = g.chunk(sizeof(T));
#pragma omp parallel num_threads(at::get_num_threads())
  {
    Scratch<T> sc(9, P);
    T *g0 = sc.row(0), *g1 = sc.row(1), *g2 = sc.row(2), *ga = sc.row(3), *tr = sc.row(4);
    const Behind<T> st{g0, g1, g2, ga, sc.row(5), sc.row(6), sc.row(7), sc.row(8)};
    Items it;
    // (items, kLanes) each: coverage (when not kept), transmittance above then dL/da, weight T_above a
    std::vector<T> cov_buf, da_buf, weight_buf;
#pragma omp for schedule(dynamic, chunk)
    for (int64_t tile = 0; tile < g.tiles(); ++tile) {
      const int64_t b = tile / g.per_image(), start = w.offsets[tile], len = w.offsets[tile + 1] - start;
      const int64_t in_image = tile % g.per_image();
      const T *px = pixels.px(in_image), *py = pixels.py(in_image);
      const int64_t* index = pixels.at(in_image);
      std::fill(g0, g0 + 4 * P, T(0));  // pixels past the image edge get zero gradients (g0..ga are adjacent rows)
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = index[p];
        if (i < 0) continue;
        if (grad_image) {
          g0[p] = grad_image[b * 3 * HW + i];
          g1[p] = grad_image[b * 3 * HW + HW + i];
          g2[p] = grad_image[b * 3 * HW + 2 * HW + i];
        }
        if (grad_alpha) ga[p] = grad_alpha[b * HW + i];
      }
      w.items(tile, it, live, nullptr);
      const int32_t* ids = w.ids + start;
      const Tri<T>* tris = w.tris.data();
      if (!saved) cov_buf.resize(it.size() * kLanes);
      const T* cov = saved ? saved + start * P : cov_buf.data();
      if (!saved) cover(tris, ids, it, inv_sigma, px, py, cov_buf.data());
      da_buf.resize(it.size() * kLanes);
      std::fill(tr, tr + P, T(1));
      shade(tris, ids, it, cov, da_buf.data(), tr);
      T gbg0 = 0, gbg1 = 0, gbg2 = 0;
      for (int64_t p = 0; p < P; ++p) {  // tr is now the final transmittance, dC/d(background)
        gbg0 += g0[p] * tr[p];
        gbg1 += g1[p] * tr[p];
        gbg2 += g2[p] * tr[p];
      }
      tile_bg[tile * 3] = gbg0;
      tile_bg[tile * 3 + 1] = gbg1;
      tile_bg[tile * 3 + 2] = gbg2;
      weight_buf.resize(it.size() * kLanes);
      const T* bg = background + b * 3;
      std::fill(st.b0, st.b0 + P, bg[0]);
      std::fill(st.b1, st.b1 + P, bg[1]);
      std::fill(st.b2, st.b2 + P, bg[2]);
      std::fill(st.below, st.below + P, T(1));
      settle(tris, ids, it, cov, da_buf.data(), weight_buf.data(), st);
      gradients(tris, ids, it, inv_sigma, px, py, g0, g1, g2, cov, weight_buf.data(), da_buf.data(), len,
                pair_grads + start * kGrads);
    }
  }
}

Grid make_grid(const at::Tensor& verts, int64_t height, int64_t width, int64_t tile) {
  const int64_t n_tx = (width + tile - 1) / tile, n_ty = (height + tile - 1) / tile;
  return Grid{verts.size(0), verts.size(1), height, width, tile, n_tx, n_ty};
}

void check_inputs(const at::Tensor& verts, const at::Tensor& colors, const at::Tensor& opacity,
                  const at::Tensor& background) {
  const at::Tensor all[] = {verts, colors, opacity, background};
  for (const auto& t : all) {
    TORCH_CHECK(t.device().is_cpu(), "the fused renderer takes CPU tensors");
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == verts.scalar_type(), "inputs must be contiguous, one dtype");
  }
  const int64_t b = verts.size(0), n = verts.size(1);
  TORCH_CHECK(verts.dim() == 4 && verts.size(2) == 3 && verts.size(3) == 2, "vertices must be (B, T, 3, 2)");
  TORCH_CHECK(colors.sizes() == at::IntArrayRef({b, n, 3}), "colors must be (B, T, 3)");
  TORCH_CHECK(opacity.sizes() == at::IntArrayRef({b, n}), "opacity must be (B, T)");
  TORCH_CHECK(background.sizes() == at::IntArrayRef({b, 3}), "background must be (B, 3)");
  TORCH_CHECK(b * n < (int64_t(1) << 31), "too many triangles");
}

// The bytes the forward keeps for the backward (coverage, then live blocks), handed out again on
// the next call once nothing holds them: freed and allocated anew each step, these megabytes went
// back to the system and were page-faulted in again by the threads writing them (8 scenes of
// 128 px, 200 triangles: 634 faults a step, 57 with this). Grows by a quarter past the largest
// request; a call that finds the storage still held (a graph kept for a second backward) gets
// storage of its own.
class KeptStorage {
 public:
  at::Tensor take(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!bytes_.defined() || bytes_.storage().use_count() > 1 || bytes_.numel() < bytes)
      bytes_ = at::empty({bytes + bytes / 4}, at::kByte);
    return bytes_.narrow(0, 0, bytes);
  }

 private:
  std::mutex mutex_;
  at::Tensor bytes_;
};

KeptStorage kept_storage;

// Returns image (B, 3, H, W), alpha (B, 1, H, W), the bins and the coverage of every list entry
// the backward reuses; the coverage only when `keep` and it fits in kKeptBytes, else empty (the
// backward then computes it again).
std::vector<at::Tensor> forward(const at::Tensor& verts, const at::Tensor& colors, const at::Tensor& opacity,
                                const at::Tensor& background, int64_t height, int64_t width, double sigma,
                                int64_t tile, double grow, bool keep) {
  check_inputs(verts, colors, opacity, background);
  const Grid g = make_grid(verts, height, width, tile);
  auto image = at::empty({g.batch, 3, height, width}, verts.options());
  auto alpha = at::empty({g.batch, 1, height, width}, verts.options());
  std::vector<at::Tensor> bins;
  at::Tensor cov = at::empty({0}, verts.options()), live = at::empty({0}, at::kByte);
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fused_forward", [&] {
    using T = scalar_t;
    bins = bin<T>(verts, g, grow);
    const int64_t pairs = bins[1].numel();
    const int64_t blocks = g.pixels() / kLanes;
    const int64_t cov_bytes = pairs * g.pixels() * int64_t(sizeof(T));
    if (keep && cov_bytes <= kKeptBytes) {
      const at::Tensor kept = kept_storage.take(cov_bytes + pairs * blocks);
      cov = kept.narrow(0, 0, cov_bytes).view(verts.scalar_type()).view({pairs, g.pixels()});
      live = kept.narrow(0, cov_bytes, pairs * blocks).view({pairs, blocks});
    }
    const auto tris = prepare<T>(verts, colors, opacity);
    const auto reach = reaches<T>(verts, static_cast<T>(grow));
    const Walk<T> w{g, tris, reach, Blocks<T>(tile, g.pixels() / kLanes), bins[0].data_ptr<int64_t>(),
                    bins[1].data_ptr<int32_t>(), static_cast<T>(grow)};
    forward_kernel<T>(w, background.data_ptr<T>(), static_cast<T>(sigma), image.data_ptr<T>(), alpha.data_ptr<T>(),
                      cov.numel() ? cov.data_ptr<T>() : nullptr, live.numel() ? live.data_ptr<uint8_t>() : nullptr);
  });
  return {image, alpha, bins[0], bins[1], bins[2], bins[3], cov, live};
}

// Gradients of vertices (B, T, 3, 2), colours, opacity and background from the image and alpha
// gradients (either may be undefined, meaning zero).
std::vector<at::Tensor> backward(const at::Tensor& verts, const at::Tensor& colors, const at::Tensor& opacity,
                                 const at::Tensor& background, const at::Tensor& offsets, const at::Tensor& ids,
                                 const at::Tensor& first, const at::Tensor& slot, const at::Tensor& cov,
                                 const at::Tensor& live,
                                 const c10::optional<at::Tensor>& grad_image,
                                 const c10::optional<at::Tensor>& grad_alpha, int64_t height, int64_t width,
                                 double sigma, int64_t tile, double grow) {
  check_inputs(verts, colors, opacity, background);
  const Grid g = make_grid(verts, height, width, tile);
  const int64_t n = g.batch * g.count, pairs = ids.numel();
  auto g_verts = at::empty_like(verts), g_colors = at::empty_like(colors), g_opacity = at::empty_like(opacity);  // all written
  auto g_background = at::zeros_like(background);
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "fused_backward", [&] {
    using T = scalar_t;
    at::Tensor gi, ga;
    if (grad_image && grad_image->defined()) gi = grad_image->to(verts.scalar_type()).contiguous();
    if (grad_alpha && grad_alpha->defined()) ga = grad_alpha->to(verts.scalar_type()).contiguous();
    const auto tris = prepare<T>(verts, colors, opacity);
    const auto reach = reaches<T>(verts, static_cast<T>(grow));
    const Walk<T> w{g, tris, reach, Blocks<T>(tile, g.pixels() / kLanes), offsets.data_ptr<int64_t>(),
                    ids.data_ptr<int32_t>(), static_cast<T>(grow)};
    TORCH_CHECK(cov.numel() == 0 || cov.numel() == pairs * g.pixels(), "coverage does not match the bins");
    TORCH_CHECK(live.numel() == cov.numel() / kLanes, "live blocks do not match the coverage");
    std::unique_ptr<T[]> pair_grads(new T[pairs * kGrads]);  // every slot written: not zeroed first
    std::vector<T> tile_bg(g.tiles() * 3);
    backward_kernel<T>(w, background.data_ptr<T>(), static_cast<T>(sigma), cov.numel() ? cov.data_ptr<T>() : nullptr,
                       live.numel() ? live.data_ptr<uint8_t>() : nullptr,
                       gi.defined() ? gi.data_ptr<T>() : nullptr,
                       ga.defined() ? ga.data_ptr<T>() : nullptr, pair_grads.get(), tile_bg.data());
    const int64_t* fp = first.data_ptr<int64_t>();
    const int64_t* sp = slot.data_ptr<int64_t>();
    T* gv = g_verts.data_ptr<T>();
    T* gc = g_colors.data_ptr<T>();
    T* go = g_opacity.data_ptr<T>();
    at::parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t f = lo; f < hi; ++f) {
        T sum[kGrads] = {};
        for (int64_t q = fp[f]; q < fp[f + 1]; ++q) {  // this triangle's tiles, in row-major order
          const T* pg = &pair_grads[sp[q] * kGrads];
          for (int i = 0; i < kGrads; ++i) sum[i] += pg[i];
        }
        std::copy(sum, sum + 6, gv + f * 6);
        std::copy(sum + 6, sum + 9, gc + f * 3);
        go[f] = sum[9];
      }
    });
    T* gb = g_background.data_ptr<T>();
    for (int64_t t = 0; t < g.tiles(); ++t)
      for (int c = 0; c < 3; ++c) gb[(t / g.per_image()) * 3 + c] += tile_bg[t * 3 + c];
  });
  return {g_verts, g_colors, g_opacity, g_background};
}

// The normal equations of the colours' least squares (colours.py) for each image: gram = A A^T
// and rhs = A y, where column p of A holds pixel p's compositing weights (T triangles in painter's
// order, then the background) and y its target colour. A triangle's coverage is evaluated only on
// the pixels within `grow` of it (farther, it is below the renderer's cutoff) and a pixel's nonzero
// weights are few, so this costs pairs + pixels x depth^2 instead of the dense T x pixels x T.
// Accumulated in double, in a fixed order: the result does not depend on the thread count.
std::vector<at::Tensor> colour_system(const at::Tensor& verts, const at::Tensor& opacity, const at::Tensor& target,
                                      double sigma, double grow) {
  TORCH_CHECK(verts.device().is_cpu() && opacity.device().is_cpu() && target.device().is_cpu(),
              "colour_system takes CPU tensors");
  TORCH_CHECK(verts.dim() == 4 && verts.size(2) == 3 && verts.size(3) == 2, "vertices must be (B, T, 3, 2)");
  const int64_t b_count = verts.size(0), n = verts.size(1), k = n + 1;
  TORCH_CHECK(opacity.sizes() == at::IntArrayRef({b_count, n}), "opacity must be (B, T)");
  TORCH_CHECK(target.dim() == 4 && target.size(0) == b_count && target.size(1) == 3, "target must be (B, 3, H, W)");
  const int64_t height = target.size(2), width = target.size(3), pixels = height * width;
  auto gram = at::zeros({b_count, k, k}, verts.options().dtype(at::kDouble));
  auto rhs = at::zeros({b_count, k, 3}, verts.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "colour_system", [&] {
    using T = scalar_t;
    const auto v = verts.contiguous(), o = opacity.to(verts.scalar_type()).contiguous();
    const auto y = target.to(verts.scalar_type()).contiguous();
    const auto no_colour = at::zeros({b_count, n, 3}, verts.options());
    const auto tris = prepare<T>(v, no_colour, o);
    const T s = static_cast<T>(sigma), reach = static_cast<T>(grow);
    at::parallel_for(0, b_count, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> alpha(pixels * n);
      std::vector<int32_t> ids(n + 1);  // a pixel under every triangle, and the background
      std::vector<double> w(n + 1);
      for (int64_t b = lo; b < hi; ++b) {
        std::fill(alpha.begin(), alpha.end(), T(0));
        const T* vb = v.data_ptr<T>() + b * n * 6;
        for (int64_t t = 0; t < n; ++t) {  // coverage near each triangle, pixel-major
          const T* p = vb + t * 6;
          const T x0 = std::min({p[0], p[2], p[4]}) - reach, x1 = std::max({p[0], p[2], p[4]}) + reach;
          const T y0 = std::min({p[1], p[3], p[5]}) - reach, y1 = std::max({p[1], p[3], p[5]}) + reach;
          if (!(x1 >= T(0) && y1 >= T(0) && x0 <= T(width) && y0 <= T(height))) continue;  // off the canvas, or NaN
          const int64_t c0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(x0 - T(0.5))));
          const int64_t c1 = std::min<int64_t>(width - 1, static_cast<int64_t>(std::ceil(x1 - T(0.5))));
          const int64_t r0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(y0 - T(0.5))));
          const int64_t r1 = std::min<int64_t>(height - 1, static_cast<int64_t>(std::ceil(y1 - T(0.5))));
          const Tri<T>& tri = tris[b * n + t];
          for (int64_t r = r0; r <= r1; ++r)
            for (int64_t c = c0; c <= c1; ++c)
              alpha[(r * width + c) * n + t] = tri.op * sigmoid(signed_distance(tri, T(c) + T(0.5), T(r) + T(0.5)) / s);
        }
        double* g = gram.data_ptr<double>() + b * k * k;
        double* h = rhs.data_ptr<double>() + b * k * 3;
        const T* yb = y.data_ptr<T>() + b * 3 * pixels;
        for (int64_t q = 0; q < pixels; ++q) {
          const T* a = &alpha[q * n];
          double clear = 1.0;
          int64_t depth = 0;
          for (int64_t t = n - 1; t >= 0; --t) {  // top down: each weight is its alpha times the clear share above
            if (a[t] == T(0)) continue;
            ids[depth] = static_cast<int32_t>(t);
            w[depth++] = a[t] * clear;
            clear *= 1.0 - a[t];
          }
          ids[depth] = static_cast<int32_t>(n);  // the background
          w[depth++] = clear;
          for (int64_t i = 0; i < depth; ++i) {
            double* row = g + ids[i] * k;
            for (int64_t j = 0; j < depth; ++j) row[ids[j]] += w[i] * w[j];
            for (int c = 0; c < 3; ++c) h[ids[i] * 3 + c] += w[i] * yb[c * pixels + q];
          }
        }
      }
    });
  });
  return {gram, rhs};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused soft rasterizer: image, alpha and tile bins");
  m.def("backward", &backward, "fused soft rasterizer: gradients of vertices, colours, opacity, background");
  m.def("colour_system", &colour_system, "normal equations of the colours' least squares: gram and rhs");
}
