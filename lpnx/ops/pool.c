/* Max pooling with PyTorch's MaxPool2d semantics (floor mode, dilation 1).
 * Forward keeps, for backward, the argmax of every window as a float
 * 0-based position h*W + w in its input plane (the caller owns that
 * tensor). Padding is never read: windows are clipped to the plane, which
 * is the same as padding with -inf. */
#include <math.h>

#include "layers.h"

/* Updates the running maximum (m, at) with value v at position i: a larger
 * value wins, ties keep the first, a NaN always takes over. */
#define TAKE_MAX(m, at, v, i)             \
    do {                                  \
        float v_ = (v);                   \
        if (v_ > (m) || v_ != v_) {       \
            (m) = v_;                     \
            (at) = (i);                   \
        }                                 \
    } while (0)

/* Output row oh of one plane: out and ind are (Wo), plane is (H,W). */
static void pool_row(float *out, float *ind, const float *plane, int64_t oh, const lpnx_pool2d_dims *d) {
    const int64_t W = d->W;
    const int64_t hs = oh * d->sh - d->ph;
    const int64_t h0 = hs < 0 ? 0 : hs, h1 = hs + d->kh < d->H ? hs + d->kh : d->H;
    const int full3 = d->kh == 3 && d->kw == 3 && h1 - h0 == 3;
    for (int64_t ow = 0; ow < d->Wo; ow++) {
        const int64_t ws = ow * d->sw - d->pw;
        const int64_t w0 = ws < 0 ? 0 : ws, w1 = ws + d->kw < W ? ws + d->kw : W;
        float m;
        int64_t at;
        if (full3 && w1 - w0 == 3) {
            /* the ResNet stem's 3x3 window, wholly inside the plane */
            const float *r = plane + h0 * W + w0;
            m = r[0];
            at = 0;
            TAKE_MAX(m, at, r[1], 1);
            TAKE_MAX(m, at, r[2], 2);
            TAKE_MAX(m, at, r[W], W);
            TAKE_MAX(m, at, r[W + 1], W + 1);
            TAKE_MAX(m, at, r[W + 2], W + 2);
            TAKE_MAX(m, at, r[2 * W], 2 * W);
            TAKE_MAX(m, at, r[2 * W + 1], 2 * W + 1);
            TAKE_MAX(m, at, r[2 * W + 2], 2 * W + 2);
            at += h0 * W + w0;
        } else {
            m = -INFINITY;
            at = h0 * W + w0;
            for (int64_t h = h0; h < h1; h++)
                for (int64_t w = w0; w < w1; w++) TAKE_MAX(m, at, plane[h * W + w], h * W + w);
        }
        out[ow] = m;
        ind[ow] = (float)at;
    }
}

void lpnx_maxpool2d_forward(float *out, float *indices, const float *inp, lpnx_pool2d_dims d) {
    /* out, indices: (planes,Ho,Wo); inp: (planes,H,W). One task per output row. */
    const int64_t rows = d.planes * d.Ho;
    const double work = (double)rows * (double)d.Wo * (double)d.kh * (double)d.kw; /* no overflow */
    #pragma omp parallel for schedule(static) if (work >= LPNX_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t p = r / d.Ho, oh = r % d.Ho;
        pool_row(out + r * d.Wo, indices + r * d.Wo, inp + p * d.H * d.W, oh, &d);
    }
}

int64_t lpnx_maxpool2d_backward(float *gx, const float *gy, const float *indices, lpnx_pool2d_dims d) {
    /* gx: (planes,H,W), accumulated into; gy, indices: (planes,Ho,Wo).
     * One task per plane, so no two threads write the same element. */
    const int64_t in_plane = d.H * d.W, out_plane = d.Ho * d.Wo;
    const float limit = (float)in_plane;
    int64_t bad = 0;
    #pragma omp parallel for schedule(static) reduction(+ : bad) if (d.planes * out_plane >= LPNX_PARALLEL_MIN)
    for (int64_t p = 0; p < d.planes; p++) {
        float *g = gx + p * in_plane;
        const float *go = gy + p * out_plane, *ix = indices + p * out_plane;
        for (int64_t i = 0; i < out_plane; i++) {
            const float f = ix[i];
            const int64_t k = f >= 0.0f && f < limit && f == floorf(f) ? (int64_t)f : -1;
            if (k >= 0 && k < in_plane) g[k] += go[i];
            else bad++;
        }
    }
    return bad;
}
