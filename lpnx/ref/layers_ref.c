/* Oracles for batch normalisation, max pooling, resampling and the
 * activation backward passes: one output element at a time, in double,
 * straight from the definitions. */
#include <math.h>

#include "layers_ref.h"

/* Element (b, c, i) of an (N,C,HW) buffer. */
#define AT(p, b, c, i) ((p)[((b) * C + (c)) * HW + (i)])

void lpnx_ref_batchnorm_train_forward(float *out, float *save_mean, float *save_invstd,
                                      float *running_mean, float *running_var,
                                      const float *inp, const float *weight, const float *bias,
                                      int64_t N, int64_t C, int64_t HW, double momentum, double eps) {
    const double n = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) mean += AT(inp, b, c, i);
        mean /= n;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) var += (AT(inp, b, c, i) - mean) * (AT(inp, b, c, i) - mean);
        var /= n; /* biased */
        const double invstd = 1.0 / sqrt(var + eps);
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++)
                AT(out, b, c, i) = (float)((AT(inp, b, c, i) - mean) * invstd * weight[c] + bias[c]);
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mean);
        running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * var * n / (n - 1));
    }
}

void lpnx_ref_batchnorm_eval_forward(float *out, const float *inp, const float *weight, const float *bias,
                                     const float *running_mean, const float *running_var,
                                     int64_t N, int64_t C, int64_t HW, double eps) {
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < HW; i++)
                AT(out, b, c, i) = (float)(((double)AT(inp, b, c, i) - running_mean[c]) /
                                           sqrt((double)running_var[c] + eps) * weight[c] + bias[c]);
}

/* y = w * xhat + b with xhat = (x - mean) * invstd and mean, invstd
 * functions of x: dx = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat)). */
void lpnx_ref_batchnorm_train_backward(float *gx, float *gweight, float *gbias,
                                       const float *gy, const float *inp, const float *weight,
                                       const float *save_mean, const float *save_invstd,
                                       int64_t N, int64_t C, int64_t HW) {
    const double n = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        const double mean = save_mean[c], invstd = save_invstd[c];
        double sum_gy = 0, sum_gy_xhat = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) {
                sum_gy += AT(gy, b, c, i);
                sum_gy_xhat += AT(gy, b, c, i) * (AT(inp, b, c, i) - mean) * invstd;
            }
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) {
                double xhat = (AT(inp, b, c, i) - mean) * invstd;
                AT(gx, b, c, i) = (float)(weight[c] * invstd *
                                          (AT(gy, b, c, i) - sum_gy / n - xhat * sum_gy_xhat / n));
            }
        gweight[c] = (float)(gweight[c] + sum_gy_xhat);
        gbias[c] = (float)(gbias[c] + sum_gy);
    }
}

void lpnx_ref_batchnorm_eval_backward(float *gx, float *gweight, float *gbias,
                                      const float *gy, const float *inp, const float *weight,
                                      const float *running_mean, const float *running_var,
                                      int64_t N, int64_t C, int64_t HW, double eps) {
    for (int64_t c = 0; c < C; c++) {
        const double invstd = 1.0 / sqrt((double)running_var[c] + eps);
        double sum_gy = 0, sum_gy_xhat = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) {
                sum_gy += AT(gy, b, c, i);
                sum_gy_xhat += AT(gy, b, c, i) * (AT(inp, b, c, i) - (double)running_mean[c]) * invstd;
                AT(gx, b, c, i) = (float)(AT(gy, b, c, i) * invstd * weight[c]);
            }
        gweight[c] = (float)(gweight[c] + sum_gy_xhat);
        gbias[c] = (float)(gbias[c] + sum_gy);
    }
}

void lpnx_ref_batchnorm_sum(double *sum, const float *inp, int64_t N, int64_t C, int64_t HW) {
    for (int64_t c = 0; c < C; c++) {
        sum[c] = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) sum[c] += AT(inp, b, c, i);
    }
}

void lpnx_ref_batchnorm_sqdev(double *ss, const float *inp, const double *mean, int64_t N, int64_t C, int64_t HW) {
    for (int64_t c = 0; c < C; c++) {
        ss[c] = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) ss[c] += (AT(inp, b, c, i) - mean[c]) * (AT(inp, b, c, i) - mean[c]);
    }
}

void lpnx_ref_batchnorm_train_apply(float *out, float *save_mean, float *save_invstd,
                                    float *running_mean, float *running_var,
                                    const float *inp, const float *weight, const float *bias,
                                    const double *mean, const double *ss, double count,
                                    int64_t N, int64_t C, int64_t HW, double momentum, double eps) {
    for (int64_t c = 0; c < C; c++) {
        const double var = ss[c] / count, invstd = 1.0 / sqrt(var + eps);
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++)
                AT(out, b, c, i) = (float)((AT(inp, b, c, i) - mean[c]) * invstd * weight[c] + bias[c]);
        save_mean[c] = (float)mean[c];
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mean[c]);
        running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * var * count / (count - 1));
    }
}

void lpnx_ref_batchnorm_backward_reduce(double *sum_gy, double *dot, const float *gy, const float *inp,
                                        const float *save_mean, int64_t N, int64_t C, int64_t HW) {
    for (int64_t c = 0; c < C; c++) {
        sum_gy[c] = dot[c] = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) {
                sum_gy[c] += AT(gy, b, c, i);
                dot[c] += AT(gy, b, c, i) * ((double)AT(inp, b, c, i) - save_mean[c]);
            }
    }
}

void lpnx_ref_batchnorm_backward_input(float *gx, float *gweight, float *gbias, const float *gy,
                                       const float *inp, const float *weight, const float *save_mean,
                                       const float *save_invstd, const double *sum_gy, const double *dot,
                                       double count, float part, int64_t N, int64_t C, int64_t HW) {
    for (int64_t c = 0; c < C; c++) {
        const double invstd = save_invstd[c];
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < HW; i++) {
                double xhat = ((double)AT(inp, b, c, i) - save_mean[c]) * invstd;
                AT(gx, b, c, i) = (float)(weight[c] * invstd *
                                          (AT(gy, b, c, i) - sum_gy[c] / count - xhat * dot[c] * invstd / count));
            }
        gweight[c] = (float)(gweight[c] + dot[c] * invstd * part);
        gbias[c] = (float)(gbias[c] + sum_gy[c] * part);
    }
}

#undef AT

void lpnx_ref_relu_backward(float *gx, const float *y, const float *gy, size_t n) {
    for (size_t i = 0; i < n; i++) gx[i] = y[i] > 0 || y[i] != y[i] ? gy[i] : 0.0f;
}

void lpnx_ref_sigmoid_backward(float *gx, const float *y, const float *gy, size_t n) {
    for (size_t i = 0; i < n; i++) gx[i] = (float)((double)gy[i] * y[i] * (1.0 - y[i]));
}

/* Each window scanned over its kh x kw cells in row-major order; cells in
 * the padding are skipped (they hold -inf). The first cell inside the
 * plane starts the scan; a later value wins when it is larger than the
 * best so far or is a NaN. */
void lpnx_ref_maxpool2d_forward(float *out, float *indices, const float *inp, int64_t planes,
                                int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                double best = -INFINITY;
                int64_t at = -1;
                for (int64_t i = 0; i < kh; i++)
                    for (int64_t j = 0; j < kw; j++) {
                        int64_t h = oh * sh - ph + i, w = ow * sw - pw + j;
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        double v = inp[(p * H + h) * W + w];
                        if (at < 0 || v > best || isnan(v)) {
                            best = v;
                            at = h * W + w;
                        }
                    }
                out[(p * Ho + oh) * Wo + ow] = (float)best;
                indices[(p * Ho + oh) * Wo + ow] = (float)at;
            }
}

/* gx[i] = sum of gy[o] over the outputs o whose index is i. */
void lpnx_ref_maxpool2d_backward(float *gx, const float *gy, const float *indices, int64_t planes,
                                 int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < H * W; i++) {
            double s = gx[p * H * W + i];
            for (int64_t o = 0; o < Ho * Wo; o++)
                if ((int64_t)indices[p * Ho * Wo + o] == i) s += gy[p * Ho * Wo + o];
            gx[p * H * W + i] = (float)s;
        }
}

/* Weight that output o gives input i along one axis of size in -> out.
 * The source coordinates are PyTorch's: the scale in/out is a float, the
 * position is computed from it in double, the fraction rounded to float. */
static double nearest_weight(int64_t o, int64_t i, int64_t in, int64_t out) {
    float scale = (float)in / (float)out;
    int64_t src = (int64_t)floorf((float)o * scale);
    if (src > in - 1) src = in - 1;
    return src == i ? 1.0 : 0.0;
}

static double linear_weight(int64_t o, int64_t i, int64_t in, int64_t out) {
    float scale = (float)in / (float)out;
    double src = (double)scale * ((double)o + 0.5) - 0.5;
    if (src < 0) src = 0;
    int64_t i0 = (int64_t)floor(src);
    if (i0 > in - 1) i0 = in - 1;
    int64_t i1 = i0 + 1 < in ? i0 + 1 : in - 1;
    double lambda = (float)(src - (double)i0);
    return (i == i0 ? 1.0 - lambda : 0.0) + (i == i1 ? lambda : 0.0);
}

typedef double (*axis_weight)(int64_t o, int64_t i, int64_t in, int64_t out);

/* y[oh,ow] = sum over (ih,iw) of wt(oh,ih) * wt(ow,iw) * x[ih,iw]. */
static void resample_forward(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo, axis_weight wt) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                double s = 0;
                for (int64_t ih = 0; ih < H; ih++) {
                    double a = wt(oh, ih, H, Ho);
                    if (a == 0) continue;
                    for (int64_t iw = 0; iw < W; iw++) {
                        double b = wt(ow, iw, W, Wo);
                        if (b != 0) s += a * b * inp[(p * H + ih) * W + iw];
                    }
                }
                out[(p * Ho + oh) * Wo + ow] = (float)s;
            }
}

/* The transpose: gx[ih,iw] += sum over (oh,ow) of wt(oh,ih) * wt(ow,iw) * gy[oh,ow]. */
static void resample_backward(float *gx, const float *gy, int64_t planes, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, axis_weight wt) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t ih = 0; ih < H; ih++)
            for (int64_t iw = 0; iw < W; iw++) {
                double s = gx[(p * H + ih) * W + iw];
                for (int64_t oh = 0; oh < Ho; oh++) {
                    double a = wt(oh, ih, H, Ho);
                    if (a == 0) continue;
                    for (int64_t ow = 0; ow < Wo; ow++) {
                        double b = wt(ow, iw, W, Wo);
                        if (b != 0) s += a * b * gy[(p * Ho + oh) * Wo + ow];
                    }
                }
                gx[(p * H + ih) * W + iw] = (float)s;
            }
}

void lpnx_ref_upsample_nearest_forward(float *out, const float *inp, int64_t planes,
                                       int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    resample_forward(out, inp, planes, H, W, Ho, Wo, nearest_weight);
}

void lpnx_ref_upsample_nearest_backward(float *gx, const float *gy, int64_t planes,
                                        int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    resample_backward(gx, gy, planes, H, W, Ho, Wo, nearest_weight);
}

void lpnx_ref_upsample_bilinear_forward(float *out, const float *inp, int64_t planes,
                                        int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    resample_forward(out, inp, planes, H, W, Ho, Wo, linear_weight);
}

void lpnx_ref_upsample_bilinear_backward(float *gx, const float *gy, int64_t planes,
                                         int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    resample_backward(gx, gy, planes, H, W, Ho, Wo, linear_weight);
}
