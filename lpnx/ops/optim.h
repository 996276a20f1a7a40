/* Optimizer updates: one fused loop over each parameter, in place, with
 * PyTorch 1.13's arithmetic (float32 per element, scalars rounded to float
 * the way PyTorch's tensor-scalar ops round them). Every buffer (param,
 * grad, momentum_buffer, exp_avg, exp_avg_sq) is (n) contiguous floats,
 * the parameter's shape flattened; the loops run on OpenMP threads when
 * n >= LPNX_PARALLEL_MIN. The optimizer state (momentum buffer, Adam's
 * moments) is the caller's and persists between steps. */
#ifndef LPNX_OPTIM_H
#define LPNX_OPTIM_H

#include <stddef.h>

typedef struct {
    double lr, momentum, dampening, weight_decay;
    int nesterov;
} lpnx_sgd_hyper;

/* torch.optim.SGD for one parameter:
 *   d = g + weight_decay p
 *   momentum != 0: buf = d on the first step, else momentum buf + (1 - dampening) d;
 *                  d = nesterov ? d + momentum buf : buf
 *   p -= lr d
 * momentum_buffer may be NULL when momentum == 0 (it is not touched then). */
void lpnx_sgd_step(float *param, float *momentum_buffer, const float *grad, size_t n,
                   const lpnx_sgd_hyper *h, int first);

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    long long step;  /* 1 on the first update */
    int decoupled;   /* 0: Adam (L2 added to the gradient), 1: AdamW (decay on p) */
} lpnx_adam_hyper;

/* torch.optim.Adam / AdamW (amsgrad off) for one parameter, step >= 1:
 *   AdamW: p *= 1 - lr wd        Adam: g' = g + wd p
 *   exp_avg = beta1 exp_avg + (1 - beta1) g'
 *   exp_avg_sq = beta2 exp_avg_sq + (1 - beta2) g'^2
 *   p -= lr / (1 - beta1^step) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps) */
void lpnx_adam_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
                    size_t n, const lpnx_adam_hyper *h);

/* sum(x^2) accumulated in double: squared L2 norm for gradient clipping. */
double lpnx_sum_squares(const float *x, size_t n);

#endif
