/* The one thread knob: OpenBLAS is Debian's OpenMP build, so its threads
 * and lpnx's own loops share one OpenMP pool, and a gemm called inside a
 * parallel region runs single-threaded instead of oversubscribing. */
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops.h"

void lpnx_set_num_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

int lpnx_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return openblas_get_num_threads();
#endif
}
