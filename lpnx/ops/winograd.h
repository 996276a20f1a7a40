/* Winograd's convolutions for 3x3 kernels with stride 1 (winograd.c,
 * winograd_double.c): parts of lpnx_conv2d_forward / _backward, which
 * choose them. Plain C on float*: no Lua, no allocation, no failure
 * paths. */
#ifndef LPNX_WINOGRAD_H
#define LPNX_WINOGRAD_H

#include <stddef.h>

#include "conv2d.h"

/* ---- Winograd F(m x m, 3x3), m = 2 or 4 (winograd.c) -----------------
 * 3x3 kernels with stride 1 and dilation 1, any padding. lpnx_conv2d_*
 * choose it, and m, themselves; these are its parts, with the same
 * buffers. */

/* 1 when the Winograd kernels can compute the convolution d. */
int lpnx_winograd_applies(const lpnx_conv2d_dims *d);

/* Floats of work the Winograd forward and backward need with tiles m x m. */
size_t lpnx_winograd_work_size(const lpnx_conv2d_dims *d, int m);

/* As lpnx_conv2d_forward, with m x m output tiles and work of
 * lpnx_winograd_work_size(d, m) floats; the images go in the batch's
 * groups (lpnx_conv2d_groups). */
void lpnx_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           float *work, const lpnx_conv2d_dims *d, int m);

/* As lpnx_conv2d_backward without the bias gradient: dinp (or NULL)
 * accumulates; dweight (groups, cout, cin, 3, 3) gets each group's
 * weight gradient apart (written, not added); the rest as in
 * lpnx_winograd_forward. */
void lpnx_winograd_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                            const float *weight, float *work, const lpnx_conv2d_dims *d, int m);

/* ---- Winograd F(2x2, 3x3) in double (winograd_double.c) ----------------
 * LPNX_CONV_DOUBLE's forward for what lpnx_winograd_applies to: every
 * output rounded once from a double sum. Work of
 * lpnx_winograd_double_work_size(d) floats, starting on 64 bytes. */
size_t lpnx_winograd_double_work_size(const lpnx_conv2d_dims *d);
void lpnx_winograd_double_forward(float *out, const float *inp, const float *weight, const float *bias,
                                  float *work, const lpnx_conv2d_dims *d);

#endif
