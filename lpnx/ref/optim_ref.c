#include "optim_ref.h"

#include <math.h>

void lpnx_ref_sgd_step(float *param, float *momentum_buffer, const float *grad, size_t n,
                       const lpnx_sgd_hyper *h, int first) {
    for (size_t i = 0; i < n; i++) {
        float d = grad[i];
        if (h->weight_decay != 0) d = d + (float)h->weight_decay * param[i];
        if (h->momentum != 0) {
            if (first) {
                momentum_buffer[i] = d;
            } else {
                momentum_buffer[i] = momentum_buffer[i] * (float)h->momentum;
                momentum_buffer[i] = momentum_buffer[i] + (float)(1 - h->dampening) * d;
            }
            if (h->nesterov) d = d + (float)h->momentum * momentum_buffer[i];
            else d = momentum_buffer[i];
        }
        param[i] = param[i] + (float)(-h->lr) * d;
    }
}

void lpnx_ref_adam_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
                        size_t n, const lpnx_adam_hyper *h) {
    double bias_correction1 = 1 - pow(h->beta1, (double)h->step);
    double bias_correction2 = 1 - pow(h->beta2, (double)h->step);
    double step_size = h->lr / bias_correction1;
    double bias_correction2_sqrt = sqrt(bias_correction2);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (h->decoupled) param[i] = param[i] * (float)(1 - h->lr * h->weight_decay);
        else if (h->weight_decay != 0) g = g + (float)h->weight_decay * param[i];
        exp_avg[i] = exp_avg[i] * (float)h->beta1;
        exp_avg[i] = exp_avg[i] + (float)(1 - h->beta1) * g;
        exp_avg_sq[i] = exp_avg_sq[i] * (float)h->beta2;
        exp_avg_sq[i] = exp_avg_sq[i] + (float)(1 - h->beta2) * g * g;
        float denom = sqrtf(exp_avg_sq[i]);
        denom = denom / (float)bias_correction2_sqrt;
        denom = denom + (float)h->eps;
        param[i] = param[i] + (float)(-step_size) * exp_avg[i] / denom;
    }
}

double lpnx_ref_sum_squares(const float *x, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}
