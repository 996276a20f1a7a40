#include "loss_ref.h"

#include <math.h>

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double log_sigmoid(double x) { return -log(1 + exp(-x)); }

double lpnx_ref_bce_with_logits(const float *logits, const float *target,
                                const float *pos_weight, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double x = logits[i], t = target[i], w = pos_weight ? pos_weight[i] : 1;
        sum += -(w * t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x));
    }
    return sum / (double)n;
}

void lpnx_ref_bce_with_logits_backward(float *dlogits, const float *logits, const float *target,
                                       const float *pos_weight, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = logits[i], t = target[i], w = pos_weight ? pos_weight[i] : 1;
        /* d/dx log p = 1 - p, d/dx log(1 - p) = -p */
        double g = -(w * t * sigmoid(-x) - (1 - t) * sigmoid(x));
        dlogits[i] = (float)(g / (double)n);
    }
}

void lpnx_ref_dice_sums(double *sum_pt, double *sum_p, double *sum_t, const float *logits, const float *target,
                        size_t n) {
    *sum_pt = *sum_p = *sum_t = 0;
    for (size_t i = 0; i < n; i++) {
        double p = sigmoid(logits[i]);
        *sum_pt += p * target[i];
        *sum_p += p;
        *sum_t += target[i];
    }
}

void lpnx_ref_dice_loss_backward_sums(float *dlogits, const float *logits, const float *target,
                                      double sum_pt, double sum_p, double sum_t, float eps, size_t n) {
    double num = 2 * sum_pt + eps, den = sum_p + sum_t + eps;
    for (size_t i = 0; i < n; i++) {
        double p = sigmoid(logits[i]);
        double dloss_dp = -(2 * target[i] * den - num) / (den * den);
        dlogits[i] = (float)(dloss_dp * p * (1 - p));
    }
}

double lpnx_ref_dice_loss(const float *logits, const float *target, float eps, size_t n) {
    double inter, sum_p, sum_t;
    lpnx_ref_dice_sums(&inter, &sum_p, &sum_t, logits, target, n);
    return 1 - (2 * inter + eps) / (sum_p + sum_t + eps);
}

void lpnx_ref_dice_loss_backward(float *dlogits, const float *logits, const float *target,
                                 float eps, size_t n) {
    double inter, sum_p, sum_t;
    lpnx_ref_dice_sums(&inter, &sum_p, &sum_t, logits, target, n);
    lpnx_ref_dice_loss_backward_sums(dlogits, logits, target, inter, sum_p, sum_t, eps, n);
}

double lpnx_ref_focal_loss(const float *logits, const float *target, float gamma,
                           int use_alpha, float alpha, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double x = logits[i], t = target[i];
        double p = sigmoid(x);
        double ce = -(t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x));
        double p_t = p * t + (1 - p) * (1 - t);
        double w = use_alpha ? alpha * t + (1 - alpha) * (1 - t) : 1;
        sum += w * pow(1 - p_t, gamma) * ce;
    }
    return sum / (double)n;
}

void lpnx_ref_focal_loss_backward(float *dlogits, const float *logits, const float *target,
                                  float gamma, int use_alpha, float alpha, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = logits[i], t = target[i];
        double p = sigmoid(x), dp = p * (1 - p);
        double ce = -(t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x));
        double dce = p - t;
        double m = 1 - (p * t + (1 - p) * (1 - t)); /* 1 - p_t */
        double dm = -(t - (1 - t)) * dp;
        double w = use_alpha ? alpha * t + (1 - alpha) * (1 - t) : 1;
        double dpow = gamma > 0 && m > 0 ? gamma * pow(m, gamma - 1) * dm : 0;
        double g = w * (dpow * ce + pow(m, gamma) * dce);
        dlogits[i] = (float)(g / (double)n);
    }
}
