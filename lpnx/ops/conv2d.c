/* 2-D convolution as darknet and Caffe do it: each image is unrolled into a
 * column matrix (im2col), so the convolution becomes one gemm with the
 * weight seen as a (cout, cin*kh*kw) matrix. A 1x1 convolution with stride
 * 1 and no padding is already a matrix product and skips im2col.
 *
 * Backward per image, with col = im2col(inp):
 *   dweight (cout, K) += dout (cout, P) * col^T (P, K)
 *   dcol    (K, P)     = weight^T (K, cout) * dout (cout, P), then col2im
 *                        adds each column entry back onto the input pixel
 *                        it was copied from.
 * where K = cin*kh*kw and P = ho*wo.
 *
 * The gemms are called from serial code only, so OpenBLAS may use every
 * thread; im2col and col2im are OpenMP loops between them. */
#include <string.h>

#include "conv2d.h"
#include "ops.h"

int64_t lpnx_conv2d_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    int64_t span = in + 2 * pad - dil * (k - 1) - 1; /* room left after the first window */
    if (span < 0) return 0;
    return span / stride + 1;
}

int lpnx_conv2d_is_pointwise(const lpnx_conv2d_dims *d) {
    return d->kh == 1 && d->kw == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

size_t lpnx_conv2d_col_size(const lpnx_conv2d_dims *d) {
    if (lpnx_conv2d_is_pointwise(d)) return 0;
    return (size_t)(d->cin * d->kh * d->kw) * (size_t)(d->ho * d->wo);
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

/* col (cin*kh*kw, ho*wo): row (c, ki, kj), column (oh, ow) holds
 * x[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw], or 0 in the padding.
 * x (cin, h, w) is one image. Rows are independent: parallel over them. */
static void im2col(float *col, const float *x, const lpnx_conv2d_dims *d) {
    const int64_t kk = d->kh * d->kw, rows = d->cin * kk, ho = d->ho, wo = d->wo;
    const int64_t h = d->h, w = d->w, sh = d->stride_h, sw = d->stride_w;
#pragma omp parallel for schedule(static) if (rows * ho * wo >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = r / kk, ki = (r / d->kw) % d->kh, kj = r % d->kw;
        const int64_t off_h = ki * d->dil_h - d->pad_h, off_w = kj * d->dil_w - d->pad_w;
        const float *xc = x + c * h * w; /* (h, w) */
        float *dst = col + r * ho * wo;  /* (ho, wo) */
        int64_t lo, hi;
        valid_range(off_w, sw, w, wo, &lo, &hi);
        for (int64_t oh = 0; oh < ho; oh++) {
            const int64_t ih = oh * sh + off_h;
            float *row = dst + oh * wo; /* (wo) */
            if (ih < 0 || ih >= h) {
                memset(row, 0, (size_t)wo * sizeof(float));
                continue;
            }
            const int64_t base = ih * w + off_w; /* xc[base + ow*sw] for ow in [lo, hi) */
            for (int64_t ow = 0; ow < lo; ow++) row[ow] = 0;
            if (sw == 1) {
                if (hi > lo) memcpy(row + lo, xc + base + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                for (int64_t ow = lo; ow < hi; ow++) row[ow] = xc[base + ow * sw];
            }
            for (int64_t ow = hi; ow < wo; ow++) row[ow] = 0;
        }
    }
}

/* The adjoint of im2col: x (cin, h, w) += each entry of col (cin*kh*kw,
 * ho*wo) at the pixel it came from. Rows of one channel add onto the same
 * pixels, so the parallel loop runs over channels. */
static void col2im(float *x, const float *col, const lpnx_conv2d_dims *d) {
    const int64_t kk = d->kh * d->kw, ho = d->ho, wo = d->wo;
    const int64_t h = d->h, w = d->w, sh = d->stride_h, sw = d->stride_w;
#pragma omp parallel for schedule(static) if (d->cin * kk * ho * wo >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < d->cin; c++) {
        float *xc = x + c * h * w; /* (h, w) */
        for (int64_t ki = 0; ki < d->kh; ki++)
            for (int64_t kj = 0; kj < d->kw; kj++) {
                const int64_t off_h = ki * d->dil_h - d->pad_h, off_w = kj * d->dil_w - d->pad_w;
                const float *src = col + ((c * d->kh + ki) * d->kw + kj) * ho * wo; /* (ho, wo) */
                int64_t lo, hi;
                valid_range(off_w, sw, w, wo, &lo, &hi);
                for (int64_t oh = 0; oh < ho; oh++) {
                    const int64_t ih = oh * sh + off_h;
                    if (ih < 0 || ih >= h) continue;
                    const int64_t base = ih * w + off_w; /* xc[base + ow*sw] for ow in [lo, hi) */
                    const float *row = src + oh * wo;
                    for (int64_t ow = lo; ow < hi; ow++) xc[base + ow * sw] += row[ow];
                }
            }
    }
}

void lpnx_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         float *col, const lpnx_conv2d_dims *d) {
    const int64_t K = d->cin * d->kh * d->kw, P = d->ho * d->wo;
    const int64_t in_image = d->cin * d->h * d->w, out_image = d->cout * P;
    const int pointwise = lpnx_conv2d_is_pointwise(d);
    const float beta = bias ? 1.0f : 0.0f;
    if (d->n == 0 || out_image == 0) return;
    /* An empty input contributes nothing: every column entry is padding. */
    const int empty_input = in_image == 0;
    for (int64_t n = 0; n < d->n; n++) {
        float *y = out + n * out_image; /* (cout, ho*wo) */
        if (bias) {
#pragma omp parallel for schedule(static) if (out_image >= LPNX_PARALLEL_MIN)
            for (int64_t co = 0; co < d->cout; co++)
                for (int64_t p = 0; p < P; p++) y[co * P + p] = bias[co];
        }
        if (empty_input) {
            if (!bias) memset(y, 0, (size_t)out_image * sizeof(float));
            continue;
        }
        const float *x = inp + n * in_image; /* (cin, h*w) */
        const float *columns = x;            /* (K, P): the image itself when pointwise */
        if (!pointwise) {
            im2col(col, x, d);
            columns = col;
        }
        gemm(0, 0, d->cout, P, K, weight, K, columns, P, beta, y, P);
    }
}

void lpnx_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, float *col,
                          const lpnx_conv2d_dims *d) {
    const int64_t K = d->cin * d->kh * d->kw, P = d->ho * d->wo;
    const int64_t in_image = d->cin * d->h * d->w, out_image = d->cout * P;
    const int pointwise = lpnx_conv2d_is_pointwise(d);
    if (d->n == 0 || out_image == 0) return; /* no gradient flows */
    if (dbias) {
#pragma omp parallel for schedule(static) if (d->n * out_image >= LPNX_PARALLEL_MIN)
        for (int64_t co = 0; co < d->cout; co++) {
            double s = 0;
            for (int64_t n = 0; n < d->n; n++) {
                const float *g = dout + n * out_image + co * P; /* (ho*wo) */
                for (int64_t p = 0; p < P; p++) s += g[p];
            }
            dbias[co] += (float)s;
        }
    }
    if (in_image == 0) return; /* nothing reaches the weight or an empty input */
    for (int64_t n = 0; n < d->n; n++) {
        const float *x = inp + n * in_image;   /* (cin, h*w) */
        const float *g = dout + n * out_image; /* (cout, ho*wo) */
        const float *columns = x;              /* (K, P): the image itself when pointwise */
        if (!pointwise) {
            im2col(col, x, d);
            columns = col;
        }
        gemm(0, 1, d->cout, K, P, g, P, columns, P, 1.0f, dweight, K);
        if (!dinp) continue;
        float *gx = dinp + n * in_image; /* (cin, h*w) */
        if (pointwise) {
            gemm(1, 0, K, P, d->cout, weight, K, g, P, 1.0f, gx, P);
        } else {
            gemm(1, 0, K, P, d->cout, weight, K, g, P, 0.0f, col, P);
            col2im(gx, col, d);
        }
    }
}
