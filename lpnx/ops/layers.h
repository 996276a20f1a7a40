/* Kernels of the layers other than convolution: batch normalisation,
 * max pooling, nearest and bilinear upsampling, and the backward passes of
 * ReLU and sigmoid. Plain C on contiguous float arrays in (N,C,H,W) order;
 * no Lua. Callers (the bindings) check shapes and arguments first.
 *
 * Conventions: outputs first, then inputs, then sizes. Parameter gradients
 * (gweight, gbias) accumulate (+=); input gradients are written, except
 * where a kernel says it accumulates into a zeroed buffer. */
#ifndef LPNX_LAYERS_H
#define LPNX_LAYERS_H

#include <stdint.h>

#include "../tensor.h"
#include "ops.h"

/* ---- batch normalisation (batchnorm.c) ------------------------------- */
/* x, y, gy, gx are (N,C,H,W) with HW = H*W; every per-channel buffer is (C).
 * Statistics accumulate in double. */

/* Train mode (PyTorch's BatchNorm2d.train()): normalises with the batch mean
 * and the biased variance over (N,H,W), updates running_mean and
 * running_var in place with momentum (running_var takes the unbiased
 * variance), and keeps save_mean and save_invstd = 1/sqrt(var + eps) for
 * the backward pass; the caller owns them. Needs N*HW >= 2. */
void lpnx_batchnorm_train_forward(float *out, float *save_mean, float *save_invstd,
                                  float *running_mean, float *running_var,
                                  const float *inp, const float *weight, const float *bias,
                                  int64_t N, int64_t C, int64_t HW, double momentum, double eps);
/* Eval mode: normalises with running_mean and running_var. */
void lpnx_batchnorm_eval_forward(float *out, const float *inp, const float *weight, const float *bias,
                                 const float *running_mean, const float *running_var,
                                 int64_t N, int64_t C, int64_t HW, double eps);
/* Backward of train mode, through the batch statistics: writes gx,
 * accumulates gweight += sum(gy * xhat) and gbias += sum(gy) per channel. */
void lpnx_batchnorm_train_backward(float *gx, float *gweight, float *gbias,
                                   const float *gy, const float *inp, const float *weight,
                                   const float *save_mean, const float *save_invstd,
                                   int64_t N, int64_t C, int64_t HW);
/* Backward of eval mode (the running statistics are constants). */
void lpnx_batchnorm_eval_backward(float *gx, float *gweight, float *gbias,
                                  const float *gy, const float *inp, const float *weight,
                                  const float *running_mean, const float *running_var,
                                  int64_t N, int64_t C, int64_t HW, double eps);

/* The same train-mode computation split where statistics may be summed
 * over several processes in between (synchronised batch normalisation):
 *   sum[c] = sum of x over (N,HW)                          lpnx_batchnorm_sum
 *   ss[c]  = sum of (x - mean[c])^2 over (N,HW)            lpnx_batchnorm_sqdev
 *   normalise with mean and ss / count, update the running lpnx_batchnorm_train_apply
 *   and saved statistics (count: values per channel over every process)
 * and backward:
 *   sum_gy[c], dot[c] = sum of gy and of (x - mean) * gy   lpnx_batchnorm_backward_reduce
 *   gx from the (summed) sum_gy, dot and count, and        lpnx_batchnorm_backward_input
 *   gweight += (dot * invstd) * part, gbias += sum_gy * part
 * (part: this process's share of the parameter gradients, 1/processes, so
 * that summing them over the processes gives the whole batch's, computed
 * once from the summed statistics).
 * With count = N*HW, part = 1 and nothing summed in between, the results
 * equal the fused kernels' bit for bit. Buffers of doubles are (C). */
void lpnx_batchnorm_sum(double *sum, const float *inp, int64_t N, int64_t C, int64_t HW);
void lpnx_batchnorm_sqdev(double *ss, const float *inp, const double *mean, int64_t N, int64_t C, int64_t HW);
void lpnx_batchnorm_train_apply(float *out, float *save_mean, float *save_invstd,
                                float *running_mean, float *running_var,
                                const float *inp, const float *weight, const float *bias,
                                const double *mean, const double *ss, double count,
                                int64_t N, int64_t C, int64_t HW, double momentum, double eps);
void lpnx_batchnorm_backward_reduce(double *sum_gy, double *dot, const float *gy, const float *inp,
                                    const float *save_mean, int64_t N, int64_t C, int64_t HW);
void lpnx_batchnorm_backward_input(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                   const float *weight, const float *save_mean, const float *save_invstd,
                                   const double *sum_gy, const double *dot, double count, float part,
                                   int64_t N, int64_t C, int64_t HW);

/* ---- activations (activation.c) -------------------------------------- */
/* gx, y, gy are (n). ReLU: gx = gy where y > 0, 0 where y <= 0 (a NaN y
 * passes gy, as PyTorch's threshold_backward does). Sigmoid: gx = gy*(1-y)*y. */
void lpnx_relu_backward(float *gx, const float *y, const float *gy, size_t n);
void lpnx_sigmoid_backward(float *gx, const float *y, const float *gy, size_t n);

/* ---- max pooling (pool.c) -------------------------------------------- */
/* Input planes (H,W), output planes (Ho,Wo) = floor((H + 2*ph - kh)/sh) + 1
 * and likewise for W; planes = N*C. Padding acts as -inf. */
typedef struct {
    int64_t planes, H, W, Ho, Wo;
    int64_t kh, kw, sh, sw, ph, pw;
} lpnx_pool2d_dims;

/* PyTorch's MaxPool2d in floor mode. out and indices are (planes,Ho,Wo);
 * indices holds the 0-based flat position h*W + w of each maximum in its
 * input plane as a float (exact while H*W <= 2^24), kept for backward.
 * The first maximum of a window wins; a NaN wins over numbers (the last
 * NaN of the window, as in PyTorch). */
void lpnx_maxpool2d_forward(float *out, float *indices, const float *inp, lpnx_pool2d_dims d);
/* gx (planes,H,W) += gy (planes,Ho,Wo) scattered to the positions in
 * indices. Indices that are not integers in [0, H*W) are skipped and
 * counted; the count is returned (0 for valid input). */
int64_t lpnx_maxpool2d_backward(float *gx, const float *gy, const float *indices, lpnx_pool2d_dims d);

/* ---- upsampling (upsample.c) ----------------------------------------- */
/* x is (planes,H,W), y is (planes,Ho,Wo), any H, W, Ho, Wo >= 1 (up- or
 * down-sizing). The kernels allocate small per-axis index tables and
 * return LPNX_ENOMEM when that fails (outputs then untouched). */

/* PyTorch's mode="nearest": src = min(floor(dst * (float)in/out), in - 1). */
lpnx_status lpnx_upsample_nearest_forward(float *out, const float *inp, int64_t planes,
                                          int64_t H, int64_t W, int64_t Ho, int64_t Wo);
/* gx (planes,H,W) += the sum of gy over the outputs each input fed. */
lpnx_status lpnx_upsample_nearest_backward(float *gx, const float *gy, int64_t planes,
                                           int64_t H, int64_t W, int64_t Ho, int64_t Wo);
/* PyTorch's mode="bilinear", align_corners=false:
 * src = max((dst + 0.5) * (float)in/out - 0.5, 0) (in double), neighbours
 * floor(src) and floor(src) + 1 clamped at in - 1, float weights from the
 * fraction; rounded as PyTorch 1.13 rounds, so results match it bit for bit. */
lpnx_status lpnx_upsample_bilinear_forward(float *out, const float *inp, int64_t planes,
                                           int64_t H, int64_t W, int64_t Ho, int64_t Wo);
/* gx (planes,H,W) += the transpose of the interpolation applied to gy. */
lpnx_status lpnx_upsample_bilinear_backward(float *gx, const float *gy, int64_t planes,
                                            int64_t H, int64_t W, int64_t Ho, int64_t Wo);

#endif
