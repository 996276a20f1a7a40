/* Batch normalisation over (N,C,H,W), per channel, with PyTorch's
 * BatchNorm2d semantics. The loops run over channels (one thread owns a
 * channel's statistics and its slice of every plane), so no reduction
 * crosses threads and results do not depend on the thread count.
 * Sums accumulate in double with four partial sums, which keeps the
 * dependency chains short without reordering anything between runs. */
#include <math.h>

#include "layers.h"

/* Sum of p[0..n) in double. */
static double sum_d(const float *p, int64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return (s0 + s1) + (s2 + s3);
}

/* Sum of (p[i] - mean)^2 in double. */
static double sumsq_centered_d(const float *p, int64_t n, double mean) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = p[i] - mean, d1 = p[i + 1] - mean, d2 = p[i + 2] - mean, d3 = p[i + 3] - mean;
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        double d = p[i] - mean;
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

/* Sum of (x[i] - mean) * g[i] in double. */
static double dot_centered_d(const float *x, const float *g, int64_t n, double mean) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (x[i] - mean) * g[i];
        s1 += (x[i + 1] - mean) * g[i + 1];
        s2 += (x[i + 2] - mean) * g[i + 2];
        s3 += (x[i + 3] - mean) * g[i + 3];
    }
    for (; i < n; i++) s0 += (x[i] - mean) * g[i];
    return (s0 + s1) + (s2 + s3);
}

/* out[i] = x[i] * alpha + beta. */
static void affine_row(float *out, const float *x, int64_t n, float alpha, float beta) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * alpha + beta;
}

/* out[i] = x[i] * alpha + beta in double, rounded once. */
static void affine_row_d(float *out, const float *x, int64_t n, double alpha, double beta) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)(x[i] * alpha + beta);
}

/* ---- train mode, per channel ------------------------------------------
 * The fused kernels below and the split ones that data-parallel training
 * uses (statistics summed over every process between the steps) run the
 * same per-channel code, so one process and many agree to rounding. */

/* sum over (N,HW) of channel c. */
static double channel_sum(const float *inp, int64_t c, int64_t N, int64_t C, int64_t HW) {
    double sum = 0;
    for (int64_t b = 0; b < N; b++) sum += sum_d(inp + (b * C + c) * HW, HW);
    return sum;
}

/* sum over (N,HW) of (x - mean)^2 for channel c. */
static double channel_sqdev(const float *inp, double mean, int64_t c, int64_t N, int64_t C, int64_t HW) {
    double ss = 0;
    for (int64_t b = 0; b < N; b++) ss += sumsq_centered_d(inp + (b * C + c) * HW, HW, mean);
    return ss;
}

/* Normalises channel c with the mean and the summed squared deviation ss
 * of count values, and updates the running and saved statistics. */
static void channel_apply(float *out, float *save_mean, float *save_invstd, float *running_mean,
                          float *running_var, const float *inp, const float *weight, const float *bias,
                          double mean, double ss, double count, int64_t c, int64_t N, int64_t C, int64_t HW,
                          double momentum, double eps) {
    const double var = ss / count;
    save_mean[c] = (float)mean;
    save_invstd[c] = (float)(1.0 / sqrt(var + eps));
    running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
    running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * (ss / (count - 1.0)));
    /* y = x * alpha + beta in double, rounded once: near zero, where the
     * ReLU that follows decides which gradients flow, float alpha and
     * beta would add errors of the size of beta's rounding */
    const double alpha = weight[c] / sqrt(var + eps);
    const double beta = bias[c] - mean * alpha;
    for (int64_t b = 0; b < N; b++)
        affine_row_d(out + (b * C + c) * HW, inp + (b * C + c) * HW, HW, alpha, beta);
}

void lpnx_batchnorm_train_forward(float *out, float *save_mean, float *save_invstd,
                                  float *running_mean, float *running_var,
                                  const float *inp, const float *weight, const float *bias,
                                  int64_t N, int64_t C, int64_t HW, double momentum, double eps) {
    /* out, inp: (N,C,HW); save_mean, save_invstd, running_mean, running_var,
     * weight, bias: (C) */
    const double n = (double)(N * HW);
    if (N * C * HW == 0) return;
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) {
        const double mean = channel_sum(inp, c, N, C, HW) / n;
        const double ss = channel_sqdev(inp, mean, c, N, C, HW);
        channel_apply(out, save_mean, save_invstd, running_mean, running_var, inp, weight, bias, mean, ss, n, c,
                      N, C, HW, momentum, eps);
    }
}

void lpnx_batchnorm_sum(double *sum, const float *inp, int64_t N, int64_t C, int64_t HW) {
    /* sum: (C); inp: (N,C,HW) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) sum[c] = channel_sum(inp, c, N, C, HW);
}

void lpnx_batchnorm_sqdev(double *ss, const float *inp, const double *mean, int64_t N, int64_t C, int64_t HW) {
    /* ss, mean: (C); inp: (N,C,HW) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) ss[c] = channel_sqdev(inp, mean[c], c, N, C, HW);
}

void lpnx_batchnorm_train_apply(float *out, float *save_mean, float *save_invstd,
                                float *running_mean, float *running_var,
                                const float *inp, const float *weight, const float *bias,
                                const double *mean, const double *ss, double count,
                                int64_t N, int64_t C, int64_t HW, double momentum, double eps) {
    /* out, inp: (N,C,HW); every other buffer (C) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++)
        channel_apply(out, save_mean, save_invstd, running_mean, running_var, inp, weight, bias, mean[c], ss[c],
                      count, c, N, C, HW, momentum, eps);
}

void lpnx_batchnorm_eval_forward(float *out, const float *inp, const float *weight, const float *bias,
                                 const float *running_mean, const float *running_var,
                                 int64_t N, int64_t C, int64_t HW, double eps) {
    /* out, inp: (N,C,HW); weight, bias, running_mean, running_var: (C) */
    const int64_t planes = N * C;
    #pragma omp parallel for schedule(static) if (planes * HW >= LPNX_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const int64_t c = p % C;
        const float invstd = 1.0f / sqrtf(running_var[c] + (float)eps);
        const float alpha = invstd * weight[c];
        const float beta = bias[c] - running_mean[c] * alpha;
        affine_row(out + p * HW, inp + p * HW, HW, alpha, beta);
    }
}

/* sum(gy) and sum((x - mean) * gy) over (N,HW) of channel c. */
static void channel_backward_reduce(double *sum_gy_c, double *dot_c, const float *gy, const float *inp,
                                    const float *save_mean, int64_t c, int64_t N, int64_t C, int64_t HW) {
    const float mean = save_mean[c];
    double sum_gy = 0, dot = 0;
    for (int64_t b = 0; b < N; b++) {
        const int64_t o = (b * C + c) * HW;
        sum_gy += sum_d(gy + o, HW);
        dot += dot_centered_d(inp + o, gy + o, HW, mean);
    }
    *sum_gy_c = sum_gy;
    *dot_c = dot;
}

/* gx = (gy - mean(gy) - (x - mean) * k) * invstd * w for channel c, where
 * k = sum((x - mean) * gy) * invstd^2 / count; gx may be gy. Accumulates
 * gweight[c] += (dot * invstd) * part and gbias[c] += sum(gy) * part. */
static void channel_backward_input(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                   const float *weight, const float *save_mean, const float *save_invstd,
                                   double sum_gy, double dot, double count, float part, int64_t c, int64_t N,
                                   int64_t C, int64_t HW) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    gweight[c] += (float)(dot * invstd) * part;
    gbias[c] += (float)sum_gy * part;
    const float k = (float)(dot * invstd * invstd / count);
    const float grad_mean = (float)(sum_gy / count);
    const float scale = invstd * weight[c];
    for (int64_t b = 0; b < N; b++) {
        const int64_t o = (b * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) gx[o + i] = (gy[o + i] - grad_mean - (inp[o + i] - mean) * k) * scale;
    }
}

void lpnx_batchnorm_train_backward(float *gx, float *gweight, float *gbias,
                                   const float *gy, const float *inp, const float *weight,
                                   const float *save_mean, const float *save_invstd,
                                   int64_t N, int64_t C, int64_t HW) {
    /* gx, gy, inp: (N,C,HW); gweight, gbias, weight, save_mean, save_invstd: (C) */
    const double n = (double)(N * HW);
    if (N * HW == 0) return;
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) {
        double sum_gy, dot;
        channel_backward_reduce(&sum_gy, &dot, gy, inp, save_mean, c, N, C, HW);
        channel_backward_input(gx, gweight, gbias, gy, inp, weight, save_mean, save_invstd, sum_gy, dot, n, 1.0f,
                               c, N, C, HW);
    }
}

void lpnx_batchnorm_backward_reduce(double *sum_gy, double *dot, const float *gy, const float *inp,
                                    const float *save_mean, int64_t N, int64_t C, int64_t HW) {
    /* sum_gy, dot, save_mean: (C); gy, inp: (N,C,HW) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) channel_backward_reduce(&sum_gy[c], &dot[c], gy, inp, save_mean, c, N, C, HW);
}

void lpnx_batchnorm_backward_input(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                   const float *weight, const float *save_mean, const float *save_invstd,
                                   const double *sum_gy, const double *dot, double count, float part,
                                   int64_t N, int64_t C, int64_t HW) {
    /* gx, gy, inp: (N,C,HW); every other buffer (C) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++)
        channel_backward_input(gx, gweight, gbias, gy, inp, weight, save_mean, save_invstd, sum_gy[c], dot[c],
                               count, part, c, N, C, HW);
}

void lpnx_batchnorm_eval_backward(float *gx, float *gweight, float *gbias,
                                  const float *gy, const float *inp, const float *weight,
                                  const float *running_mean, const float *running_var,
                                  int64_t N, int64_t C, int64_t HW, double eps) {
    /* gx, gy, inp: (N,C,HW); gweight, gbias, weight, running_mean, running_var: (C) */
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) {
        const double invstd = 1.0 / sqrt((double)running_var[c] + eps);
        const float scale = (float)(invstd * weight[c]);
        double sum_gy = 0, dot = 0;
        for (int64_t b = 0; b < N; b++) {
            const int64_t o = (b * C + c) * HW;
            sum_gy += sum_d(gy + o, HW);
            dot += dot_centered_d(inp + o, gy + o, HW, running_mean[c]);
            for (int64_t i = 0; i < HW; i++) gx[o + i] = gy[o + i] * scale;
        }
        gweight[c] += (float)(dot * invstd);
        gbias[c] += (float)sum_gy;
    }
}
