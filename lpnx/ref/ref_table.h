/* The oracles as one table of function pointers, with the signatures of
 * the lpnx_ref_ functions in lpnx/ref/. The lpnx.ref module
 * (ref_module.c) fills it and hands it to the bindings of lpnx.core,
 * which call an oracle through it when a spec calls lpnx.ref.NAME: the
 * oracles are never linked into lpnx.core. */
#ifndef LPNX_REF_TABLE_H
#define LPNX_REF_TABLE_H

#include "conv2d_ref.h"
#include "image_ref.h"
#include "layers_ref.h"
#include "loss_ref.h"
#include "optim_ref.h"
#include "ref.h"

/* Changes whenever a field is added, removed or changes type, so that a
 * stale lpnx/ref.so is refused rather than called wrongly. */
#define LPNX_REF_TABLE_VERSION 1

typedef struct lpnx_ref_table {
    int version; /* LPNX_REF_TABLE_VERSION */
    /* ref.h */
    void (*matmul)(float *C, const float *A, const float *B, int M, int N, int K);
    /* conv2d_ref.h */
    void (*conv2d_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           const lpnx_conv2d_dims *d);
    void (*conv2d_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, const lpnx_conv2d_dims *d);
    /* layers_ref.h */
    void (*batchnorm_train_forward)(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                    float *running_var, const float *inp, const float *weight, const float *bias,
                                    int64_t N, int64_t C, int64_t HW, double momentum, double eps);
    void (*batchnorm_eval_forward)(float *out, const float *inp, const float *weight, const float *bias,
                                   const float *running_mean, const float *running_var, int64_t N, int64_t C,
                                   int64_t HW, double eps);
    void (*batchnorm_train_backward)(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                     const float *weight, const float *save_mean, const float *save_invstd, int64_t N,
                                     int64_t C, int64_t HW);
    void (*batchnorm_eval_backward)(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                    const float *weight, const float *running_mean, const float *running_var, int64_t N,
                                    int64_t C, int64_t HW, double eps);
    void (*batchnorm_sum)(double *sum, const float *inp, int64_t N, int64_t C, int64_t HW);
    void (*batchnorm_sqdev)(double *ss, const float *inp, const double *mean, int64_t N, int64_t C, int64_t HW);
    void (*batchnorm_train_apply)(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                  float *running_var, const float *inp, const float *weight, const float *bias,
                                  const double *mean, const double *ss, double count, int64_t N, int64_t C, int64_t HW,
                                  double momentum, double eps);
    void (*batchnorm_backward_reduce)(double *sum_gy, double *dot, const float *gy, const float *inp,
                                      const float *save_mean, int64_t N, int64_t C, int64_t HW);
    void (*batchnorm_backward_input)(float *gx, float *gweight, float *gbias, const float *gy, const float *inp,
                                     const float *weight, const float *save_mean, const float *save_invstd,
                                     const double *sum_gy, const double *dot, double count, float part, int64_t N,
                                     int64_t C, int64_t HW);
    void (*relu_backward)(float *gx, const float *y, const float *gy, size_t n);
    void (*sigmoid_backward)(float *gx, const float *y, const float *gy, size_t n);
    void (*maxpool2d_forward)(float *out, float *indices, const float *inp, int64_t planes, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw);
    void (*maxpool2d_backward)(float *gx, const float *gy, const float *indices, int64_t planes, int64_t H, int64_t W,
                               int64_t Ho, int64_t Wo);
    void (*upsample_nearest_forward)(float *out, const float *inp, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                                     int64_t Wo);
    void (*upsample_nearest_backward)(float *gx, const float *gy, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                                      int64_t Wo);
    void (*upsample_bilinear_forward)(float *out, const float *inp, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                                      int64_t Wo);
    void (*upsample_bilinear_backward)(float *gx, const float *gy, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                                       int64_t Wo);
    /* loss_ref.h */
    double (*bce_with_logits)(const float *logits, const float *target, const float *pos_weight, size_t n);
    void (*bce_with_logits_backward)(float *dlogits, const float *logits, const float *target, const float *pos_weight,
                                     size_t n);
    double (*dice_loss)(const float *logits, const float *target, float eps, size_t n);
    void (*dice_loss_backward)(float *dlogits, const float *logits, const float *target, float eps, size_t n);
    void (*dice_sums)(double *sum_pt, double *sum_p, double *sum_t, const float *logits, const float *target, size_t n);
    void (*dice_loss_backward_sums)(float *dlogits, const float *logits, const float *target, double sum_pt,
                                    double sum_p, double sum_t, float eps, size_t n);
    double (*focal_loss)(const float *logits, const float *target, float gamma, int use_alpha, float alpha, size_t n);
    void (*focal_loss_backward)(float *dlogits, const float *logits, const float *target, float gamma, int use_alpha,
                                float alpha, size_t n);
    /* optim_ref.h */
    void (*sgd_step)(float *param, float *momentum_buffer, const float *grad, size_t n, const lpnx_sgd_hyper *h,
                     int first);
    void (*adam_step)(float *param, float *exp_avg, float *exp_avg_sq, const float *grad, size_t n,
                      const lpnx_adam_hyper *h);
    double (*sum_squares)(const float *x, size_t n);
    /* image_ref.h */
    void (*image_resize)(float *out, const float *inp, int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                         lpnx_resize_mode mode);
    void (*image_affine)(float *out, const float *inp, int64_t planes, int64_t H, int64_t W, double angle_degrees,
                         double scale, double dx, double dy, double cx, double cy, lpnx_sampling s);
    void (*image_remap)(float *out, const float *inp, const float *field, int64_t planes, int64_t H, int64_t W,
                        lpnx_sampling s);
    lpnx_status (*image_gaussian_blur)(float *out, const float *inp, int64_t planes, int64_t H, int64_t W,
                                       double sigma);
    lpnx_status (*image_elastic_field)(float *field, lpnx_rng *g, int64_t H, int64_t W, double alpha, double sigma);
    lpnx_status (*image_clahe)(float *out, const float *inp, int64_t H, int64_t W, lpnx_clahe_opts o);
    int64_t (*image_components)(float *labels, int32_t *areas, const float *mask, int64_t H, int64_t W,
                                int connectivity);
    lpnx_status (*image_remove_small)(float *out, const float *mask, int64_t H, int64_t W, int connectivity,
                                      int64_t min_area);
    void (*image_overlay)(float *out, const float *image, int64_t channels, const float *mask, int64_t H, int64_t W,
                          const lpnx_overlay_opts *o);
} lpnx_ref_table;

/* Registry key under which lpnx.ref leaves a light userdata pointing at
 * its table. */
#define LPNX_REF_TABLE_KEY "lpnx.ref.table"
/* Registry key of the table of bindings lpnx.core keeps for lpnx.ref. */
#define LPNX_REF_BINDINGS_KEY "lpnx.ref.bindings"

#endif
