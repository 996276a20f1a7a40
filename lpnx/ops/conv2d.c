/* 2-D convolution as darknet and Caffe do it, cache-blocked: the output
 * pixels are cut into tiles of a few hundred, each tile's input windows are
 * unrolled into a column matrix that stays in cache (im2col), and the
 * convolution of the tile is one gemm with the weight seen as a
 * (cout, cin*kh*kw) matrix. A 1x1 convolution with stride 1 and no padding
 * is already a matrix product and skips im2col.
 *
 * With K = cin*kh*kw and a tile of T output pixels, col = im2col(tile):
 *   forward   y (cout, T)     = weight (cout, K) * col (K, T)
 *   weight    dweight (cout, K) += dout (cout, T) * col^T (T, K)
 *   input     dcol (K, T)     = weight^T (K, cout) * dout (cout, T), then
 *             col2im adds each column entry back onto the input pixel it
 *             was copied from.
 * A tile never spans two images, and how an image is cut depends on the
 * image alone: an image's output is the same bits in any batch.
 *
 * The weight gradient is summed image by image: each image's part is
 * computed on its own (in the workspace), and the parts are added in a
 * fixed tree (lpnx_conv2d_tree_sum) in which images r, r + k, r + 2k, ...
 * form a subtree for every power of two k. A batch spread over k
 * processes that each sum their images and then add the k results gets
 * the same bits as one process with the whole batch.
 *
 * 3x3 kernels with stride 1 go to Winograd's algorithm instead
 * (winograd.c) when an image has tiles enough for it to pay.
 *
 * Threads: when there are tiles enough, each thread takes whole tiles with
 * its own buffers and calls single-threaded gemms (OpenBLAS runs a gemm
 * called inside a parallel region on one thread); otherwise the tiles go
 * one after another, OpenBLAS threads each gemm and im2col / col2im are
 * OpenMP loops between the gemms. Convolutions too small to pay for a
 * parallel region run on one thread. */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv2d.h"
#include "ops.h"

/* Column tiles aim at this many bytes, so one tile and the gemm's packed
 * copy of it fit in a core's L2 cache. */
#define COL_TILE_BYTES (256 * 1024)
/* ... but hold at least this many pixels, or the gemms get too narrow. */
#define COL_TILE_MIN 128
/* Winograd needs this many tiles per image to beat im2col (at the batch
 * sizes of training). */
#define WINOGRAD_MIN_TILES 16
/* Winograd F(4x4, 3x3) needs this many input channels (see use_winograd). */
#define WINOGRAD4_MIN_CIN 16
/* Convolutions of fewer multiply-adds than this run on one thread: a
 * parallel region costs more than they do. */
#define PARALLEL_WORK (1 << 20)

int64_t lpnx_conv2d_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    int64_t span = in + 2 * pad - dil * (k - 1) - 1; /* room left after the first window */
    if (span < 0) return 0;
    return span / stride + 1;
}

int lpnx_conv2d_is_pointwise(const lpnx_conv2d_dims *d) {
    return d->kh == 1 && d->kw == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

/* How the im2col path cuts the work: a tile is a run of pixels of one
 * image. */
typedef struct {
    int64_t K, P;      /* cin*kh*kw, ho*wo */
    int64_t tile;      /* pixels per tile (the last tile of an image may be shorter) */
    int64_t per_image; /* tiles per image */
    int64_t count;     /* tiles in the batch */
    int par;           /* 0: one thread does everything */
    int threads;       /* forward: threads taking whole tiles (1: tiles in sequence) */
    int threads_back;  /* backward: threads taking whole images (1: in sequence) */
    size_t col_floats; /* per thread: col (K, tile) */
} col_plan;

static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static col_plan make_col_plan(const lpnx_conv2d_dims *d) {
    col_plan p;
    p.K = d->cin * d->kh * d->kw;
    p.P = d->ho * d->wo;
    const int64_t want = imax(COL_TILE_MIN, (int64_t)(COL_TILE_BYTES / sizeof(float)) / imax(p.K, 1));
    p.per_image = (p.P + want - 1) / want;
    p.tile = (p.P + p.per_image - 1) / p.per_image; /* even tiles */
    p.count = d->n * p.per_image;
    p.par = (double)d->n * (double)d->cout * (double)p.P * (double)p.K >= PARALLEL_WORK;
    p.threads = p.threads_back = p.par ? max_threads() : 1;
    if (p.count < 2 * p.threads) p.threads = 1;
    /* Tiles of one image write overlapping input gradients and one weight
     * gradient part: the backward shares out whole images. */
    if (d->n < p.threads_back) p.threads_back = 1;
    p.col_floats = (size_t)p.K * (size_t)p.tile;
    return p;
}

/* The Winograd tile size lpnx_conv2d_* use for d (4 or 2), or 0 for
 * im2col: the larger tile where an image has tiles enough for wide
 * products, which pays on every 3x3 layer of a ResNet U-Net but the 8x8
 * ones. F(4x4) only from WINOGRAD4_MIN_CIN input channels: below, the
 * convolution is cheap anyway and F(2x2) keeps rounding as small as the
 * direct sum's (finite-difference checks of small networks see F(4x4)'s
 * few 1e-6). The choice looks at one image, never at the batch size, so
 * an image's output is the same bits whatever batch it comes in: a batch
 * split over several processes computes what one process would. */
static int use_winograd(const lpnx_conv2d_dims *d) {
    if (!lpnx_winograd_applies(d) || d->cin == 0) return 0;
    if (d->cin >= WINOGRAD4_MIN_CIN && ((d->ho + 3) / 4) * ((d->wo + 3) / 4) >= WINOGRAD_MIN_TILES) return 4;
    if (((d->ho + 1) / 2) * ((d->wo + 1) / 2) >= WINOGRAD_MIN_TILES) return 2;
    return 0;
}

/* Floats of the backward's per-image gradient parts: (n, cout, K) for
 * the weight, then (n, cout) for the bias. */
static size_t parts_floats(const lpnx_conv2d_dims *d) {
    return (size_t)d->n * (size_t)d->cout * ((size_t)(d->cin * d->kh * d->kw) + 1);
}

size_t lpnx_conv2d_col_size(const lpnx_conv2d_dims *d) {
    size_t work;
    if (lpnx_conv2d_is_pointwise(d)) {
        work = 0;
    } else if (use_winograd(d)) {
        work = lpnx_winograd_work_size(d, use_winograd(d));
    } else {
        col_plan p = make_col_plan(d);
        size_t threads = (size_t)(p.threads > p.threads_back ? p.threads : p.threads_back);
        work = threads * p.col_floats;
    }
    return parts_floats(d) + work;
}

void lpnx_conv2d_tree_sum(float *dst, float *parts, int64_t count, size_t len) {
    /* parts: (count, len), summed in place into parts[0] */
    if (count <= 0) return;
    int64_t span = 1;
    while (span < count) span *= 2;
    for (int64_t s = span / 2; s >= 1; s /= 2)
        for (int64_t a = 0; a < s && a + s < count; a++) {
            float *x = parts + (size_t)a * len;
            const float *y = parts + (size_t)(a + s) * len;
            const int64_t n = (int64_t)len;
#pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
            for (int64_t i = 0; i < n; i++) x[i] += y[i];
        }
    const int64_t n = (int64_t)len;
#pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += parts[i];
}

/* lpnx_gemm that also accepts empty products: with K == 0 the product is
 * zero, so C becomes beta * C (beta is 0 or 1 here). BLAS would reject
 * the leading dimensions of such matrices. */
static void gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0)
            for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    lpnx_gemm(trans_a, trans_b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C,
              (int)ldc);
}

/* The output columns ow in [*lo, *hi) whose input column
 * iw = ow*stride + off lies inside [0, w); the rest read padding. */
static void valid_range(int64_t off, int64_t stride, int64_t w, int64_t wo, int64_t *lo,
                        int64_t *hi) {
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = w - 1 - off < 0 ? 0 : (w - 1 - off) / stride + 1;
    if (l > wo) l = wo;
    if (h > wo) h = wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* Columns [p0, p0 + np) of one image's column matrix, into col (K, np)
 * with leading dimension ld: row (c, ki, kj), column p = oh*wo + ow holds
 * x[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw], or 0 in the padding.
 * x (cin, h, w) is the image. par: rows split over the OpenMP threads. */
static void im2col(float *col, int64_t ld, const float *x, int64_t p0, int64_t np,
                   const lpnx_conv2d_dims *d, int par) {
    const int64_t kk = d->kh * d->kw, rows = d->cin * kk, wo = d->wo;
    const int64_t h = d->h, w = d->w, sh = d->stride_h, sw = d->stride_w;
    const int64_t oh0 = p0 / wo, ow00 = p0 % wo;
#pragma omp parallel for schedule(static) if (par && rows * np >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = r / kk, ki = (r / d->kw) % d->kh, kj = r % d->kw;
        const int64_t off_h = ki * d->dil_h - d->pad_h, off_w = kj * d->dil_w - d->pad_w;
        const float *xc = x + c * h * w; /* (h, w) */
        int64_t lo, hi;
        valid_range(off_w, sw, w, wo, &lo, &hi);
        float *dst = col + r * ld; /* (np) */
        /* output rows oh from oh0, each over columns [ow0, ow1) */
        for (int64_t q = 0, oh = oh0, ow0 = ow00; q < np; oh++, ow0 = 0) {
            const int64_t ow1 = imin(wo, ow0 + np - q);
            const int64_t ih = oh * sh + off_h;
            float *row = dst + q; /* row[ow - ow0] for ow in [ow0, ow1) */
            q += ow1 - ow0;
            if (ih < 0 || ih >= h) {
                memset(row, 0, (size_t)(ow1 - ow0) * sizeof(float));
                continue;
            }
            const int64_t a = imax(ow0, imin(lo, ow1)), b = imax(a, imin(hi, ow1));
            const int64_t base = ih * w + off_w; /* xc[base + ow*sw] for ow in [a, b) */
            for (int64_t ow = ow0; ow < a; ow++) row[ow - ow0] = 0;
            if (sw == 1) {
                if (b > a) memcpy(row + (a - ow0), xc + base + a, (size_t)(b - a) * sizeof(float));
            } else {
#pragma omp simd
                for (int64_t ow = a; ow < b; ow++) row[ow - ow0] = xc[base + ow * sw];
            }
            for (int64_t ow = b; ow < ow1; ow++) row[ow - ow0] = 0;
        }
    }
}

/* The adjoint of im2col: x (cin, h, w) += each entry of col (K, np), the
 * columns [p0, p0 + np) of one image, at the pixel it came from. Rows of
 * one channel add onto the same pixels, so the parallel loop runs over
 * channels. */
static void col2im(float *x, const float *col, int64_t ld, int64_t p0, int64_t np,
                   const lpnx_conv2d_dims *d, int par) {
    const int64_t wo = d->wo, h = d->h, w = d->w, sh = d->stride_h, sw = d->stride_w;
    const int64_t oh0 = p0 / wo, ow00 = p0 % wo;
#pragma omp parallel for schedule(static) if (par && d->cin * d->kh * d->kw * np >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < d->cin; c++) {
        float *xc = x + c * h * w; /* (h, w) */
        for (int64_t ki = 0; ki < d->kh; ki++)
            for (int64_t kj = 0; kj < d->kw; kj++) {
                const int64_t off_h = ki * d->dil_h - d->pad_h, off_w = kj * d->dil_w - d->pad_w;
                const float *src = col + ((c * d->kh + ki) * d->kw + kj) * ld; /* (np) */
                int64_t lo, hi;
                valid_range(off_w, sw, w, wo, &lo, &hi);
                for (int64_t q = 0, oh = oh0, ow0 = ow00; q < np; oh++, ow0 = 0) {
                    const int64_t ow1 = imin(wo, ow0 + np - q);
                    const int64_t ih = oh * sh + off_h;
                    const float *row = src + q; /* row[ow - ow0] for ow in [ow0, ow1) */
                    q += ow1 - ow0;
                    if (ih < 0 || ih >= h) continue;
                    const int64_t a = imax(ow0, imin(lo, ow1)), b = imax(a, imin(hi, ow1));
                    const int64_t base = ih * w + off_w; /* xc[base + ow*sw] for ow in [a, b) */
                    if (sw == 1) {
#pragma omp simd
                        for (int64_t ow = a; ow < b; ow++) xc[base + ow] += row[ow - ow0];
                    } else {
                        for (int64_t ow = a; ow < b; ow++) xc[base + ow * sw] += row[ow - ow0];
                    }
                }
            }
    }
}

/* The pixels of tile t: image *n0, columns [*p0, *p0 + *np). */
static void tile_span(const col_plan *p, int64_t t, int64_t *n0, int64_t *p0, int64_t *np) {
    *n0 = t / p->per_image;
    *p0 = (t % p->per_image) * p->tile;
    *np = imin(p->tile, p->P - *p0);
}

/* Forward of tile t. col (K, tile) is scratch. */
static void tile_forward(float *out, const float *inp, const float *weight, const float *bias,
                         float *col, const col_plan *p, const lpnx_conv2d_dims *d, int64_t t, int par) {
    int64_t n0, p0, np;
    tile_span(p, t, &n0, &p0, &np);
    const int64_t P = p->P, cout = d->cout;
    im2col(col, np, inp + n0 * d->cin * d->h * d->w, p0, np, d, par);
    float *dst = out + n0 * cout * P + p0; /* (cout, np) with leading dimension P */
    if (bias)
        for (int64_t co = 0; co < cout; co++)
            for (int64_t i = 0; i < np; i++) dst[co * P + i] = bias[co];
    gemm(0, 0, cout, np, p->K, weight, p->K, col, np, bias ? 1.0f : 0.0f, dst, P);
}

/* Backward of tile t: dweight += dout col^T (dweight: the image's part),
 * and dinp += col2im(weight^T dout) when dinp is given. col (K, tile) is
 * scratch. */
static void tile_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, float *col, const col_plan *p,
                          const lpnx_conv2d_dims *d, int64_t t, int par) {
    int64_t n0, p0, np;
    tile_span(p, t, &n0, &p0, &np);
    const int64_t P = p->P, cout = d->cout, K = p->K, in_image = d->cin * d->h * d->w;
    im2col(col, np, inp + n0 * in_image, p0, np, d, par);
    const float *g = dout + n0 * cout * P + p0; /* (cout, np) with leading dimension P */
    gemm(0, 1, cout, K, np, g, P, col, np, 1.0f, dweight, K);
    if (!dinp) return;
    gemm(1, 0, K, np, cout, weight, K, g, P, 0.0f, col, np);
    col2im(dinp + n0 * in_image, col, np, p0, np, d, par);
}

void lpnx_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         float *col, const lpnx_conv2d_dims *d) {
    const int64_t P = d->ho * d->wo;
    const int64_t in_image = d->cin * d->h * d->w, out_image = d->cout * P;
    if (d->n == 0 || out_image == 0) return;
    if (in_image == 0) { /* every column entry is padding: out is the bias */
#pragma omp parallel for schedule(static) if (d->n * out_image >= LPNX_PARALLEL_MIN)
        for (int64_t i = 0; i < d->n * d->cout; i++)
            for (int64_t q = 0; q < P; q++) out[i * P + q] = bias ? bias[i % d->cout] : 0.0f;
        return;
    }
    if (lpnx_conv2d_is_pointwise(d)) { /* the image is its own column matrix */
        for (int64_t n = 0; n < d->n; n++) {
            float *y = out + n * out_image; /* (cout, ho*wo) */
            if (bias) {
#pragma omp parallel for schedule(static) if (out_image >= LPNX_PARALLEL_MIN)
                for (int64_t co = 0; co < d->cout; co++)
                    for (int64_t q = 0; q < P; q++) y[co * P + q] = bias[co];
            }
            gemm(0, 0, d->cout, P, d->cin, weight, d->cin, inp + n * in_image, P, bias ? 1.0f : 0.0f, y, P);
        }
        return;
    }
    if (use_winograd(d)) {
        lpnx_winograd_forward(out, inp, weight, bias, col + parts_floats(d), d, use_winograd(d));
        return;
    }
    const col_plan p = make_col_plan(d);
    col += parts_floats(d); /* the backward's part of the workspace */
    if (p.threads == 1) {
        for (int64_t t = 0; t < p.count; t++) tile_forward(out, inp, weight, bias, col, &p, d, t, p.par);
        return;
    }
#pragma omp parallel num_threads(p.threads)
    {
#ifdef _OPENMP
        const int me = omp_get_thread_num();
#else
        const int me = 0;
#endif
        float *mycol = col + (size_t)me * p.col_floats; /* (K, tile) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < p.count; t++) tile_forward(out, inp, weight, bias, mycol, &p, d, t, 0);
    }
}

void lpnx_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, float *col,
                          const lpnx_conv2d_dims *d) {
    const int64_t K = d->cin * d->kh * d->kw, P = d->ho * d->wo, n = d->n, cout = d->cout;
    const int64_t in_image = d->cin * d->h * d->w, out_image = cout * P;
    if (n == 0 || out_image == 0) return; /* no gradient flows */
    float *wparts = col;                      /* (n, cout, K): each image's weight gradient */
    float *bparts = wparts + n * cout * K;    /* (n, cout): each image's bias gradient */
    col = bparts + n * cout;
    if (dbias) {
#pragma omp parallel for schedule(static) if (n * out_image >= LPNX_PARALLEL_MIN)
        for (int64_t i = 0; i < n * cout; i++) {
            const float *g = dout + i * P; /* (ho*wo) of image i / cout, channel i % cout */
            double s = 0;
            for (int64_t q = 0; q < P; q++) s += g[q];
            bparts[i] = (float)s;
        }
        lpnx_conv2d_tree_sum(dbias, bparts, n, (size_t)cout);
    }
    if (in_image == 0) return; /* nothing reaches the weight or an empty input */
    memset(wparts, 0, (size_t)(n * cout * K) * sizeof(float));
    if (lpnx_conv2d_is_pointwise(d)) {
        for (int64_t i = 0; i < n; i++) {
            const float *x = inp + i * in_image;   /* (cin, h*w) */
            const float *g = dout + i * out_image; /* (cout, ho*wo) */
            gemm(0, 1, cout, K, P, g, P, x, P, 1.0f, wparts + i * cout * K, K);
            if (dinp) gemm(1, 0, K, P, cout, weight, K, g, P, 1.0f, dinp + i * in_image, P);
        }
    } else if (use_winograd(d)) {
        lpnx_winograd_backward(dinp, wparts, dout, inp, weight, col, d, use_winograd(d));
    } else {
        const col_plan p = make_col_plan(d);
        if (p.threads_back == 1) {
            for (int64_t t = 0; t < p.count; t++)
                tile_backward(dinp, wparts + t / p.per_image * cout * K, dout, inp, weight, col, &p, d, t, p.par);
        } else {
            /* Each thread takes whole images; an image's tiles go in order. */
#pragma omp parallel num_threads(p.threads_back)
            {
#ifdef _OPENMP
                const int me = omp_get_thread_num();
#else
                const int me = 0;
#endif
                float *mycol = col + (size_t)me * p.col_floats; /* (K, tile) */
#pragma omp for schedule(static)
                for (int64_t i = 0; i < n; i++)
                    for (int64_t t = i * p.per_image; t < (i + 1) * p.per_image; t++)
                        tile_backward(dinp, wparts + i * cout * K, dout, inp, weight, mycol, &p, d, t, 0);
            }
        }
    }
    lpnx_conv2d_tree_sum(dweight, wparts, n, (size_t)(cout * K));
}
