/* Slow, obviously-correct kernels: test oracles only, never on a hot path. */
#ifndef LPNX_REF_H
#define LPNX_REF_H

#include <stddef.h>

/* C (M,N) = A (M,K) B (K,N), all row-major and contiguous, double accumulation. */
void lpnx_ref_matmul(float *C, const float *A, const float *B, int M, int N, int K);

#endif
