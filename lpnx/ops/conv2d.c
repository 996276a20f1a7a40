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
 * The images are cut into groups (lpnx_conv2d_groups, conv_groups.h): a tile
 * is a run of pixels of one image, or a whole group of small images. Each
 * group's weight gradient goes to a part of its own in the workspace, and
 * the parts are added in the groups' tree, so a batch shared by two
 * processes sums to the bits of the whole batch in one.
 *
 * 3x3 kernels with stride 1 go to Winograd's algorithm instead
 * (winograd.c) when an image has tiles enough for it to pay, unless the
 * caller asks for another algorithm (d->algo, conv2d.h). LPNX_CONV_DOUBLE's
 * forward sums in double: Winograd F(2x2) in double (winograd_double.c)
 * or the same tiles with dgemm (forward_double below).
 *
 * Threads: when there are tiles enough, each thread takes whole tiles with
 * its own buffers; otherwise the tiles go one after another, each product
 * shared out in lpnx_gemm_blocks' blocks and im2col / col2im OpenMP loops
 * between them. Either way the same products of the same blocks are
 * computed and OpenBLAS runs every call on one thread, so the bits never
 * depend on the thread count. Convolutions too small to pay for a
 * parallel region run on one thread. */
#include <stdint.h>
#include <string.h>

#include "conv2d.h"
#include "conv_groups.h"
#include "ops.h"
#include "winograd.h"

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

/* ---- the im2col plan ------------------------------------------------------
 * Images of ho*wo >= one tile's pixels are cut into per_image tiles;
 * smaller images go up to c at a time, one tile for them. */
typedef struct {
    int64_t K, P;      /* cin*kh*kw, ho*wo */
    int64_t c;         /* most images in a tile */
    int64_t tile;      /* pixels per piece of one image (per_image > 1: the last may be shorter) */
    int64_t per_image; /* pieces per image, or 1 */
    int64_t groups;    /* groups in the batch */
    int64_t count;     /* tiles in the batch */
    int par;           /* 0: one thread does everything */
    int threads;       /* forward: threads taking whole tiles (1: tiles in sequence) */
    int threads_back;  /* backward: threads taking whole groups (1: in sequence) */
    size_t col_floats; /* per thread: col (K, tile pixels) */
    size_t y_floats;   /* per thread: y (cout, tile pixels) when a tile holds several images */
} col_plan;

/* floats rounded up to 64 bytes. */
static size_t round16(size_t floats) { return (floats + 15) / 16 * 16; }

static col_plan make_col_plan(const lpnx_conv2d_dims *d) {
    col_plan p;
    p.K = d->cin * d->kh * d->kw;
    p.P = d->ho * d->wo;
    const int64_t want = lpnx_imax(COL_TILE_MIN, (int64_t)(COL_TILE_BYTES / sizeof(float)) / lpnx_imax(p.K, 1));
    int64_t pixels; /* in the largest tile */
    if (p.P >= want) {
        p.c = 1;
        p.per_image = (p.P + want - 1) / want;
        p.tile = (p.P + p.per_image - 1) / p.per_image; /* even tiles */
        pixels = p.tile;
    } else {
        p.c = lpnx_imax(1, want / lpnx_imax(p.P, 1));
        p.per_image = 1;
        p.tile = p.P;
        pixels = lpnx_imin(p.c, lpnx_imax(d->n, 1)) * p.P;
    }
    lpnx_conv2d_group list[1 << LPNX_CONV2D_SPLIT_LEVELS];
    p.groups = lpnx_conv2d_groups(list, d->n, d->batch_parts);
    p.count = lpnx_conv2d_units(list, p.groups, p.c, p.per_image);
    p.par = (double)d->n * (double)d->cout * (double)p.P * (double)p.K >= PARALLEL_WORK;
    p.threads = p.threads_back = p.par ? lpnx_get_num_threads() : 1;
    if (p.count < 2 * p.threads) p.threads = 1;
    /* A group's tiles write one weight gradient part (and one image's
     * pieces overlapping input gradients): the backward shares out whole
     * groups. */
    if (p.groups < p.threads_back) p.threads_back = 1;
    p.col_floats = (size_t)p.K * (size_t)pixels;
    p.y_floats = p.c > 1 ? (size_t)d->cout * (size_t)pixels : 0;
    return p;
}

/* The Winograd tile size lpnx_conv2d_* use for d (4 or 2), or 0 for
 * im2col: the larger tile where an image has tiles enough for wide
 * products, which pays on every 3x3 layer of a ResNet U-Net but the 8x8
 * ones. F(4x4) only from WINOGRAD4_MIN_CIN input channels: below, the
 * convolution is cheap anyway and F(2x2) keeps rounding as small as the
 * direct sum's (finite-difference checks of small networks see F(4x4)'s
 * few 1e-6). The choice looks at one image, never at the batch. */
static int use_winograd(const lpnx_conv2d_dims *d) {
    if (d->algo == LPNX_CONV_DIRECT || d->algo == LPNX_CONV_DOUBLE) return 0;
    if (!lpnx_winograd_applies(d) || d->cin == 0) return 0;
    if (d->algo == LPNX_CONV_WINOGRAD && d->cin >= WINOGRAD4_MIN_CIN &&
        ((d->ho + 3) / 4) * ((d->wo + 3) / 4) >= WINOGRAD_MIN_TILES)
        return 4;
    if (((d->ho + 1) / 2) * ((d->wo + 1) / 2) >= WINOGRAD_MIN_TILES) return 2;
    return 0;
}

/* The groups and the backward's share of the workspace, at its start:
 * each group's weight gradient part (groups, cout, K) and bias part
 * (groups, cout). */
typedef struct {
    lpnx_conv2d_group list[1 << LPNX_CONV2D_SPLIT_LEVELS];
    int64_t count;
    float *wparts, *bparts;
    size_t floats; /* of the workspace */
} group_space;

static group_space groups_of(const lpnx_conv2d_dims *d, float *ws) {
    group_space gs;
    gs.count = lpnx_conv2d_groups(gs.list, d->n, d->batch_parts);
    const size_t K = (size_t)(d->cin * d->kh * d->kw);
    gs.floats = round16((size_t)gs.count * (size_t)d->cout * (K + 1));
    gs.wparts = ws;
    gs.bparts = ws ? ws + (size_t)gs.count * (size_t)d->cout * K : NULL;
    return gs;
}

/* Floats of a double-sum forward's workspace after the groups' parts:
 * the weight in double (cout, K), then per thread the float columns
 * (K, pixels), their double copy and the double output (cout, pixels);
 * every piece starts on 64 bytes. */
static size_t double_thread_floats(const col_plan *p, const lpnx_conv2d_dims *d) {
    const size_t pixels = p->col_floats / (size_t)lpnx_imax(p->K, 1);
    return round16(p->col_floats) + round16(2 * p->col_floats) + round16(2 * (size_t)d->cout * pixels);
}

/* Whether LPNX_CONV_DOUBLE's forward takes Winograd F(2x2, 3x3) in
 * double: where WINOGRAD2 would take F(2x2). */
static int double_winograd(const lpnx_conv2d_dims *d) {
    lpnx_conv2d_dims f2 = *d;
    f2.algo = LPNX_CONV_WINOGRAD2;
    return use_winograd(&f2) == 2;
}

/* Doubles at a place of the float workspace that starts on 64 bytes. */
static double *as_doubles(float *p) {
    void *v = p;
    return v;
}

/* Threads of a double-sum forward: each takes whole tiles. */
static int double_threads(const col_plan *p) {
    return p->par ? (int)lpnx_imin(lpnx_get_num_threads(), p->count) : 1;
}
static size_t double_work_size(const col_plan *p, const lpnx_conv2d_dims *d) {
    return round16(2 * (size_t)d->cout * (size_t)p->K) + (size_t)double_threads(p) * double_thread_floats(p, d);
}

size_t lpnx_conv2d_col_size(const lpnx_conv2d_dims *d) {
    size_t work;
    if (d->algo == LPNX_CONV_DOUBLE) {
        const col_plan p = make_col_plan(d);
        const size_t back = (size_t)p.threads_back * (p.col_floats + p.y_floats);
        const size_t fwd = double_winograd(d) ? lpnx_winograd_double_work_size(d) : double_work_size(&p, d);
        work = fwd > back ? fwd : back;
    } else if (lpnx_conv2d_is_pointwise(d)) {
        work = 0;
    } else if (use_winograd(d)) {
        work = lpnx_winograd_work_size(d, use_winograd(d));
    } else {
        col_plan p = make_col_plan(d);
        size_t threads = (size_t)(p.threads > p.threads_back ? p.threads : p.threads_back);
        work = threads * (p.col_floats + p.y_floats);
    }
    return groups_of(d, NULL).floats + work;
}

/* lpnx_gemm_blocks that also accepts empty products: with K == 0 the
 * product is zero, so C becomes beta * C (beta is 0 or 1 here). BLAS
 * would reject the leading dimensions of such matrices. Every product
 * goes in lpnx_gemm_blocks' blocks, shared among the threads outside a
 * parallel region and one after another inside one: the same calls to
 * BLAS, so the same bits, whoever makes them. */
static void gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0)
            for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    lpnx_gemm_blocks(trans_a, trans_b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
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
            const int64_t ow1 = lpnx_imin(wo, ow0 + np - q);
            const int64_t ih = oh * sh + off_h;
            float *row = dst + q; /* row[ow - ow0] for ow in [ow0, ow1) */
            q += ow1 - ow0;
            if (ih < 0 || ih >= h) {
                memset(row, 0, (size_t)(ow1 - ow0) * sizeof(float));
                continue;
            }
            const int64_t a = lpnx_imax(ow0, lpnx_imin(lo, ow1)), b = lpnx_imax(a, lpnx_imin(hi, ow1));
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
                    const int64_t ow1 = lpnx_imin(wo, ow0 + np - q);
                    const int64_t ih = oh * sh + off_h;
                    const float *row = src + q; /* row[ow - ow0] for ow in [ow0, ow1) */
                    q += ow1 - ow0;
                    if (ih < 0 || ih >= h) continue;
                    const int64_t a = lpnx_imax(ow0, lpnx_imin(lo, ow1)), b = lpnx_imax(a, lpnx_imin(hi, ow1));
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

/* Tile t of the plan: images first, first + stride, ... (nn of them) and,
 * for an image in pieces, its columns [*p0, *p0 + *np); *np counts the
 * tile's columns in all. *k: the tile's group; *lead: 1 when the tile is
 * its group's first. */
static void tile_span(const col_plan *p, const lpnx_conv2d_group *list, int64_t t, int64_t *k, int *lead,
                      int64_t *first, int64_t *stride, int64_t *nn, int64_t *p0, int64_t *np) {
    int64_t j0, piece;
    lpnx_conv2d_unit(list, p->groups, p->c, p->per_image, t, k, &j0, nn, &piece);
    *lead = j0 == 0 && piece == 0;
    *first = list[*k].first + j0 * list[*k].stride;
    *stride = list[*k].stride;
    *p0 = piece * p->tile;
    *np = *nn > 1 ? *nn * p->P : lpnx_imin(p->tile, p->P - *p0);
}

/* The column matrix of a tile into col (K, np). */
static void tile_columns(float *col, const float *inp, const col_plan *p, const lpnx_conv2d_dims *d,
                         int64_t first, int64_t stride, int64_t nn, int64_t p0, int64_t np, int par) {
    const int64_t in_image = d->cin * d->h * d->w;
    if (nn == 1) {
        im2col(col, np, inp + first * in_image, p0, np, d, par);
        return;
    }
    for (int64_t i = 0; i < nn; i++) im2col(col + i * p->P, np, inp + (first + i * stride) * in_image, 0, p->P, d, par);
}

/* Forward of tile t. col (K, np) and y (cout, np) are scratch. */
static void tile_forward(float *out, const float *inp, const float *weight, const float *bias,
                         float *col, float *y, const col_plan *p, const lpnx_conv2d_group *list,
                         const lpnx_conv2d_dims *d, int64_t t, int par) {
    int64_t k, first, stride, nn, p0, np;
    int lead;
    tile_span(p, list, t, &k, &lead, &first, &stride, &nn, &p0, &np);
    const int64_t P = p->P, cout = d->cout;
    tile_columns(col, inp, p, d, first, stride, nn, p0, np, par);
    float *dst = out + first * cout * P + p0; /* (cout, np) with leading dimension P */
    int64_t ld = P;
    if (nn > 1) {
        dst = y;
        ld = np;
    }
    if (bias)
        for (int64_t co = 0; co < cout; co++)
            for (int64_t i = 0; i < np; i++) dst[co * ld + i] = bias[co];
    gemm(0, 0, cout, np, p->K, weight, p->K, col, np, bias ? 1.0f : 0.0f, dst, ld);
    if (nn > 1)
        for (int64_t i = 0; i < nn; i++)
            for (int64_t co = 0; co < cout; co++)
                memcpy(out + ((first + i * stride) * cout + co) * P, y + co * np + i * P, (size_t)P * sizeof(float));
}

/* Backward of tile t: its group's part of the weight gradient (wparts:
 * (groups, cout, K)) = (the group's first tile) or += dout col^T; and
 * dinp += col2im(weight^T dout) when dinp is given. col (K, np) and
 * y (cout, np) are scratch. */
static void tile_backward(float *dinp, float *wparts, const float *dout, const float *inp, const float *weight,
                          float *col, float *y, const col_plan *p, const lpnx_conv2d_group *list,
                          const lpnx_conv2d_dims *d, int64_t t, int par) {
    int64_t k, first, stride, nn, p0, np;
    int lead;
    tile_span(p, list, t, &k, &lead, &first, &stride, &nn, &p0, &np);
    const int64_t P = p->P, cout = d->cout, K = p->K, in_image = d->cin * d->h * d->w;
    tile_columns(col, inp, p, d, first, stride, nn, p0, np, par);
    const float *gy = dout + first * cout * P + p0; /* (cout, np) with leading dimension P */
    int64_t ld = P;
    if (nn > 1) { /* gather the tile's gradients into one matrix */
        for (int64_t i = 0; i < nn; i++)
            for (int64_t co = 0; co < cout; co++)
                memcpy(y + co * np + i * P, dout + ((first + i * stride) * cout + co) * P, (size_t)P * sizeof(float));
        gy = y;
        ld = np;
    }
    gemm(0, 1, cout, K, np, gy, ld, col, np, lead ? 0.0f : 1.0f, wparts + k * cout * K, K);
    if (!dinp) return;
    gemm(1, 0, K, np, cout, weight, K, gy, ld, 0.0f, col, np);
    if (nn == 1) {
        col2im(dinp + first * in_image, col, np, p0, np, d, par);
        return;
    }
    for (int64_t i = 0; i < nn; i++) col2im(dinp + (first + i * stride) * in_image, col + i * P, np, 0, P, d, par);
}

/* Forward of tile t with sums in double: the float columns colf (K, np)
 * are copied to cold and multiplied by the double weight wd (cout, K)
 * into yd (cout, np), which starts as the bias; each output is rounded
 * once. */
static void tile_forward_double(float *out, const float *inp, const double *wd, const float *bias, float *colf,
                                double *cold, double *yd, const col_plan *p, const lpnx_conv2d_group *list,
                                const lpnx_conv2d_dims *d, int64_t t) {
    int64_t k, first, stride, nn, p0, np;
    int lead;
    tile_span(p, list, t, &k, &lead, &first, &stride, &nn, &p0, &np);
    const int64_t P = p->P, cout = d->cout, K = p->K;
    tile_columns(colf, inp, p, d, first, stride, nn, p0, np, 0);
    for (int64_t i = 0; i < K * np; i++) cold[i] = colf[i];
    for (int64_t co = 0; co < cout; co++)
        for (int64_t i = 0; i < np; i++) yd[co * np + i] = bias ? bias[co] : 0.0;
    lpnx_dgemm(0, 0, (int)cout, (int)np, (int)K, wd, (int)K, cold, (int)np, 1.0, yd, (int)np);
    for (int64_t i = 0; i < nn; i++) {
        const int64_t pixels = nn > 1 ? P : np;
        for (int64_t co = 0; co < cout; co++) {
            float *dst = out + ((first + i * stride) * cout + co) * P + p0; /* (pixels) */
            const double *src = yd + co * np + i * P;
            for (int64_t q = 0; q < pixels; q++) dst[q] = (float)src[q];
        }
    }
}

/* The forward of LPNX_CONV_DOUBLE: every convolution with a non-empty
 * image goes through columns, tiles shared out whole among the threads. */
static void forward_double(float *out, const float *inp, const float *weight, const float *bias, float *col,
                           const lpnx_conv2d_dims *d) {
    const col_plan p = make_col_plan(d);
    col += groups_of(d, NULL).floats;
    double *wd = as_doubles(col); /* (cout, K) */
    for (int64_t i = 0; i < d->cout * p.K; i++) wd[i] = weight[i];
    float *base = col + round16(2 * (size_t)d->cout * (size_t)p.K);
    const size_t per = double_thread_floats(&p, d);
    lpnx_conv2d_group list[1 << LPNX_CONV2D_SPLIT_LEVELS];
    lpnx_conv2d_groups(list, d->n, d->batch_parts);
#pragma omp parallel num_threads(double_threads(&p)) if (double_threads(&p) > 1)
    {
        const int me = lpnx_thread_num();
        float *colf = base + (size_t)me * per;                                              /* (K, tile) */
        double *cold = as_doubles(colf + round16(p.col_floats));                            /* (K, tile) */
        double *yd = as_doubles(colf + round16(p.col_floats) + round16(2 * p.col_floats)); /* (cout, tile) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < p.count; t++) tile_forward_double(out, inp, wd, bias, colf, cold, yd, &p, list, d, t);
    }
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
    if (d->algo == LPNX_CONV_DOUBLE) {
        if (double_winograd(d))
            lpnx_winograd_double_forward(out, inp, weight, bias, col + groups_of(d, NULL).floats, d);
        else
            forward_double(out, inp, weight, bias, col, d);
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
        lpnx_winograd_forward(out, inp, weight, bias, col + groups_of(d, NULL).floats, d, use_winograd(d));
        return;
    }
    const col_plan p = make_col_plan(d);
    const group_space gs = groups_of(d, col);
    col += gs.floats; /* the backward's parts come first */
    if (p.threads == 1) {
        for (int64_t t = 0; t < p.count; t++)
            tile_forward(out, inp, weight, bias, col, col + p.col_floats, &p, gs.list, d, t, p.par);
        return;
    }
#pragma omp parallel num_threads(p.threads)
    {
        const int me = lpnx_thread_num();
        float *mycol = col + (size_t)me * (p.col_floats + p.y_floats); /* (K, tile) */
        float *myy = mycol + p.col_floats;                               /* (cout, tile) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < p.count; t++) tile_forward(out, inp, weight, bias, mycol, myy, &p, gs.list, d, t, 0);
    }
}

void lpnx_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, float *col,
                          const lpnx_conv2d_dims *d) {
    const int64_t K = d->cin * d->kh * d->kw, P = d->ho * d->wo, n = d->n, cout = d->cout;
    const int64_t in_image = d->cin * d->h * d->w, out_image = cout * P;
    if (n == 0 || out_image == 0) return; /* no gradient flows */
    const group_space gs = groups_of(d, col);
    col += gs.floats;
    if (dbias) {
#pragma omp parallel for schedule(static) if (n * out_image >= LPNX_PARALLEL_MIN)
        for (int64_t i = 0; i < gs.count * cout; i++) {
            const lpnx_conv2d_group *grp = &gs.list[i / cout];
            const int64_t co = i % cout;
            float s = 0; /* the group's images in order, each summed in double */
            for (int64_t j = 0; j < grp->count; j++) {
                const float *g = dout + (grp->first + j * grp->stride) * out_image + co * P; /* (ho*wo) */
                double sum = 0;
                for (int64_t q = 0; q < P; q++) sum += g[q];
                s += (float)sum;
            }
            gs.bparts[i] = s;
        }
        lpnx_conv2d_sum_groups(dbias, gs.bparts, n, (size_t)cout, d->batch_parts);
    }
    if (in_image == 0) return; /* nothing reaches the weight or an empty input */
    if (lpnx_conv2d_is_pointwise(d)) {
        for (int64_t k = 0; k < gs.count; k++) {
            const lpnx_conv2d_group *grp = &gs.list[k];
            for (int64_t j = 0; j < grp->count; j++) {
                const int64_t i = grp->first + j * grp->stride;
                const float *x = inp + i * in_image;   /* (cin, h*w) */
                const float *g = dout + i * out_image; /* (cout, ho*wo) */
                gemm(0, 1, cout, K, P, g, P, x, P, j ? 1.0f : 0.0f, gs.wparts + k * cout * K, K);
                if (dinp) gemm(1, 0, K, P, cout, weight, K, g, P, 1.0f, dinp + i * in_image, P);
            }
        }
    } else if (use_winograd(d)) {
        lpnx_winograd_backward(dinp, gs.wparts, dout, inp, weight, col, d, use_winograd(d));
    } else {
        const col_plan p = make_col_plan(d);
        if (p.threads_back == 1) {
            for (int64_t t = 0; t < p.count; t++)
                tile_backward(dinp, gs.wparts, dout, inp, weight, col, col + p.col_floats, &p, gs.list, d, t, p.par);
        } else {
            /* Each thread takes whole groups; a group's tiles go in order. */
#pragma omp parallel num_threads(p.threads_back)
            {
                const int me = lpnx_thread_num();
                float *mycol = col + (size_t)me * (p.col_floats + p.y_floats); /* (K, tile) */
                float *myy = mycol + p.col_floats;                               /* (cout, tile) */
#pragma omp for schedule(static)
                for (int64_t k = 0; k < gs.count; k++) {
                    const int64_t t0 = lpnx_conv2d_units(gs.list, k, p.c, p.per_image);
                    const int64_t t1 = t0 + lpnx_conv2d_units(gs.list + k, 1, p.c, p.per_image);
                    for (int64_t t = t0; t < t1; t++)
                        tile_backward(dinp, gs.wparts, dout, inp, weight, mycol, myy, &p, gs.list, d, t, 0);
                }
            }
        }
    }
    lpnx_conv2d_sum_groups(dweight, gs.wparts, n, (size_t)(cout * K), d->batch_parts);
}
