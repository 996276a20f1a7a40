/* Losses on logits: binary cross-entropy, soft Dice and focal loss.
 *
 * Every loss takes logits x and targets t of the same n elements (any
 * shape, flattened, contiguous) and works on p = sigmoid(x) without ever
 * forming log(p) or log(1 - p) directly: log-sigmoid is written as
 * -(max(-x, 0) + log1p(exp(-|x|))), which stays finite for any finite x.
 * Forward returns the loss as a double (sums accumulate in double);
 * backward WRITES (does not accumulate) the gradient of that same number
 * with respect to the logits into dlogits, a fresh buffer of n floats.
 * Nothing is kept between forward and backward: backward recomputes what
 * it needs from logits and target. Loops run on OpenMP threads when
 * n >= LPNX_PARALLEL_MIN.
 *
 * Buffers: logits, target, dlogits are (n) floats; pos_weight is (n) when
 * pos_weight_stride is 1 and (1) when it is 0. */
#ifndef LPNX_LOSS_H
#define LPNX_LOSS_H

#include <stddef.h>

/* Mean over n of PyTorch's BCEWithLogitsLoss:
 *   l = (1 - t) x + (1 + (w - 1) t) (max(-x, 0) + log1p(exp(-|x|)))
 * with w = pos_weight[i * pos_weight_stride] (stride 0: one weight for
 * every element), or w = 1 when pos_weight is NULL. */
double lpnx_bce_with_logits_forward(const float *logits, const float *target,
                                    const float *pos_weight, size_t pos_weight_stride, size_t n);
/* dlogits[i] = ((1 - t) - (1 + (w - 1) t) sigmoid(-x)) / n. */
void lpnx_bce_with_logits_backward(float *dlogits, const float *logits, const float *target,
                                   const float *pos_weight, size_t pos_weight_stride, size_t n);

/* Soft Dice over all n elements taken as one set:
 *   1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps). */
double lpnx_dice_loss_forward(const float *logits, const float *target, float eps, size_t n);
/* Two passes: the three sums, then the elementwise gradient. */
void lpnx_dice_loss_backward(float *dlogits, const float *logits, const float *target,
                             float eps, size_t n);
/* The Dice loss split where its sums may be added up over several
 * processes (one loss over a batch spread across them): the three sums
 * sum(p t), sum(p), sum(t) of these n elements, and the gradient of
 * 1 - (2 spt + eps) / (sp + st + eps) with respect to these n logits. */
void lpnx_dice_sums(double *sum_pt, double *sum_p, double *sum_t, const float *logits, const float *target,
                    size_t n);
void lpnx_dice_loss_backward_sums(float *dlogits, const float *logits, const float *target,
                                  double sum_pt, double sum_p, double sum_t, float eps, size_t n);

/* Mean over n of the sigmoid focal loss (torchvision's sigmoid_focal_loss):
 *   l = w_t (1 - p_t)^gamma bce(x, t),  p_t = p t + (1 - p)(1 - t),
 *   w_t = alpha t + (1 - alpha)(1 - t) when use_alpha, else 1.
 * Soft targets use the same continuous form. gamma >= 0. */
double lpnx_focal_loss_forward(const float *logits, const float *target, float gamma,
                               int use_alpha, float alpha, size_t n);
void lpnx_focal_loss_backward(float *dlogits, const float *logits, const float *target,
                              float gamma, int use_alpha, float alpha, size_t n);

#endif
