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
        double sum = 0, ss = 0;
        for (int64_t b = 0; b < N; b++) sum += sum_d(inp + (b * C + c) * HW, HW);
        const double mean = sum / n;
        for (int64_t b = 0; b < N; b++) ss += sumsq_centered_d(inp + (b * C + c) * HW, HW, mean);
        const double var = ss / n;
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)(1.0 / sqrt(var + eps));
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * (ss / (n - 1.0)));
        /* y = x * alpha + beta, from the stored (float) statistics as PyTorch does */
        const float alpha = save_invstd[c] * weight[c];
        const float beta = bias[c] - save_mean[c] * alpha;
        for (int64_t b = 0; b < N; b++)
            affine_row(out + (b * C + c) * HW, inp + (b * C + c) * HW, HW, alpha, beta);
    }
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

void lpnx_batchnorm_train_backward(float *gx, float *gweight, float *gbias,
                                   const float *gy, const float *inp, const float *weight,
                                   const float *save_mean, const float *save_invstd,
                                   int64_t N, int64_t C, int64_t HW) {
    /* gx, gy, inp: (N,C,HW); gweight, gbias, weight, save_mean, save_invstd: (C) */
    const double n = (double)(N * HW);
    if (N * HW == 0) return;
    #pragma omp parallel for schedule(static) if (N * C * HW >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < C; c++) {
        const float mean = save_mean[c], invstd = save_invstd[c];
        double sum_gy = 0, dot = 0; /* sum(gy), sum((x - mean) * gy) */
        for (int64_t b = 0; b < N; b++) {
            const int64_t o = (b * C + c) * HW;
            sum_gy += sum_d(gy + o, HW);
            dot += dot_centered_d(inp + o, gy + o, HW, mean);
        }
        /* gx = (gy - mean(gy) - (x - mean) * k) * invstd * w, where
         * k = sum((x - mean) * gy) * invstd^2 / n */
        const float k = (float)(dot * invstd * invstd / n);
        const float grad_mean = (float)(sum_gy / n);
        const float scale = invstd * weight[c];
        for (int64_t b = 0; b < N; b++) {
            const int64_t o = (b * C + c) * HW;
            for (int64_t i = 0; i < HW; i++)
                gx[o + i] = (gy[o + i] - grad_mean - (inp[o + i] - mean) * k) * scale;
        }
        gweight[c] += (float)(dot * invstd);
        gbias[c] += (float)sum_gy;
    }
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
