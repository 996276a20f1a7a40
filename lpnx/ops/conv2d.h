/* 2-D convolution (cross-correlation, as in PyTorch) on NCHW float32:
 * Winograd F(4x4, 3x3) or F(2x2, 3x3) for 3x3 kernels with stride 1 when
 * an image has tiles enough, else cache-blocked im2col + gemm (1x1
 * stride-1 kernels straight to gemm), and the backward of each.
 * The images of a batch are cut into groups by a fixed rule (below) and
 * each group is computed on its own, its weight gradient in a part of
 * its own; the parts are added in the tree the rule builds. A batch that
 * two processes share (one holding images 0, 2, 4, ..., the other 1, 3,
 * 5, ...) gives each process whole groups, so the two, adding their two
 * results, get the bits one process gets for the whole batch; and the
 * bits never depend on the thread count.
 * Plain C on float*: no Lua, no allocation, no failure paths. The caller
 * checks every size and provides the scratch buffer. */
#ifndef LPNX_CONV2D_H
#define LPNX_CONV2D_H

#include <stddef.h>
#include <stdint.h>

/* How a convolution is computed. Every algorithm gives the same
 * convolution; they differ in speed and in rounding:
 *   WINOGRAD   Winograd F(4x4, 3x3) or F(2x2, 3x3) where an image has
 *              tiles enough (3x3, stride 1), else im2col + sgemm. The
 *              fastest; F(4x4)'s transforms add a few 1e-6 of the
 *              output's scale.
 *   WINOGRAD2  the same with F(2x2, 3x3) only.
 *   DIRECT     im2col + sgemm: float sums of cin*kh*kw products.
 *   DOUBLE     the forward in double, each output rounded once, as the
 *              direct oracle does: Winograd F(2x2, 3x3) in double where
 *              WINOGRAD2 would use it, else im2col + dgemm; the backward
 *              runs as DIRECT. */
typedef enum {
    LPNX_CONV_WINOGRAD = 0,
    LPNX_CONV_WINOGRAD2,
    LPNX_CONV_DIRECT,
    LPNX_CONV_DOUBLE
} lpnx_conv2d_algo;

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
    lpnx_conv2d_algo algo;       /* how to compute it */
    int64_t batch_parts;         /* processes sharing the batch, interleaved:
                                    0 or 1 (none), 2, or another power of two
                                    (conv_groups.h) */
} lpnx_conv2d_dims;

/* floor((in + 2*pad - dil*(k-1) - 1) / stride) + 1 for one spatial dim,
 * or a value <= 0 when the padded input is smaller than the dilated
 * kernel. stride >= 1, dil >= 1, k >= 1, pad >= 0, all small enough that
 * the int64 arithmetic does not overflow (the bindings cap them at INT_MAX). */
int64_t lpnx_conv2d_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil);

/* 1 when the convolution is a plain matrix product per image (1x1 kernel,
 * stride 1, no padding): no column buffer is needed. */
int lpnx_conv2d_is_pointwise(const lpnx_conv2d_dims *d);

/* Floats the scratch buffer `col` must hold for forward and backward of
 * d: each image's weight and bias gradient (n * cout * (K + 1)), then
 * im2col tiles of a few hundred pixels, or Winograd's transformed weights
 * and blocks of tiles, one set per thread when the threads take whole
 * tiles. It depends on the thread
 * count (lpnx_get_num_threads) as well as on d: ask again after
 * lpnx_set_num_threads. */
size_t lpnx_conv2d_col_size(const lpnx_conv2d_dims *d);

/* out = conv(inp, weight) + bias.
 * out    (n, cout, ho, wo), written
 * inp    (n, cin, h, w)
 * weight (cout, cin, kh, kw)
 * bias   (cout), or NULL for none
 * col    scratch of lpnx_conv2d_col_size floats (NULL when 0)
 * Forward keeps nothing for backward: backward rebuilds the columns (or
 * the transformed input) from inp. */
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
 * col     scratch as in forward
 * None of the outputs may overlap an input or col. dweight and dbias add
 * the groups' parts in the groups' tree: the same bits for any thread
 * count. */
void lpnx_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, float *col,
                          const lpnx_conv2d_dims *d);

#endif
