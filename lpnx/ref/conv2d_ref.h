/* Naive direct 2-D convolution: the oracle the im2col + gemm kernels of
 * ops/conv2d.c are held to. Same buffers, shapes and accumulation rules
 * as lpnx_conv2d_forward / lpnx_conv2d_backward, without the column buffer. */
#ifndef LPNX_CONV2D_REF_H
#define LPNX_CONV2D_REF_H

#include "../ops/conv2d.h"

/* out (n, cout, ho, wo) = conv(inp (n, cin, h, w), weight (cout, cin, kh, kw))
 * + bias (cout, or NULL), each output a double sum over (cin, kh, kw). */
void lpnx_ref_conv2d_forward(float *out, const float *inp, const float *weight,
                             const float *bias, const lpnx_conv2d_dims *d);

/* dinp (n, cin, h, w, or NULL) += dL/dinp, dweight (cout, cin, kh, kw) +=
 * dL/dweight, dbias (cout, or NULL) += sum of dout over (n, ho, wo); each a
 * double sum gathered straight from the definition. */
void lpnx_ref_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const lpnx_conv2d_dims *d);

#endif
