/* Backward passes of the pointwise activations, from the forward output y
 * (what the layers keep): the forward passes are the tensor methods relu
 * and sigmoid. */
#include "layers.h"

void lpnx_relu_backward(float *gx, const float *y, const float *gy, size_t n) {
    /* gx, y, gy: (n) */
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] = y[i] <= 0.0f ? 0.0f : gy[i];
}

void lpnx_sigmoid_backward(float *gx, const float *y, const float *gy, size_t n) {
    /* gx, y, gy: (n) */
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) gx[i] = gy[i] * (1.0f - y[i]) * y[i];
}
