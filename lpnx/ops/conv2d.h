/* 2-D convolution (cross-correlation, as in PyTorch) on NCHW float32:
 * im2col + gemm forward, and its backward as gemms plus col2im.
 * Plain C on float*: no Lua, no allocation, no failure paths. The caller
 * checks every size and provides the column buffer. */
#ifndef LPNX_CONV2D_H
#define LPNX_CONV2D_H

#include <stddef.h>
#include <stdint.h>

/* Sizes of one convolution. The caller guarantees: all sizes >= 0,
 * kh, kw, strides and dilations >= 1, pads >= 0, ho and wo from
 * lpnx_conv2d_output_size and >= 1, and cin*kh*kw, ho*wo, h*w and cout
 * each fit in an int (the gemm dimensions). */
typedef struct {
    int64_t n, cin, h, w;        /* input  (n, cin, h, w) */
    int64_t cout, kh, kw;        /* weight (cout, cin, kh, kw) */
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dil_h, dil_w;
    int64_t ho, wo;              /* output (n, cout, ho, wo) */
} lpnx_conv2d_dims;

/* floor((in + 2*pad - dil*(k-1) - 1) / stride) + 1 for one spatial dim,
 * or a value <= 0 when the padded input is smaller than the dilated
 * kernel. stride >= 1, dil >= 1, k >= 1, pad >= 0, all small enough that
 * the int64 arithmetic does not overflow (the bindings cap them at INT_MAX). */
int64_t lpnx_conv2d_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil);

/* 1 when the convolution is a plain matrix product per image (1x1 kernel,
 * stride 1, no padding): no column buffer is needed. */
int lpnx_conv2d_is_pointwise(const lpnx_conv2d_dims *d);

/* Floats the column buffer must hold for forward and backward:
 * cin*kh*kw * ho*wo (one image), or 0 for a pointwise convolution. */
size_t lpnx_conv2d_col_size(const lpnx_conv2d_dims *d);

/* out = conv(inp, weight) + bias.
 * out    (n, cout, ho, wo), written
 * inp    (n, cin, h, w)
 * weight (cout, cin, kh, kw)
 * bias   (cout), or NULL for none
 * col    (cin*kh*kw, ho*wo) scratch, lpnx_conv2d_col_size floats (NULL when 0)
 * Forward keeps nothing for backward: backward rebuilds the columns from inp. */
void lpnx_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         float *col, const lpnx_conv2d_dims *d);

/* Gradients of out = conv(inp, weight) + bias given dout = dL/dout.
 * Every output accumulates (+=); zeroing is the caller's.
 * dinp    (n, cin, h, w)         += dL/dinp, or NULL when not wanted
 * dweight (cout, cin, kh, kw)    += dL/dweight
 * dbias   (cout)                 += sum of dout over n, ho, wo, or NULL
 * dout    (n, cout, ho, wo)
 * inp     (n, cin, h, w)
 * weight  (cout, cin, kh, kw)
 * col     (cin*kh*kw, ho*wo) scratch as in forward
 * None of the outputs may overlap an input or col. */
void lpnx_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, float *col,
                          const lpnx_conv2d_dims *d);

#endif
