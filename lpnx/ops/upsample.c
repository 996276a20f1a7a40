/* Nearest and bilinear (align_corners=false) resampling of (planes,H,W)
 * to (planes,Ho,Wo), with PyTorch's index arithmetic: the per-axis source
 * positions and weights are computed once, rounded exactly as PyTorch 1.13
 * rounds them, into small tables. Both directions (up and down) and any sizes >= 1.
 * Forward runs one task per output row; backward one task per plane, so
 * the scatter never has two threads on one element. Bilinear does four
 * reads per output, so it goes parallel at a quarter of the size. */
#include <math.h>
#include <stdlib.h>

#include "layers.h"

/* PyTorch's nearest_idx for a size given (no scale factor). */
static void nearest_axis(int64_t *src, int64_t in, int64_t out) {
    /* src: (out) */
    const float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        int64_t s = (int64_t)floorf((float)o * scale);
        src[o] = s < in - 1 ? s : in - 1;
    }
}

lpnx_status lpnx_upsample_nearest_forward(float *out, const float *inp, int64_t planes,
                                          int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    /* out: (planes,Ho,Wo); inp: (planes,H,W) */
    int64_t *src_h = malloc((size_t)(Ho + Wo) * sizeof *src_h); /* (Ho) then src_w (Wo) */
    if (!src_h) return LPNX_ENOMEM;
    int64_t *src_w = src_h + Ho;
    nearest_axis(src_h, H, Ho);
    nearest_axis(src_w, W, Wo);
    const int64_t rows = planes * Ho;
    #pragma omp parallel for schedule(static) if (rows * Wo >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / Ho, oh = r % Ho;
        const float *row = inp + (p * H + src_h[oh]) * W;
        float *o = out + r * Wo;
        for (int64_t ow = 0; ow < Wo; ow++) o[ow] = row[src_w[ow]];
    }
    free(src_h);
    return LPNX_OK;
}

lpnx_status lpnx_upsample_nearest_backward(float *gx, const float *gy, int64_t planes,
                                           int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    /* gx: (planes,H,W), accumulated into; gy: (planes,Ho,Wo) */
    int64_t *src_h = malloc((size_t)(Ho + Wo) * sizeof *src_h); /* (Ho) then src_w (Wo) */
    if (!src_h) return LPNX_ENOMEM;
    int64_t *src_w = src_h + Ho;
    nearest_axis(src_h, H, Ho);
    nearest_axis(src_w, W, Wo);
    #pragma omp parallel for schedule(static) if (planes * Ho * Wo >= LPNX_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t oh = 0; oh < Ho; oh++) {
            float *row = gx + (p * H + src_h[oh]) * W;
            const float *g = gy + (p * Ho + oh) * Wo;
            for (int64_t ow = 0; ow < Wo; ow++) row[src_w[ow]] += g[ow];
        }
    }
    free(src_h);
    return LPNX_OK;
}

/* One output position of a linear axis: it reads inputs i0 and i1 with
 * weights l0 and l1. */
typedef struct {
    int64_t i0, i1;
    float l0, l1;
} linear_tap;

/* PyTorch's compute_source_index_and_lambda (align_corners=false): the
 * scale in/out is a float, the source position is computed from it in
 * double, the weights are floats. Equal sizes copy. */
static void linear_axis(linear_tap *taps, int64_t in, int64_t out) {
    /* taps: (out) */
    const float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        if (in == out) {
            taps[o] = (linear_tap){o, o, 1.0f, 0.0f};
            continue;
        }
        double src = (double)scale * ((double)o + 0.5) - 0.5;
        if (src < 0) src = 0;
        int64_t i = (int64_t)src; /* floor: src >= 0 */
        if (i > in - 1) i = in - 1;
        const float lambda = (float)(src - (double)i);
        taps[o].i0 = i;
        taps[o].i1 = i < in - 1 ? i + 1 : i;
        taps[o].l1 = lambda;
        taps[o].l0 = 1.0f - lambda;
    }
}

/* Both axes' taps in one allocation, rows (Ho) then columns (Wo); NULL
 * when it fails. */
static linear_tap *linear_taps(int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    linear_tap *taps = malloc((size_t)(Ho + Wo) * sizeof *taps); /* (Ho+Wo) */
    if (!taps) return NULL;
    linear_axis(taps, H, Ho);
    linear_axis(taps + Ho, W, Wo);
    return taps;
}

lpnx_status lpnx_upsample_bilinear_forward(float *out, const float *inp, int64_t planes,
                                           int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    /* out: (planes,Ho,Wo); inp: (planes,H,W) */
    linear_tap *th = linear_taps(H, W, Ho, Wo); /* (Ho) rows, then tw (Wo) columns */
    if (!th) return LPNX_ENOMEM;
    const linear_tap *tw = th + Ho;
    const int64_t rows = planes * Ho;
    #pragma omp parallel for schedule(static) if (rows * Wo >= LPNX_PARALLEL_MIN / 4)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / Ho, oh = r % Ho;
        const float *r0 = inp + (p * H + th[oh].i0) * W, *r1 = inp + (p * H + th[oh].i1) * W;
        const float h0 = th[oh].l0, h1 = th[oh].l1;
        float *o = out + r * Wo;
        for (int64_t ow = 0; ow < Wo; ow++) {
            const int64_t w0 = tw[ow].i0, w1 = tw[ow].i1;
            const float l0 = tw[ow].l0, l1 = tw[ow].l1;
            /* float corner weights, the sum in double: PyTorch's rounding */
            const double v = (double)(h0 * l0) * r0[w0] + (double)(h0 * l1) * r0[w1] +
                             (double)(h1 * l0) * r1[w0] + (double)(h1 * l1) * r1[w1];
            o[ow] = (float)v;
        }
    }
    free(th);
    return LPNX_OK;
}

lpnx_status lpnx_upsample_bilinear_backward(float *gx, const float *gy, int64_t planes,
                                            int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    /* gx: (planes,H,W), accumulated into; gy: (planes,Ho,Wo) */
    linear_tap *th = linear_taps(H, W, Ho, Wo); /* (Ho) rows, then tw (Wo) columns */
    if (!th) return LPNX_ENOMEM;
    const linear_tap *tw = th + Ho;
    #pragma omp parallel for schedule(static) if (planes * Ho * Wo >= LPNX_PARALLEL_MIN / 4)
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t oh = 0; oh < Ho; oh++) {
            float *r0 = gx + (p * H + th[oh].i0) * W, *r1 = gx + (p * H + th[oh].i1) * W;
            const float h0 = th[oh].l0, h1 = th[oh].l1;
            const float *g = gy + (p * Ho + oh) * Wo;
            for (int64_t ow = 0; ow < Wo; ow++) {
                const int64_t w0 = tw[ow].i0, w1 = tw[ow].i1;
                const float l0 = tw[ow].l0, l1 = tw[ow].l1;
                const double v = g[ow];
                /* float corner weights, each product added with one rounding */
                r0[w0] = (float)(r0[w0] + (double)(h0 * l0) * v);
                r0[w1] = (float)(r0[w1] + (double)(h0 * l1) * v);
                r1[w0] = (float)(r1[w0] + (double)(h1 * l0) * v);
                r1[w1] = (float)(r1[w1] + (double)(h1 * l1) * v);
            }
        }
    }
    free(th);
    return LPNX_OK;
}
