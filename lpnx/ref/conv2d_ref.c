/* Convolution straight from its definition:
 *   out[n][co][oh][ow] = bias[co] + sum over ci, ki, kj of
 *       inp[n][ci][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw] * weight[co][ci][ki][kj]
 * with input pixels outside the image reading as zero. */
#include "conv2d_ref.h"

/* Element (i, j, k, l) of a contiguous 4-D array with sizes (., s1, s2, s3). */
#define AT4(p, s1, s2, s3, i, j, k, l) ((p)[(((i) * (s1) + (j)) * (s2) + (k)) * (s3) + (l)])

void lpnx_ref_conv2d_forward(float *out, const float *inp, const float *weight,
                             const float *bias, const lpnx_conv2d_dims *d) {
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t co = 0; co < d->cout; co++)
            for (int64_t oh = 0; oh < d->ho; oh++)
                for (int64_t ow = 0; ow < d->wo; ow++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int64_t ci = 0; ci < d->cin; ci++)
                        for (int64_t ki = 0; ki < d->kh; ki++)
                            for (int64_t kj = 0; kj < d->kw; kj++) {
                                int64_t ih = oh * d->stride_h - d->pad_h + ki * d->dil_h;
                                int64_t iw = ow * d->stride_w - d->pad_w + kj * d->dil_w;
                                if (ih < 0 || ih >= d->h || iw < 0 || iw >= d->w) continue;
                                s += (double)AT4(inp, d->cin, d->h, d->w, n, ci, ih, iw) *
                                     AT4(weight, d->cin, d->kh, d->kw, co, ci, ki, kj);
                            }
                    AT4(out, d->cout, d->ho, d->wo, n, co, oh, ow) = (float)s;
                }
}

void lpnx_ref_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const lpnx_conv2d_dims *d) {
    if (dbias)
        for (int64_t co = 0; co < d->cout; co++) {
            double s = 0;
            for (int64_t n = 0; n < d->n; n++)
                for (int64_t oh = 0; oh < d->ho; oh++)
                    for (int64_t ow = 0; ow < d->wo; ow++)
                        s += AT4(dout, d->cout, d->ho, d->wo, n, co, oh, ow);
            dbias[co] += (float)s;
        }

    /* dL/dweight[co][ci][ki][kj]: every output that used this weight times
     * the input pixel it multiplied. */
    for (int64_t co = 0; co < d->cout; co++)
        for (int64_t ci = 0; ci < d->cin; ci++)
            for (int64_t ki = 0; ki < d->kh; ki++)
                for (int64_t kj = 0; kj < d->kw; kj++) {
                    double s = 0;
                    for (int64_t n = 0; n < d->n; n++)
                        for (int64_t oh = 0; oh < d->ho; oh++)
                            for (int64_t ow = 0; ow < d->wo; ow++) {
                                int64_t ih = oh * d->stride_h - d->pad_h + ki * d->dil_h;
                                int64_t iw = ow * d->stride_w - d->pad_w + kj * d->dil_w;
                                if (ih < 0 || ih >= d->h || iw < 0 || iw >= d->w) continue;
                                s += (double)AT4(dout, d->cout, d->ho, d->wo, n, co, oh, ow) *
                                     AT4(inp, d->cin, d->h, d->w, n, ci, ih, iw);
                            }
                    AT4(dweight, d->cin, d->kh, d->kw, co, ci, ki, kj) += (float)s;
                }

    /* dL/dinp[n][ci][ih][iw]: every output whose window covered this pixel,
     * i.e. oh*sh = ih + ph - ki*dh (and likewise for the width) exactly. */
    if (!dinp) return;
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t ci = 0; ci < d->cin; ci++)
            for (int64_t ih = 0; ih < d->h; ih++)
                for (int64_t iw = 0; iw < d->w; iw++) {
                    double s = 0;
                    for (int64_t co = 0; co < d->cout; co++)
                        for (int64_t ki = 0; ki < d->kh; ki++)
                            for (int64_t kj = 0; kj < d->kw; kj++) {
                                int64_t th = ih + d->pad_h - ki * d->dil_h;
                                int64_t tw = iw + d->pad_w - kj * d->dil_w;
                                if (th < 0 || tw < 0 || th % d->stride_h || tw % d->stride_w) continue;
                                int64_t oh = th / d->stride_h, ow = tw / d->stride_w;
                                if (oh >= d->ho || ow >= d->wo) continue;
                                s += (double)AT4(dout, d->cout, d->ho, d->wo, n, co, oh, ow) *
                                     AT4(weight, d->cin, d->kh, d->kw, co, ci, ki, kj);
                            }
                    AT4(dinp, d->cin, d->h, d->w, n, ci, ih, iw) += (float)s;
                }
}
