/* Matrix products on OpenBLAS, which lpnx keeps on one thread
 * (threads.c): lpnx_gemm_blocks shares a large product out in blocks of
 * its own. */
#include <cblas.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops.h"

/* OpenBLAS's OpenMP build threads a call made outside a parallel region
 * over OpenMP's thread count, whatever openblas_set_num_threads said; a
 * count of 1 for the call keeps it on the calling thread. */
static int solo_begin(void) {
#ifdef _OPENMP
    const int outer = omp_get_max_threads();
    if (outer > 1 && !omp_in_parallel()) {
        omp_set_num_threads(1);
        return outer;
    }
#endif
    return 0;
}

static void solo_end(int outer) {
#ifdef _OPENMP
    if (outer) omp_set_num_threads(outer);
#else
    (void)outer;
#endif
}

void lpnx_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc) {
    const int outer = solo_begin();
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
    solo_end(outer);
}

void lpnx_dgemm(int trans_a, int trans_b, int M, int N, int K, const double *A, int lda,
                const double *B, int ldb, double beta, double *C, int ldc) {
    const int outer = solo_begin();
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    solo_end(outer);
}

/* Products of fewer multiply-adds than this are one call. */
#define BLOCKS_MIN_WORK (1 << 21)
/* Columns (rows) per block. */
#define BLOCK_COLS 256
#define BLOCK_ROWS 64

void lpnx_gemm_blocks(int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    const double work = (double)M * (double)N * (double)K;
    const int by_cols = N >= M;
    const int64_t span = by_cols ? BLOCK_COLS : BLOCK_ROWS, len = by_cols ? N : M;
    const int64_t blocks = work < BLOCKS_MIN_WORK ? 1 : (len + span - 1) / span;
    if (blocks <= 1) {
        lpnx_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t lo = b * span;
        const int n = (int)(lo + span <= len ? span : len - lo);
        if (by_cols) /* C[:, lo:lo+n] = op(A) op(B)[:, lo:lo+n] */
            lpnx_gemm(trans_a, trans_b, M, n, K, alpha, A, lda, trans_b ? B + (size_t)lo * (size_t)ldb : B + lo, ldb,
                      beta, C + lo, ldc);
        else /* C[lo:lo+n, :] = op(A)[lo:lo+n, :] op(B) */
            lpnx_gemm(trans_a, trans_b, n, N, K, alpha, trans_a ? A + lo : A + (size_t)lo * (size_t)lda, lda, B, ldb,
                      beta, C + (size_t)lo * (size_t)ldc, ldc);
    }
}
