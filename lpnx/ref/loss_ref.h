/* Test oracles for the loss kernels: the textbook formulas, one element at
 * a time, in double. Valid for |logits| up to about 700 (exp in double);
 * the specs stay far below that. Same conventions as ops/loss.h, except
 * that pos_weight is either NULL or n floats (one weight per element). */
#ifndef LPNX_LOSS_REF_H
#define LPNX_LOSS_REF_H

#include <stddef.h>

/* mean of -(w t log p + (1 - t) log(1 - p)), p = sigmoid(x). */
double lpnx_ref_bce_with_logits(const float *logits, const float *target,
                                const float *pos_weight, size_t n);
void lpnx_ref_bce_with_logits_backward(float *dlogits, const float *logits, const float *target,
                                       const float *pos_weight, size_t n);

/* 1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps). */
double lpnx_ref_dice_loss(const float *logits, const float *target, float eps, size_t n);
void lpnx_ref_dice_loss_backward(float *dlogits, const float *logits, const float *target,
                                 float eps, size_t n);
void lpnx_ref_dice_sums(double *sum_pt, double *sum_p, double *sum_t, const float *logits, const float *target,
                        size_t n);
void lpnx_ref_dice_loss_backward_sums(float *dlogits, const float *logits, const float *target,
                                      double sum_pt, double sum_p, double sum_t, float eps, size_t n);

/* mean of w_t (1 - p_t)^gamma * bce, p_t = p t + (1 - p)(1 - t). */
double lpnx_ref_focal_loss(const float *logits, const float *target, float gamma,
                           int use_alpha, float alpha, size_t n);
void lpnx_ref_focal_loss_backward(float *dlogits, const float *logits, const float *target,
                                  float gamma, int use_alpha, float alpha, size_t n);

#endif
