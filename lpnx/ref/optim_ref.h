/* Test oracles for the optimizer updates: PyTorch's update rules written
 * out one element at a time, one statement per tensor op of
 * torch.optim's single-tensor loops, in float32 as PyTorch does them. */
#ifndef LPNX_OPTIM_REF_H
#define LPNX_OPTIM_REF_H

#include <stddef.h>

#include "../ops/optim.h"

void lpnx_ref_sgd_step(float *param, float *momentum_buffer, const float *grad, size_t n,
                       const lpnx_sgd_hyper *h, int first);
void lpnx_ref_adam_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
                        size_t n, const lpnx_adam_hyper *h);
double lpnx_ref_sum_squares(const float *x, size_t n);

#endif
