/* The one thread knob. lpnx owns every parallel decomposition: OpenBLAS
 * (Debian's OpenMP build) always runs on one thread, and lpnx's loops
 * share work out in pieces fixed by the sizes alone (tiles, blocks of a
 * gemm, chunks of a sum), so the thread count decides who computes a
 * piece, never what the pieces are or the order their results are added
 * in: the bits do not depend on it, whichever kernel OpenBLAS picks for
 * the CPU or however it would thread a call itself. */
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops.h"

void lpnx_set_num_threads(int n) {
    if (n < 1) n = 1;
    /* first: OpenBLAS's OpenMP build also sets OpenMP's count to it */
    openblas_set_num_threads(1);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int lpnx_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int lpnx_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void lpnx_sum_chunks(int64_t n, int k, lpnx_chunk_sums part, const void *ctx, double *sums) {
    double parts[LPNX_CHUNKS][LPNX_SUMS_MAX];
#pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (int c = 0; c < LPNX_CHUNKS; c++) part(ctx, n * c / LPNX_CHUNKS, n * (c + 1) / LPNX_CHUNKS, parts[c]);
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int c = 0; c < LPNX_CHUNKS; c++) s += parts[c][j];
        sums[j] = s;
    }
}
