/* Loss kernels: BCE with logits, soft Dice, focal loss. Per-element math is
 * in double (the inputs are float, so this costs little next to the memory
 * traffic) and every sum accumulates in double. */
#include "loss.h"

#include <math.h>
#include <stdint.h>

#include "ops.h"

/* p = sigmoid(x) and q = 1 - p = sigmoid(-x), each without cancellation. */
static inline void sigmoid_pair(double x, double *p, double *q) {
    if (x >= 0) {
        double e = exp(-x);
        *p = 1 / (1 + e);
        *q = e / (1 + e);
    } else {
        double e = exp(x);
        *p = e / (1 + e);
        *q = 1 / (1 + e);
    }
}

/* log(1 + exp(-x)) = -log(sigmoid(x)), finite for every finite x. */
static inline double softplus_neg(double x) {
    return fmax(-x, 0) + log1p(exp(-fabs(x)));
}

/* Binary cross-entropy of sigmoid(x) against t: -(t log p + (1-t) log(1-p)). */
static inline double bce(double x, double t) {
    return (1 - t) * x + softplus_neg(x);
}

/* ---- BCE with logits ------------------------------------------------- */

typedef struct {
    const float *logits, *target, *pos_weight;
    size_t pos_weight_stride;
} bce_args;

static void bce_part(const void *ctx, int64_t lo, int64_t hi, double *out) {
    const bce_args *a = ctx;
    double s = 0;
    for (int64_t i = lo; i < hi; i++) {
        double x = a->logits[i], t = a->target[i];
        double w = a->pos_weight ? a->pos_weight[(size_t)i * a->pos_weight_stride] : 1.0;
        double log_weight = 1 + (w - 1) * t;
        s += (1 - t) * x + log_weight * softplus_neg(x);
    }
    out[0] = s;
}

double lpnx_bce_with_logits_forward(const float *logits, const float *target,
                                    const float *pos_weight, size_t pos_weight_stride, size_t n) {
    const bce_args a = {logits, target, pos_weight, pos_weight_stride};
    double sum;
    lpnx_sum_chunks((int64_t)n, 1, bce_part, &a, &sum);
    return n ? sum / (double)n : NAN;
}

void lpnx_bce_with_logits_backward(float *dlogits, const float *logits, const float *target,
                                   const float *pos_weight, size_t pos_weight_stride, size_t n) {
    int64_t count = (int64_t)n;
    double scale = n ? 1.0 / (double)n : 0;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        double x = logits[i], t = target[i], p, q;
        double w = pos_weight ? pos_weight[(size_t)i * pos_weight_stride] : 1.0;
        sigmoid_pair(x, &p, &q);
        dlogits[i] = (float)(((1 - t) - (1 + (w - 1) * t) * q) * scale);
    }
}

/* ---- soft Dice ------------------------------------------------------- */

typedef struct {
    const float *logits, *target;
} dice_args;

/* out: sum(p t), sum(p), sum(t) over [lo, hi). */
static void dice_part(const void *ctx, int64_t lo, int64_t hi, double *out) {
    const dice_args *a = ctx;
    double spt = 0, sp = 0, st = 0;
    for (int64_t i = lo; i < hi; i++) {
        double p, q, t = a->target[i];
        sigmoid_pair(a->logits[i], &p, &q);
        spt += p * t;
        sp += p;
        st += t;
    }
    out[0] = spt;
    out[1] = sp;
    out[2] = st;
}

/* sum(p t), sum(p), sum(t) over all n elements. */
void lpnx_dice_sums(double *sum_pt, double *sum_p, double *sum_t, const float *logits, const float *target,
                    size_t n) {
    const dice_args a = {logits, target};
    double sums[3];
    lpnx_sum_chunks((int64_t)n, 3, dice_part, &a, sums);
    *sum_pt = sums[0];
    *sum_p = sums[1];
    *sum_t = sums[2];
}

double lpnx_dice_loss_forward(const float *logits, const float *target, float eps, size_t n) {
    double spt, sp, st;
    lpnx_dice_sums(&spt, &sp, &st, logits, target, n);
    return 1 - (2 * spt + eps) / (sp + st + eps);
}

/* With I = sum(p t) and S = sum(p) + sum(t) + eps, the loss is
 * 1 - (2I + eps)/S, so dL/dp_i = ((2I + eps) - 2 t_i S) / S^2 and
 * dp_i/dx_i = p_i (1 - p_i). */
void lpnx_dice_loss_backward(float *dlogits, const float *logits, const float *target,
                             float eps, size_t n) {
    double spt, sp, st;
    lpnx_dice_sums(&spt, &sp, &st, logits, target, n);
    lpnx_dice_loss_backward_sums(dlogits, logits, target, spt, sp, st, eps, n);
}

void lpnx_dice_loss_backward_sums(float *dlogits, const float *logits, const float *target,
                                  double sum_pt, double sum_p, double sum_t, float eps, size_t n) {
    double numer = 2 * sum_pt + eps, denom = sum_p + sum_t + eps;
    double inv_denom2 = 1 / (denom * denom);
    int64_t count = (int64_t)n;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        double p, q, t = target[i];
        sigmoid_pair(logits[i], &p, &q);
        dlogits[i] = (float)((numer - 2 * t * denom) * inv_denom2 * p * q);
    }
}

/* ---- focal loss ------------------------------------------------------ */

/* The focal loss of one element and, when grad != NULL, its derivative
 * with respect to x. With m = 1 - p_t = p (1 - t) + (1 - p) t (written so
 * that it never cancels), l = w m^gamma b where b is the BCE term:
 *   dl/dx = w (gamma m^(gamma-1) dm/dx b + m^gamma db/dx),
 *   dm/dx = p (1 - p) (1 - 2t),  db/dx = p - t. */
static inline double focal_one(double x, double t, double gamma, int use_alpha, double alpha,
                               double *grad) {
    double p, q;
    sigmoid_pair(x, &p, &q);
    double b = bce(x, t);
    double m = p * (1 - t) + q * t;
    double mg = gamma == 0 ? 1.0 : pow(m, gamma);
    double w = use_alpha ? alpha * t + (1 - alpha) * (1 - t) : 1.0;
    if (grad) {
        /* m == 0 only when p_t rounds to exactly 1, where the term's limit is 0
         * for every gamma > 0 (guards 0 * inf for gamma < 1). */
        double dmg = gamma == 0 || m <= 0 ? 0.0 : gamma * pow(m, gamma - 1) * p * q * (1 - 2 * t);
        *grad = w * (dmg * b + mg * (p - t));
    }
    return w * mg * b;
}

typedef struct {
    const float *logits, *target;
    float gamma, alpha;
    int use_alpha;
} focal_args;

static void focal_part(const void *ctx, int64_t lo, int64_t hi, double *out) {
    const focal_args *a = ctx;
    double s = 0;
    for (int64_t i = lo; i < hi; i++) s += focal_one(a->logits[i], a->target[i], a->gamma, a->use_alpha, a->alpha, NULL);
    out[0] = s;
}

double lpnx_focal_loss_forward(const float *logits, const float *target, float gamma,
                               int use_alpha, float alpha, size_t n) {
    const focal_args a = {logits, target, gamma, alpha, use_alpha};
    double sum;
    lpnx_sum_chunks((int64_t)n, 1, focal_part, &a, &sum);
    return n ? sum / (double)n : NAN;
}

void lpnx_focal_loss_backward(float *dlogits, const float *logits, const float *target,
                              float gamma, int use_alpha, float alpha, size_t n) {
    int64_t count = (int64_t)n;
    double scale = n ? 1.0 / (double)n : 0;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        double g;
        focal_one(logits[i], target[i], gamma, use_alpha, alpha, &g);
        dlogits[i] = (float)(g * scale);
    }
}
