/* Slow, obviously-correct oracles of the kernels in ops/layers.h: the
 * formulas written out element by element in double. Test use only.
 * Same argument order and layouts as the fast kernels. */
#ifndef LPNX_LAYERS_REF_H
#define LPNX_LAYERS_REF_H

#include <stddef.h>
#include <stdint.h>

/* Batch normalisation: x, y, gy, gx (N,C,HW); per-channel buffers (C). */
void lpnx_ref_batchnorm_train_forward(float *out, float *save_mean, float *save_invstd,
                                      float *running_mean, float *running_var,
                                      const float *inp, const float *weight, const float *bias,
                                      int64_t N, int64_t C, int64_t HW, double momentum, double eps);
void lpnx_ref_batchnorm_eval_forward(float *out, const float *inp, const float *weight, const float *bias,
                                     const float *running_mean, const float *running_var,
                                     int64_t N, int64_t C, int64_t HW, double eps);
void lpnx_ref_batchnorm_train_backward(float *gx, float *gweight, float *gbias,
                                       const float *gy, const float *inp, const float *weight,
                                       const float *save_mean, const float *save_invstd,
                                       int64_t N, int64_t C, int64_t HW);
void lpnx_ref_batchnorm_eval_backward(float *gx, float *gweight, float *gbias,
                                      const float *gy, const float *inp, const float *weight,
                                      const float *running_mean, const float *running_var,
                                      int64_t N, int64_t C, int64_t HW, double eps);

/* The split train-mode pieces (see ops/layers.h). */
void lpnx_ref_batchnorm_sum(double *sum, const float *inp, int64_t N, int64_t C, int64_t HW);
void lpnx_ref_batchnorm_sqdev(double *ss, const float *inp, const double *mean, int64_t N, int64_t C, int64_t HW);
void lpnx_ref_batchnorm_train_apply(float *out, float *save_mean, float *save_invstd,
                                    float *running_mean, float *running_var,
                                    const float *inp, const float *weight, const float *bias,
                                    const double *mean, const double *ss, double count,
                                    int64_t N, int64_t C, int64_t HW, double momentum, double eps);
void lpnx_ref_batchnorm_backward_reduce(double *sum_gy, double *dot, const float *gy, const float *inp,
                                        const float *save_mean, int64_t N, int64_t C, int64_t HW);
void lpnx_ref_batchnorm_backward_input(float *gx, float *gweight, float *gbias, const float *gy,
                                       const float *inp, const float *weight, const float *save_mean,
                                       const float *save_invstd, const double *sum_gy, const double *dot,
                                       double count, float part, int64_t N, int64_t C, int64_t HW);

/* Activations on (n) elements. */
void lpnx_ref_relu_backward(float *gx, const float *y, const float *gy, size_t n);
void lpnx_ref_sigmoid_backward(float *gx, const float *y, const float *gy, size_t n);

/* Max pooling: inp (planes,H,W), out and indices (planes,Ho,Wo). */
void lpnx_ref_maxpool2d_forward(float *out, float *indices, const float *inp, int64_t planes,
                                int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
/* gx (planes,H,W) += gy gathered by indices; indices must be valid. */
void lpnx_ref_maxpool2d_backward(float *gx, const float *gy, const float *indices, int64_t planes,
                                 int64_t H, int64_t W, int64_t Ho, int64_t Wo);

/* Resampling: x (planes,H,W), y (planes,Ho,Wo); backward adds into gx. */
void lpnx_ref_upsample_nearest_forward(float *out, const float *inp, int64_t planes,
                                       int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void lpnx_ref_upsample_nearest_backward(float *gx, const float *gy, int64_t planes,
                                        int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void lpnx_ref_upsample_bilinear_forward(float *out, const float *inp, int64_t planes,
                                        int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void lpnx_ref_upsample_bilinear_backward(float *gx, const float *gy, int64_t planes,
                                         int64_t H, int64_t W, int64_t Ho, int64_t Wo);

#endif
