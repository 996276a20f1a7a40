/* Reductions over the middle dim of a contiguous (outer, n, inner) block.
 * Sums and means accumulate in double so long reductions stay accurate. */
#include <math.h>
#include <stdlib.h>

#include "ops.h"

/* Sums fixed blocks in double, then adds the block sums in order: the
 * result is the same for any thread count. */
#define SUM_BLOCK 4096
double lpnx_sum_all(const float *x, size_t n) {
    size_t nblocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double *partial = nblocks > 1 ? malloc(nblocks * sizeof(double)) : NULL;
    double total = 0;
    if (!partial) { /* one block, or no scratch: the same order serially */
        for (size_t b = 0; b < nblocks; b++) {
            double s = 0;
            size_t end = (b + 1) * SUM_BLOCK < n ? (b + 1) * SUM_BLOCK : n;
            for (size_t i = b * SUM_BLOCK; i < end; i++) s += x[i];
            total += s;
        }
        return total;
    }
    #pragma omp parallel for schedule(static) if (n >= LPNX_PARALLEL_MIN)
    for (size_t b = 0; b < nblocks; b++) {
        double s = 0;
        size_t end = (b + 1) * SUM_BLOCK < n ? (b + 1) * SUM_BLOCK : n;
        for (size_t i = b * SUM_BLOCK; i < end; i++) s += x[i];
        partial[b] = s;
    }
    for (size_t b = 0; b < nblocks; b++) total += partial[b];
    free(partial);
    return total;
}

static void reduce_sum(float *out, const float *x, size_t outer, size_t n, size_t inner, double scale) {
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (outer * n >= LPNX_PARALLEL_MIN)
        for (size_t o = 0; o < outer; o++) {
            const float *p = x + o * n;
            double s = 0;
            for (size_t i = 0; i < n; i++) s += p[i];
            out[o] = (float)(s * scale);
        }
        return;
    }
    #pragma omp parallel if (outer * n * inner >= LPNX_PARALLEL_MIN)
    {
        double *acc = malloc(inner * sizeof(double)); /* per-thread row of sums */
        #pragma omp for schedule(static)
        for (size_t o = 0; o < outer; o++) {
            const float *p = x + o * n * inner;
            if (acc) {
                for (size_t j = 0; j < inner; j++) acc[j] = 0;
                for (size_t i = 0; i < n; i++)
                    for (size_t j = 0; j < inner; j++) acc[j] += p[i * inner + j];
                for (size_t j = 0; j < inner; j++) out[o * inner + j] = (float)(acc[j] * scale);
            } else { /* no scratch: column by column, same result */
                for (size_t j = 0; j < inner; j++) {
                    double s = 0;
                    for (size_t i = 0; i < n; i++) s += p[i * inner + j];
                    out[o * inner + j] = (float)(s * scale);
                }
            }
        }
        free(acc);
    }
}

void lpnx_reduce_sum(float *out, const float *x, size_t outer, size_t n, size_t inner) {
    reduce_sum(out, x, outer, n, inner, 1.0);
}

void lpnx_reduce_mean(float *out, const float *x, size_t outer, size_t n, size_t inner) {
    reduce_sum(out, x, outer, n, inner, n ? 1.0 / (double)n : NAN);
}

void lpnx_reduce_extreme(float *values, int64_t *index, const float *x,
                         size_t outer, size_t n, size_t inner, int which) {
    #pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner >= LPNX_PARALLEL_MIN)
    for (size_t o = 0; o < outer; o++) {
        for (size_t j = 0; j < inner; j++) {
            const float *p = x + o * n * inner + j;
            float best = p[0];
            size_t at = 0;
            if (best == best) {
                for (size_t i = 1; i < n; i++) {
                    float v = p[i * inner];
                    if (v != v) { best = v; at = i; break; }
                    if (which > 0 ? v > best : v < best) { best = v; at = i; }
                }
            }
            if (values) values[o * inner + j] = best;
            if (index) index[o * inner + j] = (int64_t)at;
        }
    }
}
