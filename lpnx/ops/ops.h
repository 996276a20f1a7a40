/* Kernels on float*: no Lua, no allocation unless stated, no failure paths.
 * Callers (the bindings) check shapes and arguments before calling. */
#ifndef LPNX_OPS_H
#define LPNX_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../tensor.h"

/* ---- threads (threads.c) --------------------------------------------- */
/* The OpenMP threads of lpnx's loops; OpenBLAS stays on one thread and
 * lpnx calls it inside its own fixed pieces of work. */
void lpnx_set_num_threads(int n);
int lpnx_get_num_threads(void);
/* Loops with fewer elements than this run on one thread. */
#define LPNX_PARALLEL_MIN 32768
/* The calling thread's number in its parallel region (0 outside one). */
int lpnx_thread_num(void);
static inline int64_t lpnx_imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t lpnx_imax(int64_t a, int64_t b) { return a > b ? a : b; }
/* Sums over many elements add LPNX_CHUNKS partial sums, one per fixed
 * chunk of the range, in chunk order: the same bits for any thread
 * count. lpnx_sum_chunks(n, k, part, ctx, sums): part(ctx, lo, hi, out)
 * writes the k (<= LPNX_SUMS_MAX) sums of elements [lo, hi) into out;
 * sums gets the k totals. */
#define LPNX_CHUNKS 64
#define LPNX_SUMS_MAX 4
typedef void (*lpnx_chunk_sums)(const void *ctx, int64_t lo, int64_t hi, double *out);
void lpnx_sum_chunks(int64_t n, int k, lpnx_chunk_sums part, const void *ctx, double *sums);

/* ---- elementwise (elementwise.c) ------------------------------------- */
typedef enum {
    LPNX_OP_ADD, LPNX_OP_SUB, LPNX_OP_MUL, LPNX_OP_DIV, LPNX_OP_POW,
    LPNX_OP_MAX, LPNX_OP_MIN,
    LPNX_OP_RSUB, LPNX_OP_RDIV, LPNX_OP_RPOW, /* b op a: number - tensor etc. */
    LPNX_OP_EQ, LPNX_OP_NE, LPNX_OP_LT, LPNX_OP_LE, LPNX_OP_GT, LPNX_OP_GE /* 1 or 0 */
} lpnx_binop;

typedef enum {
    LPNX_OP_COPY, LPNX_OP_NEG, LPNX_OP_ABS, LPNX_OP_SQRT, LPNX_OP_EXP, LPNX_OP_LOG,
    LPNX_OP_SIGMOID, LPNX_OP_RELU, LPNX_OP_TANH, LPNX_OP_FLOOR, LPNX_OP_CEIL,
    LPNX_OP_ROUND, LPNX_OP_SIGN
} lpnx_unop;

/* A strided operand: data plus one stride per dim of the shared shape
 * (stride 0 broadcasts). */
typedef struct {
    float *data;
    int64_t stride[LPNX_MAXDIM];
} lpnx_operand;

/* out[i] = a[i] op b[i] over shape (ndim, size). out may alias a or b
 * exactly (same data and strides), as in-place ops do. */
void lpnx_binary(lpnx_operand out, lpnx_operand a, lpnx_operand b,
                 int ndim, const int64_t *size, lpnx_binop op);
/* out[i] = f(a[i]). */
void lpnx_unary(lpnx_operand out, lpnx_operand a, int ndim, const int64_t *size, lpnx_unop op);
/* out[i] = min(max(a[i], lo), hi); NaN stays NaN. */
void lpnx_clamp(lpnx_operand out, lpnx_operand a, int ndim, const int64_t *size,
                float lo, float hi);
/* out[i] = v. */
void lpnx_fill(lpnx_operand out, int ndim, const int64_t *size, float v);

/* ---- reductions (reduce.c) ------------------------------------------- */
/* x is contiguous (outer, n, inner); results are (outer, inner).
 * Sums accumulate in double. max/min propagate NaN; index is 0-based and
 * is the first occurrence (of the NaN, when there is one). */
void lpnx_reduce_sum(float *out, const float *x, size_t outer, size_t n, size_t inner);
void lpnx_reduce_mean(float *out, const float *x, size_t outer, size_t n, size_t inner);
/* which > 0: max, which < 0: min. values or index may be NULL. */
void lpnx_reduce_extreme(float *values, int64_t *index, const float *x,
                         size_t outer, size_t n, size_t inner, int which);
double lpnx_sum_all(const float *x, size_t n);

/* ---- gemm (gemm.c) --------------------------------------------------- */
/* C = alpha * op(A) op(B) + beta * C, row-major, on OpenBLAS.
 * op(A) is (M,K), op(B) is (K,N), C is (M,N) with leading dimension ldc. */
void lpnx_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);
/* lpnx_gemm with C cut into blocks of columns (or of rows, when C is
 * taller than wide) fixed by M, N and K alone, the blocks shared among
 * the OpenMP threads; inside a parallel region it runs on the calling
 * thread. For the large products outside lpnx's own parallel loops. */
void lpnx_gemm_blocks(int trans_a, int trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc);
/* The same in double. */
void lpnx_dgemm(int trans_a, int trans_b, int M, int N, int K, const double *A, int lda,
                const double *B, int ldb, double beta, double *C, int ldc);

/* ---- random numbers (random.c) --------------------------------------- */
/* xoshiro256**: fast, 2^256 period, state of four words. */
typedef struct { uint64_t s[4]; } lpnx_rng;
void lpnx_rng_seed(lpnx_rng *g, uint64_t seed);
uint64_t lpnx_rng_next(lpnx_rng *g);
/* Uniform in [0, 1) with 24 random bits. */
float lpnx_rng_uniform(lpnx_rng *g);
/* out[i] uniform in [lo, hi). */
void lpnx_rng_fill_uniform(lpnx_rng *g, float *out, size_t n, float lo, float hi);
/* out[i] normal (mean, std), Box-Muller in double, two uniforms per pair. */
void lpnx_rng_fill_normal(lpnx_rng *g, float *out, size_t n, float mean, float std);

#endif
