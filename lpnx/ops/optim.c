/* Optimizer updates, one fused pass per parameter. The per-element
 * arithmetic is float32 in the order PyTorch's own tensor ops run it
 * (each hyperparameter rounded to float once), so a step here and a step
 * of torch.optim agree to a rounding or two. */
#include "optim.h"

#include <math.h>
#include <stdint.h>

#include "ops.h"

void lpnx_sgd_step(float *param, float *momentum_buffer, const float *grad, size_t n,
                   const lpnx_sgd_hyper *h, int first) {
    const float weight_decay = (float)h->weight_decay, momentum = (float)h->momentum;
    const float keep = (float)(1 - h->dampening), neg_lr = (float)(-h->lr);
    const int use_decay = h->weight_decay != 0, use_momentum = h->momentum != 0;
    const int nesterov = h->nesterov;
    int64_t count = (int64_t)n;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        float p = param[i], d = grad[i];
        if (use_decay) d = d + weight_decay * p;
        if (use_momentum) {
            float buf = first ? d : momentum_buffer[i] * momentum + keep * d;
            momentum_buffer[i] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        param[i] = p + neg_lr * d;
    }
}

void lpnx_adam_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
                    size_t n, const lpnx_adam_hyper *h) {
    const double bias_correction1 = 1 - pow(h->beta1, (double)h->step);
    const double bias_correction2 = 1 - pow(h->beta2, (double)h->step);
    const float beta1 = (float)h->beta1, keep1 = (float)(1 - h->beta1);
    const float beta2 = (float)h->beta2, keep2 = (float)(1 - h->beta2);
    const float neg_step_size = (float)(-(h->lr / bias_correction1));
    const float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    const float eps = (float)h->eps, weight_decay = (float)h->weight_decay;
    const float decay = (float)(1 - h->lr * h->weight_decay);
    const int decoupled = h->decoupled, coupled_decay = !h->decoupled && h->weight_decay != 0;
    int64_t count = (int64_t)n;
#pragma omp parallel for schedule(static) if (count >= LPNX_PARALLEL_MIN)
    for (int64_t i = 0; i < count; i++) {
        float p = param[i], g = grad[i];
        if (decoupled) p = p * decay;
        else if (coupled_decay) g = g + weight_decay * p;
        float m = exp_avg[i] * beta1 + keep1 * g;
        float v = exp_avg_sq[i] * beta2 + keep2 * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        float denom = sqrtf(v) / bias_correction2_sqrt + eps;
        param[i] = p + neg_step_size * m / denom;
    }
}

static void squares_part(const void *ctx, int64_t lo, int64_t hi, double *out) {
    const float *x = ctx;
    double s = 0;
    for (int64_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    out[0] = s;
}

double lpnx_sum_squares(const float *x, size_t n) {
    double sum;
    lpnx_sum_chunks((int64_t)n, 1, squares_part, x, &sum);
    return sum;
}
